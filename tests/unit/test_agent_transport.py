"""How the operator talks to a member's agent (plugins/agent_transport.py, and the
PostgreSQL plugin's fallbacks on it): over TLS, the agent's certificate checked against the
database's CA for the member's name, and plain HTTP only for a PostgreSQL agent that answers
a TLS handshake in plain HTTP (one that predates TLS). Real sockets on loopback: the agent's
own server class on one side, the operator's client on the other."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest

from shoal import names
from shoal.credentials import DatabaseCredentials
from shoal.plugins import agent_transport
from shoal.plugins.agent_transport import AgentError, PlaintextAgent
from shoal.plugins.postgres import plugin
from shoal.plugins.postgres.agent import lease
from shoal.plugins.postgres.agent.api import BoundedServer

MEMBER = "localhost"  # the name called, as the certificate lists it


class StateHandler(BaseHTTPRequestHandler):
    """Answers with the state document and what it was sent; `token` (when set) is the only
    bearer token it accepts, `answer` (when set) replaces its answer."""

    token: ClassVar[str | None] = None
    answer: ClassVar[tuple[int, Any] | None] = None

    def do_GET(self) -> None:
        self.reply(None)

    def do_POST(self) -> None:
        self.reply(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

    def reply(self, body: object) -> None:
        status, doc = self.answer or (
            200,
            {
                "state": "running",
                "path": self.path,
                "method": self.command,
                "authorization": self.headers.get("Authorization"),
                "lease": self.headers.get(lease.HEADER),
                "body": body,
            },
        )
        if self.token is not None and self.headers.get("Authorization") != f"Bearer {self.token}":
            status, doc = 401, {"error": "unauthorized"}
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def creds(uid: str) -> DatabaseCredentials:
    return DatabaseCredentials.derive(b"k" * 32, uid)


def server_tls(c: DatabaseCredentials, tmp: Path) -> ssl.SSLContext:
    issued = c.ca.issue(MEMBER, [MEMBER], datetime.now(UTC))
    (tmp / "key.pem").write_text(issued.key_pem)
    (tmp / "cert.pem").write_text(issued.cert_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


class Agent:
    """The agent's server on a loopback port, plain or TLS; `serve` swaps it in place."""

    def __init__(self) -> None:
        self.server: BoundedServer | None = None
        self.port = 0

    def serve(self, tls: ssl.SSLContext | None) -> None:
        self.stop()
        self.server = BoundedServer(("127.0.0.1", self.port), StateHandler, tls)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    a = Agent()
    a.serve(None)
    monkeypatch.setattr(names, "AGENT_PORT", a.port)
    monkeypatch.setattr(plugin, "SCHEMES", plugin.AgentSchemes())
    monkeypatch.setattr(StateHandler, "token", None)
    monkeypatch.setattr(StateHandler, "answer", None)
    yield a
    a.stop()


def call(c: DatabaseCredentials) -> dict[str, object]:
    async def go() -> dict[str, object]:
        async with aiohttp.ClientSession() as http:
            return await plugin.member_call(
                http, MEMBER, c, "GET", "/state", timeout=aiohttp.ClientTimeout(total=5)
            )

    return asyncio.run(go())


def test_the_agent_is_called_over_tls_with_its_certificate_checked(
    agent: Agent, tmp_path: Path
) -> None:
    c = creds("db-one")
    agent.serve(server_tls(c, tmp_path))
    assert call(c)["state"] == "running"
    assert not plugin.SCHEMES.plaintext(MEMBER)


def test_a_certificate_from_another_ca_is_refused_and_never_downgraded(
    agent: Agent, tmp_path: Path
) -> None:
    agent.serve(server_tls(creds("db-other"), tmp_path))
    with pytest.raises(AgentError) as err:
        call(creds("db-one"))
    assert not isinstance(err.value, PlaintextAgent)
    assert not plugin.SCHEMES.plaintext(MEMBER)


def test_an_agent_that_predates_tls_is_spoken_to_in_plain_http_until_it_is_recreated(
    agent: Agent, tmp_path: Path
) -> None:
    c = creds("db-one")
    assert call(c)["state"] == "running"  # the plain server from the fixture
    assert plugin.SCHEMES.plaintext(MEMBER)
    agent.serve(server_tls(c, tmp_path))  # re-created with its certificate
    with pytest.raises(AgentError):
        call(c)  # plain HTTP to a TLS server: no answer, so TLS is tried next
    assert not plugin.SCHEMES.plaintext(MEMBER)
    assert call(c)["state"] == "running"


