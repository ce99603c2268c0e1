"""The member agent's HTTP API and its `main` (started by `python3 -m agent`, under tini).

Stdlib only (it runs with Debian's python3). It owns one PostgreSQL data directory in the
container's writable layer, starts PostgreSQL as its child and drives it on behalf of the
operator over port 8008: HTTPS on the control network when the member has its certificate,
plain HTTP on loopback. It never changes a member's role by itself: the operator decides
(a PostgreSQL that died under it comes back as a standby following nothing, as after a
restart in place; a primary whose lease ran out stops itself the same way).

Every endpoint but GET /health, /primary and /replica needs `Authorization: Bearer
<agent-token>` (else 401), and every POST a fencing `"token": <int>` in its JSON body
(lower than the highest seen: 409).
Errors are `{"error": "..."}` with 400 (bad body, naming the field), 409 (wrong state or
role, stale token), 500 (PostgreSQL failed).

  GET  /health                                           200 {"ok": true}
  GET  /primary        200 {"role": "primary"} when a running primary, else 503 (proxy check)
  GET  /replica        200 {"role": "replica"} when a running standby, else 503
  GET  /state                                            200 state body (member.py)
       with `X-Shoal-Lease: ttl=S;token=N;peers=slot,...` it also renews the primary's
       lease (lease.py): 400 when malformed, 409 for a stale token
  GET  /lease  with that header: renews the lease only    200 {"task_id", "role"}
       (the operator's renewals between its probes; no query, no subprocess)
  POST /bootstrap {parameters?}                          200 state body   (empty member)
  POST /clone {source, system_identifier, slot, parameters?}  202 state body (empty|failed)
  POST /follow {upstream: host|null, slot}               200 state body   (standby)
  POST /promote {synchronous_standby_names?}             200 state body   (standby)
  POST /demote {}                                        200 state body + final_lsn (primary)
  POST /configure {parameters?, synchronous_standby_names?}   200 state body (running)
  POST /slots {slots: [name]}                            200 {slots, kept_active} (primary)
  POST /stop {}                                          200 state body (fence: immediate)
  POST /backup {}                                        202 state body (running; a base
       backup to spec.backup's archive in the background: agent/backup.py)
  POST /switch-wal {}                                    200 {switched_at} (primary)
  POST /certificate {certificate: PEM}                   200 {certificate_serial} (a renewal
       for this member's key, issued by its CA: tls.py; reloads PostgreSQL)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from typing import Any

from shoal.agentkit import server as kit

from . import lease, parameters, pg, syncguard, tls
from .member import Agent, HttpError, log

__all__ = [
    "Agent",
    "BoundedServer",
    "Handler",
    "HttpError",
    "check_host",
    "check_params",
    "check_slot",
    "main",
]

AGENT_PORT = 8008  # the whole API: on the control network (and loopback) only
CHECK_PORT = 8009  # GET /health, /primary, /replica: on every network, for the proxy
MAX_BODY = 1 << 20
MAX_CONCURRENT = 64
# Lease tokens count take-overs from 1; one far beyond any real count (and beyond what JSON
# numbers hold exactly) is refused rather than recorded, so it cannot lock the operator out.
MAX_FENCE_TOKEN = 1 << 53
REQUEST_TIMEOUT = 10.0
# Unauthenticated role checks for the read-write proxy: GET path -> role answered with 200.
ROLE_CHECKS = {"/primary": "primary", "/replica": "replica"}
UNLOGGED = frozenset({"/health", "/lease", *ROLE_CHECKS})


def field(
    body: dict[str, Any], name: str, types: type | tuple[type, ...], *, required: bool = True
) -> Any:
    if name not in body:
        if required:
            raise HttpError(400, f"missing field {name!r}")
        return None
    v = body[name]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise HttpError(400, f"field {name!r} has the wrong type")
    if not isinstance(v, types):
        raise HttpError(400, f"field {name!r} has the wrong type")
    return v


def check_params(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise HttpError(400, "field 'parameters' must be an object")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not pg.PARAM_RE.match(k):
            raise HttpError(400, f"field 'parameters': {k!r} is not a parameter name")
        why = parameters.refusal(k)
        if why is not None:
            raise HttpError(400, f"field 'parameters': {k} {why}")
        try:
            out[k] = parameters.setting_text(v)
            pg.quote_literal(out[k])
        except ValueError as e:
            raise HttpError(400, f"field 'parameters': {k}: {e}") from e
    return out


def check_ssn(body: dict[str, Any]) -> str | None:
    """The optional `synchronous_standby_names`: a string PostgreSQL can take as a literal
    (no NUL byte: a 400 naming the field, never a 500)."""
    ssn = field(body, "synchronous_standby_names", str, required=False)
    if ssn is not None:
        try:
            pg.quote_literal(ssn)
        except ValueError as e:
            raise HttpError(400, f"field 'synchronous_standby_names': {e}") from e
    return ssn  # type: ignore[no-any-return]


def check_slot(v: Any, name: str = "slot") -> str:
    if not isinstance(v, str) or not pg.SLOT_RE.match(v):
        raise HttpError(400, f"field {name!r} must match [a-z0-9_]{{1,63}}")
    return v


def check_host(v: Any, name: str) -> str:
    if not isinstance(v, str) or not pg.HOST_RE.match(v):
        raise HttpError(400, f"field {name!r} must be a host name or address")
    return v


def running_role(agent: Agent) -> str | None:
    """`primary` or `replica` while PostgreSQL runs here, from the agent's own record: no
    query, no connection slot, bounded time (the proxy calls this every second)."""
    role = agent.serving_role()
    return None if role is None else ("replica" if role == "standby" else "primary")


class BoundedServer(kit.BoundedServer):
    """A thread per connection, but at most MAX_CONCURRENT at once: past that a connection
    is closed at once, so a flood of requests cannot exhaust threads or memory."""

    request_queue_size = 128  # the listen backlog: a burst is queued, not dropped
    max_concurrent = MAX_CONCURRENT
    request_timeout = REQUEST_TIMEOUT


class Handler(kit.AgentHandler):
    agent: Agent
    timeout = REQUEST_TIMEOUT  # a slow client cannot hold a thread for long
    server_version = "shoal-agent"
    max_body = MAX_BODY

    def log_message(self, format: str, *args: Any) -> None:
        path = getattr(self, "path", "")  # unset when the request line never came
        if path not in UNLOGGED and not path.startswith("/state"):
            log(f"{getattr(self, 'command', '-')} {path} -> {args[1] if len(args) > 1 else ''}")

    def bearer_token(self) -> str:
        return pg.read_secret("agent-token")

    def renew_lease(self, raw: str) -> None:
        """`X-Shoal-Lease` on `GET /state` or `GET /lease`: the operator renews this member's lease
        (lease.py). A renewal with a fencing token older than one already seen comes
        from a deposed operator and renews nothing (409)."""
        arrived = time.monotonic()
        try:
            renewal = lease.parse_header(raw)
        except lease.BadLease as e:
            raise HttpError(400, str(e)) from None
        if not 0 < renewal.token < MAX_FENCE_TOKEN:
            raise HttpError(400, f"header {lease.HEADER}: implausible fencing token")
        self.agent.check_fence(renewal.token)
        self.agent.lease.renew(renewal, arrived)

    def do_GET(self) -> None:
        self.skip_get_body()
        try:
            if self.path == "/health":
                return self.reply(200, {"ok": True})
            if self.path in ROLE_CHECKS:
                # Unauthenticated, like /health: reveals only whether this member is the
                # primary (or a replica), which is what a TCP proxy's health check needs.
                want, actual = ROLE_CHECKS[self.path], running_role(self.agent)
                return self.reply(200 if actual == want else 503, {"role": actual})
            if not self.authorized():
                return self.reply(401, {"error": "missing or wrong bearer token"})
            if self.path == "/state":
                raw = self.headers.get(lease.HEADER)
                if raw is not None:
                    self.renew_lease(raw)
                return self.reply(200, self.agent.state_body())
            if self.path == "/lease":
                # A renewal alone, between the operator's probes: no query, no subprocess.
                raw = self.headers.get(lease.HEADER)
                if raw is None:
                    raise HttpError(400, f"header {lease.HEADER} is required on GET /lease")
                self.renew_lease(raw)
                task = os.environ.get("SHOAL_TASK_ID") or None
                return self.reply(200, {"task_id": task, "role": running_role(self.agent)})
            self.reply(404, {"error": f"no such endpoint: GET {self.path}"})
        except HttpError as e:
            self.reply(e.status, {"error": e.message})
        except Exception as e:  # never a traceback in a response
            log(f"GET {self.path} failed: {type(e).__name__}: {e}")
            self.reply(500, {"error": f"internal error: {type(e).__name__}"})

    def do_POST(self) -> None:
        try:
            raw = self.authorized_body()
            if raw is None:
                return
            route = ROUTES.get(self.path)
            if route is None:
                return self.reply(404, {"error": f"no such endpoint: POST {self.path}"})
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise HttpError(400, "body is not valid JSON") from None
            if not isinstance(body, dict):
                raise HttpError(400, "body must be a JSON object")
            token = field(body, "token", int)
            if not 0 < token < MAX_FENCE_TOKEN:
                raise HttpError(400, f"field 'token': {token} is not a plausible fencing token")
            if not self.agent._op.acquire(timeout=60):
                raise HttpError(409, "another operation is in progress")
            try:
                # Checked and recorded under the operation lock: an older token can never
                # act after a newer one, even if its request arrived first.
                self.agent.check_fence(token)
                status, out = route(self.agent, body)
            finally:
                self.agent._op.release()
            self.reply(status, out)
        except HttpError as e:
            self.reply(e.status, {"error": e.message})
        except pg.PgError as e:
            self.reply(500, {"error": str(e)})
        except Exception as e:
            log(f"POST {self.path} failed: {type(e).__name__}: {e}")
            self.reply(500, {"error": f"internal error: {type(e).__name__}: {e}"})


class CheckHandler(Handler):
    """The port the database network sees: the unauthenticated role checks a proxy needs,
    and nothing else. Whoever can reach a member's PostgreSQL can ask it the same with
    `pg_is_in_recovery()`; no token is accepted here, so none can be sniffed or tried."""

    def do_GET(self) -> None:
        if self.path == "/health" or self.path in ROLE_CHECKS:
            return super().do_GET()
        self.close_connection = True
        self.reply(404, {"error": f"no such endpoint on the check port: GET {self.path}"})

    def do_POST(self) -> None:
        self.close_connection = True  # the body is not read
        self.reply(404, {"error": f"no such endpoint on the check port: POST {self.path}"})


def _params(body: dict[str, Any], required: bool = False) -> dict[str, str] | None:
    if "parameters" not in body:
        if required:
            raise HttpError(400, "missing field 'parameters'")
        return None
    return check_params(body["parameters"])


def r_bootstrap(a: Agent, b: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, a.bootstrap(_params(b) or {})


def r_clone(a: Agent, b: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    source = check_host(field(b, "source", str), "source")
    sysid = field(b, "system_identifier", str)
    if not sysid.isdigit():
        raise HttpError(400, "field 'system_identifier' must be a decimal string")
    slot = check_slot(field(b, "slot", str))
    return 202, a.clone(source, sysid, slot, _params(b) or {})


def r_follow(a: Agent, b: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if "upstream" not in b:
        raise HttpError(400, "missing field 'upstream'")
    up = b["upstream"]
    upstream = None if up is None else check_host(up, "upstream")
    slot = None if b.get("slot") is None else check_slot(b["slot"])
    return 200, a.follow(upstream, slot)


def r_promote(a: Agent, b: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, a.promote(check_ssn(b))


def r_demote(a: Agent, b: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, a.demote()


def r_configure(a: Agent, b: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, a.configure(_params(b), check_ssn(b))


def r_slots(a: Agent, b: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    names = field(b, "slots", list)
    return 200, a.slots([check_slot(n, "slots") for n in names])


def r_stop(a: Agent, b: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, a.stop()


def r_certificate(a: Agent, b: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, a.renew_certificate(field(b, "certificate", str))


def r_backup(a: Agent, b: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 202, a.start_base_backup()


def r_switch_wal(a: Agent, b: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, a.switch_wal()


ROUTES = {
    "/backup": r_backup,
    "/switch-wal": r_switch_wal,
    "/bootstrap": r_bootstrap,
    "/clone": r_clone,
    "/follow": r_follow,
    "/promote": r_promote,
    "/demote": r_demote,
    "/configure": r_configure,
    "/slots": r_slots,
    "/stop": r_stop,
    "/certificate": r_certificate,
}


def drop_privileges() -> None:
    """Started as root: give the state directory to postgres and become postgres."""
    import pwd

    pw = pwd.getpwnam("postgres")
    for root, dirs, files in os.walk(pg.STATE_DIR):
        for n in [
            root,
            *(os.path.join(root, d) for d in dirs),
            *(os.path.join(root, f) for f in files),
        ]:
            os.lchown(n, pw.pw_uid, pw.pw_gid)
    os.makedirs(pg.SOCK_DIR, exist_ok=True)
    os.chown(pg.SOCK_DIR, pw.pw_uid, pw.pw_gid)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    os.environ["HOME"] = pw.pw_dir
    os.environ["USER"] = "postgres"


def main() -> int:
    member = os.environ.get("SHOAL_MEMBER") or socket.gethostname()
    if not (pg.SECRETS_DIR / "agent-token").is_file():
        log(f"{pg.SECRETS_DIR / 'agent-token'} is missing: refusing to start without it")
        return 2
    if os.getuid() == 0:
        drop_privileges()
    os.umask(0o077)
    agent = Agent(member)
    Handler.agent = agent
    control = pg.control_address()
    if control is None:  # run outside a shoal swarm service (no control network given)
        log("no control network address: the API listens on every interface")
    try:
        agent.install_tls()
    except Exception as e:
        log(f"cannot set up TLS: {type(e).__name__}: {e}")
        return 1
    # On the control network the API speaks TLS whenever the member has its certificate
    # (the operator verifies it against the database's CA); loopback, reachable only from
    # inside this container, and a standalone agent stay plain HTTP.
    api_tls = tls.api_context() if control is not None else None
    agent.api_tls = api_tls
    servers = (
        [BoundedServer(("0.0.0.0", AGENT_PORT), Handler)]
        if control is None
        else [
            BoundedServer((control, AGENT_PORT), Handler, api_tls),
            BoundedServer(("127.0.0.1", AGENT_PORT), Handler),
        ]
    )
    servers.append(BoundedServer(("0.0.0.0", CHECK_PORT), CheckHandler))
    api_hosts = [f"{s.server_address[0]!s}:{AGENT_PORT}" for s in servers[:-1]]
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Operations wait until the data found at start is dealt with: a bootstrap or clone
    # served before it would then be taken for data left by a restart in place and started
    # a second time (seen under load: a second postmaster refused, the member lost).
    agent._op.acquire()
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Thread(
        target=syncguard.run,
        args=(lambda: agent.serving_role() == "primary", stop, log),
        daemon=True,
    ).start()
    threading.Thread(
        target=lease.watch_peers,
        args=(agent.lease, lambda: agent.serving_role() == "primary", stop),
        daemon=True,
    ).start()
    threading.Thread(
        target=lease.run,
        args=(agent.lease, lambda: agent.serving_role() == "primary", agent.fence_self, stop, log),
        daemon=True,
    ).start()
    log(
        f"member {member} ({os.environ.get('SHOAL_DATABASE', '?')}): API on "
        f"{', '.join(api_hosts)}{' (TLS on the control network)' if api_tls else ''}, "
        f"checks on :{CHECK_PORT}"
    )
    try:
        agent.recover_on_start()
    finally:
        agent._op.release()
    stop.wait()
    log("signal received: stopping postgres (fast) and exiting")
    agent.shutdown()
    for server in servers:
        server.shutdown()
    return 0
