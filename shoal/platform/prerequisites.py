"""Host tools the test suite needs, installed the way `make up` installs the engine.

`make test` runs `python -m shoal.platform.prerequisites test` first, so the README's test
command alone passes on a fresh Debian machine: nothing is left for `.ci/run` (or a person)
to install by hand. Each tool names the Debian packages that provide it and why it is needed.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shoal.platform.engine import PlatformError, Progress, apt_install

# Where Debian puts the tools (debootstrap lives in /usr/sbin, absent from some users' PATH).
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
POLICY_RC = Path("/usr/sbin/policy-rc.d")


@dataclass(frozen=True)
class Tool:
    command: str
    packages: tuple[str, ...]
    why: str


TEST_TOOLS: tuple[Tool, ...] = (
    Tool("promtool", ("prometheus",), "alert rules and dashboard queries (promtool test rules)"),
    Tool("chromium", ("chromium", "fonts-liberation"), "the status page test (headless Chromium)"),
    Tool("debootstrap", ("debootstrap",), "the local base image (no registry to pull from)"),
)

SETS: dict[str, tuple[Tool, ...]] = {"test": TEST_TOOLS}


def find(command: str) -> str | None:
    path = os.environ.get("PATH", "")
    extra = ":".join(d for d in SYSTEM_DIRS if d not in path.split(":"))
    return shutil.which(command, path=f"{path}:{extra}" if extra else path)


def missing(tools: tuple[Tool, ...]) -> list[Tool]:
    return [t for t in tools if find(t.command) is None]


@contextmanager
def _no_daemon_starts() -> Iterator[None]:
    """Debian's policy-rc.d convention: packages installed now (prometheus) must not start
    their services; the tests start what they need themselves."""
    if POLICY_RC.exists():
        yield
        return
    POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
    POLICY_RC.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC.unlink(missing_ok=True)


def ensure_tools(tools: tuple[Tool, ...], progress: Progress | None = None) -> list[str]:
    """Install the packages of every missing tool; returns the packages installed."""
    absent = missing(tools)
    if not absent:
        return []
    packages = sorted({p for t in absent for p in t.packages})
    if progress is not None:
        for t in absent:
            progress(f"missing {t.command} ({t.why})")
    with _no_daemon_starts():
        apt_install(packages, progress)
    still = missing(tools)
    if still:
        raise PlatformError(
            "installed "
            + " ".join(packages)
            + " but still missing: "
            + ", ".join(t.command for t in still)
        )
    return packages


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in SETS:
        choices = ",".join(SETS)
        print(f"usage: python -m shoal.platform.prerequisites {{{choices}}}", file=sys.stderr)
        return 2

    def show(message: str) -> None:
        print(f"shoal: {message}", file=sys.stderr, flush=True)

    try:
        installed = ensure_tools(SETS[args[0]], show)
    except PlatformError as exc:
        show(str(exc))
        return 1
    show(f"{args[0]} tools present" + (f" (installed {' '.join(installed)})" if installed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
