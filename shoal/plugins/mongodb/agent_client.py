"""The operator's side of the member agent's API (agent/api.py): HTTPS to port 8008 on the
control network, the agent's certificate verified against the database's CA and the
member's name, with the member's own bearer token.

The PostgreSQL plugin has its own copy of this transport (plugins/postgres/plugin.py:
agent_call) with its pre-TLS and pre-per-member-token fallbacks; a MongoDB member never
predates either, so this one has neither. Both could move to one engine-neutral module.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import aiohttp

from shoal import names
from shoal.credentials import DatabaseCredentials
from shoal.plugins.base import ActionFailed

# A member's agent answers `GET /state` in milliseconds when its mongod does (each of the
# three commands has 1.5 s to select the server); a connect that takes longer than 0.3 s
# goes to a container that just died.
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5.0, connect=1.0, sock_connect=0.3)
# POST /initiate waits up to 30 s for the member to become primary, then creates the users.
ACTION_TIMEOUT = aiohttp.ClientTimeout(total=90, connect=2.0)


class AgentError(ActionFailed):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the agent's HTTP status; None when it did not answer


@functools.lru_cache(maxsize=1024)
def agent_tls(ca_pem: str) -> ssl.SSLContext:
    """Only a certificate the database's CA issued for the name called is accepted."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def agent_call(
    http: aiohttp.ClientSession,
    member: str,
    credentials: DatabaseCredentials,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: aiohttp.ClientTimeout = ACTION_TIMEOUT,
) -> dict[str, Any]:
    """One request; the answer as relaxed Extended JSON decoded to plain JSON values (the
    probe parser reads the `$`-wrappers itself)."""
    url = f"https://{member}:{names.AGENT_PORT}{path}"
    headers = {"Authorization": f"Bearer {credentials.agent_token_for(member)}"}
    try:
        async with http.request(
            method,
            url,
            json=body,
            headers=headers,
            timeout=timeout,
            ssl=agent_tls(credentials.ca.cert_pem),
        ) as r:
            data: Any = await r.json(content_type=None)
            if r.status >= 400:
                err = data.get("error") if isinstance(data, dict) else data
                raise AgentError(f"{member} {path}: HTTP {r.status}: {err}", r.status)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise AgentError(f"{member} {path}: {type(e).__name__}: {e}") from e
    if not isinstance(data, dict):
        raise AgentError(f"{member} {path}: the answer is not an object")
    return data


def initiate_body(fence_token: int, config: dict[str, Any]) -> dict[str, Any]:
    """`POST /initiate`'s body (agent/initiate.py checks it): the fencing token and the
    replica set config as `ReplicaSetConfig.to_document()` gives it (JSON already)."""
    return {"token": fence_token, "config": config}
