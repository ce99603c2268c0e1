"""The operator's HTTP endpoint (port 9650): metrics, health, a JSON API and a status page.

Routes
  GET /                         human status page, rendered here only: a small inline
                                script (static/status.js) fetches the page again every 2 s
                                and swaps in its fresh parts; `/?db=NAME` shows that one
                                database only
  GET /metrics                  Prometheus exposition
  GET /healthz                  200 "ok" or 503 with the reason
  GET /api/v1/databases         JSON list of DatabaseStatus
  GET /api/v1/databases/{name}  one DatabaseStatus, or 404 {"error": ..., "database": name}
  GET /api/v1/operator          {"leader": bool, "healthy": bool, "reason": str}

With a token (`shoal operator deploy --http-token-file`, mounted as the Docker secret
`shoal-operator-http-token`) every route but `/healthz` wants `Authorization: Bearer TOKEN`
and answers 401 without it; `/healthz` then says only "ok" or "unhealthy", never why.
"""

from __future__ import annotations

import hmac
import html
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from shoal import __version__
from shoal.operator.metrics import OperatorMetrics
from shoal.status import DatabaseStatus, Event, MemberStatus


class StatusSource(Protocol):
    """What the web endpoint needs from the operator."""

    def databases(self) -> list[DatabaseStatus]: ...

    def is_leader(self) -> bool: ...

    def healthy(self) -> tuple[bool, str]: ...


