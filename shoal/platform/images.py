"""Shoal's images, built locally without any registry.

* base (`names.IMAGE_BASE`): `debian:bookworm-slim` plus packages when that image can be
  had, else a `debootstrap --variant=minbase` tree imported with `docker import`.
* operator: FROM base, a venv at /opt/shoal/venv with the shoal package.
* postgres member: the recipe in `shoal/plugins/postgres/image/`.

The operator and member tags carry the package version and a short hash of what goes into
their build context, so building an unchanged tree again is a no-op.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import shoal
from shoal import __version__, names
from shoal.platform.engine import PlatformError, apt_install
from shoal.platform.mirror import host_debian_mirror

Progress = Callable[[str], None]

BASE_PACKAGES = (
    "python3,python3-venv,postgresql-15,haproxy,iproute2,iptables,procps,"
    "ca-certificates,tini,iputils-ping"
)
BASE_SUITE = "bookworm"
SLIM_IMAGE = "debian:bookworm-slim"
PULL_TIMEOUT = 15.0
HASH_LENGTH = 8
LOCK_FILE = Path("/tmp/shoal-images.lock")
# Extra CAs the host trusts (e.g. a TLS-inspecting egress proxy): pip inside the build needs
# them too, so they are copied into the operator image's build context.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
EXCLUDED_DIRS = frozenset(
    {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", ".git"}
)
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".swp", "~", ".egg-info")

OPERATOR_REPO, _, _ = names.IMAGE_OPERATOR.partition(":")
POSTGRES_REPO, _, _ = names.IMAGE_POSTGRES.partition(":")


class ImageBuildError(PlatformError):
    """A build failed; the message ends with the last lines of its output."""


@dataclass(frozen=True)
class BuiltImages:
    base: str
    operator: str
    postgres: str
    operator_alias: str = names.IMAGE_OPERATOR
    postgres_alias: str = names.IMAGE_POSTGRES
    built: tuple[str, ...] = field(default=())  # tags this call (re)built; () = no-op

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _excluded(relative: Path) -> bool:
    return any(part in EXCLUDED_DIRS or part.endswith(EXCLUDED_SUFFIXES) for part in relative.parts)


def iter_tree(root: Path) -> Iterator[Path]:
    """Files under `root`, relative, sorted, without caches and editor droppings."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not _excluded(relative):
            yield relative


def hash_entries(entries: Iterable[tuple[str, bytes, bool]], extra: Iterable[str] = ()) -> str:
    """Short stable hash of (context path, content, executable) triples plus build args."""
    digest = hashlib.sha256()
    for name, content, executable in sorted(entries):
        digest.update(f"{name}\0{int(executable)}\0{len(content)}\0".encode())
        digest.update(content)
    for item in extra:
        digest.update(f"arg\0{item}\0".encode())
    return digest.hexdigest()[:HASH_LENGTH]


@dataclass(frozen=True)
class Context:
    """What goes into one build context: context path -> source file, plus generated files."""

    files: dict[str, Path]
    generated: dict[str, bytes]
    build_args: dict[str, str]

    def entries(self) -> Iterator[tuple[str, bytes, bool]]:
        for name, source in self.files.items():
            yield name, source.read_bytes(), bool(source.stat().st_mode & 0o111)
        for name, content in self.generated.items():
            yield name, content, False

    def digest(self) -> str:
        extra = [f"{k}={v}" for k, v in sorted(self.build_args.items())]
        return hash_entries(self.entries(), extra)

    def materialise(self, directory: Path) -> None:
        for name, source in self.files.items():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        for name, content in self.generated.items():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)


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


def postgres_context(root: Path, base: str) -> Context:
    plugin = root / "shoal" / "plugins" / "postgres"
    files = {rel.as_posix(): plugin / "image" / rel for rel in iter_tree(plugin / "image")}
    for agent in sorted(plugin.glob("agent*.py")):
        files[agent.name] = agent
    return Context(files, {}, {"BASE": base})


def resolve_images(root: Path | None = None) -> BuiltImages:
    """The exact tags for the current source tree, without building anything."""
    root = root or source_root()
    base = names.IMAGE_BASE
    op_hash = operator_context(root, base).digest()
    pg_hash = postgres_context(root, base).digest()
    return BuiltImages(
        base=base,
        operator=f"{names.IMAGE_OPERATOR}-{op_hash}",
        postgres=f"{names.IMAGE_POSTGRES}-{pg_hash}",
    )


# --- docker helpers -------------------------------------------------------------------


def image_exists(tag: str) -> bool:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


