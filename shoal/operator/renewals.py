"""Lease renewals between reconcile passes.

A primary keeps accepting writes only while its lease holds (plugins/postgres/agent/lease.py),
and every probe of a pass renews it. Renewing it apart from the pass, with a request that
asks nothing else, lets a Healthy database's pass run at its own pace (every few seconds)
while the lease stays short: `unreachableSeconds` minus the engine's margin, so that a
primary cut off from the operator has stopped by the time the operator gives up on it, and a
failover need not wait for it (docs/failure-modes.md, "Node loss"). A renewal a member does
not answer starts its unreachable count and wakes the worker for a full pass at once.
"""

from __future__ import annotations

import asyncio
import logging
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
    """Renews `target`'s lease every third of its ttl until cancelled; calls `on_silence`
    when the member does not answer."""

    def __init__(
        self, ctx: OperatorContext, observer: Observer, on_silence: Callable[[], None]
    ) -> None:
        self.ctx = ctx
        self.observer = observer
        self.on_silence = on_silence
        self.target: RenewalTarget | None = None

    async def run(self) -> None:
        while True:
            target = self.target
            every = target.every() if target is not None else None
            await asyncio.sleep(every if every is not None else IDLE_CHECK)
            target = self.target  # the last pass's word
            if target is None or not self.ctx.lease.held:
                continue
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
