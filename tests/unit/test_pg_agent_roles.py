"""The agent's unauthenticated role checks (GET /primary, /replica) that the read-write
proxy's health check calls, served by the real handler with a stand-in agent."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.plugins.postgres.agent import api, pg

pytestmark = pytest.mark.unit


class FakeAgent:
    """The real Agent's role bookkeeping (serving_role) over stand-in process state."""

    def __init__(self) -> None:
        self.state = "running"
        self.running = True
        self.pg_role: str | None = "primary"

    def get_state(self) -> str:
        return self.state

    def pg_running(self) -> bool:
        return self.running

    serving_role = api.Agent.serving_role
    _lock = threading.Lock()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeAgent, str]]:
    fake = FakeAgent()

    def psql(sql: str, **kw: Any) -> str:
        raise AssertionError(f"the role check ran a query: {sql}")

    monkeypatch.setattr(pg, "psql", psql)
    handler = type("H", (api.Handler,), {"agent": fake, "timeout": 4.0})
    server = api.BoundedServer(("127.0.0.1", 0), handler)
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
    fake.pg_role = "standby"
    assert get(url + "/primary") == (503, {"role": "replica"})
    assert get(url + "/replica") == (200, {"role": "replica"})


@pytest.mark.parametrize(
    "change",
    [{"state": "stopped"}, {"state": "cloning"}, {"running": False}, {"pg_role": None}],
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


def test_a_flood_of_connections_is_bounded(
    served: tuple[FakeAgent, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections past MAX_CONCURRENT are closed at once; the agent still answers after."""
    import socket

    _, url = served
    host, port = url.removeprefix("http://").split(":")
    held = []
    try:
        for _ in range(api.MAX_CONCURRENT + 20):
            s = socket.create_connection((host, int(port)), timeout=5)
            held.append(s)  # idle: each holds a handler thread until its timeout
        extra = socket.create_connection((host, int(port)), timeout=5)
        extra.sendall(b"GET /primary HTTP/1.1\r\nHost: x\r\n\r\n")
        assert extra.recv(100) == b"", "a connection past the limit was served"
        extra.close()
    finally:
        for s in held:
            s.close()
    # Slots come back once the idle connections are gone.
    deadline = __import__("time").monotonic() + 10
    while True:
        try:
            assert get(url + "/primary")[0] == 200
            break
        except (OSError, AssertionError):
            assert __import__("time").monotonic() < deadline


def post(url: str, body: dict[str, Any], token: str = "t0ken") -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("token", [9 * 10**18, 1 << 53, 0, -3])
def test_an_implausible_fencing_token_is_refused_not_recorded(
    served: tuple[FakeAgent, str], monkeypatch: pytest.MonkeyPatch, token: int
) -> None:
    fake, url = served
    monkeypatch.setattr(pg, "read_secret", lambda name: "t0ken")
    recorded: list[int] = []
    fake.check_fence = recorded.append  # type: ignore[attr-defined]
    fake._op = threading.Lock()  # type: ignore[attr-defined]
    status, body = post(url + "/stop", {"token": token})
    assert status == 400 and "plausible" in body["error"]
    assert recorded == []


def test_a_renewal_alone_renews_without_a_query_and_needs_the_token(
    served: tuple[FakeAgent, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal.plugins.postgres.agent import lease

    fake, url = served
    monkeypatch.setattr(pg, "read_secret", lambda name: "t0ken")
    monkeypatch.setenv("SHOAL_TASK_ID", "task-7")
    fake.lease = lease.Lease()  # type: ignore[attr-defined]
    fake.check_fence = lambda token: None  # type: ignore[attr-defined]

    def renew(headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(url + "/lease", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    header = {lease.HEADER: "ttl=2.250;token=4;peers=orders_0"}
    assert renew(header)[0] == 401  # no bearer token
    auth = {"Authorization": "Bearer t0ken"}
    status, body = renew(auth)
    assert status == 400 and lease.HEADER in body["error"]
    assert fake.lease.renewed_at is None  # type: ignore[attr-defined]
    status, body = renew({**auth, **header})
    assert (status, body) == (200, {"task_id": "task-7", "role": "primary"})
    assert fake.lease.ttl == 2.25 and fake.lease.peers == ("orders_0",)  # type: ignore[attr-defined]
