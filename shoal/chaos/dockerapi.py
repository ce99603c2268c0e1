"""The few Docker API calls the chaos suite needs (aiodocker, async): the database status
from its anchor service, the running container of a Swarm service, and short-lived labelled
containers (fault helpers, the client, the checker)."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import Mapping
from typing import Any

import aiodocker
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_fixed

from shoal import names
from shoal.status import DatabaseStatus
from shoal.swarm.client import raft_busy, while_raft_busy

LABEL_RUN = "shoal.chaos.run"  # every container the chaos suite creates carries its run id


class ChaosDockerError(RuntimeError):
    pass


def is_not_found(e: BaseException) -> bool:
    return isinstance(e, aiodocker.DockerError) and e.status == 404


# How long a read waits out a Raft election (a node fault on a manager can start one).
RAFT_WAIT = 90.0


# How long a 404 is taken for a manager that is catching up rather than for a service that
# is gone: one answered 404 for the anchor of a running database during a node-fault
# recovery (the full node run of docs/chaos.md).
NOT_FOUND_WAIT = 10.0


async def service_labels(
    docker: aiodocker.Docker, service: str, not_found_wait: float = NOT_FOUND_WAIT
) -> dict[str, str]:
    try:
        async for found in AsyncRetrying(
            stop=stop_after_delay(not_found_wait),
            wait=wait_fixed(1),
            retry=retry_if_exception(is_not_found),
            reraise=True,
        ):
            with found:
                async for attempt in while_raft_busy(RAFT_WAIT):
                    with attempt:
                        info: Mapping[str, Any] = await docker.services.inspect(service)
    except aiodocker.DockerError as e:
        if e.status == 404:
            raise ChaosDockerError(f"service {service} does not exist") from e
        if raft_busy(e):
            raise ChaosDockerError(f"the swarm had no leader for {RAFT_WAIT:.0f}s") from e
        raise
    labels: dict[str, str] = info.get("Spec", {}).get("Labels") or {}
    return labels


async def database_status(
    docker: aiodocker.Docker, db: str, not_found_wait: float = NOT_FOUND_WAIT
) -> DatabaseStatus:
    """The status the operator writes on the anchor service (`shoal.status` label). A 404
    is retried for `not_found_wait` seconds: pass 0 where a missing database is the user's
    mistake, not a manager catching up."""
    labels = await service_labels(docker, names.anchor_service(db), not_found_wait)
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


async def running_container(docker: aiodocker.Docker, service: str) -> str | None:
    """Container id of the service's running task (None while it has none)."""
    tasks: list[Mapping[str, Any]] = await docker.tasks.list(
        filters={"service": service, "desired-state": "running"}
    )
    for t in sorted(tasks, key=lambda t: str(t.get("UpdatedAt", "")), reverse=True):
        status = t.get("Status", {})
        cid = status.get("ContainerStatus", {}).get("ContainerID")
        if status.get("State") == "running" and cid:
            return str(cid)
    return None


def tar_file(name: str, data: bytes, mode: int = 0o600) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def chaos_labels(run_id: str, role: str, db: str | None = None) -> dict[str, str]:
    labels = {names.LABEL_MANAGED: "true", names.LABEL_ROLE: role, LABEL_RUN: run_id}
    if db:
        labels[names.LABEL_DATABASE] = db
    return labels


async def create_container(
    docker: aiodocker.Docker,
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
) -> aiodocker.containers.DockerContainer:
    """Create (not start) a container; `files` are copied into `files_dir` before start."""
    config: dict[str, Any] = {
        "Image": image,
        "Cmd": cmd,
        "Labels": labels,
        "HostConfig": {"NetworkMode": network_mode, "CapAdd": cap_add or []},
    }
    if entrypoint is not None:
        config["Entrypoint"] = entrypoint
    container = await docker.containers.create(config=config, name=name)
    for fname, data in (files or {}).items():
        await container.put_archive(files_dir, tar_file(fname, data))  # type: ignore[no-untyped-call]
    return container


async def remove_container(docker: aiodocker.Docker, cid: str) -> None:
    try:
        await docker.containers.container(cid).delete(force=True)
    except aiodocker.DockerError as e:
        if e.status not in (404, 409):
            raise


async def run_once(
    docker: aiodocker.Docker,
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
    container = await create_container(
        docker,
        name=name,
        image=image,
        cmd=cmd,
        labels=labels,
        network_mode=network_mode,
        cap_add=cap_add,
    )
    try:
        await container.start()
        result = await asyncio.wait_for(container.wait(), limit)
        logs = await container.log(stdout=True, stderr=True)
        return int(result.get("StatusCode", -1)), "".join(logs)
    finally:
        await asyncio.shield(remove_container(docker, container.id))


async def list_run_containers(docker: aiodocker.Docker, run_id: str) -> list[str]:
    found = await docker.containers.list(all=True, filters={"label": [f"{LABEL_RUN}={run_id}"]})
    return [c.id for c in found]


async def request_switchover(docker: aiodocker.Docker, db: str) -> None:
    """A planned switchover, as `shoal switchover DB` asks for it (the operator picks the
    target), stored on the database's anchor."""
    import uuid

    from shoal.request import SwitchoverRequest
    from shoal.swarm.client import SwarmClient
    from shoal.swarm.store import DatabaseStore

    store = DatabaseStore(SwarmClient(docker))
    if await store.get(db) is None:
        raise ChaosDockerError(f"no database {db}")
    await store.set_request(db, SwitchoverRequest(id=uuid.uuid4().hex[:12]))
