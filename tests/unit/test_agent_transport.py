"""How the operator talks to a member's agent: over TLS, the agent's certificate checked
against the database's CA for the member's name, and plain HTTP only for an agent that
answers a TLS handshake in plain HTTP (one that predates TLS). Real sockets on loopback:
the agent's own server class on one side, the plugin's client on the other."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import aiohttp
import pytest

from shoal import names
from shoal.credentials import DatabaseCredentials
from shoal.plugins.postgres import plugin
from shoal.plugins.postgres.agent.api import BoundedServer

MEMBER = "localhost"  # the name called, as the certificate lists it


class StateHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        data = json.dumps({"state": "running", "path": self.path}).encode()
        self.send_response(200)
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
    with pytest.raises(plugin.AgentError) as err:
        call(creds("db-one"))
    assert not isinstance(err.value, plugin.PlaintextAgent)
    assert not plugin.SCHEMES.plaintext(MEMBER)


def test_an_agent_that_predates_tls_is_spoken_to_in_plain_http_until_it_is_recreated(
    agent: Agent, tmp_path: Path
) -> None:
    c = creds("db-one")
    assert call(c)["state"] == "running"  # the plain server from the fixture
    assert plugin.SCHEMES.plaintext(MEMBER)
    agent.serve(server_tls(c, tmp_path))  # re-created with its certificate
    with pytest.raises(plugin.AgentError):
        call(c)  # plain HTTP to a TLS server: no answer, so TLS is tried next
    assert not plugin.SCHEMES.plaintext(MEMBER)
    assert call(c)["state"] == "running"
