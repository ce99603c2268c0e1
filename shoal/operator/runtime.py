"""`shoal operator run`: the operator process.

Stateless: everything it knows it reads from Swarm. It holds the lease before acting, runs one
worker per database, wakes them from Docker events (container deaths on this node) and from a
cheap poll of Swarm's task list (deaths on every node; Docker emits no task events), and serves
/metrics, /healthz and the status page on port 9650.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

from shoal import names
from shoal.credentials import load_operator_key
from shoal.operator.context import OperatorContext
from shoal.operator.http_auth import load_http_token
from shoal.operator.metrics import OperatorMetrics
from shoal.operator.web import make_app
from shoal.operator.worker import DatabaseWorker
from shoal.plugins.base import member_http_session
from shoal.plugins.registry import engine_plugins
from shoal.status import DatabaseStatus
from shoal.swarm.cleanup import purge_database
from shoal.swarm.client import JSON, SwarmClient, SwarmError
from shoal.swarm.lease import Lease, LeaseSettings
from shoal.swarm.nodes import node_info
from shoal.swarm.operator_exec import operator_services
from shoal.swarm.store import DatabaseStore
from shoal.swarm.tasks import DEAD_TASK_STATES

log = logging.getLogger("shoal.operator")


@dataclass(frozen=True)
class OperatorSettings:
    port: int = names.OPERATOR_PORT
    resync_seconds: float = 2.0  # how often the list of databases is re-read
    task_poll_seconds: float = 0.25
    node_poll_seconds: float = 1.0
    lease: LeaseSettings = field(default_factory=LeaseSettings)


class Operator:
    def __init__(self, settings: OperatorSettings, key: bytes) -> None:
        self.settings = settings
        self.key = key
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.metrics = OperatorMetrics()
        self.workers: dict[str, DatabaseWorker] = {}
        self._worker_tasks: dict[str, asyncio.Task[None]] = {}
        # Deletions whose `shoal delete` did not finish (interrupted, or something could
        # not be removed yet): the operator finishes them, like a finalizer.
        self._purges: dict[str, asyncio.Task[None]] = {}
        self._last_error = ""
        self._task_fingerprint: dict[str, str] = {}
        self._node_fingerprint: str | None = None

    # --- StatusSource for the web app ---------------------------------------------------
    def databases(self) -> list[DatabaseStatus]:
        return [w.last_status for w in self.workers.values() if w.last_status is not None]

    def is_leader(self) -> bool:
        return self._lease.held if hasattr(self, "_lease") else False

    def healthy(self) -> tuple[bool, str]:
        if self._last_error:
            return False, self._last_error
        return True, "leader" if self.is_leader() else "standby"

    # --- main ---------------------------------------------------------------------------
    async def run(self) -> None:
        async with SwarmClient() as swarm, member_http_session() as http:
            self._lease = Lease(swarm, self.identity, self.settings.lease)
            self._lease.holder_dead = lambda holder: holder_container_dead(swarm, holder)
            ctx = OperatorContext(
                swarm=swarm,
                store=DatabaseStore(swarm),
                http=http,
                key=self.key,
                lease=self._lease,
                metrics=self.metrics,
                plugins=engine_plugins(),
            )
            # The polls below keep the shared reads fresh: a worker reuses what they read.
            ctx.shared.tasks.ttl = 2 * self.settings.task_poll_seconds
            ctx.shared.nodes.ttl = self.settings.node_poll_seconds + self.settings.task_poll_seconds
            runner = web.AppRunner(make_app(self, self.metrics, token=load_http_token()))
            await runner.setup()
            site = web.TCPSite(runner, "0.0.0.0", self.settings.port)
            await site.start()
            log.info(
                "operator %s serving on :%d",
                self.identity,
                self.settings.port,
                extra={"event": "start"},
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
            loops = [
                asyncio.create_task(self._lease_loop(), name="lease"),
                asyncio.create_task(self._supervise(ctx), name="supervise"),
                asyncio.create_task(self._poll_tasks(ctx), name="tasks"),
                asyncio.create_task(self._events(ctx), name="events"),
            ]
            try:
                await stop.wait()
            finally:
                log.info("operator stopping", extra={"event": "stop"})
                tasks = [*loops, *self._worker_tasks.values(), *self._purges.values()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._lease.release()
                self.metrics.set_leader(False)
                await runner.cleanup()

    async def _lease_loop(self) -> None:
        was = False
        while True:
            held = await self._lease.step()
            self.metrics.set_leader(held)
            if held and not was:
                for w in self.workers.values():
                    w.poke()
            was = held
            await asyncio.sleep(self.settings.lease.renew_every if held else 1.0)

    async def _supervise(self, ctx: OperatorContext) -> None:
        """Start a worker for every declared database, forget deleted ones."""
        while True:
            try:
                declared = await ctx.store.declared()
                self._last_error = ""
            except (SwarmError, OSError) as e:
                self._last_error = f"cannot read Swarm: {e}"
                await asyncio.sleep(self.settings.resync_seconds)
                continue
            live = {name for name, deleting in declared.items() if not deleting}
            self._finish_deletions(ctx, {name for name, deleting in declared.items() if deleting})
            for name in sorted(live - set(self._worker_tasks)):
                worker = DatabaseWorker(ctx, name)
                self.workers[name] = worker
                self._worker_tasks[name] = asyncio.create_task(worker.run(), name=f"db-{name}")
            for name, task in list(self._worker_tasks.items()):
                if name not in live or task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    del self._worker_tasks[name]
                    self.workers.pop(name, None)
                    self.metrics.forget(name)
                    ctx.shared.forget(name)
            await asyncio.sleep(self.settings.resync_seconds)

    def _finish_deletions(self, ctx: OperatorContext, deleting: set[str]) -> None:
        for name, task in list(self._purges.items()):
            if task.done():
                del self._purges[name]
        if not self._lease.held:
            return
        for name in sorted(deleting - set(self._purges)):
            self._purges[name] = asyncio.create_task(self._purge(ctx, name), name=f"purge-{name}")

    async def _purge(self, ctx: OperatorContext, name: str) -> None:
        try:
            await purge_database(ctx.swarm, name)
            log.info("finished deleting %s", name, extra={"database": name, "event": "deleted"})
        except (SwarmError, OSError) as e:  # tried again on the next resync
            log.warning("deleting %s: %s", name, e, extra={"database": name})

    def _poke(self, database: str | None) -> None:
        if database and database in self.workers:
            self.workers[database].poke()

    async def _poll_tasks(self, ctx: OperatorContext) -> None:
        """Swarm emits no task events: poll the task list and wake a database's worker the
        moment one of its members' tasks changes state (a death on any node); poll the
        nodes less often, and wake every worker when one changes state (a node declared
        down). The reads are the ones the workers share (operator/shared.py)."""
        every = max(1, round(self.settings.node_poll_seconds / self.settings.task_poll_seconds))
        for n in itertools.count():
            await asyncio.sleep(self.settings.task_poll_seconds)
            if not self._lease.held or not self.workers:
                continue
            await self._poll_once(ctx, nodes=n % every == 0)

    async def _poll_once(self, ctx: OperatorContext, *, nodes: bool) -> None:
        try:
            # Only the tasks of shoal's databases, on every node and in every state
            # (shared.py: Docker's `label` filter; no desired-state filter, which would hide
            # a killed task Swarm has already replaced).
            tasks = await ctx.shared.tasks.refresh()
        except (SwarmError, OSError):
            return
        per_db: dict[str, list[str]] = {}
        for t in tasks:
            labels = t.get("Spec", {}).get("ContainerSpec", {}).get("Labels", {}) or {}
            db = labels.get(names.LABEL_DATABASE)
            if db:
                state = t.get("Status", {}).get("State", "")
                per_db.setdefault(db, []).append(f"{t['ID']}:{state}:{t.get('DesiredState')}")
        for db, items in per_db.items():
            fp = "|".join(sorted(items))
            if self._task_fingerprint.get(db) not in (None, fp):
                # The woken worker reads nodes as new as these tasks (a node declared down
                # and its tasks restarted elsewhere are seen together).
                ctx.shared.nodes.invalidate()
                self._poke(db)
            self._task_fingerprint[db] = fp
        if not nodes:
            return
        try:
            raw = await ctx.shared.nodes.refresh()
        except (SwarmError, OSError):
            return
        fp = "|".join(sorted(f"{n.id}:{n.state}:{n.active}" for n in map(node_info, raw)))
        if self._node_fingerprint not in (None, fp):
            for w in self.workers.values():
                w.poke()
        self._node_fingerprint = fp

    async def _events(self, ctx: OperatorContext) -> None:
        """Container and service events of this node wake the affected worker at once."""
        while True:
            try:
                async for event in ctx.swarm.events(type=["container", "service"]):
                    self._on_event(ctx, event)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the stream breaks when dockerd restarts: reconnect
                log.debug("event stream interrupted: %s", e)
            await asyncio.sleep(1.0)

    def _on_event(self, ctx: OperatorContext, ev: JSON) -> None:
        attrs = ev.get("Actor", {}).get("Attributes", {}) or {}
        db = database_of_event(attrs, self.workers)
        if db is not None and db in self.workers:
            # A container of it died or a service of it changed: the worker reads the tasks
            # afresh rather than what the poll read before the event.
            ctx.shared.tasks.invalidate()
            self._poke(db)


def database_of_event(attributes: dict[str, str], databases: Iterable[str]) -> str | None:
    """The database a Docker event concerns: a member's container (it carries the database
    label), a member's or the proxy's service (`NAME-...`), or the anchor `shoal-db-NAME`,
    which `shoal switchover`, `apply` and every other command write: waking the worker on it
    starts a requested switchover at once instead of on the worker's next timer."""
    db = attributes.get(names.LABEL_DATABASE)
    if db is not None:
        return db
    svc = attributes.get("com.docker.swarm.service.name") or attributes.get("name") or ""
    for d in databases:
        if svc == names.anchor_service(d) or svc.startswith(d + "-"):
            return d
    return None


async def holder_container_dead(swarm: SwarmClient, holder: str) -> bool:
    """Identities start with the container's hostname, which Swarm sets to the container id
    prefix: if Swarm reports that container's task finished, its holder is certainly gone."""
    host = holder.split("-", 1)[0]
    if len(host) < 12:
        return False
    try:
        # Every operator service, however deployed (`shoal operator deploy`, a stack).
        services = await operator_services(swarm)
        tasks = await swarm.tasks(service=services) if services else []
    except SwarmError:
        return False
    for t in tasks:
        cid = (t.get("Status", {}).get("ContainerStatus") or {}).get("ContainerID", "")
        if cid.startswith(host):
            return t.get("Status", {}).get("State") in DEAD_TASK_STATES
    return False


def run_operator(settings: OperatorSettings | None = None) -> None:
    key = load_operator_key()
    asyncio.run(Operator(settings or OperatorSettings(), key).run())
