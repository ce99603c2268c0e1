"""Observe: one database as Swarm and its members' engines report it now, as a typed
`Observation` for the plugin's pure planner (the first step of observe -> plan -> apply ->
status)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shoal import names
from shoal.credentials import DatabaseCredentials
from shoal.operator.context import OperatorContext
from shoal.operator.members import infrastructure_ready
from shoal.operator.proxy import observe_proxy
from shoal.plugins.base import EnginePlugin, MemberObservation, Observation, TaskInfo
from shoal.swarm.client import JSON
from shoal.swarm.store import StoredDatabase


def newest_tasks(tasks: list[JSON]) -> dict[str, JSON]:
    """Per service id, the task that stands for the member now: the newest one Swarm wants
    running, else the newest of all (so a dead member shows its death)."""
    best: dict[str, JSON] = {}
    for t in tasks:
        sid = t["ServiceID"]
        key = (t.get("DesiredState") == "running", t["Version"]["Index"])
        cur = best.get(sid)
        if cur is None or key > (cur.get("DesiredState") == "running", cur["Version"]["Index"]):
            best[sid] = t
    return best


def task_info(t: JSON, node_names: dict[str, str]) -> TaskInfo:
    status = t.get("Status", {})
    node_id = str(t.get("NodeID", ""))
    return TaskInfo(
        task_id=str(t["ID"]),
        state=str(status.get("State", "new")),
        desired_state=str(t.get("DesiredState", "")),
        node_id=node_id,
        node=node_names.get(node_id),
        container_id=(status.get("ContainerStatus") or {}).get("ContainerID"),
        error=status.get("Err"),
    )


def _may_answer(info: TaskInfo | None) -> bool:
    return info is not None and info.state in ("starting", "running")


class Observer:
    """Observes one database. Keeps, per member, when this process first saw it running
    but not answering: `unreachable_for` is measured on this process's monotonic clock."""

    def __init__(self, ctx: OperatorContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self._unreachable_since: dict[str, float] = {}

    async def observe(
        self, stored: StoredDatabase, plugin: EnginePlugin[Any], credentials: DatabaseCredentials
    ) -> Observation[Any]:
        swarm = self.ctx.swarm
        db = stored.declaration
        of_db = await swarm.services_of(self.name)
        services = [
            s for s in of_db if s["Spec"].get("Labels", {}).get(names.LABEL_ROLE) == "member"
        ]
        by_index: dict[int, JSON] = {}
        for s in services:
            idx = names.member_index(self.name, s["Spec"]["Name"])
            if idx is not None:
                by_index[idx] = s
        tasks: dict[str, JSON] = {}
        earlier_running: set[str] = set()
        if services:
            every = await swarm.tasks(service=[s["Spec"]["Name"] for s in services])
            tasks = newest_tasks(every)
            earlier_running = {
                t["ServiceID"]
                for t in every
                if t["ID"] != tasks[t["ServiceID"]]["ID"]
                and t.get("Status", {}).get("State") == "running"
            }
        node_names = {n["ID"]: n["Description"]["Hostname"] for n in await swarm.nodes()}
        indices = sorted(set(range(db.spec.members)) | set(by_index))
        member_names = [names.member_service(self.name, i) for i in indices]
        infos: list[TaskInfo | None] = []
        for i in indices:
            svc = by_index.get(i)
            t = tasks.get(svc["ID"]) if svc else None
            infos.append(task_info(t, node_names) if t else None)
        # Only a member whose newest task runs can answer: probing one Swarm reports dead
        # would hold the whole observation (and so the failover) for the probe's timeout.
        probes = await asyncio.gather(
            *(
                plugin.probe(self.ctx.http, n, credentials) if _may_answer(info) else _none()
                for n, info in zip(member_names, infos, strict=True)
            )
        )
        now_mono = time.monotonic()
        members = []
        for i, n, info, probe in zip(indices, member_names, infos, probes, strict=True):
            svc = by_index.get(i)
            usable = probe is not None and plugin.answered(probe)
            if not usable and info is not None and info.running:
                since = self._unreachable_since.setdefault(n, now_mono)
            else:
                self._unreachable_since.pop(n, None)
                since = now_mono
            members.append(
                MemberObservation(
                    index=i,
                    name=n,
                    service_exists=svc is not None,
                    task=info,
                    probe=probe,
                    unreachable_for=now_mono - since,
                    previous_running=svc is not None and svc["ID"] in earlier_running,
                )
            )
        return Observation(
            database=db,
            uid=stored.uid,
            generation=stored.generation,
            status=stored.status,
            members=members,
            request=stored.request,
            infrastructure_ready=await infrastructure_ready(swarm, db, stored.uid),
            now=time.time(),
            proxy=await observe_proxy(swarm, self.name, plugin.member_image(), of_db),
            token=self.ctx.lease.token,
            monotonic=time.monotonic(),
        )


async def _none() -> None:
    return None
