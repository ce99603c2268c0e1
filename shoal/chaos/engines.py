"""Engine-specific client code behind one small interface.

The workloads only speak `EngineSession`; PostgreSQL is implemented here with psycopg 3.
A MongoDB session (inserts with `w: majority`, transfers in a multi-document transaction)
implements the same methods and registers itself in `ENGINES`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import psycopg
from psycopg import errors as pgerr

from shoal import names

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
    # certificate and name (sslmode=verify-full), as `shoal credentials` URIs ask clients to.
    ca_file: str | None = None


class EngineSession(ABC):
    """One connection to the database's writable primary (or to one member, for reads)."""

    host: str | None = None

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


def pg_uri(ep: Endpoint, only_host: str | None = None) -> str:
    """libpq multi-host URI; with `only_host` a direct connection to that one member."""
    hosts = (only_host,) if only_host else ep.hosts
    hostlist = ",".join(f"{h}:{ep.port}" for h in hosts)
    query = f"connect_timeout={ep.connect_timeout}"
    if ep.ca_file:
        query += f"&sslmode=verify-full&sslrootcert={quote(ep.ca_file, safe='/')}"
    if only_host is None:
        query = "target_session_attrs=read-write&" + query
    return (
        f"postgresql://{quote(ep.user, safe='')}:{quote(ep.password, safe='')}@{hostlist}/"
        f"{quote(ep.database, safe='')}?{query}"
    )


def _classify_pg(exc: BaseException, committing: bool) -> Exception:
    """Map a psycopg error to Definite/Indefinite.

    A server-side error with an SQLSTATE (unique violation, read-only transaction,
    serialization failure, deadlock) means the transaction was rolled back: definite. A
    connection-level error (no SQLSTATE, class 08, admin shutdown) while the commit was in
    flight is indefinite; before the commit was sent it is definite.
    """
    state = getattr(exc, "sqlstate", None)
    msg = f"{type(exc).__name__}: {exc}".strip()[:300]
    if (
        isinstance(exc, psycopg.Error)
        and state
        and not (state.startswith("08") or state.startswith("57P") or state.startswith("XX"))
    ):
        return Definite(msg)
    return Indefinite(msg) if committing else Definite(msg)


class PostgresSession(EngineSession):
    def __init__(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        self.conn = conn
        self.host = conn.info.host

    @classmethod
    async def connect(cls, ep: Endpoint, only_host: str | None = None) -> PostgresSession:
        try:
            conn = await psycopg.AsyncConnection.connect(pg_uri(ep, only_host), autocommit=True)
        except Exception as e:  # nothing was sent: certainly not applied
            raise Definite(f"connect: {type(e).__name__}: {e}".strip()[:300]) from e
        return cls(conn)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.close()

    async def setup_set(self) -> None:
        await self.conn.execute(f"DROP TABLE IF EXISTS {SET_TABLE}")
        await self.conn.execute(f"CREATE TABLE {SET_TABLE} (id bigint primary key, val text)")

    async def insert(self, key: int, value: str) -> None:
        try:  # autocommit: the INSERT is its own commit
            await self.conn.execute(
                f"INSERT INTO {SET_TABLE} (id, val) VALUES (%s, %s)", (key, value)
            )
        except Exception as e:
            raise _classify_pg(e, committing=True) from e

    async def read_set(self) -> list[int]:
        try:
            cur = await self.conn.execute(f"SELECT id FROM {SET_TABLE} ORDER BY id")
            return [int(str(r[0])) for r in await cur.fetchall()]
        except pgerr.UndefinedTable:
            return []
        except Exception as e:
            raise _classify_pg(e, committing=False) from e

    async def setup_bank(self, accounts: int, balance: int) -> None:
        await self.conn.execute(f"DROP TABLE IF EXISTS {BANK_TABLE}")
        await self.conn.execute(
            f"CREATE TABLE {BANK_TABLE} (id int primary key, balance bigint not null)"
        )
        async with self.conn.transaction():
            for i in range(accounts):
                await self.conn.execute(
                    f"INSERT INTO {BANK_TABLE} (id, balance) VALUES (%s, %s)", (i, balance)
                )

    async def transfer(self, src: int, dst: int, amount: int) -> None:
        committing = False
        try:
            await self.conn.execute("BEGIN")
            # Lock in id order so that concurrent transfers cannot deadlock.
            for acct, delta in sorted([(src, -amount), (dst, amount)]):
                await self.conn.execute(
                    f"UPDATE {BANK_TABLE} SET balance = balance + %s WHERE id = %s",
                    (delta, acct),
                )
            committing = True
            await self.conn.execute("COMMIT")
        except Exception as e:
            if not committing:
                with contextlib.suppress(Exception):
                    await self.conn.execute("ROLLBACK")
            raise _classify_pg(e, committing=committing) from e

    async def read_balances(self) -> dict[int, int]:
        try:
            cur = await self.conn.execute(f"SELECT id, balance FROM {BANK_TABLE} ORDER BY id")
            return {int(str(a)): int(str(b)) for a, b in await cur.fetchall()}
        except pgerr.UndefinedTable:
            return {}
        except Exception as e:
            raise _classify_pg(e, committing=False) from e


async def connect(engine: str, ep: Endpoint, only_host: str | None = None) -> EngineSession:
    """Open a session to the writable primary, or to `only_host` directly."""
    if engine == "postgres":
        return await PostgresSession.connect(ep, only_host)
    raise Definite(f"engine {engine!r} has no chaos client yet")


SUPPORTED_ENGINES: Sequence[str] = ("postgres",)


def default_endpoint(db: str, members: int, password: str) -> Endpoint:
    return Endpoint(
        hosts=tuple(names.member_service(db, i) for i in range(members)),
        port=names.POSTGRES_PORT,
        user=names.APP_USER,
        password=password,
        database=names.APP_DATABASE,
    )