SOURCE_KEY: web.AppKey[StatusSource] = web.AppKey("shoal_status_source", StatusSource)
METRICS_KEY: web.AppKey[OperatorMetrics] = web.AppKey("shoal_metrics", OperatorMetrics)
SYNC_KEY: web.AppKey[bool] = web.AppKey("shoal_sync_on_scrape", bool)
TOKEN_KEY: web.AppKey[str] = web.AppKey("shoal_http_token", str)  # "" = no token
OPEN_PATHS = frozenset({"/healthz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def authorized(header: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries `token` as a bearer token (compared in
    constant time; a missing, empty or other-scheme header never matches)."""
    if not token or header is None:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[TOKEN_KEY]
    if not token or request.path in OPEN_PATHS:
        return await handler(request)
    if authorized(request.headers.get("Authorization"), token):
        return await handler(request)
    return web.json_response(
        {"error": "this operator wants Authorization: Bearer <token> (shoal-operator-http-token)"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="shoal-operator"'},
    )


EVENTS_SHOWN = 10
DASH = "\u2013"  # shown for an unknown value
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def make_app(
    source: StatusSource,
    metrics: OperatorMetrics,
    *,
    sync_on_scrape: bool = True,
    token: str = "",
) -> web.Application:
    """The aiohttp application. With `sync_on_scrape` every `/metrics` request first
    publishes the source's current statuses (and forgets deleted databases) and the lease
    state, so the exposition is never staler than the source. A `token` protects every
    route but `/healthz` (module docstring)."""
    app = web.Application(middlewares=[require_token], client_max_size=64 * 1024)
    app[TOKEN_KEY] = token
    app[SOURCE_KEY] = source
    app[METRICS_KEY] = metrics
    app[SYNC_KEY] = sync_on_scrape
    app.router.add_get("/", status_page)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/databases", list_databases)
    app.router.add_get("/api/v1/databases/{name}", get_database)
    app.router.add_get("/api/v1/operator", operator_info)
    return app


# ---------------------------------------------------------------------------- handlers
async def metrics_handler(request: web.Request) -> web.Response:
    source, metrics = request.app[SOURCE_KEY], request.app[METRICS_KEY]
    if request.app[SYNC_KEY]:
        metrics.sync(source.databases())
        metrics.set_leader(source.is_leader())
    return web.Response(body=metrics.render(), headers={"Content-Type": metrics.content_type})


async def healthz(request: web.Request) -> web.Response:
    ok, reason = request.app[SOURCE_KEY].healthy()
    if ok:
        return web.Response(text="ok")
    if request.app[TOKEN_KEY]:  # the reason may name databases and nodes
        reason = ""
    return web.Response(status=503, text=reason or "unhealthy")


# What the unauthenticated API and page leave out: the cluster's system identifier and the
# operator's own bookkeeping (planner progress, fencing token). `shoal status NAME --json`
# (the Swarm label, for whoever may use the Docker API) has everything.
PRIVATE_FIELDS = frozenset({"identity", "progress", "fence_token"})


def _dump(status: DatabaseStatus) -> dict[str, Any]:
    data: dict[str, Any] = status.model_dump(mode="json", exclude=set(PRIVATE_FIELDS))
    return data


async def list_databases(request: web.Request) -> web.Response:
    statuses = sorted(request.app[SOURCE_KEY].databases(), key=lambda s: s.name)
    return web.json_response([_dump(s) for s in statuses])


async def get_database(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    for status in request.app[SOURCE_KEY].databases():
        if status.name == name:
            return web.json_response(_dump(status))
    return web.json_response(
        {"error": f"database {name!r} not found", "database": name}, status=404
    )


async def operator_info(request: web.Request) -> web.Response:
    source = request.app[SOURCE_KEY]
    ok, reason = source.healthy()
    return web.json_response(
        {"leader": source.is_leader(), "healthy": ok, "reason": reason, "version": __version__}
    )


async def status_page(request: web.Request) -> web.Response:
    """`/?db=NAME` shows that one database only (a link to one database's status)."""
    source = request.app[SOURCE_KEY]
    only = request.query.get("db") or None
    statuses = sorted(
        (s for s in source.databases() if only is None or s.name == only), key=lambda s: s.name
    )
    ok, reason = source.healthy()
    body = render_page(statuses, leader=source.is_leader(), healthy=ok, reason=reason, only=only)
    return web.Response(text=body, content_type="text/html", charset="utf-8")


# ---------------------------------------------------------------------------- rendering
def _static(name: str) -> str:
    return resources.files("shoal.operator.static").joinpath(name).read_text("utf-8")


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return DASH
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return DASH
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else DASH


def _member_row(m: MemberStatus, primary: str | None) -> str:
    cls = "primary" if m.name == primary else ""
    up = '<span class="up">up</span>' if m.up else '<span class="down">down</span>'
    return (
        f'<tr class="{cls}"><td>{_e(m.name)}</td>'
        f'<td><span class="role role-{_e(m.role.value)}">{_e(m.role.value)}</span></td>'
        f'<td><span class="mstate mstate-{_e(m.state.value)}">{_e(m.state.value)}</span></td>'
        f"<td>{up}</td><td>{_e(m.node or DASH)}</td>"
        f'<td class="num">{_e(fmt_bytes(m.lag_bytes))}</td>'
        f'<td class="num">{_e(fmt_seconds(m.lag_seconds))}</td></tr>'
    )


def _event_row(ev: Event) -> str:
    return (
        f'<li class="event event-{_e(ev.kind)}"><time>{_e(fmt_time(ev.at))}</time> '
        f'<span class="kind">{_e(ev.kind)}</span> '
        f'<span class="member">{_e(ev.member or "")}</span> '
        f'<span class="msg">{_e(ev.message)}</span></li>'
    )


def render_database(s: DatabaseStatus) -> str:
    members = "".join(_member_row(m, s.primary) for m in s.members)
    events = "".join(_event_row(ev) for ev in reversed(s.events[-EVENTS_SHOWN:]))
    writable = (
        '<span class="yes">writable</span>' if s.writable else '<span class="no">read-only</span>'
    )
    message = f'<p class="message">{_e(s.message)}</p>' if s.message else ""
    return (
        f'<section class="db" id="db-{_e(s.name)}">'
        f'<h2><span class="name">{_e(s.name)}</span> '
        f'<span class="engine">{_e(s.engine)}</span> '
        f'<span class="state state-{_e(s.state.value)}">{_e(s.state.value)}</span> {writable}</h2>'
        f'<dl class="facts">'
        f"<dt>members</dt><dd>{s.members_ready}/{s.members_desired} ready</dd>"
        f"<dt>primary</dt><dd>{_e(s.primary or 'none')}</dd>"
        f"<dt>connection</dt><dd><code>{_e(s.connection or DASH)}</code></dd>"
        f"<dt>failovers</dt><dd>{s.failovers}</dd><dt>re-seeds</dt><dd>{s.reseeds}</dd>"
        f"<dt>observed</dt><dd>{_e(fmt_time(s.observed_at))}</dd></dl>{message}"
        f"<table><thead><tr><th>member</th><th>role</th><th>state</th><th>up</th><th>node</th>"
        f"<th>lag</th><th>lag (s)</th></tr></thead><tbody>{members}</tbody></table>"
        f'<h3>recent events</h3><ul class="events">'
        f"{events or '<li class=empty>none</li>'}</ul></section>"
    )


def render_page(
    statuses: list[DatabaseStatus],
    *,
    leader: bool,
    healthy: bool,
    reason: str,
    only: str | None = None,
) -> str:
    dbs = "".join(render_database(s) for s in statuses)
    if not dbs and only:
        dbs = f'<p class="empty">No database {_e(only)}. <a href="/">All databases</a></p>'
    elif not dbs:
        dbs = '<p class="empty">No databases declared. <code>shoal apply -f FILE</code></p>'
    op = "leader" if leader else "standby"
    health = "healthy" if healthy else f"unhealthy: {reason}"
    values = {
        "css": _static("status.css"),
        "js": _static("status.js"),
        "version": _e(__version__),
        "operator": _e(f"operator {op}, {health}"),
        "operator_class": "ok" if healthy else "bad",
        "updated": _e(fmt_time(time.time())),
        "databases": dbs,
    }
    # one pass over the template only: nothing inside a value is ever substituted again
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), _static("index.html"))
