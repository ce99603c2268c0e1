"""The operator lease: at most one operator acts at a time.

The lease is a zero-replica service whose label holds `{holder, token, beat}`; every change
is a compare-and-swap on the service version. Expiry is judged like Kubernetes' leader
election: a candidate watches the record and takes over only after it has seen no change for
`duration` seconds of its *own* monotonic clock, so no clock agreement between nodes is
needed. Each take-over increments `token`, the fencing token: members' agents and the status
store refuse requests carrying a token older than the newest they have seen, so a deposed
operator that wakes up late can change nothing.

The record is versioned (`format`; absent in records of earlier operators, which is format 1).
An operator that meets a newer format than `LEASE_FORMAT` neither takes, renews, advances nor
releases the lease, and never overwrites the record: it logs why and does not act.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shoal import names
from shoal.swarm.client import JSON, SwarmClient, SwarmError, VersionConflict

log = logging.getLogger("shoal.lease")


@dataclass(frozen=True)
class LeaseSettings:
    duration: float = 10.0  # a silent holder is presumed gone after this long
    renew_every: float = 2.0
    # A holder stops acting this long before others may take over, to absorb scheduling
    # delays between its last successful renewal and the action it is about to take.
    safety_margin: float = 3.0


LEASE_FORMAT = 1


class NewerLeaseFormat(Exception):
    """The lease record is of a format this operator does not know: it must not act on it."""


class LeaseRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    format: int = Field(default=LEASE_FORMAT, ge=1)
    holder: str = ""
    token: int = 0
    beat: int = 0

    def to_label(self) -> str:
        return json.dumps(self.model_dump())

    @staticmethod
    def from_label(raw: str | None) -> LeaseRecord:
        """The record in the lease label. One that cannot be read is an empty, unheld lease
        (as it always was); one of a newer format raises `NewerLeaseFormat`."""
        try:
            d: Any = json.loads(raw or "{}")
        except ValueError:
            return LeaseRecord()
        if not isinstance(d, dict):
            return LeaseRecord()
        fmt = d.get("format", 1)
        if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > LEASE_FORMAT:
            raise NewerLeaseFormat(
                f"the lease record has format {fmt!r}, newer than this operator's "
                f"({LEASE_FORMAT}): not taking, renewing or overwriting it"
            )
        try:
            return LeaseRecord.model_validate(d)
        except ValidationError:
            return LeaseRecord()


def lease_spec(record: LeaseRecord) -> JSON:
    return {
        "Name": names.LEASE_SERVICE,
        "Labels": {
            names.LABEL_MANAGED: "true",
            names.LABEL_ROLE: "lease",
            names.LABEL_LEASE: record.to_label(),
        },
        "TaskTemplate": {
            "ContainerSpec": {"Image": names.IMAGE_BASE, "Command": ["true"]},
            "RestartPolicy": {"Condition": "none"},
        },
        "Mode": {"Replicated": {"Replicas": 0}},
    }


@dataclass
class Lease:
    client: SwarmClient
    identity: str
    settings: LeaseSettings = field(default_factory=LeaseSettings)
    clock: Callable[[], float] = time.monotonic
    token: int = 0
    _valid_until: float = 0.0
    _seen: tuple[int, float] | None = None  # (service version, when first seen unchanged)
    holder: str = ""
    # Swarm's certain word that the holder's container is dead lets a candidate take over at
    # once instead of waiting out `duration` (a dead process cannot act any more).
    holder_dead: Callable[[str], Awaitable[bool]] | None = None
    _refusal: str = ""  # why the last record read was refused ("" when it was not)

    @property
    def held(self) -> bool:
        """True while this process may act: it renewed recently enough."""
        return self.token > 0 and self.clock() < self._valid_until

    async def step(self) -> bool:
        """One renew or acquire attempt. Returns whether the lease is held afterwards."""
        started = self.clock()
        try:
            service = await self.client.service(names.LEASE_SERVICE)
            if service is None:
                first = LeaseRecord(holder=self.identity, token=1)
                await self.client.create_service(lease_spec(first))
                self._won(first, started)
                return True
            version = int(service["Version"]["Index"])
            record = self._read(service)
            if record is None:
                self._lost()
                return False
            self.holder = record.holder
            if record.holder == self.identity and record.token == self.token and self.token:
                renewed = LeaseRecord(
                    holder=self.identity, token=record.token, beat=record.beat + 1
                )
                await self.client.update_service(service["ID"], version, lease_spec(renewed))
                self._valid_until = started + self.settings.duration - self.settings.safety_margin
                return self.held
            # Someone else's (or a previous incarnation's) record: wait until it goes quiet.
            if self._seen is None or self._seen[0] != version:
                self._seen = (version, started)
            quiet_for = started - self._seen[1]
            if (
                record.holder
                and quiet_for < self.settings.duration
                and not (self.holder_dead is not None and await self.holder_dead(record.holder))
            ):
                self._lost()
                return False
            taken = LeaseRecord(holder=self.identity, token=record.token + 1)
            await self.client.update_service(service["ID"], version, lease_spec(taken))
            self._won(taken, started)
            return True
        except VersionConflict:
            self._lost()
            return False
        except SwarmError as e:
            log.warning("lease step failed: %s", e, extra={"event": "lease-error"})
            return self.held

    def remaining(self) -> float:
        """Seconds this process may still act without renewing (0 when not held)."""
        return max(0.0, self._valid_until - self.clock()) if self.token > 0 else 0.0

    async def confirm(self) -> bool:
        """Re-read the record right before an action that changes Swarm: True only if it is
        still ours, with our token, and our own clock says it has not run out."""
        if not self.held:
            return False
        try:
            own = await self._own_record()
        except SwarmError:
            return False
        return own is not None and self.held

    async def _own_record(self) -> tuple[JSON, LeaseRecord] | None:
        """The lease service and its record while the record is ours, with our token; None
        when the service is gone, and None (the lease lost) when the record is another's."""
        service = await self.client.service(names.LEASE_SERVICE)
        if service is None:
            return None
        record = self._read(service)
        if record is None or record.holder != self.identity or record.token != self.token:
            self._lost()
            return None
        return service, record

    async def advance_past(self, seen: int) -> bool:
        """A member recorded a fencing token above ours (written by a bug, or by hand): take
        a token above it, by compare-and-swap on our own record, so nothing can lock the
        lease holder out. A deposed holder's attempt fails (the record is not its own)."""
        if not self.held or seen <= self.token:
            return self.held
        try:
            own = await self._own_record()
            if own is None:
                return False
            service, record = own
            ahead = LeaseRecord(holder=self.identity, token=seen + 1, beat=record.beat + 1)
            await self.client.update_service(
                service["ID"], int(service["Version"]["Index"]), lease_spec(ahead)
            )
        except (VersionConflict, SwarmError):
            return False
        log.warning(
            "fencing token advanced from %d to %d past one a member had seen",
            self.token,
            seen + 1,
            extra={"event": "lease-advanced"},
        )
        self.token = seen + 1
        return self.held

    async def release(self) -> None:
        """Hand the lease back at shutdown so a standby takes over at once."""
        if not self.token:
            return
        try:
            service = await self.client.service(names.LEASE_SERVICE)
            if service is None:
                return
            record = self._read(service)
            if record is None or record.holder != self.identity:
                return
            await self.client.update_service(
                service["ID"],
                int(service["Version"]["Index"]),
                lease_spec(LeaseRecord(token=record.token, beat=record.beat + 1)),
            )
        except SwarmError:
            pass
        finally:
            self._lost()

    def _read(self, service: JSON) -> LeaseRecord | None:
        """The service's lease record; None, logged once, when it is of a newer format."""
        try:
            record = LeaseRecord.from_label(
                service["Spec"].get("Labels", {}).get(names.LABEL_LEASE)
            )
        except NewerLeaseFormat as e:
            if self._refusal != str(e):
                log.error("%s", e, extra={"event": "lease-refused"})
            self._refusal = str(e)
            return None
        self._refusal = ""
        return record

    def _won(self, record: LeaseRecord, started: float) -> None:
        if self.token != record.token:
            log.info(
                "lease acquired with fencing token %d",
                record.token,
                extra={"event": "lease-acquired"},
            )
        self.token = record.token
        self.holder = record.holder
        self._valid_until = started + self.settings.duration - self.settings.safety_margin
        self._seen = None

    def _lost(self) -> None:
        if self.token:
            log.warning("lease lost (token %d)", self.token, extra={"event": "lease-lost"})
        self.token = 0
        self._valid_until = 0.0
