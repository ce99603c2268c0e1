"""The operator's side of a member agent's API, for every engine whose members run one:
HTTPS to the agent's port (`names.AGENT_PORT`) on the control network, the agent's
certificate verified against the database's CA for the member's name, the member's bearer
token in `Authorization`, JSON in and out. Failures are `AgentError` (an `ActionFailed`).

Each plugin chooses its own timeouts for probes; `ACTION_TIMEOUT` is the default for an
action. What an agent's paths are and what they answer is the plugin's business.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import aiohttp

from shoal import names
from shoal.credentials import DatabaseCredentials
from shoal.plugins.base import ActionFailed

# An action may wait for the engine (a promotion, an initiation) for most of a minute.
ACTION_TIMEOUT = aiohttp.ClientTimeout(total=90, connect=2.0)


class AgentError(ActionFailed):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the agent's HTTP status; None when it did not answer


class PlaintextAgent(AgentError):
    """The member's agent answered a TLS handshake in plain HTTP: it predates TLS."""


@functools.lru_cache(maxsize=1024)
def agent_tls(ca_pem: str) -> ssl.SSLContext:
    """The client side of the agent API's TLS: only a certificate the database's CA issued
    for the name called (the member's) is accepted. One context per CA, reused."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def _request(
    http: aiohttp.ClientSession,
    member: str,
    token: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    timeout: aiohttp.ClientTimeout,
    extra_headers: dict[str, str] | None,
    tls: ssl.SSLContext | None,
) -> Any:
    """One request; the answer's JSON value. An HTTP error status, no answer, or an answer
    that is no JSON is an `AgentError`."""
    url = f"{'https' if tls is not None else 'http'}://{member}:{names.AGENT_PORT}{path}"
    headers = {"Authorization": f"Bearer {token}", **(extra_headers or {})}
    try:
        async with http.request(
            method, url, json=body, headers=headers, timeout=timeout, ssl=tls or True
        ) as r:
            data: Any = await r.json(content_type=None)
            if r.status >= 400:
                err = data.get("error") if isinstance(data, dict) else data
                raise AgentError(f"{member} {path}: HTTP {r.status}: {err}", r.status)
            return data
    except aiohttp.ClientConnectorSSLError as e:
        # OpenSSL's reason code when the peer's first bytes are no TLS record at all.
        if getattr(e.os_error, "reason", None) == "WRONG_VERSION_NUMBER":
            raise PlaintextAgent(f"{member} {path}: the agent speaks plain HTTP") from e
        raise AgentError(f"{member} {path}: {type(e).__name__}: {e}") from e
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise AgentError(f"{member} {path}: {type(e).__name__}: {e}") from e


async def agent_call(
    http: aiohttp.ClientSession,
    member: str,
    token: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: aiohttp.ClientTimeout = ACTION_TIMEOUT,
    extra_headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """One request to a member's agent with `token`: over TLS with `tls`, else plain HTTP
    (only for an agent that predates TLS). An answer that is not an object comes back as
    `{"result": answer}`."""
    data = await _request(http, member, token, method, path, body, timeout, extra_headers, tls)
    return data if isinstance(data, dict) else {"result": data}


async def member_call(
    http: aiohttp.ClientSession,
    member: str,
    credentials: DatabaseCredentials,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: aiohttp.ClientTimeout = ACTION_TIMEOUT,
    extra_headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One request to a member's agent over TLS, with the member's own token; an answer
    that is not an object is an `AgentError`."""
    token = credentials.agent_token_for(member)
    tls = agent_tls(credentials.ca.cert_pem)
    data = await _request(http, member, token, method, path, body, timeout, extra_headers, tls)
    if not isinstance(data, dict):
        raise AgentError(f"{member} {path}: the answer is not an object")
    return data
