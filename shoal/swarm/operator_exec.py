"""Ask the running operator for what only it can compute (it alone holds the operator key).

The CLI's `shoal credentials` and the chaos runner both come through here: library code
never looks for its own CLI on `PATH` (a venv that is not activated has none there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shoal import names
from shoal.swarm.client import JSON, SwarmClient
from shoal.swarm.store import DatabaseStore

OPERATOR_SHOAL = "/opt/shoal/venv/bin/shoal"
# How an operator is found: by its labels, not its service's name. `shoal operator deploy`
# names it `shoal-operator`; `docker stack deploy -c deploy/stack.yml STACK` names it
# `STACK_operator`; both label the service and its containers `shoal.role=operator`.
OPERATOR_ROLE = f"{names.LABEL_ROLE}=operator"


async def operator_services(client: SwarmClient) -> list[str]:
    """The names of the operator services (`shoal.role=operator`), however deployed."""
    found = await client.services_with_label(names.LABEL_ROLE, "operator")
    return sorted(str(s["Spec"]["Name"]) for s in found)


async def running_operator_containers(client: SwarmClient) -> list[JSON]:
    """The operator containers running on the engine `client` talks to."""
    return await client.containers(label=OPERATOR_ROLE, status="running")


class NoSuchDatabase(LookupError):
    """No database of that name is declared."""


class OperatorUnavailable(RuntimeError):
    """No operator container can answer on this node, or it refused."""


async def _operator_node(client: SwarmClient) -> str | None:
    """The hostname of the node Swarm runs the operator on, if it runs."""
    services = await operator_services(client)
    if not services:
        return None
    tasks = await client.tasks(service=services, **{"desired-state": "running"})
    running = [t for t in tasks if t.get("Status", {}).get("State") == "running"]
    if not running:
        return None
    node_id = running[0].get("NodeID", "")
    for node in await client.nodes():
        if node.get("ID") == node_id:
            return str(node.get("Description", {}).get("Hostname", node_id))
    return str(node_id)


def _engine_of(hostname: str) -> str | None:
    """A Docker endpoint for another node's engine, when this machine has one: the nodes
    of a `shoal lab` publish their sockets under /run/shoal-lab/<node>/."""
    from shoal.lab.model import node_docker_host

    endpoint = node_docker_host(hostname)
    return endpoint if Path(endpoint.removeprefix("unix://")).is_socket() else None


async def _exec_in_operator(client: SwarmClient, argv: list[str]) -> bytes:
    """Run `argv` in the operator's container: on this node, or on the node that runs it
    when this machine can reach that node's engine (a lab). Docker execs only into
    containers of the engine it is asked."""
    containers = await running_operator_containers(client)
    if not containers:
        node = await _operator_node(client)
        endpoint = _engine_of(node) if node is not None else None
        if endpoint is None:
            where = f"on node {node}" if node else "nowhere (`shoal operator deploy`)"
            raise OperatorUnavailable(
                f"the operator runs {where}, not on the node this command talks to: point "
                f"DOCKER_HOST (or --host) at that node's engine and run it again"
            )
        async with SwarmClient(url=endpoint) as there:
            return await _exec_in_operator_here(there, argv)
    return await _exec_in_operator_here(client, argv)


async def _exec_in_operator_here(client: SwarmClient, argv: list[str]) -> bytes:
    containers = await running_operator_containers(client)
    if not containers:
        raise OperatorUnavailable("the operator's container is not running on its node")
    code, out, err = await client.exec(containers[0]["Id"], argv)
    if code != 0:
        raise OperatorUnavailable(
            f"the operator refused `{' '.join(argv[1:])}`: {err.decode().strip()}"
        )
    return out


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