def image_id(tag: str) -> str | None:
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def run_streamed(
    args: list[str],
    what: str,
    *,
    cwd: Path | None = None,
    output: Progress | None = None,
    stdin: Any = subprocess.DEVNULL,
) -> None:
    """Run a command, passing its output lines on; raise with the last 30 lines on failure."""
    tail: deque[str] = deque(maxlen=30)
    with subprocess.Popen(
        args,
        cwd=cwd,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if output is not None:
                output(line)
        code = proc.wait()
    if code != 0:
        lines = "\n".join(tail)
        raise ImageBuildError(f"{what} failed (exit {code}); last output:\n{lines}")


def docker_tag(source: str, target: str) -> None:
    run_streamed(["docker", "tag", source, target], f"docker tag {source} {target}")


def docker_build(
    context: Context, tags: list[str], *, no_cache: bool, output: Progress | None
) -> None:
    with tempfile.TemporaryDirectory(prefix="shoal-build-") as tmp:
        directory = Path(tmp)
        context.materialise(directory)
        args = ["docker", "build", "--label", f"org.opencontainers.image.version={__version__}"]
        for tag in tags:
            args += ["--tag", tag]
        for key, value in sorted(context.build_args.items()):
            args += ["--build-arg", f"{key}={value}"]
        if no_cache:
            args.append("--no-cache")
        args.append(str(directory))
        run_streamed(args, f"docker build of {tags[0]}", output=output)


@contextmanager
def _build_lock() -> Iterator[None]:
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the base image -------------------------------------------------------------------


def _try_slim(timeout: float) -> bool:
    if image_exists(SLIM_IMAGE):
        return True
    try:
        result = subprocess.run(
            ["docker", "pull", SLIM_IMAGE],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _unmount_under(directory: Path) -> None:
    """debootstrap mounts /proc and /sys in its target; never delete through a mount."""
    prefix = str(directory.resolve())
    mounts = [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if len(line.split()) > 1
    ]
    for mount in sorted((m for m in mounts if m.startswith(prefix + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def _build_base_from_slim(tag: str, output: Progress | None) -> None:
    packages = BASE_PACKAGES.replace(",", " ")
    dockerfile = (
        f"FROM {SLIM_IMAGE}\n"
        "RUN apt-get update \\\n"
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        f"{packages} \\\n"
        " && apt-get clean && rm -rf /var/lib/apt/lists/*\n"
    )
    context = Context({}, {"Dockerfile": dockerfile.encode()}, {})
    docker_build(context, [tag], no_cache=False, output=output)


def _build_base_debootstrap(tag: str, progress: Progress | None, output: Progress | None) -> None:
    if shutil.which("debootstrap") is None:
        apt_install(["debootstrap"], progress)
    mirror = host_debian_mirror()
    if progress:
        progress(f"debootstrap {BASE_SUITE} from {mirror} (about a minute)")
    work = Path(tempfile.mkdtemp(prefix="shoal-base-", dir="/var/tmp"))
    rootfs = work / "rootfs"
    try:
        run_streamed(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                BASE_SUITE,
                str(rootfs),
                mirror,
            ],
            "debootstrap",
            output=output,
        )
        _unmount_under(rootfs)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        (rootfs / "etc/apt/sources.list").write_text(f"deb {mirror} {BASE_SUITE} main\n")
        if progress:
            progress(f"importing the root file system as {tag}")
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            run_streamed(["docker", "import", "-", tag], "docker import", stdin=tar.stdout)
            if tar.stdout is not None:
                tar.stdout.close()
            if tar.wait() != 0:
                raise ImageBuildError(f"tar of {rootfs} failed")
    finally:
        _unmount_under(rootfs)
        shutil.rmtree(work, ignore_errors=True)


def build_base(
    tag: str = names.IMAGE_BASE,
    *,
    progress: Progress | None = None,
    output: Progress | None = None,
    use_slim: bool = True,
) -> str:
    """Build the base image under `tag` (replacing any image of that tag)."""
    if use_slim and _try_slim(PULL_TIMEOUT):
        if progress:
            progress(f"building {tag} from {SLIM_IMAGE}")
        _build_base_from_slim(tag, output)
    else:
        _build_base_debootstrap(tag, progress, output)
    return tag


# --- everything -----------------------------------------------------------------------


def build_all(
    force: bool = False,
    progress: Progress | None = None,
    *,
    rebuild_base: bool = False,
    output: Progress | None = None,
) -> BuiltImages:
    """Make sure the base, operator and postgres images exist for this source tree.

    A tag that already exists is not rebuilt unless `force` (operator and member images,
    without Docker's layer cache) or `rebuild_base`. The stable aliases
    (`names.IMAGE_OPERATOR`, `names.IMAGE_POSTGRES`) are pointed at the exact tags.
    """
    root = source_root()
    wanted = resolve_images(root)
    built: list[str] = []
    with _build_lock():
        if rebuild_base or not image_exists(wanted.base):
            build_base(wanted.base, progress=progress, output=output)
            built.append(wanted.base)
        dockerfile = root / "shoal" / "plugins" / "postgres" / "image" / "Dockerfile"
        if not dockerfile.is_file():
            raise ImageBuildError(f"the PostgreSQL member image recipe is missing: {dockerfile}")
        jobs = (
            (wanted.postgres, wanted.postgres_alias, postgres_context(root, wanted.base)),
            (wanted.operator, wanted.operator_alias, operator_context(root, wanted.base)),
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
    return BuiltImages(
        base=wanted.base, operator=wanted.operator, postgres=wanted.postgres, built=tuple(built)
    )
