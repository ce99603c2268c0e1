"""The MongoDB plugin's use of the member agent's API (agent/api.py), over the
engine-neutral transport (plugins/agent_transport.py: `member_call`): HTTPS to port 8008 on
the control network, the agent's certificate verified against the database's CA and the
member's name, with the member's own bearer token. A MongoDB member never predates TLS or
per-member tokens, so none of the PostgreSQL plugin's fallbacks apply here.
"""

from __future__ import annotations

from typing import Any

import aiohttp

# A member's agent answers `GET /state` in milliseconds when its mongod does (each of the
# three commands has 1.5 s to select the server); a connect that takes longer than 0.3 s
# goes to a container that just died.
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5.0, connect=1.0, sock_connect=0.3)


def initiate_body(fence_token: int, config: dict[str, Any]) -> dict[str, Any]:
    """`POST /initiate`'s body (agent/initiate.py checks it): the fencing token and the
    replica set config as `ReplicaSetConfig.to_document()` gives it (JSON already)."""
    return {"token": fence_token, "config": config}
