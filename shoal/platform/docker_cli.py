"""Building images with the `docker` command: contexts, their hashes, streamed builds."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal import __version__
from shoal.platform.engine import PlatformError

Progress = Callable[[str], None]

HASH_LENGTH = 8
EXCLUDED_DIRS = frozenset(
    {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", ".git"}
)
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".swp", "~", ".egg-info")


class ImageBuildError(PlatformError):
    """A build failed; the message ends with the last lines of its output."""


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
