"""Reads of Swarm that every database's worker makes alike, shared for a moment (issue 13:
at 20 databases the operator's busy time was mostly Docker API round trips).

What is shared, and why each is safe for failover timing:

- the tasks of shoal's databases (`tasks`): one read, filtered by Docker to them, serves
  the runtime's task poll and every worker. The poll reads it afresh every
  `task_poll_seconds` and wakes a worker only after storing what it read, so the worker a
  death wakes observes the very read that saw the death: no added latency. A worker that
  wakes on its own timer takes a read at most `ttl` old; a change after it is seen by the
  next poll, which wakes the worker again.
- the nodes (`nodes`): read afresh by the poll every `node_poll_seconds`, which wakes every
  worker when a node's state changes (a node declared down is then noticed within that,
  rather than at each worker's next periodic pass); dropped whenever the task poll sees a
  change, so a worker woken by a task change reads nodes as new as those tasks.
- the proxies' configs (`proxy_configs`): only the operator's own actions change them.
- whether a database's infrastructure (networks, secrets) is all there: once it is, it is
  not asked again for `INFRASTRUCTURE_RECHECK_SECONDS`. Swarm refuses to remove a network or
  a secret that a service uses, and a scale-up or a database declared again (another uid)
  asks afresh.

Every action the operator applies drops all of it (`changed`), so the pass after an action
sees Swarm as that action left it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from shoal import names
from shoal.operator.proxy import PROXY_ROLE
from shoal.swarm.client import JSON, SwarmApi

T = TypeVar("T")

TASKS_TTL = 0.5  # twice the runtime's task poll: the poll keeps it fresh while it runs
NODES_TTL = 1.25  # the runtime's node poll, and one task poll to spare
PROXY_CONFIGS_TTL = 5.0
INFRASTRUCTURE_RECHECK_SECONDS = 30.0


@dataclass(frozen=True)
class _Read(Generic[T]):
    value: T
    sent: float  # monotonic time the request was sent: what it says is at least this new


class SharedRead(Generic[T]):
    """One Swarm read that concurrent callers share: at most one request is in flight (the
    others wait for its answer), and an answer is reused while it was sent within `ttl`
    seconds and after the last `invalidate`."""

    def __init__(
        self,
        read: Callable[[], Awaitable[T]],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_swarm = read
        self.ttl = ttl
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last: _Read[T] | None = None
        self._floor = float("-inf")  # answers sent before this are not reused

    async def get(self) -> T:
        """An answer sent at most `ttl` seconds before this call (and after the last
        `invalidate`); Swarm is asked only when there is none."""
        asked = self._clock()
        async with self._lock:
            last = self._last
            if last is not None and last.sent >= max(asked - self.ttl, self._floor):
                return last.value
            return await self._fetch()

    async def refresh(self) -> T:
        """Ask Swarm now, and keep the answer for the others."""
        async with self._lock:
            return await self._fetch()

    def invalidate(self) -> None:
        """What was read before now is not reused (also an answer still in flight)."""
        self._floor = self._clock()

    async def _fetch(self) -> T:
        sent = self._clock()
        value = await self._read_swarm()
        if self._last is None or sent >= self._last.sent:
            self._last = _Read(value, sent)
        return value


@dataclass(frozen=True)
class _Ready:
    key: tuple[str, int]  # (uid, members): what the infrastructure was checked for
    at: float


class SharedReads:
    """What the operator's workers share (see the module's docstring)."""

    def __init__(self, swarm: SwarmApi, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Docker filters tasks by the labels of their service (swarmkit,
        # manager/controlapi/task.go, ListTasks: `filterMatchLabels(e.ServiceAnnotations.Labels,
        # ...)`; Engine API, GET /tasks, filter `label=key`): every member's and proxy's
        # service carries the database label. No `desired-state` filter: a killed member's
        # task is `failed` with desired state `shutdown` once Swarm replaced it, and a
        # replaced task still running (desired `shutdown`) must be seen too (observe.py).
        self.tasks: SharedRead[list[JSON]] = SharedRead(
            lambda: swarm.tasks(label=names.LABEL_DATABASE), TASKS_TTL, clock
        )
        self.nodes: SharedRead[list[JSON]] = SharedRead(swarm.nodes, NODES_TTL, clock)
        self.proxy_configs: SharedRead[list[JSON]] = SharedRead(
            lambda: swarm.configs_with_label(names.LABEL_ROLE, PROXY_ROLE),
            PROXY_CONFIGS_TTL,
            clock,
        )
        self._ready: dict[str, _Ready] = {}

    def infrastructure_known_ready(self, database: str, uid: str, members: int) -> bool:
        ready = self._ready.get(database)
        return (
            ready is not None
            and ready.key == (uid, members)
            and self._clock() - ready.at < INFRASTRUCTURE_RECHECK_SECONDS
        )

    def infrastructure_ready(self, database: str, uid: str, members: int) -> None:
        self._ready[database] = _Ready((uid, members), self._clock())

    def changed(self, database: str) -> None:
        """The operator changed something of `database` (or tried to): nothing read before
        is reused."""
        self.tasks.invalidate()
        self.nodes.invalidate()
        self.proxy_configs.invalidate()
        self._ready.pop(database, None)

    def forget(self, database: str) -> None:
        self._ready.pop(database, None)
