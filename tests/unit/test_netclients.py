"""The in-container clients' reconnect loop (shoal/plugins/postgres/netclients.py), on
fakes: pure."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.plugins.postgres import netclients

pytestmark = pytest.mark.unit


class Conn:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_an_error_closes_the_connection_and_the_next_step_reconnects() -> None:
    made: list[Conn] = []
    calls: list[int] = []
    errors: list[str] = []

    def connect() -> Conn:
        made.append(Conn())
        return made[-1]

    def step(conn: Any) -> None:
        calls.append(len(made))
        if len(calls) == 2:
            raise RuntimeError("server closed the connection")
        if len(calls) >= 4:
            raise TimeoutError("done")

    netclients.reconnecting(connect, step, 0.2, 0.01, lambda e: errors.append(str(e)))
    assert calls[:4] == [1, 1, 2, 2]  # the failed step's connection is replaced
    assert made[0].closed and made[-1].closed
    assert errors[0] == "server closed the connection"


def test_unknown_kind_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert netclients.main(["nope"]) == 2
    assert "usage" in capsys.readouterr().err
