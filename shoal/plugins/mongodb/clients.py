"""The operator's own pymongo connections to members, for what only mongod itself can do
on a running replica set: replSetReconfig (with `force` only for an explicit recover
request) and replSetStepDown.

Each call opens an `AsyncMongoClient` straight to one member (`directConnection`), over TLS
with the member's certificate and name verified against the database's CA, logged in as the
operator's administrator (agent/users.py), and closes it again: these are rare actions, and
a client kept per member would hold monitor tasks for members that come and go.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bson import json_util
from pymongo import AsyncMongoClient
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from shoal.credentials import DatabaseCredentials
from shoal.plugins.base import ActionFailed
from shoal.plugins.mongodb import naming
from shoal.plugins.mongodb.agent import users
from shoal.plugins.mongodb.model import ReplicaSetConfig

# Server error codes (MongoDB's error_codes.yml).
NOT_WRITABLE_PRIMARY = 10107
NOT_PRIMARY_NO_SECONDARY_OK = 13435
PRIMARY_STEPPED_DOWN = 189
NOT_YET_INITIALIZED = 94
CA_DIRECTORY = Path(tempfile.gettempdir()) / f"shoal-ca-{os.getuid()}"


def ca_file(ca_pem: str, directory: Path = CA_DIRECTORY) -> str:
    """A file holding the database's CA certificate (pymongo reads CAs from files only),
    named by its hash: written once, whole, in a directory only this user can enter."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{hashlib.sha256(ca_pem.encode()).hexdigest()[:24]}.pem"
    if not path.is_file() or path.read_text() != ca_pem:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(ca_pem)
        tmp.replace(path)
    return str(path)


def client_options(credentials: DatabaseCredentials, ca_path: str) -> dict[str, Any]:
    """A direct, verified, authenticated connection to one member as the administrator."""
    admin = users.admin_user(credentials.by_purpose["superuser"])
    return {
        "directConnection": True,
        "tls": True,
        "tlsCAFile": ca_path,
        "username": admin.name,
        "password": admin.password,
        "authSource": admin.database,
        "serverSelectionTimeoutMS": 3000,
        "connectTimeoutMS": 2000,
        "socketTimeoutMS": 60_000,
        "appname": "shoal-operator",
    }


def bson_config(config: ReplicaSetConfig) -> dict[str, Any]:
    """The config as replSetReconfig takes it: `to_document()`'s relaxed Extended JSON
    turned into BSON values (`settings.replicaSetId` an ObjectId)."""
    loaded: dict[str, Any] = json_util.loads(json.dumps(config.to_document()))
    return loaded


async def _admin_command(
    member: str,
    credentials: DatabaseCredentials,
    command: Mapping[str, Any],
    ca_path: str,
) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        member, naming.PORT, **client_options(credentials, ca_path)
    )
    try:
        return await client.admin.command(dict(command))
    finally:
        await client.close()


def reconfig_command(config: ReplicaSetConfig, force: bool) -> dict[str, Any]:
    command: dict[str, Any] = {"replSetReconfig": bson_config(config)}
    if force:
        command["force"] = True
    return command


def step_down_command(seconds: int, catch_up_seconds: int, force: bool) -> dict[str, Any]:
    return {
        "replSetStepDown": seconds,
        "secondaryCatchUpPeriodSecs": catch_up_seconds,
        "force": force,
    }


async def reconfigure(
    member: str,
    credentials: DatabaseCredentials,
    config: ReplicaSetConfig,
    ca_path: str,
    *,
    force: bool = False,
) -> None:
    """replSetReconfig on `member` (the primary, or with `force` any member)."""
    try:
        await _admin_command(member, credentials, reconfig_command(config, force), ca_path)
    except PyMongoError as e:
        what = "forced replSetReconfig" if force else "replSetReconfig"
        raise ActionFailed(f"{member}: {what} to version {config.version} failed: {e}") from e


async def step_down(
    member: str,
    credentials: DatabaseCredentials,
    ca_path: str,
    *,
    seconds: int,
    catch_up_seconds: int,
    force: bool,
) -> None:
    """replSetStepDown on `member`. The primary may close the connection as it steps down
    (always before MongoDB 4.2, and still for connections with a write in flight): that
    drop is the expected success. A member that is not primary (any more) is already what
    a step-down wants."""
    command = step_down_command(seconds, catch_up_seconds, force)
    try:
        await _admin_command(member, credentials, command, ca_path)
    except ServerSelectionTimeoutError as e:  # never reached it: nothing was sent
        raise ActionFailed(f"{member}: replSetStepDown not sent: {e}") from e
    except AutoReconnect:  # the connection dropped as it stepped down; re-observed next
        return
    except OperationFailure as e:
        if e.code in (NOT_WRITABLE_PRIMARY, NOT_PRIMARY_NO_SECONDARY_OK, PRIMARY_STEPPED_DOWN):
            return
        raise ActionFailed(f"{member}: replSetStepDown failed: {e}") from e
    except (ConnectionFailure, PyMongoError) as e:
        raise ActionFailed(f"{member}: replSetStepDown failed: {e}") from e
