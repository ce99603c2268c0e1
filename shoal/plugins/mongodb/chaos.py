"""The chaos suite's MongoDB client (`EngineSession`, shoal/chaos/engines.py), with pymongo's
`AsyncMongoClient`: the `set` and `bank` workloads, and which errors certainly did not take
effect (`Definite`) and which may have (`Indefinite`).

Every write is acknowledged only with `w: "majority"` (journaled: the replica set's
`writeConcernMajorityJournalDefault` is true by default), reads use `readConcern:
"majority"`, so nothing the workload counts as acknowledged can be rolled back by a
failover. Writes are retryable (`retryWrites=true`, the driver's default): the driver
retries an insert once after a network error or a primary change, and the server applies it
at most once (the MongoDB manual, "Retryable Writes"); an error after that retry is
`Indefinite`. A transfer is a multi-document transaction with the same concerns.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure, PyMongoError, WriteConcernError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from shoal.chaos.engines import BANK_TABLE, SET_TABLE, Definite, Endpoint, EngineSession, Indefinite
from shoal.plugins.mongodb import naming

MAJORITY = WriteConcern(w="majority")
UNKNOWN_COMMIT = "UnknownTransactionCommitResult"
RETRYABLE_WRITE = "RetryableWriteError"


def classify(exc: BaseException, writing: bool) -> Exception:
    """Map a pymongo error to Definite/Indefinite.

    A write concern error (the write is on the primary but not known on a majority), an
    unknown transaction commit result, a retryable write error that outlived its retry, and
    a connection error while writing: the write may or may not stay, indefinite. Any other
    server error (duplicate key, not primary, an aborted transaction): definite. Before the
    write was sent everything is definite."""
    msg = f"{type(exc).__name__}: {exc}".strip()[:300]
    if not writing:
        return Definite(msg)
    if isinstance(exc, WriteConcernError):
        return Indefinite(msg)
    if isinstance(exc, PyMongoError) and (
        exc.has_error_label(UNKNOWN_COMMIT) or exc.has_error_label(RETRYABLE_WRITE)
    ):
        return Indefinite(msg)
    if isinstance(exc, OperationFailure):
        return Definite(msg)
    return Indefinite(msg)  # a connection error or timeout with the write in flight


def client_options(ep: Endpoint, only_host: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "username": ep.user,
        "password": ep.password,
        "authSource": ep.database,
        "w": "majority",
        "readConcernLevel": "majority",
        "retryWrites": True,
        "connectTimeoutMS": ep.connect_timeout * 1000,
        "serverSelectionTimeoutMS": ep.connect_timeout * 1000,
        "appname": "shoal-chaos",
    }
    if ep.ca_file:
        options.update(tls=True, tlsCAFile=ep.ca_file)
    if only_host is not None:
        options["directConnection"] = True
    return options


class MongoSession(EngineSession):
    port: ClassVar[int] = naming.PORT

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self.client = client
        self.db = client[database]

    @classmethod
    async def connect(cls, ep: Endpoint, only_host: str | None = None) -> MongoSession:
        hosts = [f"{h}:{ep.port}" for h in ((only_host,) if only_host else ep.hosts)]
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            hosts, **client_options(ep, only_host)
        )
        session = cls(client, ep.database)
        try:
            # A multi-host session must find the primary (the default read preference);
            # a direct one reaches its member whatever its role.
            hello = await client.admin.command("hello")
        except Exception as e:  # nothing was written: certainly not applied
            await session.close()
            raise Definite(f"connect: {type(e).__name__}: {e}".strip()[:300]) from e
        me = hello.get("me")
        session.host = str(me).rpartition(":")[0] if me else only_host
        return session

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()

    async def setup_set(self) -> None:
        await self.db.drop_collection(SET_TABLE)
        await self.db.create_collection(SET_TABLE, write_concern=MAJORITY)

    async def insert(self, key: int, value: str) -> None:
        try:
            await self.db[SET_TABLE].insert_one({"_id": key, "val": value})
        except Exception as e:
            raise classify(e, writing=True) from e

    async def read_set(self) -> list[int]:
        try:
            cursor = self.db[SET_TABLE].find({}, {"_id": 1}).sort("_id", 1)
            return [int(doc["_id"]) async for doc in cursor]
        except Exception as e:
            raise classify(e, writing=False) from e

    async def setup_bank(self, accounts: int, balance: int) -> None:
        await self.db.drop_collection(BANK_TABLE)
        await self.db[BANK_TABLE].insert_many(
            [{"_id": i, "balance": balance} for i in range(accounts)]
        )

    async def transfer(self, src: int, dst: int, amount: int) -> None:
        committing = False
        try:
            async with (
                self.client.start_session() as session,
                await session.start_transaction(
                    read_concern=ReadConcern("snapshot"), write_concern=MAJORITY
                ),
            ):
                for account, delta in sorted([(src, -amount), (dst, amount)]):
                    await self.db[BANK_TABLE].update_one(
                        {"_id": account}, {"$inc": {"balance": delta}}, session=session
                    )
                committing = True  # leaving the transaction's block commits it
        except Exception as e:
            raise classify(e, writing=committing) from e

    async def read_balances(self) -> dict[int, int]:
        try:
            cursor = self.db[BANK_TABLE].find({}).sort("_id", 1)
            return {int(doc["_id"]): int(doc["balance"]) async for doc in cursor}
        except Exception as e:
            raise classify(e, writing=False) from e
