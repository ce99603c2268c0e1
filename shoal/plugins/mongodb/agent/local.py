"""What the agent asks its own mongod, over loopback with TLS (pymongo: Debian's 3.11 in
the member; the same calls work with pymongo 4).

Two clients, both direct to 127.0.0.1: one without credentials (`hello`, which needs none,
and the localhost exception while no user exists) and one as the operator's administrator
(users.py), for the replica set's status and config once the users exist. Loopback cannot
match the member's certificate name, so host names are not checked there; the chain still
is, against the database's CA.

Initiation follows the MongoDB manual, "Deploy a Replica Set with Keyfile Authentication":
replSetInitiate on one member through the localhost exception, then, on the primary, the
user administrator first (closing the exception), then the other users authenticated as it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bson import json_util
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError, WriteConcernError

from .initiate import InitiateRequest
from .tls import TlsFiles
from .users import User

# Server error codes (MongoDB's error_codes.yml).
UNAUTHORIZED = 13
AUTHENTICATION_FAILED = 18
ALREADY_INITIALIZED = 23
USER_EXISTS = 51003
COMMAND_NOT_FOUND = 59

PRIMARY_WAIT = 30.0  # seconds for the initiated member to become primary
MAJORITY = {"w": "majority", "wtimeout": 30_000}


class Refused(Exception):
    """The member is not in a state where the request can be done (HTTP 409)."""


class Unavailable(Exception):
    """mongod did not answer or failed (HTTP 503); the operator asks again later."""


def error_reply(e: OperationFailure) -> dict[str, Any]:
    """A failed command's reply as the server sent it (the probe document keeps it)."""
    details = e.details or {}
    return {
        "ok": 0,
        "code": e.code,
        "codeName": details.get("codeName"),
        "errmsg": str(details.get("errmsg") or e)[:300],
    }


def relaxed_json(document: Any) -> str:
    """A document in relaxed Extended JSON (timestamps, ObjectIds and dates kept typed)."""
    return json_util.dumps(document, json_options=json_util.RELAXED_JSON_OPTIONS)


