"""Shoal's images, built locally without any registry.

* base (`names.IMAGE_BASE`): `debian:bookworm-slim` plus packages when that image can be
  had, else a `debootstrap --variant=minbase` tree imported with `docker import`.
* operator: FROM base, a venv at /opt/shoal/venv with the shoal package.
* one member image per installed engine: the recipe its plugin declares
  (`EnginePlugin.image_recipe`, found through `shoal.plugins.registry`), FROM base with the
  Debian packages every recipe asks for. A recipe whose server binary the user must provide
  (`ImageRecipe.server`: not in Debian, nothing to download it from) is built only once it
  was given (`--<option>-from IMAGE` / `--<option>-tarball PATH`, shoal/platform/
  server_binary.py); until then it is left out, and the default build needs nothing of it.
* registry: FROM base, Debian's `docker-registry` (`shoal/platform/image/registry/`), which
  `shoal up` runs on a multi-node swarm so that every node can pull the others
  (shoal/platform/distribution.py).

The operator and member tags carry the package version and a short hash of what goes into
their build context, so building an unchanged tree again is a no-op.
"""

from __future__ import annotations

import fcntl
import os
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import shoal
from shoal import names
from shoal.platform.base_image import build_base
from shoal.platform.docker_cli import (
    Context,
    ImageBuildError,
    docker_build,
    docker_tag,
    hash_entries,
    image_exists,
    image_id,
    iter_tree,
)
from shoal.platform.engine import PlatformError
from shoal.platform.server_binary import (
    ServerOptionError,
    ServerSource,
    available,
    build_server,
    how_to_provide,
)
from shoal.plugins.base import ImageRecipe
from shoal.plugins.registry import image_recipes

__all__ = [
    "BuiltImages",
    "Context",
    "ImageBuildError",
    "base_packages",
    "build_all",
    "build_base",
    "exact_tag_env",
    "hash_entries",
    "image_exists",
    "image_id",
    "images_from_env",
    "iter_tree",
    "member_context",
    "operator_context",
    "registry_context",
    "requirements_text",
    "resolve_images",
    "unavailable",
]

Progress = Callable[[str], None]

LOCK_FILE = Path("/tmp/shoal-images.lock")
# Extra CAs the host trusts (e.g. a TLS-inspecting egress proxy): pip inside the build needs
# them too, so they are copied into the operator image's build context.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")


