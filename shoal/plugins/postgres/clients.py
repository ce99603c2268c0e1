"""Host-side clients of a PostgreSQL database run by shoal, shared by the integration tests
and the benchmarks: SQL in a member's container over its local socket, and the clients of
netclients.py (containers on the database's network) with what they print read as it comes.

Each reader here sits beside the kind whose output it reads (netclients.py documents the
kinds and their lines). Single machine or lab: a client container and this process share
one kernel clock, so their `time.time()` stamps compare.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import IO, Any

from shoal import names
from shoal.plugins.postgres.netclients import launch

# The members' unix socket directory (agent/pg.py SOCK_DIR): a member's superuser logs in
# there without a password.
SOCKET_DIR = "/var/run/postgresql"


def psql_args(container: str, sql: str) -> list[str]:
    """`docker` arguments that run `sql` as the superuser in a member's container over its
    local socket, in the application database: unaligned, quiet, stopping at an error."""
    return [
        "exec", "-u", "postgres", container, "psql", "-h", SOCKET_DIR,
        "-d", names.APP_DATABASE, "-v", "ON_ERROR_STOP=1", "-Atqc", sql,
    ]  # fmt: skip


class NetClient:
    """One client of netclients.py, started by `launch` in the container `name`. A thread
    each reads its stdout (and its stderr, unless that was not piped) and hands every line
    to `line`: a full pipe would stall the client. A subclass sets up what `line` fills
    before calling this constructor, which starts the readers."""

    def __init__(self, proc: subprocess.Popen[str], name: str) -> None:
        self.name = name
        self.proc = proc
        streams = [(proc.stdout, True)] + (
            [(proc.stderr, False)] if proc.stderr is not None else []
        )
        self._readers = [
            threading.Thread(target=self._read, args=(stream, stdout), daemon=True)
            for stream, stdout in streams
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: IO[str] | None, stdout: bool) -> None:
        assert stream is not None
        for line in stream:
            self.line(line, stdout)

    def line(self, line: str, stdout: bool) -> None:
        """One line the client printed (on stdout when `stdout`, else on stderr)."""
        raise NotImplementedError

    def remove(self) -> None:
        """Remove the client's container: the client stops, its pipes close."""
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, check=False)

    def wait(self, timeout: float) -> None:
        """Wait for the client to end and for its readers to take in what it printed."""
        self.proc.wait(timeout=timeout)
        for t in self._readers:
            t.join(timeout=10)

    def stop(self, timeout: float = 60) -> None:
        self.remove()
        self.wait(timeout)


class IdsWriter(NetClient):
    """The `ids` client: inserts 1, 2, 3, ... into a table; the ids it prints were
    acknowledged (autocommit INSERT returned). Its error lines are kept in `errors`."""

    def __init__(
        self, network: str, image: str, cfg: dict[str, Any], name: str, label: str
    ) -> None:
        self._ids: list[int] = []
        # When each id's acknowledgement reached this process (time.time()).
        self.acked_at: dict[int, float] = {}
        self.errors: list[str] = []
        super().__init__(launch(network, image, "ids", cfg, name, label), name)

    def line(self, line: str, stdout: bool) -> None:
        line = line.strip()
        if stdout and line.isdigit():
            self.acked_at.setdefault(int(line), time.time())
            self._ids.append(int(line))
        elif line:
            self.errors.append(line)

    def so_far(self) -> set[int]:
        """The ids acknowledged until now."""
        return set(self._ids)

    def acknowledged(self, timeout: float) -> set[int]:
        """Wait for the writer to finish; every id it acknowledged."""
        self.wait(timeout)
        return set(self._ids)


class JsonLines(NetClient):
    """The `identity` and `sampler` clients: one JSON object a line, kept in `records`."""

    def __init__(
        self, network: str, image: str, kind: str, cfg: dict[str, Any], name: str, label: str
    ) -> None:
        self.records: list[dict[str, Any]] = []
        super().__init__(
            launch(network, image, kind, cfg, name, label, stderr=subprocess.DEVNULL), name
        )

    def line(self, line: str, stdout: bool) -> None:
        if line.startswith("{"):
            self.records.append(json.loads(line))


class TransitionsWriter(NetClient):
    """The `transitions` client: an INSERT loop as fast as it goes that prints only its
    transitions, kept split into fields: `ok|last <t_sent> <t_acked> <host> <n>`,
    `err <t> <message>`, `beat <t> <n>`."""

    def __init__(
        self, network: str, image: str, cfg: dict[str, Any], name: str, label: str
    ) -> None:
        self._lines: list[list[str]] = []
        self._lock = threading.Lock()
        proc = launch(network, image, "transitions", cfg, name, label, stderr=subprocess.DEVNULL)
        super().__init__(proc, name)

    def line(self, line: str, stdout: bool) -> None:
        parts = line.split(maxsplit=4)
        if parts:
            with self._lock:
                self._lines.append(parts)

    def snapshot(self) -> list[list[str]]:
        with self._lock:
            return list(self._lines)

    def acknowledged(self) -> int:
        """Writes acknowledged so far, as of the last heartbeat."""
        for ev in reversed(self.snapshot()):
            if ev[0] == "beat":
                return int(ev[2])
        return 0

    def first_ok_after(self, t: float, not_host: str) -> list[str] | None:
        for ev in self.snapshot():
            if ev[0] == "ok" and float(ev[2]) > t and ev[3] != not_host:
                return ev
        return None

    def last_ok_before(self, t: float) -> float | None:
        """Ack time of the last write before the outage that ends with the write sent at t
        (it may be acknowledged by the old primary a little after a fault began)."""
        best: float | None = None
        for ev in self.snapshot():
            if ev[0] in ("ok", "last") and float(ev[2]) < t:
                best = float(ev[2])
        return best

    def between(self, a: float, b: float) -> list[str]:
        """The transition lines in [a, b] (for the record)."""
        out = []
        for ev in self.snapshot():
            t = float(ev[1]) if ev[0] in ("err", "beat") else float(ev[2])
            if a <= t <= b and ev[0] != "beat":
                out.append(" ".join(ev)[:160])
        return out

    def errors_between(self, a: float, b: float) -> list[str]:
        return [
            ev[2] if len(ev) > 2 else ""
            for ev in self.snapshot()
            if ev[0] == "err" and a <= float(ev[1]) <= b
        ]
