"""Client workloads (Jepsen style), run by `python -m shoal.chaos.client` inside a container
on the database's network.

`set`:  every process inserts unique ids into `chaos_set`; each insert is recorded as ok,
        fail (certainly not applied) or unknown (timeout / connection lost while committing).
`bank`: N accounts with a fixed total; processes transfer random amounts between random
        accounts in transactions and periodically read the total, which must never change.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from shoal.chaos.engines import Definite, EngineSession, Indefinite
from shoal.chaos.history import Op, OpKind, Outcome

WorkloadKind = Literal["set", "bank"]
WORKLOADS: tuple[str, ...] = ("set", "bank")
ID_STRIDE = 1_000_000_000  # ids of process p are p * ID_STRIDE + seq: unique across processes

Connector = Callable[[], Awaitable[EngineSession]]
Emit = Callable[[Op], None]


@dataclass
class WorkloadConfig:
    workload: WorkloadKind = "set"
    duration: float = 60.0
    concurrency: int = 4
    rate: float = 20.0  # operations per second per process (0 = as fast as possible)
    op_timeout: float = 5.0
    accounts: int = 5
    initial_balance: int = 100
    read_fraction: float = 0.2  # bank: share of operations that read the total
    setup: bool = True
    run_id: str = "chaos"
    seed: int | None = None


@dataclass
class Counters:
    ok: int = 0
    fail: int = 0
    unknown: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, op: Op) -> None:
        setattr(self, op.outcome, getattr(self, op.outcome) + 1)
        self.by_kind[op.op] = self.by_kind.get(op.op, 0) + 1


async def _close(session: EngineSession | None) -> None:
    if session is not None:
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(session.close(), 1.0)


async def setup(cfg: WorkloadConfig, connector: Connector, deadline: float) -> None:
    """Create the workload's tables, retrying until `deadline` (the primary may be moving)."""
    last: BaseException | None = None
    while time.time() < deadline:
        session: EngineSession | None = None
        try:
            session = await asyncio.wait_for(connector(), cfg.op_timeout * 2)
            if cfg.workload == "set":
                await asyncio.wait_for(session.setup_set(), cfg.op_timeout * 4)
            else:
                await asyncio.wait_for(
                    session.setup_bank(cfg.accounts, cfg.initial_balance), cfg.op_timeout * 4
                )
            return
        except (TimeoutError, Exception) as e:
            last = e
            await asyncio.sleep(0.5)
        finally:
            await _close(session)
    raise RuntimeError(f"workload setup failed: {last}")


class Process:
    """One logical client: a loop of operations on its own connection."""

    def __init__(self, pid: int, cfg: WorkloadConfig, connector: Connector, emit: Emit) -> None:
        self.pid = pid
        self.cfg = cfg
        self.connector = connector
        self.emit = emit
        self.seq = 0
        self.session: EngineSession | None = None
        self.rng = random.Random(None if cfg.seed is None else cfg.seed * 7919 + pid)

    async def _session(self) -> EngineSession:
        if self.session is None:
            try:
                self.session = await asyncio.wait_for(self.connector(), self.cfg.op_timeout)
            except TimeoutError as e:
                raise Definite("connect: timeout") from e
        return self.session

    async def _do(
        self,
        kind: OpKind,
        key: object,
        value: object,
        action: Callable[[EngineSession], Awaitable[object]],
    ) -> Op:
        start = time.time()
        outcome: Outcome = "ok"
        error: str | None = None
        host: str | None = None
        result: object = value
        try:
            session = await self._session()
            host = session.host
            result = await asyncio.wait_for(action(session), self.cfg.op_timeout)
            if kind != "read":
                result = value
        except Definite as e:
            outcome, error = "fail", str(e)
        except (Indefinite, TimeoutError) as e:
            outcome, error = "unknown", str(e) or "timeout"
        except Exception as e:
            outcome, error = "unknown", f"{type(e).__name__}: {e}"[:300]
        if outcome != "ok":
            # A read of a failed op has no meaning; unknown writes keep their intended value.
            if kind == "read":
                result = None
            broken, self.session = self.session, None
            await _close(broken)
        op = Op(self.pid, kind, key, result, start, time.time(), outcome, error, host)
        self.emit(op)
        return op

    async def step(self) -> Op:
        if self.cfg.workload == "set":
            key = self.pid * ID_STRIDE + self.seq
            self.seq += 1
            value = f"{self.cfg.run_id}-{key}"
            return await self._do("insert", key, value, lambda s: s.insert(key, value))
        if self.rng.random() < self.cfg.read_fraction:
            return await self._do("read", "total", None, _read_total)
        src, dst = self.rng.sample(range(self.cfg.accounts), 2)
        amount = self.rng.randint(1, 10)
        return await self._do(
            "transfer", [src, dst], amount, lambda s: s.transfer(src, dst, amount)
        )

    async def run(self, deadline: float) -> None:
        period = 1.0 / self.cfg.rate if self.cfg.rate > 0 else 0.0
        while time.time() < deadline:
            began = time.monotonic()
            op = await self.step()
            pause = period - (time.monotonic() - began)
            if op.outcome != "ok":
                pause = max(pause, 0.1)  # back off a little while the database is down
            if pause > 0:
                await asyncio.sleep(min(pause, max(0.0, deadline - time.time())))
        await _close(self.session)
        self.session = None


async def _read_total(session: EngineSession) -> object:
    balances = await session.read_balances()
    return sum(balances.values())


async def run_workload(cfg: WorkloadConfig, connector: Connector, emit: Emit) -> Counters:
    """Set up, then run `cfg.concurrency` processes for `cfg.duration` seconds."""
    if cfg.workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, got {cfg.workload!r}")
    if cfg.workload == "bank" and cfg.accounts < 2:
        raise ValueError("bank workload needs at least 2 accounts")
    counters = Counters()

    def _emit(op: Op) -> None:
        counters.add(op)
        emit(op)

    if cfg.setup:
        await setup(cfg, connector, time.time() + max(60.0, cfg.duration))
    deadline = time.time() + cfg.duration
    procs = [Process(i, cfg, connector, _emit) for i in range(cfg.concurrency)]
    await asyncio.gather(*(p.run(deadline) for p in procs))
    return counters
