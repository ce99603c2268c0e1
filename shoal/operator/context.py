"""What every part of the running operator shares: the Swarm client, the status store, the
HTTP session for members' agents, the operator key, the lease, metrics and the plugins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from shoal.operator.metrics import OperatorMetrics
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
