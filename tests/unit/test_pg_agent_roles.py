"""The agent's unauthenticated role checks (GET /primary, /replica) that the read-write
proxy's health check calls, served by the real handler with a stand-in agent."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from shoal.plugins.postgres import agent, agent_pg

pytestmark = pytest.mark.unit


class FakeAgent:
    def __init__(self) -> None:
        self.state = "running"
        self.running = True
        self.in_recovery: str | None = "f"  # None: psql fails

    def get_state(self) -> str:
        return self.state

    def pg_running(self) -> bool:
        return self.running


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeAgent, str]]:
    fake = FakeAgent()

    def psql(sql: str, **kw: Any) -> str:
        assert "pg_is_in_recovery" in sql and kw["timeout"] <= 2.0
        if fake.in_recovery is None:
            raise agent_pg.PgError("could not connect")
        return fake.in_recovery

    monkeypatch.setattr(agent_pg, "psql", psql)
    handler = type("H", (agent.Handler,), {"agent": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_primary_answers_200_only_on_primary(served: tuple[FakeAgent, str]) -> None:
    fake, url = served
    assert get(url + "/primary") == (200, {"role": "primary"})
    assert get(url + "/replica") == (503, {"role": "primary"})
    fake.in_recovery = "t"
    assert get(url + "/primary") == (503, {"role": "replica"})
    assert get(url + "/replica") == (200, {"role": "replica"})


@pytest.mark.parametrize(
    "change",
    [{"state": "stopped"}, {"state": "cloning"}, {"running": False}, {"in_recovery": None}],
)
def test_not_running_is_neither(served: tuple[FakeAgent, str], change: dict[str, Any]) -> None:
    fake, url = served
    for k, v in change.items():
        setattr(fake, k, v)
    assert get(url + "/primary") == (503, {"role": None})
    assert get(url + "/replica") == (503, {"role": None})


def test_role_checks_need_no_token_but_state_does(served: tuple[FakeAgent, str]) -> None:
    _, url = served
    assert get(url + "/primary")[0] == 200
    assert get(url + "/state")[0] == 401
    assert get(url + "/primaryx")[0] == 401
