"""Ask the running operator for what only it can compute (it alone holds the operator key).

The CLI's `shoal credentials` and the chaos runner both come through here: library code
never looks for its own CLI on `PATH` (a venv that is not activated has none there).
"""

from __future__ import annotations

import json
from typing import Any

from shoal import names
from shoal.swarm.client import SwarmClient
from shoal.swarm.store import DatabaseStore

OPERATOR_SHOAL = "/opt/shoal/venv/bin/shoal"


class NoSuchDatabase(LookupError):
    """No database of that name is declared."""


class OperatorUnavailable(RuntimeError):
    """No operator container can answer on this node, or it refused."""


async def _exec_in_operator(client: SwarmClient, argv: list[str]) -> bytes:
    containers = await client.containers(
        label=f"com.docker.swarm.service.name={names.OPERATOR_SERVICE}", status="running"
    )
    if not containers:
        raise OperatorUnavailable(
            "no running operator container on this node: run this on the manager where "
            f"`{names.OPERATOR_SERVICE}` runs (or `shoal operator deploy`)"
        )
    container = await client.docker.containers.get(containers[0]["Id"])
    exe = await container.exec(argv, stdout=True, stderr=True)
    chunks: list[bytes] = []
    errors: list[bytes] = []
    async with exe.start(detach=False) as stream:
        while (msg := await stream.read_out()) is not None:
            (chunks if msg.stream == 1 else errors).append(msg.data)
    info = await exe.inspect()
    if info.get("ExitCode") != 0:
        raise OperatorUnavailable(
            f"the operator refused `{' '.join(argv[1:])}`: {b''.join(errors).decode().strip()}"
        )
    return b"".join(chunks)


async def fetch_credentials(client: SwarmClient, name: str) -> dict[str, Any]:
    """The database's credential document (`user`, `password`, `uri`, `network`, ...),
    derived by the operator from its key (`shoal operator credentials` inside it)."""
    if await DatabaseStore(client).get(name) is None:
        raise NoSuchDatabase(f"no database named {name!r} (see `shoal get`)")
    raw = await _exec_in_operator(client, [OPERATOR_SHOAL, "operator", "credentials", name])
    try:
        doc: dict[str, Any] = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OperatorUnavailable(f"the operator's credentials answer is not JSON: {e}") from None
    if not isinstance(doc, dict) or not doc.get("password"):
        raise OperatorUnavailable("the operator's credentials answer holds no password")
    return doc
