"""Environment bring-up: a Docker engine that answers and a node that manages a swarm.

One code path for `shoal up`, the integration-test fixtures and `.ci/run`
(`python -m shoal.platform.engine`). Every step is idempotent: run it on a machine with no
Docker at all, with a stopped engine, or with everything already running.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]

DOCKERD_LOG = Path("/var/log/shoal-dockerd.log")
LOCK_FILE = Path("/tmp/shoal-platform.lock")
ENGINE_START_TIMEOUT = 60.0
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "a"}


class PlatformError(RuntimeError):
    """The environment cannot be brought up; the message says what to do."""


@dataclass(frozen=True)
class EngineInfo:
    docker_host: str | None  # DOCKER_HOST as set, None for the local default socket
    remote: bool  # True when DOCKER_HOST points at another machine
    server_version: str
    installed: bool  # this call installed docker.io
    started: bool  # this call started dockerd


@dataclass(frozen=True)
class SwarmInfo:
    node_id: str
    node_addr: str
    is_manager: bool
    initialised: bool  # this call ran `docker swarm init`


@dataclass(frozen=True)
class PlatformInfo:
    engine: EngineInfo
    swarm: SwarmInfo

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _run(
    args: list[str], *, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env} if env else None
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def docker_host() -> str | None:
    value = os.environ.get("DOCKER_HOST", "").strip()
    return value or None


def is_remote_host(host: str | None) -> bool:
    """A DOCKER_HOST other than a unix socket (or npipe) names another machine."""
    if host is None:
        return False
    return not (host.startswith("unix://") or host.startswith("npipe://"))


def parse_os_release(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            out[key] = value.strip().strip('"').strip("'")
    return out


def is_debian_like(os_release: dict[str, str]) -> bool:
    ids = {os_release.get("ID", "")} | set(os_release.get("ID_LIKE", "").split())
    return bool(ids & {"debian", "ubuntu"})


def _read_os_release() -> dict[str, str]:
    for candidate in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        if candidate.exists():
            return parse_os_release(candidate.read_text())
    return {}


def apt_install(packages: list[str], progress: Progress | None = None) -> None:
    """`apt-get update && apt-get install -y PACKAGES`, non-interactive (root, Debian)."""
    if os.geteuid() != 0 or not is_debian_like(_read_os_release()):
        raise PlatformError(
            f"missing {', '.join(packages)}: install them with your package manager "
            "(automatic installation needs root on Debian or Ubuntu)"
        )
    _say(progress, f"installing {' '.join(packages)} with apt-get")
    lock_opt = ["-o", "DPkg::Lock::Timeout=300"]
    for args in (
        ["apt-get", *lock_opt, "update"],
        ["apt-get", *lock_opt, "install", "-y", *packages],
    ):
        result = _run(args, timeout=900, env=APT_ENV)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise PlatformError(f"{' '.join(args)} failed:\n{tail}")


def engine_version() -> str | None:
    """The server version when the engine answers, else None."""
    if shutil.which("docker") is None:
        return None
    try:
        result = _run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=15)
    except subprocess.TimeoutExpired:
        return None
    version = result.stdout.strip()
    return version if result.returncode == 0 and version else None


def _log_tail(lines: int = 30) -> str:
    try:
        return "\n".join(DOCKERD_LOG.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _dockerd_pid(pidfile: Path = Path("/var/run/docker.pid")) -> int | None:
    """The pid of a live dockerd (one the package's init script may just have started)."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _start_dockerd(host: str | None, progress: Progress | None) -> subprocess.Popen[bytes] | None:
    if os.geteuid() != 0:
        raise PlatformError(
            "the Docker engine is not running and starting it needs root: "
            "run `sudo dockerd` (or `sudo systemctl start docker`) and retry"
        )
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl") and host is None:
        _say(progress, "starting docker with systemctl")
        if _run(["systemctl", "start", "docker"], timeout=90).returncode == 0:
            return None
    _say(progress, f"starting dockerd (log: {DOCKERD_LOG})")
    args = ["dockerd"]
    if host is not None:
        args += ["--host", host]
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with DOCKERD_LOG.open("ab") as log:
        # A new session: the engine outlives this process, its terminal and its test run.
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def _wait_for_engine(timeout: float, proc: subprocess.Popen[bytes] | None) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = engine_version()
        if version is not None:
            return version
        if proc is not None and proc.poll() is not None:
            raise PlatformError(
                f"dockerd exited with code {proc.returncode}; "
                f"last lines of {DOCKERD_LOG}:\n{_log_tail()}"
            )
        time.sleep(0.5)
    raise PlatformError(
        f"the Docker engine did not answer within {timeout:.0f} s; "
        f"last lines of {DOCKERD_LOG}:\n{_log_tail()}"
    )


@contextmanager
def _bringup_lock() -> Iterator[None]:
    """Serialise concurrent bring-ups on this machine (parallel test sessions, CLI)."""
    try:
        handle = LOCK_FILE.open("a")
    except OSError:  # unwritable /tmp: run unlocked rather than not at all
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_engine(progress: Progress | None = None) -> EngineInfo:
    """Make sure a Docker engine answers, installing and starting one locally if needed."""
    host = docker_host()
    remote = is_remote_host(host)
    if remote:
        if shutil.which("docker") is None:
            raise PlatformError("the `docker` command is missing: install the Docker CLI")
        version = engine_version()
        if version is None:
            raise PlatformError(f"the Docker engine at DOCKER_HOST={host} does not answer")
        return EngineInfo(host, True, version, installed=False, started=False)

    with _bringup_lock():
        installed = started = False
        if shutil.which("docker") is None or shutil.which("dockerd") is None:
            if not is_debian_like(_read_os_release()) or os.geteuid() != 0:
                raise PlatformError(
                    "Docker is not installed: install Docker Engine (Debian/Ubuntu: "
                    "`apt-get install docker.io`; elsewhere see https://docs.docker.com/"
                    "engine/install/) and retry"
                )
            apt_install(["docker.io"], progress)
            installed = True
        version = engine_version()
        if version is None:
            running = _dockerd_pid() if host is None else None
            if running is not None:
                _say(progress, f"waiting for dockerd (pid {running}) to answer")
                proc = None
            else:
                proc = _start_dockerd(host, progress)
                started = True
            version = _wait_for_engine(ENGINE_START_TIMEOUT, proc)
        _say(progress, f"Docker engine {version} is running")
        return EngineInfo(host, False, version, installed=installed, started=started)


def _swarm_state() -> dict[str, Any]:
    result = _run(["docker", "info", "--format", "{{json .Swarm}}"], timeout=30)
    if result.returncode != 0:
        raise PlatformError(f"`docker info` failed: {result.stderr.strip()}")
    state: dict[str, Any] = json.loads(result.stdout)
    return state


def ensure_swarm(progress: Progress | None = None) -> SwarmInfo:
    """Make this engine a swarm manager: `swarm init` only when it is in no swarm at all.

    An existing swarm is never reconfigured.
    """
    with _bringup_lock():
        initialised = False
        state = _swarm_state()
        local = str(state.get("LocalNodeState", ""))
        if local == "inactive":
            _say(progress, "initialising a single-node swarm (advertise 127.0.0.1)")
            result = _run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], timeout=60)
            if result.returncode != 0 and "already part of a swarm" not in result.stderr:
                raise PlatformError(f"`docker swarm init` failed: {result.stderr.strip()}")
            initialised = result.returncode == 0
            state = _swarm_state()
            local = str(state.get("LocalNodeState", ""))
        if local == "locked":
            raise PlatformError("the swarm is locked: run `docker swarm unlock` and retry")
        if local == "pending":
            raise PlatformError("this node is still joining a swarm; retry when it has joined")
        if local != "active":
            error = state.get("Error") or local
            raise PlatformError(f"this node's swarm is not usable: {error}")
        if not state.get("ControlAvailable"):
            raise PlatformError(
                "this node is a swarm worker: shoal must run on a swarm manager "
                "(run it there, or point DOCKER_HOST at a manager)"
            )
        node_id = str(state.get("NodeID", ""))
        _say(progress, f"swarm manager {node_id[:12]} is ready")
        return SwarmInfo(node_id, str(state.get("NodeAddr", "")), True, initialised)


def ensure_platform(progress: Progress | None = None) -> PlatformInfo:
    """A running engine that is a swarm manager. Idempotent."""
    engine = ensure_engine(progress)
    swarm = ensure_swarm(progress)
    return PlatformInfo(engine, swarm)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args

    def show(message: str) -> None:
        print(f"shoal: {message}", file=sys.stderr, flush=True)

    try:
        info = ensure_platform(show)
    except PlatformError as exc:
        print(f"shoal: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(info.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
