"""What every part of the running operator shares: the Swarm client, the status store, the
HTTP session for members' agents, the operator key, the lease, metrics, the plugins, and
the Swarm reads every database's worker makes alike (`shared`, operator/shared.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp

from shoal.operator.metrics import OperatorMetrics
from shoal.operator.shared import SharedReads
from shoal.plugins.base import EnginePlugin
from shoal.swarm.client import SwarmApi
from shoal.swarm.lease import Lease
from shoal.swarm.store import DatabaseStore


@dataclass
class OperatorContext:
    swarm: SwarmApi
    store: DatabaseStore[SwarmApi]
    http: aiohttp.ClientSession
    key: bytes
    lease: Lease
    metrics: OperatorMetrics
    plugins: dict[str, EnginePlugin[Any]]
    shared: SharedReads = field(init=False)

    def __post_init__(self) -> None:
        self.shared = SharedReads(self.swarm)
