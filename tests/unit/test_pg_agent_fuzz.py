"""The member agent's HTTP API under hostile input (docs/security.md, "Bad input"): the real
handler and the real `Agent` of an empty member, served on localhost, with every way of
running a command (psql, initdb, pg_ctl, ...) made to fail the test. Whatever arrives, the
answer is a 4xx with a JSON error, nothing runs, and the recorded fencing token moves only
for an authenticated request bearing a plausible, newer one."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal import names
from shoal.plugins.postgres.agent import api, member, pg

pytestmark = pytest.mark.unit

TOKEN = "agent-token-for-the-fuzz-test-0123456789"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ROUTES = sorted(api.ROUTES)
# Routes whose action needs a running PostgreSQL: on an empty member every well-formed
# request is refused (409) before anything runs, so any body may be sent to them.
NEEDS_RUNNING = ("/follow", "/promote", "/demote", "/configure", "/slots")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


class Served:
    def __init__(self, port: int, check_port: int, a: member.Agent, fence_file: Path) -> None:
        self.port, self.check_port, self.agent, self.fence_file = port, check_port, a, fence_file

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        port: int | None = None,
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            conn.close()

    def post(self, path: str, body: Any, auth: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = f"Bearer {auth}"
        return self.request("POST", path, json.dumps(body).encode(), headers)

    def fence(self) -> str | None:
        return self.fence_file.read_text() if self.fence_file.exists() else None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("agent")
    (root / "secrets").mkdir()
    (root / "secrets" / "agent-token").write_text(TOKEN)
    data = root / "state" / "pgdata"
    data.parent.mkdir()
    mp.setattr(pg, "DATA_DIR", data)
    mp.setattr(pg, "STATE_DIR", data.parent)
    mp.setattr(pg, "SECRETS_DIR", root / "secrets")
    fence_file = data.parent / "fence.json"
    mp.setattr(member, "FENCE_FILE", fence_file)
    mp.setattr(member, "CLONE_MARKER", data.parent / "clone-in-progress")
    mp.setattr(member, "BOOTSTRAP_MARKER", data.parent / "bootstrap-in-progress")

    def forbidden(*args: Any, **kw: Any) -> Any:
        raise AssertionError(f"a request ran a command: {args[:1]}")

    mp.setattr(subprocess, "run", forbidden)
    mp.setattr(subprocess, "Popen", forbidden)
    a = member.Agent("fuzz-0")
    assert a.get_state() == "empty"
    handler = type("H", (api.Handler,), {"agent": a, "timeout": 5.0})
    checks = type("C", (api.CheckHandler,), {"agent": a, "timeout": 5.0})
    servers = [
        api.BoundedServer(("127.0.0.1", 0), handler),
        api.BoundedServer(("127.0.0.1", 0), checks),
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Served(servers[0].server_address[1], servers[1].server_address[1], a, fence_file)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        mp.undo()


def _is_clean_refusal(status: int, body: Any) -> bool:
    return 400 <= status < 500 and isinstance(body, dict) and isinstance(body.get("error"), str)


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from([*ROUTES, "/state", "/nope", "/state/../fence"]),
    auth=st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    body=json_values,
)
def test_without_the_bearer_token_nothing_is_done(
    served: Served, method: str, path: str, auth: str | None, body: Any
) -> None:
    before = served.fence()
    headers = {} if auth is None else {"Authorization": f"Bearer {auth}"}
    if auth == TOKEN:
        headers = {}
    status, out = served.request(method, path, json.dumps(body).encode(), headers)
    assert status == 401 and _is_clean_refusal(status, out), (status, out)
    assert served.fence() == before


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from([*ROUTES, "/state", "/nope"]),
    body=json_values,
)
def test_the_check_port_takes_no_token_and_does_nothing(
    served: Served, method: str, path: str, body: Any
) -> None:
    """The port the database network sees answers the role checks only: even with the
    member's own token, every action and `/state` is a 404 there and nothing changes."""
    before = served.fence()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, out = served.request(
        method, path, json.dumps(body).encode(), headers, port=served.check_port
    )
    assert status == 404 and _is_clean_refusal(status, out), (status, out)
    assert served.fence() == before
    assert served.request("GET", "/primary", port=served.check_port) == (503, {"role": None})
    assert served.request("GET", "/health", port=served.check_port) == (200, {"ok": True})


