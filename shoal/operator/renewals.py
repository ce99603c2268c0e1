"""Lease renewals between reconcile passes.

A primary keeps accepting writes only while its lease holds (plugins/postgres/agent/lease.py),
and every probe of a pass renews it. Renewing it apart from the pass, with a request that
asks nothing else, lets a Healthy database's pass run at its own pace (every few seconds)
while the lease stays short: `unreachableSeconds` minus the engine's margin, so that a
primary cut off from the operator has stopped by the time the operator gives up on it, and a
failover need not wait for it (docs/failure-modes.md, "Node loss"). A renewal a member does
not answer starts its unreachable count and wakes the worker for a full pass at once.

A probe carries a renewal too, so a renewal is sent only when none went to the member for a
third of the lease; one falling due just before a pass waits for that pass's probe, a third
of its period at the most. At 20 databases that halves the renewals of Healthy databases
(docs/benchmarks.md, "Operator load").
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.credentials import DatabaseCredentials
from shoal.declaration import Database
from shoal.operator.context import OperatorContext
from shoal.operator.observe import Observer
from shoal.plugins.base import EnginePlugin

log = logging.getLogger("shoal.operator")
IDLE_CHECK = 1.0  # seconds between looks while there is nothing to renew
# How late, as a share of its period, a renewal may be to let a pass due by then carry it.
LATE_SHARE = 1 / 3
PASS_CHECK = 0.1  # seconds between looks while waiting for a pass to carry the renewal


@dataclass(frozen=True)
class RenewalTarget:
    """The member whose lease is renewed between passes: the primary the last pass saw."""

    database: Database
    plugin: EnginePlugin[Any]
    credentials: DatabaseCredentials
    member: str

    def every(self) -> float | None:
        """Seconds between renewals: three per lease (None: the engine keeps no lease)."""
        ttl = self.plugin.lease_ttl(self.database)
        return None if ttl is None else ttl / 3


class Renewer:
    """Renews `target`'s lease whenever nothing renewed it for a third of its ttl, until
    cancelled; calls `on_silence` when the member does not answer. `next_pass` tells when
    the worker's next pass starts (monotonic; in the past while one runs)."""

    def __init__(
        self,
        ctx: OperatorContext,
        observer: Observer,
        on_silence: Callable[[], None],
        next_pass: Callable[[], float] = lambda: math.inf,
    ) -> None:
        self.ctx = ctx
        self.observer = observer
        self.on_silence = on_silence
        self.next_pass = next_pass
        self.target: RenewalTarget | None = None

    def wait(self, now: float) -> float:
        """Seconds until a renewal is due (0: now)."""
        target = self.target
        every = target.every() if target is not None else None
        if target is None or every is None:
            return IDLE_CHECK
        last = self.observer.renewal_sent(target.member)
        due = now if last is None else last + every
        if now < due:
            return due - now
        if self.observer.probing(target.member):
            # The probe out to it carries a renewal; a second one sent meanwhile would only
            # move the lease's end later should it never answer (a paused primary's failover
            # then waited for that renewal's lease). The probe's own timeout bounds this.
            return PASS_CHECK
        late = due + every * LATE_SHARE
        pass_at = self.next_pass()
        if now < late and pass_at <= late:
            # The pass due by then (or running now) renews it with its probe.
            return min(late, max(pass_at, now) + PASS_CHECK) - now
        return 0.0

    async def run(self) -> None:
        while True:
            wait = self.wait(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            target = self.target
            if target is None:
                continue
            answered: bool | None = None
            if self.ctx.lease.held:
                try:
                    answered = await self.observer.renew(
                        target.database, target.plugin, target.credentials, target.member
                    )
                except Exception as e:  # one bad renewal must not end the renewals
                    log.exception(
                        "lease renewal of %s failed: %s",
                        target.member,
                        e,
                        extra={"event": "renewal-error", "database": self.observer.name},
                    )
                    answered = False
            if answered is False:
                self.on_silence()
            if answered is not True:  # nothing sent, or no answer: not again at once
                await asyncio.sleep(target.every() or IDLE_CHECK)
