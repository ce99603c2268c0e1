"""The host-side readers of the network clients (shoal/plugins/postgres/clients.py), on a
local process that prints what a client container would: no Docker."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from shoal.plugins.postgres import clients

pytestmark = pytest.mark.unit


def fake_launch(out: str, err: str = "") -> Any:
    """A `launch` whose client prints `out` on stdout and `err` on stderr."""

    def launch(
        network: str, image: str, kind: str, cfg: dict[str, Any], name: str, label: str,
        stderr: int = subprocess.PIPE,
    ) -> subprocess.Popen[str]:  # fmt: skip
        script = f"import sys; sys.stdout.write({out!r}); sys.stderr.write({err!r})"
        return subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=stderr, text=True
        )

    return launch


def test_ids_writer_keeps_acknowledged_ids_and_error_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        clients, "launch", fake_launch("1\n2\n# note\n3\n", "# OperationalError: x\n")
    )
    w = clients.IdsWriter("net", "image", {}, "w", "test-writer")
    assert w.acknowledged(timeout=30) == {1, 2, 3}
    assert w.so_far() == {1, 2, 3} and set(w.acked_at) == {1, 2, 3}
    assert sorted(w.errors) == ["# OperationalError: x", "# note"]


def test_json_lines_keeps_objects_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clients, "launch", fake_launch('{"id": 1}\nnoise\n{"id": 2}\n', "x\n"))
    c = clients.JsonLines("net", "image", "identity", {}, "c", "test-writer")
    c.wait(timeout=30)
    assert c.records == [{"id": 1}, {"id": 2}]
    assert c.proc.stderr is None  # discarded: nothing reads it


def test_transitions_writer_finds_the_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = (
        "ok 10.0 10.1 old 1\nbeat 11.0 60\nlast 11.5 11.6 old 70\n"
        "err 12.0 OperationalError: server closed the connection\n"
        "ok 14.0 14.2 new 71\nbeat 15.0 120\n"
    )
    monkeypatch.setattr(clients, "launch", fake_launch(lines))
    w = clients.TransitionsWriter("net", "image", {}, "w", "bench-writer")
    w.wait(timeout=30)
    assert w.acknowledged() == 120
    first = w.first_ok_after(12.0, "old")
    assert first is not None and first[:4] == ["ok", "14.0", "14.2", "new"]
    assert w.first_ok_after(12.0, "new") is None
    assert w.last_ok_before(14.0) == 11.6
    assert len(w.errors_between(11.9, 12.1)) == 1 and w.errors_between(12.1, 20) == []
    assert [x.split()[0] for x in w.between(11.0, 14.5)] == ["last", "err", "ok"]


def test_psql_args_run_sql_as_the_superuser_over_the_local_socket() -> None:
    args = clients.psql_args("cid", "SELECT 1")
    assert args[:4] == ["exec", "-u", "postgres", "cid"]
    assert args[-2:] == ["-Atqc", "SELECT 1"]
    assert "ON_ERROR_STOP=1" in args and clients.SOCKET_DIR in args