def test_postgres_sends_the_members_own_token_and_the_lease_header(
    agent: Agent, tmp_path: Path
) -> None:
    c = creds("db-one")
    agent.serve(server_tls(c, tmp_path))

    async def go() -> dict[str, object]:
        async with aiohttp.ClientSession() as http:
            return await plugin.member_call(
                http, MEMBER, c, "POST", "/promote", {"token": 3}, extra_headers={lease.HEADER: "x"}
            )

    answer = asyncio.run(go())
    assert answer["authorization"] == f"Bearer {c.agent_token_for(MEMBER)}"
    assert answer["lease"] == "x"
    assert (answer["method"], answer["path"], answer["body"]) == ("POST", "/promote", {"token": 3})


def test_postgres_asks_again_with_the_database_wide_token_after_a_401(
    agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = creds("db-one")
    agent.serve(server_tls(c, tmp_path))
    monkeypatch.setattr(StateHandler, "token", c.agent_token)
    assert call(c)["authorization"] == f"Bearer {c.agent_token}"


def test_postgres_a_non_object_answer_is_wrapped(agent: Agent, tmp_path: Path) -> None:
    c = creds("db-one")
    agent.serve(server_tls(c, tmp_path))
    StateHandler.answer = (200, [1, 2])
    assert call(c) == {"result": [1, 2]}


# --- agent_transport.member_call: TLS only, the member's own token (the MongoDB plugin) ---
def transport_call(c: DatabaseCredentials, method: str = "GET", **kw: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            return await agent_transport.member_call(http, MEMBER, c, method, "/state", **kw)

    return asyncio.run(go())


def test_member_call_over_tls_with_the_members_own_token(agent: Agent, tmp_path: Path) -> None:
    c = creds("db-one")
    agent.serve(server_tls(c, tmp_path))
    answer = transport_call(c, "POST", body={"token": 5}, extra_headers={"X-Other": "y"})
    assert answer["authorization"] == f"Bearer {c.agent_token_for(MEMBER)}"
    assert (answer["method"], answer["body"], answer["lease"]) == ("POST", {"token": 5}, None)


def test_member_call_never_speaks_plain_http(agent: Agent) -> None:
    with pytest.raises(PlaintextAgent):
        transport_call(creds("db-one"))  # the plain server from the fixture


def test_member_call_refuses_another_cas_certificate(agent: Agent, tmp_path: Path) -> None:
    agent.serve(server_tls(creds("db-other"), tmp_path))
    with pytest.raises(AgentError) as err:
        transport_call(creds("db-one"))
    assert err.value.status is None and not isinstance(err.value, PlaintextAgent)


def test_member_call_does_not_fall_back_to_the_database_wide_token(
    agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = creds("db-one")
    agent.serve(server_tls(c, tmp_path))
    monkeypatch.setattr(StateHandler, "token", c.agent_token)
    with pytest.raises(AgentError) as err:
        transport_call(c)
    assert err.value.status == 401 and "unauthorized" in str(err.value)


@pytest.mark.parametrize(
    ("answer", "status"),
    [((200, [1, 2]), None), ((409, {"error": "fenced"}), 409), ((500, "boom"), 500)],
)
def test_member_call_errors(
    agent: Agent, tmp_path: Path, answer: tuple[int, Any], status: int | None
) -> None:
    c = creds("db-one")
    agent.serve(server_tls(c, tmp_path))
    StateHandler.answer = answer
    with pytest.raises(AgentError) as err:
        transport_call(c)
    assert err.value.status == status


def test_member_call_no_answer_is_an_agent_error(agent: Agent) -> None:
    agent.stop()
    with pytest.raises(AgentError) as err:
        transport_call(creds("db-one"), timeout=aiohttp.ClientTimeout(total=2))
    assert err.value.status is None


def test_one_tls_context_per_ca() -> None:
    one, other = creds("db-one").ca.cert_pem, creds("db-other").ca.cert_pem
    ctx = agent_transport.agent_tls(one)
    assert ctx is agent_transport.agent_tls(one) and ctx is not agent_transport.agent_tls(other)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
