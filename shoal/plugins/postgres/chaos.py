"""The chaos suite's PostgreSQL client (`EngineSession`, shoal/chaos/engines.py), with
psycopg 3: the `set` and `bank` workloads' statements, and which errors certainly did not
take effect (`Definite`) and which may have (`Indefinite`)."""

from __future__ import annotations

import contextlib
from typing import ClassVar
from urllib.parse import quote

import psycopg
from psycopg import errors as pgerr

from shoal.chaos.engines import BANK_TABLE, SET_TABLE, Definite, Endpoint, EngineSession, Indefinite
from shoal.plugins.postgres import naming


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


def classify(exc: BaseException, committing: bool) -> Exception:
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
    port: ClassVar[int] = naming.PORT

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
            raise classify(e, committing=True) from e

    async def read_set(self) -> list[int]:
        try:
            cur = await self.conn.execute(f"SELECT id FROM {SET_TABLE} ORDER BY id")
            return [int(str(r[0])) for r in await cur.fetchall()]
        except pgerr.UndefinedTable:
            return []
        except Exception as e:
            raise classify(e, committing=False) from e

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
            raise classify(e, committing=committing) from e

    async def read_balances(self) -> dict[int, int]:
        try:
            cur = await self.conn.execute(f"SELECT id, balance FROM {BANK_TABLE} ORDER BY id")
            return {int(str(a)): int(str(b)) for a, b in await cur.fetchall()}
        except pgerr.UndefinedTable:
            return {}
        except Exception as e:
            raise classify(e, committing=False) from e
