"""One worker per database, running the reconcile cycle: observe (`observe.py`), plan (pure,
in the engine's plugin), apply one safe step at a time (`apply.py`), write the status back
to Swarm. Woken by Docker events and task changes, and by its own requeue timer (the
periodic resync)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from shoal import names
from shoal.credentials import DatabaseCredentials
from shoal.operator.apply import SWARM_CHANGES, Applier, DatabaseGone
from shoal.operator.context import OperatorContext
from shoal.operator.observe import Observer
from shoal.operator.placement import pin_actions, placement_of, report_placement
from shoal.operator.proxy import plan_proxy
from shoal.operator.renewals import RenewalTarget, Renewer
from shoal.plugins.base import ActionFailed, UnreadablePlanState
from shoal.status import DatabaseStatus
from shoal.swarm.client import SwarmError
from shoal.swarm.store import StaleFencingToken, UnreadableStatus

log = logging.getLogger("shoal.operator")
STATUS_HEARTBEAT_SECONDS = 30.0


class DatabaseWorker:
    def __init__(self, ctx: OperatorContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.wake = asyncio.Event()
        self.last_status: DatabaseStatus | None = None
        self.observer = Observer(ctx, name)
        self.next_pass = 0.0  # monotonic time the next pass starts (in the past: one runs)
        self.renewer = Renewer(ctx, self.observer, self.poke, lambda: self.next_pass)
        self.applier = Applier(ctx, name)
        self._gone = False
        self._unreadable: str | None = None
        self._written_at: float | None = None  # monotonic time of this worker's last write

    def poke(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        renewals = asyncio.create_task(self.renewer.run(), name=f"renewals-{self.name}")
        try:
            await self._reconcile()
        finally:
            renewals.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewals

    async def _reconcile(self) -> None:
        delay = 0.0
        while not self._gone:
            self.next_pass = time.monotonic() + max(delay, 0.01)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(delay, 0.01))
            self.wake.clear()
            started = time.monotonic()
            self.next_pass = started
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
            except (UnreadableStatus, UnreadablePlanState) as e:
                # the status label (or what the engine keeps in it) cannot be read: act on nothing
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
        plugin = ctx.plugins.get(engine)
        problem = (
            f"no member image for engine {engine!r} on this installation"
            if plugin is None
            else plugin.image_problem()
        )
        if plugin is None or problem is not None:
            # Declared but not runnable here (e.g. no member image, as its server binary
            # was never given to `shoal images build`): say so in the status, act on
            # nothing, look again in 30 s instead of failing every cycle.
            status = stored.status.model_copy(
                update={
                    "message": problem,
                    "fence_token": ctx.lease.token,
                    "generation": stored.generation,
                    "members_desired": stored.declaration.spec.members,
                }
            )
            await ctx.store.write_status(self.name, status)
            self.last_status = status
            return 30.0, engine
        credentials = DatabaseCredentials.derive(ctx.key, stored.uid)
        obs = await self.observer.observe(stored, plugin, credentials)
        seen = max(
            (plugin.fence_token_seen(m.probe) for m in obs.members if m.probe is not None),
            default=0,
        )
        if seen > ctx.lease.token and not await ctx.lease.advance_past(seen):
            return 1.0, engine
        plan = plugin.plan(obs)  # raises UnreadablePlanState rather than guess
        # The primary's lease is renewed between passes (operator/renewals.py), in every
        # state: a pass may be long in coming (a failed Swarm write backs off 2 s) while the
        # lease can be as short as 2 s. Set before anything here can fail.
        primary = plan.status.primary
        self.renewer.target = (
            RenewalTarget(stored.declaration, plugin, credentials, primary)
            if primary is not None
            else None
        )
        placement = placement_of(obs)
        # The read-write proxy follows the primary by itself (its health checks), and pins
        # only move members between nodes: neither waits for nor changes the engine's plan.
        actions = [
            *plan.actions,
            *plan_proxy(obs, plugin.proxy_backend),
            *pin_actions(obs, placement),
        ]
        report_placement(plan.status, placement)
        ctx.metrics.set_status_unreadable(self.name, engine, False)
        self._unreadable = None
        token = ctx.lease.token
        failed = False
        for action in actions:
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
                    await self.applier.apply(action, stored, plugin, credentials, placement)
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
        if self._must_write(stored.status, status, bool(actions)):
            if not await ctx.store.write_status(self.name, status):
                self._gone = True
                return 0.0, engine
            self._written_at = time.monotonic()
        self.last_status = status
        ctx.metrics.publish(status)
        if failed:
            return 0.5, engine
        after = 0.05 if actions and plan.requeue_after > 0.5 else plan.requeue_after
        return after, engine

    def _must_write(self, stored: DatabaseStatus, new: DatabaseStatus, acted: bool) -> bool:
        """A status that differs from the stored one only in `observed_at` is written at
        most every STATUS_HEARTBEAT_SECONDS (by this process's clock): every write is a
        Raft update of the anchor service. Metrics and the status page read the in-memory
        status, which is fresh every cycle."""
        if acted or self._written_at is None:
            return True
        if time.monotonic() - self._written_at >= STATUS_HEARTBEAT_SECONDS:
            return True
        return new.model_dump(exclude={"observed_at"}) != stored.model_dump(exclude={"observed_at"})

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
