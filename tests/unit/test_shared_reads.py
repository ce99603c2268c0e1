"""`SharedRead` (shoal/operator/shared.py): one Swarm read shared by the workers for a
moment, never past an invalidation."""

from __future__ import annotations

import asyncio

import pytest

from shoal.operator.shared import SharedRead

pytestmark = pytest.mark.unit


class Source:
    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0
        self.gate: asyncio.Event | None = None

    def clock(self) -> float:
        return self.now

    async def read(self) -> int:
        self.reads += 1
        n = self.reads
        if self.gate is not None:
            await self.gate.wait()
        return n


async def test_an_answer_is_reused_within_its_ttl_only() -> None:
    src = Source()
    shared = SharedRead(src.read, ttl=0.5, clock=src.clock)
    assert await shared.get() == 1
    src.now = 0.5
    assert await shared.get() == 1
    src.now = 0.51
    assert await shared.get() == 2
    assert await shared.refresh() == 3  # the polls ask afresh, always
    assert await shared.get() == 3


async def test_concurrent_callers_share_one_read() -> None:
    src = Source()
    src.gate = asyncio.Event()
    shared = SharedRead(src.read, ttl=0.5, clock=src.clock)
    waiting = [asyncio.create_task(shared.get()) for _ in range(5)]
    await asyncio.sleep(0)
    src.gate.set()
    assert await asyncio.gather(*waiting) == [1] * 5
    assert src.reads == 1


async def test_a_read_sent_before_an_invalidation_is_not_reused() -> None:
    src = Source()
    src.gate = asyncio.Event()
    shared = SharedRead(src.read, ttl=10.0, clock=src.clock)
    in_flight = asyncio.create_task(shared.get())
    await asyncio.sleep(0)
    src.now = 1.0
    shared.invalidate()  # e.g. an action applied while the read was on its way
    src.gate.set()
    assert await in_flight == 1  # its own caller asked before: it gets it
    assert await shared.get() == 2  # nobody after
    assert await shared.get() == 2


async def test_a_failed_read_is_not_kept() -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("manager unreachable")
        return calls

    shared = SharedRead(flaky, ttl=10.0)
    with pytest.raises(OSError):
        await shared.get()
    assert await shared.get() == 2
