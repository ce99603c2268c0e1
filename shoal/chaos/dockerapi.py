"""The few Docker calls the chaos suite needs, over the one Docker client
(`shoal/swarm/client.py`): the database status from its anchor service, the running
container of a Swarm service, and short-lived labelled containers (fault helpers, the client,
the checker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from shoal import names
from shoal.status import DatabaseStatus
from shoal.swarm.client import (
    NotFound,
    SwarmClient,
    SwarmError,
    raft_busy,
    retrying_for,
    while_raft_busy,
)

LABEL_RUN = "shoal.chaos.run"  # every container the chaos suite creates carries its run id


class ChaosDockerError(RuntimeError):
    pass


# How long a read waits out a Raft election (a node fault on a manager can start one).
RAFT_WAIT = 90.0


# How long a 404 is taken for a manager that is catching up rather than for a service that
# is gone: one answered 404 for the anchor of a running database during a node-fault
# recovery (the full node run of docs/chaos.md).
NOT_FOUND_WAIT = 10.0


async def service_labels(
    swarm: SwarmClient, service: str, not_found_wait: float = NOT_FOUND_WAIT
) -> dict[str, str]:
    try:
        async for found in retrying_for(not_found_wait, every=1, on=NotFound):
            with found:
                async for attempt in while_raft_busy(RAFT_WAIT):
                    with attempt:
                        # timeout None: aiodocker's default, as the suite always waited
                        info: Mapping[str, Any] = await swarm.call(
                            f"services/{service}", timeout=None
                        )
    except NotFound as e:
        raise ChaosDockerError(f"service {service} does not exist") from e
    except SwarmError as e:
        if raft_busy(e):
            raise ChaosDockerError(f"the swarm had no leader for {RAFT_WAIT:.0f}s") from e
        raise
    labels: dict[str, str] = info.get("Spec", {}).get("Labels") or {}
    return labels


async def database_status(
    swarm: SwarmClient, db: str, not_found_wait: float = NOT_FOUND_WAIT
) -> DatabaseStatus:
    """The status the operator writes on the anchor service (`shoal.status` label). A 404
    is retried for `not_found_wait` seconds: pass 0 where a missing database is the user's
    mistake, not a manager catching up."""
    labels = await service_labels(swarm, names.anchor_service(db), not_found_wait)
    raw = labels.get(names.LABEL_STATUS)
    if not raw:
        return DatabaseStatus(name=db, engine=_engine_from_spec(labels))
    return DatabaseStatus.model_validate(json.loads(raw))


# The engine of a database whose anchor holds no readable declaration: no plugin has this
# name, so the runner refuses it (`engine unknown has no chaos client yet`).
UNKNOWN_ENGINE = "unknown"


def _engine_from_spec(labels: Mapping[str, str]) -> str:
    try:
        return str(json.loads(labels.get(names.LABEL_SPEC, "{}"))["spec"]["engine"])
    except (KeyError, TypeError, ValueError):
        return UNKNOWN_ENGINE


async def running_container(swarm: SwarmClient, service: str) -> str | None:
    """Container id of the service's running task (None while it has none)."""
    tasks = await swarm.tasks(service=service, **{"desired-state": "running"})
    for t in sorted(tasks, key=lambda t: str(t.get("UpdatedAt", "")), reverse=True):
        status = t.get("Status", {})
        cid = status.get("ContainerStatus", {}).get("ContainerID")
        if status.get("State") == "running" and cid:
            return str(cid)
    return None


def chaos_labels(run_id: str, role: str, db: str | None = None) -> dict[str, str]:
    labels = {names.LABEL_MANAGED: "true", names.LABEL_ROLE: role, LABEL_RUN: run_id}
    if db:
        labels[names.LABEL_DATABASE] = db
    return labels


async def create_container(
    swarm: SwarmClient,
    *,
    name: str,
    image: str,
    cmd: list[str],
    labels: dict[str, str],
    network_mode: str,
    entrypoint: list[str] | None = None,
    cap_add: list[str] | None = None,
    files: Mapping[str, bytes] | None = None,
    files_dir: str = "/tmp",
) -> str:
    """Create (not start) a container; `files` are copied into `files_dir` before start.
    Returns its id."""
    config: dict[str, Any] = {
        "Image": image,
        "Cmd": cmd,
        "Labels": labels,
        "HostConfig": {"NetworkMode": network_mode, "CapAdd": cap_add or []},
    }
    if entrypoint is not None:
        config["Entrypoint"] = entrypoint
    return await swarm.create_container(name, config, files, files_dir)


async def remove_container(swarm: SwarmClient, cid: str) -> None:
    """Remove a container; one that is gone or being removed already is no error."""
    await swarm.remove_container(cid)


async def run_once(
    swarm: SwarmClient,
    *,
    name: str,
    image: str,
    cmd: list[str],
    labels: dict[str, str],
    network_mode: str,
    cap_add: list[str] | None = None,
    limit: float = 60.0,
) -> tuple[int, str]:
    """Run a short-lived container to completion; return (exit code, combined output).
    The container is removed whatever happens."""
    cid = await create_container(
        swarm,
        name=name,
        image=image,
        cmd=cmd,
        labels=labels,
        network_mode=network_mode,
        cap_add=cap_add,
    )
    try:
        await swarm.start_container(cid)
        code = await asyncio.wait_for(swarm.wait_container(cid), limit)
        return code, await swarm.container_logs(cid, stdout=True, stderr=True)
    finally:
        await asyncio.shield(remove_container(swarm, cid))


async def list_run_containers(swarm: SwarmClient, run_id: str) -> list[str]:
    found = await swarm.containers(label=[f"{LABEL_RUN}={run_id}"])
    return [str(c["Id"]) for c in found]


async def request_switchover(swarm: SwarmClient, db: str) -> None:
    """A planned switchover, as `shoal switchover DB` asks for it (the operator picks the
    target), stored on the database's anchor."""
    import uuid

    from shoal.request import SwitchoverRequest
    from shoal.swarm.store import DatabaseStore

    store = DatabaseStore(swarm)
    if await store.get(db) is None:
        raise ChaosDockerError(f"no database {db}")
    await store.set_request(db, SwitchoverRequest(id=uuid.uuid4().hex[:12]))