class LocalMongo:
    def __init__(self, tls: TlsFiles, admin: User, app: User, marker: Path, port: int) -> None:
        self.tls = tls
        self.admin = admin
        self.app = app
        self.marker = marker  # the config this agent initiated, for a repeated request
        self.port = port
        self._lock = threading.Lock()
        self._anonymous: MongoClient[dict[str, Any]] | None = None
        self._authenticated: MongoClient[dict[str, Any]] | None = None

    # --- clients ---------------------------------------------------------------------
    def _client(self, user: User | None) -> MongoClient[dict[str, Any]]:
        auth: dict[str, Any] = {}
        if user is not None:
            auth = {"username": user.name, "password": user.password, "authSource": user.database}
        return MongoClient(
            "127.0.0.1",
            self.port,
            directConnection=True,
            tls=True,
            tlsCAFile=str(self.tls.ca),
            tlsAllowInvalidHostnames=True,
            connect=False,
            serverSelectionTimeoutMS=1500,
            connectTimeoutMS=1000,
            socketTimeoutMS=20_000,
            appname="shoal-agent",
            **auth,
        )

    def anonymous(self) -> MongoClient[dict[str, Any]]:
        with self._lock:
            if self._anonymous is None:
                self._anonymous = self._client(None)
            return self._anonymous

    def authenticated(self) -> MongoClient[dict[str, Any]]:
        with self._lock:
            if self._authenticated is None:
                self._authenticated = self._client(self.admin)
            return self._authenticated

    def _forget_authenticated(self) -> None:
        with self._lock:
            client, self._authenticated = self._authenticated, None
        if client is not None:
            client.close()

    def close(self) -> None:
        self._forget_authenticated()
        with self._lock:
            client, self._anonymous = self._anonymous, None
        if client is not None:
            client.close()

    # --- what the member is ----------------------------------------------------------
    def hello(self) -> dict[str, Any] | None:
        """`hello` (MongoDB >= 4.4.2; `isMaster` before); None when mongod does not answer."""
        admin = self.anonymous().admin
        try:
            try:
                return admin.command("hello")
            except OperationFailure as e:
                if e.code != COMMAND_NOT_FOUND:
                    raise
                return admin.command("isMaster")
        except PyMongoError:
            return None

    def _admin_command(self, name: str) -> dict[str, Any] | None:
        """`name` on `admin` as the administrator, or through the localhost exception while
        no user exists. The server's error reply (`{"ok": 0, "code", "codeName", "errmsg"}`)
        where the command failed, e.g. NotYetInitialized before the set exists; None when
        it could not be asked (no answer, or no login works yet)."""
        for client in (self.authenticated(), self.anonymous()):
            try:
                return client.admin.command(name)
            except OperationFailure as e:
                if e.code in (AUTHENTICATION_FAILED, UNAUTHORIZED):
                    continue
                return error_reply(e)
            except PyMongoError:
                return None
        return None

    def status(self) -> dict[str, Any] | None:
        """replSetGetStatus's reply, or its error reply."""
        return self._admin_command("replSetGetStatus")

    def config(self) -> dict[str, Any] | None:
        """replSetGetConfig's `config`, or the command's error reply."""
        answer = self._admin_command("replSetGetConfig")
        if answer is None or not answer.get("ok", 1):
            return answer
        config = answer.get("config")
        return config if isinstance(config, dict) else None

    def state(self, task: str | None) -> dict[str, Any]:
        """The probe document `GET /state` answers with."""
        hello = self.hello()
        return {
            "format": 1,
            "hello": hello,
            "status": self.status() if hello is not None else None,
            "config": self.config() if hello is not None else None,
            "task": task,
        }

    # --- initiation ------------------------------------------------------------------
    def initiate(
        self, request: InitiateRequest, clock: Callable[[], float] = time.monotonic
    ) -> dict[str, Any]:
        """replSetInitiate with `request.config`, then the users. A repeat of a request this
        agent already carried out finishes what is missing (the users); any other replica
        set found here is refused.

        Once replSetInitiate succeeded the answer is a success: the users are created here
        if the member becomes primary in time, else `users_pending` says why, and the
        users guard (`users_guard`, run by every agent) creates them on whichever member
        becomes the primary. The planner never asks a replica set that exists to initiate
        again, so nothing after replSetInitiate may depend on another request."""
        hello = self.hello()
        if hello is None:
            raise Unavailable("mongod does not answer")
        initiated_now = False
        if hello.get("setName") is not None:
            self._check_repeat(request, str(hello["setName"]))
        else:
            try:
                self.anonymous().admin.command("replSetInitiate", request.config)
            except OperationFailure as e:
                if e.code == ALREADY_INITIALIZED:
                    raise Refused(f"a replica set already exists here: {e}") from e
                raise Unavailable(f"replSetInitiate failed: {e}") from e
            except PyMongoError as e:
                raise Unavailable(f"replSetInitiate failed: {e}") from e
            done = {"_id": request.config["_id"], "hosts": list(request.hosts)}
            self.marker.write_text(json.dumps(done))
            initiated_now = True
        created: list[str] = []
        pending: str | None = None
        try:
            self._wait_primary(clock)
            created = self.ensure_users()
        except (Unavailable, Refused) as e:
            pending = str(e)
        return {
            "initiated": initiated_now,
            "users": created,
            "users_pending": pending,
            "hello": self.hello(),
        }

    def _check_repeat(self, request: InitiateRequest, set_name: str) -> None:
        try:
            done = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            done = None
        same = (
            isinstance(done, dict)
            and done.get("_id") == request.config["_id"] == set_name
            and done.get("hosts") == list(request.hosts)
        )
        if not same:
            raise Refused(
                f"this member already belongs to replica set {set_name!r}, which this agent "
                "did not initiate with this config: refusing to initiate another"
            )

    def _wait_primary(self, clock: Callable[[], float]) -> None:
        deadline = clock() + PRIMARY_WAIT
        while True:
            hello = self.hello() or {}
            if hello.get("isWritablePrimary") or hello.get("ismaster"):
                return
            if clock() >= deadline:
                raise Unavailable(
                    f"initiated, but not the writable primary within {PRIMARY_WAIT:.0f} s: "
                    "the users are created once a member is"
                )
            time.sleep(0.25)

    def admin_login_works(self) -> bool:
        """The administrator exists here (and its password is this database's)."""
        try:
            self.authenticated().admin.command("connectionStatus")
        except PyMongoError:
            return False
        return True

    def writable_primary(self) -> bool:
        hello = self.hello() or {}
        return bool(hello.get("isWritablePrimary") or hello.get("ismaster"))

    def ensure_users(self) -> list[str]:
        """The administrator (through the localhost exception when it does not exist yet),
        then the application's user as the administrator; each created or, if it exists,
        updated to the password and roles it should have. Names of those created."""
        created: list[str] = []
        try:
            self.authenticated().admin.command("connectionStatus")
        except OperationFailure as e:
            if e.code != AUTHENTICATION_FAILED:
                raise Unavailable(f"cannot check the administrator: {e}") from e
            self._create(self.anonymous(), self.admin)
            created.append(self.admin.name)
            self._forget_authenticated()  # its failed handshakes are not reused
        except PyMongoError as e:
            raise Unavailable(f"cannot check the administrator: {e}") from e
        if self._create(self.authenticated(), self.app, update=True):
            created.append(self.app.name)
        return created

    def _create(
        self, client: MongoClient[dict[str, Any]], user: User, update: bool = False
    ) -> bool:
        """createUser (majority write concern); True if created. An existing user is
        updated when `update`, else refused: the administrator exists with another
        password only if someone else made it."""
        db = client[user.database]
        try:
            db.command("createUser", user.name, writeConcern=MAJORITY, **user.create_command())
            return True
        except WriteConcernError:
            # Created on this primary, not yet known on a majority: it replicates on (a
            # failover before that would lose it, and the guard would create it again).
            return True
        except OperationFailure as e:
            if e.code != USER_EXISTS:
                raise Unavailable(f"createUser {user.name} failed: {e}") from e
            if not update:
                raise Refused(f"user {user.name} exists already, with other credentials") from e
        except PyMongoError as e:
            raise Unavailable(f"createUser {user.name} failed: {e}") from e
        try:
            db.command("updateUser", user.name, writeConcern=MAJORITY, **user.create_command())
        except WriteConcernError:
            pass
        except PyMongoError as e:
            raise Unavailable(f"updateUser {user.name} failed: {e}") from e
        return False


def users_guard(
    mongo: LocalMongo,
    stopped: Callable[[float], bool],
    log: Callable[[str], None],
    every: float = 3.0,
) -> None:
    """Until the administrator can log in on this member: whenever this member is the
    writable primary, create the users (through the localhost exception while none exists).
    Run by every agent, so the users exist even if the member that initiated the set failed
    before creating them. Harmless where they exist: the exception is closed there, and a
    login that works ends the guard. `stopped(seconds)` waits and says whether to stop."""
    last = ""
    while not stopped(every):
        if mongo.admin_login_works():
            log("users: the administrator logs in here")
            return
        if not mongo.writable_primary():
            continue
        try:
            created = mongo.ensure_users()
        except (Unavailable, Refused) as e:
            if str(e) != last:
                log(f"users: not created yet: {e}")
            last = str(e)
            continue
        log(f"users: created {', '.join(created) or 'none (they existed)'}")
        return