@dataclass(frozen=True)
class BuiltImages:
    base: str
    operator: str
    members: dict[str, str]  # engine -> the exact tag of its member image
    registry: str = names.IMAGE_REGISTRY
    operator_alias: str = names.IMAGE_OPERATOR
    member_aliases: dict[str, str] = field(default_factory=dict)  # engine -> its stable alias
    built: tuple[str, ...] = field(default=())  # tags this call (re)built; () = no-op
    # engine -> why its member image is not built (its server binary was never given)
    unavailable: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Flat, as `shoal images ... --json` prints it: each member image under its engine's
        name, its alias under `<engine>_alias`; engines left out under `unavailable`."""
        return {
            "base": self.base,
            "operator": self.operator,
            **self.members,
            "registry": self.registry,
            "operator_alias": self.operator_alias,
            **{f"{engine}_alias": alias for engine, alias in self.member_aliases.items()},
            "built": self.built,
            **({"unavailable": self.unavailable} if self.unavailable else {}),
        }


# --- build contexts and their hashes (pure) -------------------------------------------


def source_root() -> Path:
    """The checkout holding pyproject.toml and the shoal package."""
    root = Path(shoal.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise PlatformError(
            f"no shoal source tree at {root} (pyproject.toml missing): images are built "
            "from a checkout"
        )
    return root


def requirements_text(pyproject: str) -> str:
    """The runtime dependency list of pyproject.toml, one requirement a line."""
    deps: list[str] = tomllib.loads(pyproject).get("project", {}).get("dependencies", [])
    return "".join(f"{dep}\n" for dep in deps)


def operator_context(root: Path, base: str, ca_dir: Path | None = HOST_CA_DIR) -> Context:
    files: dict[str, Path] = {"src/pyproject.toml": root / "pyproject.toml"}
    generated: dict[str, bytes] = {"certs/README": b"extra CA certificates of the build host\n"}
    if ca_dir is not None and ca_dir.is_dir():
        for relative in iter_tree(ca_dir):
            if relative.suffix == ".crt":
                files[f"certs/{relative.as_posix()}"] = ca_dir / relative
    if (root / "README.md").is_file():
        files["src/README.md"] = root / "README.md"
    else:  # pyproject names a readme; a stub keeps the package buildable
        generated["src/README.md"] = b"# shoal\n"
    for relative in iter_tree(root / "shoal"):
        files[f"src/shoal/{relative.as_posix()}"] = root / "shoal" / relative
    files["Dockerfile"] = root / "shoal" / "operator" / "image" / "Dockerfile"
    generated["requirements.txt"] = requirements_text(
        (root / "pyproject.toml").read_text()
    ).encode()
    return Context(files, generated, {"BASE": base})


def plugin_directory(root: Path, recipe: ImageRecipe) -> Path:
    """The directory of the plugin that declares `recipe`, in the source tree at `root`."""
    return root.joinpath(*recipe.package.split("."))


def member_context(
    root: Path, recipe: ImageRecipe, base: str, server_id: str | None = None
) -> Context:
    """An engine's member image: its recipe directory at the context's root, and each of its
    `sources` (ImageRecipe): a directory of the plugin under its own name, or one of the
    source tree (a path with `/`) under that same path. With a user-provided server binary
    (`recipe.server`), the build arg `SERVER` names the image that keeps it, and the
    generated `server-source` holds that image's id (`server_id`), so a new binary is a new
    context hash."""
    plugin = plugin_directory(root, recipe)
    recipe_dir = plugin / recipe.recipe
    files = {rel.as_posix(): recipe_dir / rel for rel in iter_tree(recipe_dir)}
    for source in recipe.sources:
        directory = root.joinpath(*source.split("/")) if "/" in source else plugin / source
        for relative in iter_tree(directory):
            files[f"{source}/{relative.as_posix()}"] = directory / relative
    if recipe.server is None:
        return Context(files, {}, {"BASE": base})
    if server_id is None:
        raise ValueError(f"{recipe.alias}: its server image's id is needed for its context")
    generated = {"server-source": f"{recipe.server.image} {server_id}\n".encode()}
    return Context(files, generated, {"BASE": base, "SERVER": recipe.server.image})


def registry_context(root: Path, base: str) -> Context:
    recipe = root / "shoal" / "platform" / "image" / "registry"
    files = {rel.as_posix(): recipe / rel for rel in iter_tree(recipe)}
    return Context(files, {}, {"BASE": base})


def exact_tag_env(image: str) -> str:
    """The variable that gives a process without a source tree the exact tag of an image:
    `SHOAL_IMAGE_BASE`, `SHOAL_IMAGE_OPERATOR`, `SHOAL_IMAGE_<ENGINE>` for a member image."""
    return f"SHOAL_IMAGE_{image.upper()}"


def images_from_env() -> BuiltImages:
    """Tags for a process with no source tree (the operator in its container).

    The `exact_tag_env` variables give the exact tags (whoever deploys the operator sets
    them); unset ones fall back to the stable aliases.
    """
    recipes = image_recipes()
    # A member image built from a user's server binary exists only where its variable says so.
    aliases = {
        engine: recipe.alias
        for engine, recipe in recipes.items()
        if recipe.server is None or os.environ.get(exact_tag_env(engine))
    }
    return BuiltImages(
        base=os.environ.get(exact_tag_env("base")) or names.IMAGE_BASE,
        operator=os.environ.get(exact_tag_env("operator")) or names.IMAGE_OPERATOR,
        members={e: os.environ.get(exact_tag_env(e)) or alias for e, alias in aliases.items()},
        member_aliases=aliases,
        unavailable=unavailable(recipes, aliases),
    )


def unavailable(recipes: dict[str, ImageRecipe], built: Iterable[str]) -> dict[str, str]:
    """Why each engine not in `built` has no member image: its server binary was not given."""
    return {
        engine: how_to_provide(engine, recipe.server)
        for engine, recipe in recipes.items()
        if recipe.server is not None and engine not in built
    }


def resolve_images(root: Path | None = None, servers: dict[str, str] | None = None) -> BuiltImages:
    """The exact tags for the current source tree, without building anything.

    `servers`: the server images present (engine -> image id; None: ask Docker, and none when
    it cannot be asked); an engine that needs one and has none is left out (`unavailable`).
    Without a source tree (an installed package, e.g. inside the operator image) the tags
    come from `images_from_env()`.
    """
    if root is None:
        try:
            root = source_root()
        except PlatformError:
            return images_from_env()
    base = names.IMAGE_BASE
    recipes = image_recipes()
    present = available(recipes) if servers is None else servers
    buildable = {
        engine: recipe
        for engine, recipe in recipes.items()
        if recipe.server is None or engine in present
    }
    op_hash = operator_context(root, base).digest()
    reg_hash = registry_context(root, base).digest()
    return BuiltImages(
        base=base,
        operator=f"{names.IMAGE_OPERATOR}-{op_hash}",
        members={
            engine: f"{recipe.alias}-"
            f"{member_context(root, recipe, base, present.get(engine)).digest()}"
            for engine, recipe in buildable.items()
        },
        registry=f"{names.IMAGE_REGISTRY}-{reg_hash}",
        member_aliases={engine: recipe.alias for engine, recipe in buildable.items()},
        unavailable=unavailable(recipes, buildable),
    )


def base_packages(recipes: Iterable[ImageRecipe]) -> tuple[str, ...]:
    """The Debian packages the member images need in the base image, each once, sorted."""
    return tuple(sorted({package for recipe in recipes for package in recipe.base_packages}))


# --- docker helpers -------------------------------------------------------------------


@contextmanager
def _build_lock() -> Iterator[None]:
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the base image -------------------------------------------------------------------


# --- everything -----------------------------------------------------------------------


def check_engines(
    recipes: dict[str, ImageRecipe],
    required: Iterable[str],
    sources: Mapping[str, ServerSource],
    servers: Mapping[str, str],
) -> None:
    """Refuse (bad input, before anything is built) an engine asked for by name that is not
    installed, or whose server binary is neither given now nor kept from an earlier build."""
    for engine in required:
        recipe = recipes.get(engine)
        if recipe is None:
            known = ", ".join(sorted(recipes))
            raise ServerOptionError(f"--engine {engine}: no such engine here (installed: {known})")
        if recipe.server is not None and engine not in sources and engine not in servers:
            raise ServerOptionError(how_to_provide(engine, recipe.server))


def build_all(
    force: bool = False,
    progress: Progress | None = None,
    *,
    rebuild_base: bool = False,
    output: Progress | None = None,
    sources: Mapping[str, ServerSource] | None = None,
    required: Iterable[str] = (),
) -> BuiltImages:
    """Make sure the base, operator, member (one per installed engine) and registry images
    exist for this source tree.

    A tag that already exists is not rebuilt unless `force` (operator and member images,
    without Docker's layer cache) or `rebuild_base`. The stable aliases
    (`names.IMAGE_OPERATOR`, each recipe's `alias`) are pointed at the exact tags.
    An engine whose server binary the user provides gets its member image when `sources`
    gives the binary now (its server image is rebuilt from it) or an earlier build kept it;
    otherwise it is left out, unless named in `required` (then `ServerOptionError`).
    """
    root = source_root()
    recipes = image_recipes()
    sources = dict(sources or {})
    check_engines(recipes, required, sources, available(recipes))
    built: list[str] = []
    with _build_lock():
        for engine, source in sorted(sources.items()):
            server = recipes[engine].server
            if server is not None:
                build_server(server, source, progress, output)
                built.append(server.image)
        servers = available(recipes)
        wanted = resolve_images(root, servers)
        if rebuild_base or not image_exists(wanted.base):
            packages = base_packages(recipes.values())
            build_base(wanted.base, packages=packages, progress=progress, output=output)
            built.append(wanted.base)
        for engine, recipe in recipes.items():
            dockerfile = plugin_directory(root, recipe) / recipe.recipe / "Dockerfile"
            if not dockerfile.is_file():
                raise ImageBuildError(f"the {engine} member image recipe is missing: {dockerfile}")
        jobs = (
            *(
                (
                    wanted.members[engine],
                    recipe.alias,
                    member_context(root, recipe, wanted.base, servers.get(engine)),
                )
                for engine, recipe in recipes.items()
                if engine in wanted.members
            ),
            (wanted.operator, wanted.operator_alias, operator_context(root, wanted.base)),
            (wanted.registry, names.IMAGE_REGISTRY, registry_context(root, wanted.base)),
        )
        for tag, alias, context in jobs:
            if force or not image_exists(tag):
                if progress:
                    progress(f"building {tag}")
                docker_build(context, [tag, alias], no_cache=force, output=output)
                built.append(tag)
            elif image_id(alias) != image_id(tag):
                docker_tag(tag, alias)
            if progress:
                progress(f"{tag} is ready")
    return replace(wanted, built=tuple(built))