def test_the_agent_finds_its_address_on_the_control_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API binds to the address the container has on the control network (here the
    loopback network stands in for it: the lookup is the kernel's routing, no packet sent)."""
    monkeypatch.setenv("SHOAL_CONTROL_SUBNETS", "127.0.0.0/8")
    assert pg.control_address() == "127.0.0.1"
    monkeypatch.setenv("SHOAL_CONTROL_SUBNETS", "198.51.100.0/24")  # TEST-NET-2: no interface
    assert pg.control_address() is None
    monkeypatch.delenv("SHOAL_CONTROL_SUBNETS")
    assert pg.control_address() is None


def test_the_ports_agree_with_the_operator() -> None:
    assert (api.AGENT_PORT, api.CHECK_PORT) == (names.AGENT_PORT, names.CHECK_PORT)


@FUZZ
@given(path=st.sampled_from(ROUTES), raw=st.binary(max_size=300))
def test_a_body_that_is_not_a_json_object_with_a_token_is_refused(
    served: Served, path: str, raw: bytes
) -> None:
    before = served.fence()
    status, out = served.request(
        "POST", path, raw, {"Authorization": f"Bearer {TOKEN}", "Content-Type": "x/y"}
    )
    assert _is_clean_refusal(status, out), (raw, status, out)
    assert served.fence() == before


@FUZZ
@given(
    path=st.sampled_from(ROUTES),
    token=st.integers(max_value=0)
    | st.integers(min_value=api.MAX_FENCE_TOKEN)
    | st.floats()
    | st.text(max_size=20)
    | st.booleans()
    | st.none(),
    rest=st.dictionaries(st.text(max_size=12), json_values, max_size=4),
)
def test_an_implausible_fencing_token_is_refused_and_not_recorded(
    served: Served, path: str, token: Any, rest: dict[str, Any]
) -> None:
    before = served.fence()
    status, out = served.post(path, {**rest, "token": token})
    assert status == 400 and _is_clean_refusal(status, out), (token, status, out)
    assert served.fence() == before


@FUZZ
@given(
    path=st.sampled_from(NEEDS_RUNNING),
    fields=st.dictionaries(
        st.sampled_from(
            ["upstream", "slot", "slots", "parameters", "synchronous_standby_names", "x"]
        ),
        json_values,
        max_size=4,
    ),
)
def test_any_body_for_an_action_on_an_empty_member_is_a_clean_refusal(
    served: Served, path: str, fields: dict[str, Any]
) -> None:
    token = served.agent.fence + 1
    status, out = served.post(path, {**fields, "token": token})
    assert _is_clean_refusal(status, out), (fields, status, out)
    assert served.agent.get_state() == "empty"
    stale = served.post(path, {**fields, "token": max(1, token - 5)})
    assert _is_clean_refusal(*stale), stale


def test_an_oversized_body_is_refused_unread(served: Served) -> None:
    status, out = served.request(
        "POST",
        "/configure",
        b"{}",
        {"Authorization": f"Bearer {TOKEN}", "Content-Length": str(api.MAX_BODY + 1)},
    )
    assert status == 413 and _is_clean_refusal(status, out)


@pytest.mark.parametrize("path", ["/promote", "/configure"])
def test_a_nul_byte_in_synchronous_standby_names_is_a_400_naming_the_field(
    served: Served, path: str
) -> None:
    """Found by the fuzzer above: PostgreSQL cannot take a NUL byte in a literal, and the
    agent answered 500."""
    body = {"token": served.agent.fence + 1, "synchronous_standby_names": "ANY 1 (\x00)"}
    status, out = served.post(path, body)
    assert status == 400, (status, out)
    assert "synchronous_standby_names" in out["error"]
