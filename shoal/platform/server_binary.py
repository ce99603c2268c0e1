"""Engine server binaries the user provides (`ServerBinary` in an engine's image recipe):
`shoal images build --<option>-from IMAGE` or `--<option>-tarball PATH`.

The binary is kept in a small image of its own (FROM scratch, the binary at `/<name>`), so
the member image can be rebuilt later (a changed agent) without the option again. Nothing
here names an engine: the options come from the installed recipes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shoal.platform.docker_cli import Context, ImageBuildError, docker_build
from shoal.platform.engine import PlatformError
from shoal.plugins.base import ImageRecipe, ServerBinary

Progress = Callable[[str], None]
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")
Kind = Literal["from", "tarball"]
FROM: Kind = "from"
TARBALL: Kind = "tarball"


class ServerOptionError(PlatformError):
    """Bad input about a server binary (exit code 2): unknown option, missing file, or an
    engine asked for whose binary was never given."""


@dataclass(frozen=True)
class ServerSource:
    kind: Kind
    value: str  # an image reference, or the tarball's path

    def describe(self) -> str:
        return f"image {self.value}" if self.kind == FROM else f"tarball {self.value}"


def how_to_provide(engine: str, server: ServerBinary) -> str:
    """The one sentence that says how to give shoal `engine`'s server binary."""
    return server.how_to_provide(engine)


def parse_server_options(
    args: Sequence[str], recipes: Mapping[str, ImageRecipe]
) -> dict[str, ServerSource]:
    """`--<option>-from IMAGE` / `--<option>-tarball PATH` (also `--opt=value`) for the
    recipes that take a server binary, by engine. Checked without Docker: an unknown
    option, a missing value, a tarball that is no file, or both kinds for one engine."""
    options: dict[str, tuple[str, Kind]] = {}
    for engine, recipe in recipes.items():
        if recipe.server is not None:
            options[f"--{recipe.server.option}-from"] = (engine, FROM)
            options[f"--{recipe.server.option}-tarball"] = (engine, TARBALL)
    found: dict[str, ServerSource] = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if name not in options:
            known = ", ".join(sorted(options)) or "none"
            raise ServerOptionError(f"no such option: {name} (server binary options: {known})")
        if not eq:
            if not rest or rest[0].startswith("--"):
                raise ServerOptionError(f"{name} needs a value")
            value = rest.pop(0)
        engine, kind = options[name]
        if engine in found:
            raise ServerOptionError(
                f"{engine}: give one of {name.rsplit('-', 1)[0]}-from / -tarball"
            )
        if kind == TARBALL and not Path(value).is_file():
            raise ServerOptionError(f"{name} {value}: no such file")
        if kind == FROM and not IMAGE_RE.fullmatch(value):
            raise ServerOptionError(f"{name} {value!r}: not an image reference")
        found[engine] = ServerSource(kind, value)
    return found


def tarball_member(names: Iterable[str], server: ServerBinary) -> str:
    """The tarball entry of the binary: `<top directory>/<tarball_path>` (the official
    tarballs hold one top directory, e.g. `<product>-linux-x86_64-<distro>-<version>/`)."""
    wanted = server.tarball_path.strip("/")
    found = [n for n in names if n.count("/") == wanted.count("/") + 1 and n.endswith("/" + wanted)]
    if len(found) != 1:
        raise ServerOptionError(
            f"the tarball holds {len(found)} entries */{wanted}, expected exactly one"
        )
    return found[0]


def extract_binary(tarball: Path, server: ServerBinary, directory: Path) -> Path:
    """The binary out of the tarball, as `directory/<name>` (0755); only that one entry is
    read, so no path in the tarball is ever written to."""
    binary = directory / server.name
    try:
        with tarfile.open(tarball) as tar:
            member = tar.getmember(tarball_member(tar.getnames(), server))
            if not member.isfile():
                raise ServerOptionError(f"{member.name} in the tarball is no file")
            extracted = tar.extractfile(member)
            if extracted is None:
                raise ServerOptionError(f"{member.name} cannot be read from the tarball")
            with extracted, binary.open("wb") as out:
                shutil.copyfileobj(extracted, out)
    except (OSError, tarfile.TarError) as e:
        raise ServerOptionError(f"{tarball}: {e}") from e
    binary.chmod(0o755)
    return binary


def image_id(tag: str) -> str | None:
    """The local image's id; None when it is absent or Docker cannot be asked (no CLI, no
    engine running): then it is not there for this build either."""
    try:
        r = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", tag],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def available(recipes: Mapping[str, ImageRecipe]) -> dict[str, str]:
    """The server images present, by engine: engine -> image id."""
    out: dict[str, str] = {}
    for engine, recipe in recipes.items():
        if recipe.server is not None:
            found = image_id(recipe.server.image)
            if found is not None:
                out[engine] = found
    return out


def build_server(
    server: ServerBinary,
    source: ServerSource,
    progress: Progress | None = None,
    output: Progress | None = None,
) -> None:
    """(Re)build `server.image` from `source`. From an image: a multi-stage build copies
    the binary out of it (the image must be local: nothing is pulled where no registry
    answers). From a tarball: the binary is extracted here and copied in."""
    if progress:
        progress(f"building {server.image} with the {server.name} of {source.describe()}")
    with tempfile.TemporaryDirectory(prefix="shoal-server-") as tmp:
        if source.kind == FROM:
            dockerfile = (
                f"FROM {source.value} AS source\n"
                "FROM scratch\n"
                f"COPY --from=source {server.image_path} /{server.name}\n"
            )
            context = Context({}, {"Dockerfile": dockerfile.encode()}, {})
        else:
            binary = extract_binary(Path(source.value), server, Path(tmp))
            dockerfile = f"FROM scratch\nCOPY {server.name} /{server.name}\n"
            context = Context({server.name: binary}, {"Dockerfile": dockerfile.encode()}, {})
        try:
            docker_build(context, [server.image], no_cache=True, output=output)
        except ImageBuildError as e:
            raise ImageBuildError(
                f"{server.name} could not be taken from {source.describe()}: {e}"
            ) from e
