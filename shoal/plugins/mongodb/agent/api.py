"""The MongoDB member agent's HTTP API and its `main` (`python3 -m agent`, under tini).

At start it writes the keyFile (keyfile.py) and mongod's TLS files (tls.py), starts mongod
as its child (mongod.py) and serves, on port 8008: HTTPS on the control network with the
member's certificate, plain HTTP on loopback. If mongod exits, the agent exits with it and
Swarm replaces the member with an empty container, which the replica set re-seeds.

Every endpoint but GET /health needs `Authorization: Bearer <agent-token>` (else 401);
the POST needs a fencing `"token": <int>` in its body, refused (409) when lower than one
already seen. Errors are `{"error": "..."}`: 400 (bad body, naming the field), 409 (wrong
state), 503 (mongod did not answer or failed; ask again).

  GET  /health                         200 {"ok": true}
  GET  /state                          200 {"format", "hello", "status", "config", "task"}
                                       in relaxed Extended JSON (model.py: MongoProbe):
                                       `status`/`config` are the command's reply, its error
                                       reply (e.g. NotYetInitialized), or null when mongod
                                       could not be asked; `hello` null when it did not answer
  POST /initiate {token, config}       200 {"initiated", "users", "users_pending", "hello"}:
                                       replSetInitiate with `config` (initiate.py), then the
                                       users (users.py) if it becomes primary in time; else
                                       `users_pending` says why and the users guard
                                       (local.py) creates them on the primary
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from shoal.agentkit import server as kit
from shoal.agentkit.net import control_address
from shoal.agentkit.server import HttpError

from . import initiate, keyfile, mongod, tls, users
from .local import LocalMongo, Refused, Unavailable, relaxed_json, users_guard

AGENT_PORT = 8008
MAX_BODY = 1 << 20
MAX_CONCURRENT = 32
REQUEST_TIMEOUT = 10.0
STOP_TIMEOUT = 0.8  # within the member service's 1 s stop grace period
SECRETS_DIR = Path(os.environ.get("SHOAL_SECRETS_DIR", "/run/secrets"))
STATE_DIR = Path(os.environ.get("SHOAL_MONGODB_STATE", "/var/lib/shoal/mongodb"))
TOKEN_SECRET = "agent-token"


def log(message: str) -> None:
    sys.stderr.write(f"shoal-mongodb-agent: {message}\n")
    sys.stderr.flush()


def read_secret(name: str) -> str:
    return (SECRETS_DIR / name).read_text().rstrip("\r\n")


class Fence:
    """The highest fencing token seen: a request from an operator deposed since is refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.highest = 0

    def check(self, token: int) -> None:
        with self._lock:
            if token < self.highest:
                raise HttpError(409, f"stale fencing token {token} (seen {self.highest})")
            self.highest = token


class Member:
    """What the handlers act on: the member's names, its mongod and its fence."""

    def __init__(self, name: str, replica_set: str, local: LocalMongo, task: str | None) -> None:
        self.name = name
        self.replica_set = replica_set
        self.local = local
        self.task = task
        self.fence = Fence()
        self.operation = threading.Lock()  # one initiation at a time

    @property
    def host(self) -> str:
        return f"{self.name}:{mongod.PORT}"


class BoundedServer(kit.BoundedServer):
    """A thread per connection, at most MAX_CONCURRENT at once (past that a connection is
    closed at once); TLS handshakes in the connection's own thread, within its timeout."""

    request_queue_size = 64
    max_concurrent = MAX_CONCURRENT
    request_timeout = REQUEST_TIMEOUT


