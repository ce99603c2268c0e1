"""The chaos client's one small interface to a database engine.

The workloads only speak `EngineSession`. Each engine plugin implements it (in
`shoal/plugins/<engine>/chaos.py`) and names its class with `EnginePlugin.chaos_session`;
`connect` finds it through the plugin registry (the `shoal.engines` entry points), so this
module names no engine (each engine's session says which errors leave a write's fate open).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

# The workloads' tables (or collections): the same names whatever the engine.
SET_TABLE = "chaos_set"
BANK_TABLE = "chaos_bank"


class Definite(Exception):
    """The operation certainly did not take effect (the server said no)."""


class Indefinite(Exception):
    """The operation may or may not have taken effect (lost connection, timeout)."""


@dataclass(frozen=True)
class Endpoint:
    hosts: tuple[str, ...]
    port: int
    user: str
    password: str
    database: str
    connect_timeout: int = 2
    # A file holding the database's CA certificate: the session then verifies each member's
    # certificate and name, as `shoal credentials` URIs ask clients to.
    ca_file: str | None = None


class EngineSession(ABC):
    """One connection to the database's writable primary (or to one member, for reads)."""

    # The port the engine's members serve clients on (the runner puts it in the client's
    # `Endpoint`).
    port: ClassVar[int]
    host: str | None = None

    @classmethod
    @abstractmethod
    async def connect(cls, ep: Endpoint, only_host: str | None = None) -> EngineSession:
        """Open a session to the writable primary, or to `only_host` directly; raises
        `Definite` when it cannot (nothing was sent)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def setup_set(self) -> None:
        """Create the empty set table (dropping a previous run's)."""

    @abstractmethod
    async def insert(self, key: int, value: str) -> None: ...

    @abstractmethod
    async def read_set(self) -> list[int]: ...

    @abstractmethod
    async def setup_bank(self, accounts: int, balance: int) -> None: ...

    @abstractmethod
    async def transfer(self, src: int, dst: int, amount: int) -> None: ...

    @abstractmethod
    async def read_balances(self) -> dict[int, int]: ...


@functools.cache
def session_class(engine: str) -> type[EngineSession] | None:
    """The installed plugin's chaos session for `engine`; None when no plugin for it is
    installed or it has no chaos client. Looked up once: the workload connects often."""
    from shoal.plugins.registry import engine_plugins

    plugin = engine_plugins().get(engine)
    return plugin.chaos_session() if plugin is not None else None


async def connect(engine: str, ep: Endpoint, only_host: str | None = None) -> EngineSession:
    """Open a session to the writable primary, or to `only_host` directly."""
    cls = session_class(engine)
    if cls is None:
        raise Definite(f"engine {engine!r} has no chaos client yet")
    return await cls.connect(ep, only_host)
