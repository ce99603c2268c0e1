"""One worker per database: observe, plan (pure, in the plugin), apply one safe step at a
time, write the status back to Swarm. Woken by Docker events and task changes, and by its
own requeue timer (the periodic resync)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from shoal import names
from shoal.credentials import DatabaseCredentials
from shoal.operator.members import (
    ensure_infrastructure,
    infrastructure_ready,
    member_service_spec,
    replace_member,
)
from shoal.operator.metrics import OperatorMetrics
from shoal.operator.proxy import ensure_proxy, observe_proxy, prune_configs, remove_proxy
from shoal.plugins.base import (
    Action,
    ActionFailed,
    ApplyContext,
    ClearRequest,
    CreateMember,
    EnginePlugin,
    EnsureInfrastructure,
    EnsureProxy,
    MemberObservation,
    Observation,
    PruneProxyConfigs,
    RemoveMember,
    RemoveProxy,
    ReplaceMember,
    TaskInfo,
)
from shoal.status import DatabaseStatus
from shoal.swarm.client import JSON, SwarmClient, SwarmError
from shoal.swarm.lease import Lease
from shoal.swarm.store import DatabaseStore, StaleFencingToken, StoredDatabase, UnreadableStatus

log = logging.getLogger("shoal.operator")
# Actions that change Swarm objects: the lease is re-read right before each (fencing
# tokens guard the agents' actions; Swarm itself has no notion of them).
SWARM_CHANGES = (
    CreateMember,
    RemoveMember,
    ReplaceMember,
    ClearRequest,
    EnsureInfrastructure,
    EnsureProxy,
    RemoveProxy,
    PruneProxyConfigs,
)


@dataclass
class OperatorContext:
    swarm: SwarmClient
    store: DatabaseStore
    http: aiohttp.ClientSession
    key: bytes
    lease: Lease
    metrics: OperatorMetrics
    plugins: dict[str, EnginePlugin[Any]]


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


class DatabaseGone(RuntimeError):
    """The database was deleted (or deleted and declared again) while a cycle was in flight:
    nothing may be created for it any more."""


class DatabaseWorker:
    def __init__(self, ctx: OperatorContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.wake = asyncio.Event()
        self.last_status: DatabaseStatus | None = None
        self._unreachable_since: dict[str, float] = {}
        self._gone = False
        self._unreadable: str | None = None

    def poke(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        delay = 0.0
        while not self._gone:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(delay, 0.01))
            self.wake.clear()
            started = time.monotonic()
            engine = "unknown"
            try:
                delay, engine = await self.cycle()
            except asyncio.CancelledError:
                raise
            except DatabaseGone as e:
                log.info("%s", e, extra={"event": "gone", "database": self.name})
                self._gone = True
                self.ctx.metrics.forget(self.name)
                return
            except UnreadableStatus as e:  # it became unreadable during the cycle
                delay = self._refuse_unreadable(str(e), engine)
            except StaleFencingToken as e:
                log.warning("%s", e, extra={"event": "fenced", "database": self.name})
                delay = 2.0
            except Exception as e:  # one bad cycle must not kill the worker
                log.exception(
                    "reconcile failed: %s",
                    e,
                    extra={"event": "reconcile-error", "database": self.name},
                )
                self.ctx.metrics.record_reconcile_error(self.name, engine)
                delay = 2.0
            finally:
                self.ctx.metrics.observe_reconcile(self.name, engine, time.monotonic() - started)

    async def cycle(self) -> tuple[float, str]:
        ctx = self.ctx
        if not ctx.lease.held:
            return 1.0, "unknown"
        stored = await ctx.store.get(self.name)
        if stored is None or stored.deleting:
            self._gone = True
            ctx.metrics.forget(self.name)
            return 0.0, "unknown"
        engine = stored.declaration.spec.engine.value
        if stored.status_error is not None:
            return self._refuse_unreadable(stored.status_error, engine), engine
        ctx.metrics.set_status_unreadable(self.name, engine, False)
        plugin = ctx.plugins.get(engine)
        if plugin is None:
            # Declared but not runnable here (no mongod binary can be obtained on these
            # machines): say so in the status instead of failing every cycle.
            status = stored.status.model_copy(
                update={
                    "message": f"no member image for engine {engine!r} on this installation",
                    "fence_token": ctx.lease.token,
                    "generation": stored.generation,
                    "members_desired": stored.declaration.spec.members,
                }
            )
            await ctx.store.write_status(self.name, status)
            self.last_status = status
            return 30.0, engine
        credentials = DatabaseCredentials.derive(ctx.key, stored.uid)
        obs = await self.observe(stored, plugin, credentials)
        seen = max(
            (plugin.fence_token_seen(m.probe) for m in obs.members if m.probe is not None),
            default=0,
        )
        if seen > ctx.lease.token and not await ctx.lease.advance_past(seen):
            return 1.0, engine
        plan = plugin.plan(obs)
        token = ctx.lease.token
        failed = False
        for action in plan.actions:
            if not ctx.lease.held or ctx.lease.token != token:
                log.warning("lease lost mid-cycle; stopping", extra={"database": self.name})
                return 1.0, engine
            if isinstance(action, SWARM_CHANGES) and not await ctx.lease.confirm():
                log.warning(
                    "lease not confirmed before %s; stopping",
                    action.describe(),
                    extra={"database": self.name},
                )
                return 1.0, engine
            try:
                # No action outlives the lease it was started under.
                async with asyncio.timeout(max(ctx.lease.remaining(), 0.001)):
                    await self.apply(action, stored, plugin, credentials)
            except TimeoutError:
                log.warning(
                    "%s outlived the lease; stopping",
                    action.describe(),
                    extra={"event": "action-failed", "database": self.name},
                )
                return 1.0, engine
            except (SwarmError, ActionFailed) as e:
                # Re-observe before trying anything else: the world changed under the plan.
                log.warning(
                    "%s failed: %s",
                    action.describe(),
                    e,
                    extra={"event": "action-failed", "database": self.name},
                )
                ctx.metrics.record_reconcile_error(self.name, engine)
                failed = True
                break
        status = plan.status
        status.name = self.name
        status.engine = engine
        status.network = names.database_network(self.name)
        status.connection = plugin.connection(stored.declaration)
        status.fence_token = token
        self._count(obs.status, status, engine)
        if not await ctx.store.write_status(self.name, status):
            self._gone = True
            return 0.0, engine
        self.last_status = status
        ctx.metrics.publish(status)
        if failed:
            return 0.5, engine
        return (0.05 if plan.actions and plan.requeue_after > 0.5 else plan.requeue_after), engine

    def _refuse_unreadable(self, why: str, engine: str) -> float:
        """Fail closed: act on nothing, write nothing, say so (log, metric) until a person
        repairs the anchor's status label (docs/failure-modes.md)."""
        if self._unreadable != why:
            log.error(
                "not acting on %s: %s",
                self.name,
                why,
                extra={"event": "status-unreadable", "database": self.name},
            )
            self._unreadable = why
        self.ctx.metrics.set_status_unreadable(self.name, engine, True)
        return 10.0

    def _count(self, before: DatabaseStatus, after: DatabaseStatus, engine: str) -> None:
        for _ in range(max(0, after.failovers - before.failovers)):
            self.ctx.metrics.record_failover(self.name, engine)
        seen = {(e.at, e.kind, e.member) for e in before.events}
        for e in after.events:
            if (e.at, e.kind, e.member) in seen:
                continue
            if e.kind == "reseed" and e.member:
                self.ctx.metrics.record_reseed(self.name, engine, e.member)
            log.info(
                "%s", e.message, extra={"event": e.kind, "database": self.name, "member": e.member}
            )

    async def observe(
        self, stored: StoredDatabase, plugin: EnginePlugin[Any], credentials: DatabaseCredentials
    ) -> Observation[Any]:
        swarm = self.ctx.swarm
        db = stored.declaration
        services = [
            s
            for s in await swarm.services_of(self.name)
            if s["Spec"].get("Labels", {}).get(names.LABEL_ROLE) == "member"
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
            proxy=await observe_proxy(swarm, self.name, plugin.member_image()),
            token=self.ctx.lease.token,
            monotonic=time.monotonic(),
        )

    async def apply(
        self,
        action: Action,
        stored: StoredDatabase,
        plugin: EnginePlugin[Any],
        credentials: DatabaseCredentials,
    ) -> None:
        ctx = self.ctx
        db = stored.declaration
        log.info("%s", action.describe(), extra={"event": "action", "database": self.name})
        match action:
            case EnsureInfrastructure():
                await self._still_declared(stored)
                await ensure_infrastructure(ctx.swarm, db, stored.uid, credentials)
            case CreateMember(index=i):
                await self._still_declared(stored)
                infra = await ensure_infrastructure(ctx.swarm, db, stored.uid, credentials)
                spec = member_service_spec(db, i, plugin.member_image(), infra)
                try:
                    await ctx.swarm.create_service(spec)
                except SwarmError:
                    if await ctx.swarm.service(spec["Name"]) is None:
                        raise
            case RemoveMember(index=i):
                await ctx.swarm.remove_service(names.member_service(self.name, i))
            case ReplaceMember(member=m, reason=why):
                log.warning(
                    "replacing %s: %s",
                    m,
                    why,
                    extra={"event": "fence", "database": self.name, "member": m},
                )
                await replace_member(ctx.swarm, m)
            case ClearRequest(request_id=rid):
                await ctx.store.clear_request(self.name, rid)
            case EnsureProxy(port=port, members=members):
                await self._still_declared(stored)
                await ensure_proxy(ctx.swarm, db, plugin.member_image(), port, members)
            case RemoveProxy():
                await remove_proxy(ctx.swarm, self.name)
            case PruneProxyConfigs(configs=configs):
                await prune_configs(ctx.swarm, configs)
            case _:
                await plugin.apply(
                    action,
                    ApplyContext(ctx.swarm, ctx.http, credentials, ctx.lease.token, db),
                )

    async def _still_declared(self, stored: StoredDatabase) -> None:
        """Re-read the anchor right before creating anything: `shoal delete` may have purged
        the database since this cycle read it, and re-creating its secrets, network or members
        then would leave objects behind that nothing owns."""
        current = await self.ctx.store.get(self.name)
        if current is None or current.deleting or current.uid != stored.uid:
            raise DatabaseGone(f"{self.name} was deleted during the cycle; creating nothing")


async def _none() -> None:
    return None