class Handler(kit.AgentHandler):
    member: Member
    timeout = REQUEST_TIMEOUT
    server_version = "shoal-mongodb-agent"
    max_body = MAX_BODY

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self, "command", "") == "POST":
            log(f"POST {getattr(self, 'path', '-')} -> {args[1] if len(args) > 1 else ''}")

    def reply(self, status: int, body: dict[str, Any]) -> None:
        self.send_json(status, relaxed_json(body))

    def bearer_token(self) -> str:
        return read_secret(TOKEN_SECRET)

    def do_GET(self) -> None:
        self.skip_get_body()
        try:
            if self.path == "/health":
                return self.reply(200, {"ok": True})
            if not self.authorized():
                return self.reply(401, {"error": "missing or wrong bearer token"})
            if self.path == "/state":
                return self.reply(200, self.member.local.state(self.member.task))
            self.reply(404, {"error": f"no such endpoint: GET {self.path}"})
        except Exception as e:  # never a traceback in a response
            log(f"GET {self.path} failed: {type(e).__name__}: {e}")
            self.reply(500, {"error": f"internal error: {type(e).__name__}"})

    def do_POST(self) -> None:
        try:
            raw = self.authorized_body()
            if raw is None:
                return
            if self.path != "/initiate":
                return self.reply(404, {"error": f"no such endpoint: POST {self.path}"})
            self.reply(200, self.initiate(raw))
        except HttpError as e:
            self.reply(e.status, {"error": e.message})
        except Exception as e:
            log(f"POST {self.path} failed: {type(e).__name__}: {e}")
            self.reply(500, {"error": f"internal error: {type(e).__name__}"})

    def initiate(self, raw: bytes) -> dict[str, Any]:
        member = self.member
        try:
            request = initiate.check_request(
                json.loads(raw or b"{}"), member.replica_set, member.host
            )
        except ValueError:
            raise HttpError(400, "body is not valid JSON") from None
        except initiate.BadRequest as e:
            raise HttpError(400, str(e)) from None
        if not member.operation.acquire(timeout=60):
            raise HttpError(409, "another initiation is in progress")
        try:
            member.fence.check(request.token)
            return member.local.initiate(request)
        except Refused as e:
            raise HttpError(409, str(e)) from None
        except Unavailable as e:
            raise HttpError(503, str(e)) from None
        finally:
            member.operation.release()


def main() -> int:
    name = os.environ.get("SHOAL_MEMBER") or socket.gethostname()
    replica_set = os.environ.get("SHOAL_DATABASE", "")
    if not replica_set:
        log("SHOAL_DATABASE is not set: refusing to start")
        return 2
    if not (SECRETS_DIR / TOKEN_SECRET).is_file():
        log(f"{SECRETS_DIR / TOKEN_SECRET} is missing: refusing to start without it")
        return 2
    os.umask(0o077)
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        keyfile.install(SECRETS_DIR, STATE_DIR / "keyfile")
        files = tls.install(SECRETS_DIR, STATE_DIR / "tls")
        admin = users.admin_user(read_secret(users.ADMIN_SECRET))
        app = users.app_user(read_secret(users.APP_SECRET))
    except (OSError, keyfile.KeyfileError, tls.TlsError) as e:
        log(f"cannot prepare the member: {type(e).__name__}: {e}")
        return 1
    settings = mongod.MongodSettings(
        replica_set=replica_set,
        dbpath=STATE_DIR / "db",
        keyfile=STATE_DIR / "keyfile",
        tls=files,
        cache_gb=mongod.cache_size_gb(mongod.memory_limit()),
    )
    server = mongod.Mongod(settings)
    server.start()
    local = LocalMongo(files, admin, app, STATE_DIR / "initiated.json", mongod.PORT)
    Handler.member = Member(name, replica_set, local, os.environ.get("SHOAL_TASK_ID"))
    control = control_address()
    servers = [BoundedServer(("127.0.0.1", AGENT_PORT), Handler)]
    if control is not None:
        servers.append(BoundedServer((control, AGENT_PORT), Handler, tls.api_context(files)))
    else:
        log("no control network address: the API listens on loopback only")
    stop = threading.Event()
    exit_code = [0]

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    def watch_mongod() -> None:
        code = server.wait()
        if not stop.is_set():
            log(f"mongod exited on its own (code {code}): the member stops with it")
            exit_code[0] = 1
            stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    threading.Thread(target=watch_mongod, daemon=True).start()
    threading.Thread(target=users_guard, args=(local, stop.wait, log), daemon=True).start()
    log(f"member {name} of replica set {replica_set}: mongod started, API on port {AGENT_PORT}")
    stop.wait()
    server.stop(STOP_TIMEOUT)
    local.close()
    for s in servers:
        s.shutdown()
    return exit_code[0]
