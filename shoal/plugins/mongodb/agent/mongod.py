"""mongod as the agent's child process: its command line and its cache size.

The data directory is in the container's writable layer (no volume): it dies with the
container, and a replaced member starts empty and is re-seeded by the replica set's
initial sync once the operator adds it to the set's config.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .tls import TlsFiles

PORT = 27017
BINARY = "/usr/bin/mongod"
MIB = 1 << 20
GIB = 1 << 30
# WiredTiger's smallest cache (MongoDB manual, storage.wiredTiger.engineConfig.cacheSizeGB).
MIN_CACHE_GB = 0.25
# What the container keeps outside the cache: mongod's own memory, connections, the agent.
RESERVED_BYTES = 256 * MIB
CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
NO_LIMIT = 1 << 60  # cgroup v1 writes a huge number for "no limit"


@dataclass(frozen=True)
class MongodSettings:
    replica_set: str  # the database's name (`--replSet`)
    dbpath: Path
    keyfile: Path
    tls: TlsFiles
    cache_gb: float | None = None  # None: mongod's own default
    port: int = PORT
    binary: str = BINARY


def command(s: MongodSettings) -> list[str]:
    """mongod's arguments. TLS is required on every connection, members' and clients'
    (`requireTLS`); members present their certificate to each other and verify the peer's
    against the database's CA. Clients (drivers, the operator) bring no certificate
    (`--tlsAllowConnectionsWithoutCertificates`) and authenticate with SCRAM; members
    authenticate to each other with the keyFile."""
    args = [
        s.binary,
        "--replSet", s.replica_set,
        "--bind_ip_all",
        "--port", str(s.port),
        "--dbpath", str(s.dbpath),
        "--keyFile", str(s.keyfile),
        "--tlsMode", "requireTLS",
        "--tlsCertificateKeyFile", str(s.tls.key_and_certificate),
        "--tlsCAFile", str(s.tls.ca),
        "--tlsAllowConnectionsWithoutCertificates",
        "--nounixsocket",
        # The agent initiates the set and creates the first user through it; closed as
        # soon as that user exists.
        "--setParameter", "enableLocalhostAuthBypass=true",
    ]  # fmt: skip
    if s.cache_gb is not None:
        args += ["--wiredTigerCacheSizeGB", f"{s.cache_gb:.2f}"]
    return args


def cache_size_gb(limit_bytes: int | None) -> float | None:
    """WiredTiger's cache for a container limited to `limit_bytes`: half of what is left
    after RESERVED_BYTES, in steps of 0.05 GB, never below MIN_CACHE_GB; None without a
    limit (mongod then sizes it from the host's memory)."""
    if limit_bytes is None or limit_bytes <= 0 or limit_bytes >= NO_LIMIT:
        return None
    half = max(limit_bytes - RESERVED_BYTES, 0) / 2 / GIB
    return max(MIN_CACHE_GB, int(half * 20) / 20)


def memory_limit(paths: tuple[Path, ...] = CGROUP_LIMITS) -> int | None:
    """The container's memory limit in bytes, from its cgroup (None: none or unreadable)."""
    for path in paths:
        try:
            raw = path.read_text().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        if raw.isdigit():
            return int(raw)
    return None


class Mongod:
    """The child mongod. Its output goes to the container's (`docker service logs`)."""

    def __init__(self, settings: MongodSettings) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.settings.dbpath.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._proc = subprocess.Popen(command(self.settings), stdin=subprocess.DEVNULL)

    def wait(self) -> int:
        """Block until mongod exits; its exit code."""
        if self._proc is None:
            raise RuntimeError("mongod was not started")
        return self._proc.wait()

    def stop(self, timeout: float) -> None:
        """SIGTERM (mongod's clean shutdown), SIGKILL after `timeout` seconds."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
