"""The PostgreSQL engine plugin: probes and actions go to each member's agent over HTTPS
(`agent/` inside the member container, port 8008, listening on the control network only),
its certificate verified against the database's CA."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import aiohttp

from shoal import __version__, names
from shoal.credentials import DatabaseCredentials
from shoal.declaration import Database, Engine
from shoal.plugins.agent_transport import (
    ACTION_TIMEOUT,
    AgentError,
    PlaintextAgent,
    agent_call,
    agent_tls,
)
from shoal.plugins.base import (
    Action,
    ApplyContext,
    EnginePlugin,
    ImageRecipe,
    LeaseGrant,
    Observation,
    Plan,
    ProxyBackend,
    RenewalAnswer,
    UnusableAnswers,
)
from shoal.plugins.postgres import backup, naming, planner
from shoal.plugins.postgres.agent import lease
from shoal.plugins.postgres.agent.parameters import setting_text
from shoal.plugins.postgres.model import (
    PROBE_SECONDS,
    Bootstrap,
    Clone,
    Configure,
    Demote,
    EnsureSlots,
    Follow,
    PgProbe,
    Promote,
    RenewCertificate,
    StartBaseBackup,
    SwitchWal,
)

if TYPE_CHECKING:
    from shoal.chaos.engines import EngineSession

log = logging.getLogger("shoal.postgres")
# A member's agent answers in milliseconds; a TCP connect that takes longer than 0.3 s goes
# to the address of a container that just died (nothing answers there, not even a reset),
# and the whole observation, so the failover, would wait for it.
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=PROBE_SECONDS, connect=1.0, sock_connect=0.3)
# A renewal alone asks the agent nothing but to note it (no query): a member that has not
# answered it in half a second is looked at by a full pass at once (operator/renewals.py).
# The lease's margin still counts PROBE_TIMEOUT, the longest a renewal can take to arrive.
RENEW_TIMEOUT = aiohttp.ClientTimeout(total=0.5, sock_connect=0.3)


# The shortest lease granted: renewed every third of it, by requests that may take up to
# PROBE_TIMEOUT, a lease this long survives one renewal lost or late.
MIN_LEASE_TTL = 2.0


def renewal_header(grant: LeaseGrant) -> str:
    """`X-Shoal-Lease` (agent/lease.py: parse_header): peers by the application name their
    walreceivers connect with, which is their slot name."""
    peers = ",".join(naming.slot_name(p) for p in grant.peers)
    return f"ttl={grant.ttl:.3f};token={grant.token};peers={peers}"


def postgres_uri(hosts: list[str], password: str | None = None, ca_file: str | None = None) -> str:
    """A libpq multi-host URI that always reaches the writable primary, over TLS with the
    server's certificate and name verified (`verify-full`) against the database's CA: the
    file `ca_file`, or libpq's default ~/.postgresql/root.crt."""
    auth = names.APP_USER + (f":{quote(password, safe='')}" if password else "")
    hostlist = ",".join(f"{h}:{naming.PORT}" for h in hosts)
    root = f"&sslrootcert={quote(ca_file, safe='/')}" if ca_file else ""
    return (
        f"postgresql://{auth}@{hostlist}/{names.APP_DATABASE}"
        f"?target_session_attrs=read-write&connect_timeout=2&sslmode=verify-full{root}"
    )


class AgentSchemes:
    """Members whose agent predates TLS (made by an operator before TLS, no certificate):
    they are spoken to in plain HTTP until they are re-created. A member is put here only
    when its agent answered a TLS handshake in plain HTTP, and taken out again at its first
    failure, so a re-created member is asked over TLS at once. Forcing that downgrade takes
    a container on `shoal-control` that answers for the member, which only a user of the
    Docker API can start there (docs/security.md)."""

    def __init__(self) -> None:
        self._plaintext: set[str] = set()

    def plaintext(self, member: str) -> bool:
        return member in self._plaintext

    def saw_plaintext(self, member: str) -> None:
        if member not in self._plaintext:
            log.warning(
                "%s: its agent predates TLS; its API is plain HTTP until it is re-created",
                member,
            )
        self._plaintext.add(member)

    def failed(self, member: str) -> None:
        self._plaintext.discard(member)


SCHEMES = AgentSchemes()


async def member_call(
    http: aiohttp.ClientSession,
    member: str,
    credentials: DatabaseCredentials,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: aiohttp.ClientTimeout = ACTION_TIMEOUT,
    extra_headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`agent_call` (agent_transport.py) with the member's own token over TLS, as
    `agent_transport.member_call`, with the fallbacks of older PostgreSQL members. A member
    created before agent tokens
    were per member holds the database-wide one and answers 401 to its own: it is asked
    again with that (a 401 comes before the agent acts on anything). Such a member gets
    its own token when it is next re-created (a fence, re-seed or restart). The same goes
    for TLS: a member whose agent predates it is asked in plain HTTP (AgentSchemes)."""
    tls = None if SCHEMES.plaintext(member) else agent_tls(credentials.ca.cert_pem)

    async def call(token: str) -> dict[str, Any]:
        nonlocal tls
        args = (method, path, body, timeout, extra_headers)
        try:
            return await agent_call(http, member, token, *args, tls=tls)
        except PlaintextAgent:
            SCHEMES.saw_plaintext(member)
            tls = None
            return await agent_call(http, member, token, *args)
        except AgentError as e:
            if tls is None and e.status is None:  # no answer in plain HTTP: ask in TLS next
                SCHEMES.failed(member)
            raise

    try:
        return await call(credentials.agent_token_for(member))
    except AgentError as e:
        if e.status != 401:
            raise
    return await call(credentials.agent_token)


class PostgresPlugin(EnginePlugin[PgProbe]):
    engine: ClassVar[Engine] = Engine.POSTGRES
    # HAProxy sends clients to the member whose agent answers `GET /primary` with 200, on
    # the agent's check port (agent/api.py: CheckHandler).
    proxy_backend: ClassVar[ProxyBackend | None] = ProxyBackend(
        port=naming.PORT, check_port=names.CHECK_PORT, check_path="/primary"
    )

    # The member image: PostgreSQL 15 from Debian in the base image, and the member agent
    # (agent/, standard library only) as its main process (image/Dockerfile).
    image_recipe: ClassVar[ImageRecipe] = ImageRecipe(
        package="shoal.plugins.postgres",
        alias=f"shoal/postgres:15-{__version__}",
        recipe="image",
        sources=("agent", "shoal/agentkit"),
        base_packages=("postgresql-15",),
    )

    def __init__(self, image: str | None = None) -> None:
        self.image = image or self.image_recipe.alias
        self._answers = UnusableAnswers(log)

    def member_image(self) -> str:
        return self.image

    def member_env(self, database: Database) -> tuple[str, ...]:
        return backup.member_env(database)

    backup_list_command: ClassVar[tuple[str, ...] | None] = (
        "tini", "--", "python3", "-P", "-m", "agent.backup", "list",
    )  # fmt: skip

    # A renewal is delivered within the probe's timeout or not at all; the agent has stopped
    # PostgreSQL within REACTION of its lease running out (agent/lease.py); 0.5 s to spare.
    lease_margin: ClassVar[float] = float(PROBE_TIMEOUT.total or 0) + lease.REACTION + 0.5
    lease_margin_other_image: ClassVar[float] = (
        float(PROBE_TIMEOUT.total or 0) + lease.REACTION_OF_EARLIER_AGENTS + 0.5
    )

    def lease_ttl(self, database: Database) -> float | None:
        # The same patience as for an unreachable primary: a primary cut off from the
        # operator has stopped by the time the operator gives up on it, `unreachableSeconds`
        # after sending the first renewal it did not answer (that renewal's ttl plus
        # `lease_margin`), so a failover need not wait for it. Renewals go out every third
        # of the ttl between passes (operator/renewals.py); never shorter than MIN_LEASE_TTL.
        unreachable = float(database.spec.failover.unreachable_seconds)
        return max(MIN_LEASE_TTL, unreachable - self.lease_margin)

    async def probe_document(
        self,
        http: aiohttp.ClientSession,
        member: str,
        credentials: DatabaseCredentials,
        lease_grant: LeaseGrant | None = None,
    ) -> dict[str, Any] | None:
        headers = None
        if lease_grant is not None:
            headers = {lease.HEADER: renewal_header(lease_grant)}
        try:
            return await member_call(
                http, member, credentials, "GET", "/state",
                timeout=PROBE_TIMEOUT, extra_headers=headers,
            )  # fmt: skip
        except AgentError:
            return None

    async def renew(
        self,
        http: aiohttp.ClientSession,
        member: str,
        credentials: DatabaseCredentials,
        lease_grant: LeaseGrant,
    ) -> RenewalAnswer | None:
        try:
            data = await member_call(
                http, member, credentials, "GET", "/lease", timeout=RENEW_TIMEOUT,
                extra_headers={lease.HEADER: renewal_header(lease_grant)},
            )  # fmt: skip
        except AgentError:
            return None
        task = data.get("task_id") if isinstance(data, dict) else None
        return RenewalAnswer(task_id=task if isinstance(task, str) and task else None)

    async def probe(
        self,
        http: aiohttp.ClientSession,
        member: str,
        credentials: DatabaseCredentials,
        lease: LeaseGrant | None = None,
    ) -> PgProbe | None:
        data = await self.probe_document(http, member, credentials, lease)
        if data is None:
            return None
        # An unusable answer counts like none: unreachable, so a failover waits for Swarm's
        # word or `unreachableSeconds` (docs/failure-modes.md, "An agent's answer it cannot
        # read").
        return self._answers.parse(member, data, PgProbe.parse)

    def fence_token_seen(self, probe: PgProbe) -> int:
        return probe.fence_token

    def answering_task(self, probe: PgProbe) -> str | None:
        return probe.task_id

    def answered(self, probe: PgProbe) -> bool:
        return probe.answered

    def plan(self, observation: Observation[PgProbe]) -> Plan:
        return planner.plan(observation)

    def connection(
        self, database: Database, password: str | None = None, ca_file: str | None = None
    ) -> str:
        hosts = [names.member_service(database.name, i) for i in range(database.spec.members)]
        return postgres_uri(hosts, password, ca_file)

    def chaos_session(self) -> type[EngineSession] | None:
        from shoal.plugins.postgres.chaos import PostgresSession  # psycopg: the client only

        return PostgresSession

    def connect_hint(self, uri: str) -> str | None:
        return f"psql '{uri}'"

    async def apply(self, action: Action, ctx: ApplyContext) -> None:
        fence = ctx.fence_token
        params = {k: setting_text(v) for k, v in ctx.database.spec.postgres.parameters.items()}

        async def post(member: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            return await member_call(
                ctx.http, member, ctx.credentials, "POST", path, {"token": fence, **body}
            )

        match action:
            case Bootstrap(member=m):
                await post(m, "/bootstrap", {"parameters": params})
            case Clone(member=m, source=src, system_identifier=sysid, slot=slot):
                await post(
                    m,
                    "/clone",
                    {"source": src, "system_identifier": sysid, "slot": slot, "parameters": params},
                )
            case Follow(member=m, upstream=up, slot=slot):
                await post(m, "/follow", {"upstream": up, "slot": slot})
            case Promote(member=m, synchronous_standby_names=sync):
                await post(m, "/promote", {"synchronous_standby_names": sync})
            case Demote(member=m):
                await post(m, "/demote", {})
            case EnsureSlots(member=m, slots=slots):
                await post(m, "/slots", {"slots": list(slots)})
            case Configure(member=m, parameters=ps, synchronous_standby_names=sync):
                await post(
                    m,
                    "/configure",
                    {"parameters": dict(ps), "synchronous_standby_names": sync},
                )
            case StartBaseBackup(member=m):
                await post(m, "/backup", {})
            case SwitchWal(member=m):
                await post(m, "/switch-wal", {})
            case RenewCertificate(member=m):
                index = names.member_index(ctx.database.name, m)
                if index is None:
                    raise TypeError(f"not a member of {ctx.database.name}: {m}")
                issued = ctx.credentials.ca.issue(
                    m, names.member_dns_names(ctx.database.name, index), datetime.now(UTC)
                )
                await post(m, "/certificate", {"certificate": issued.cert_pem})
            case _:
                raise TypeError(f"not a PostgreSQL action: {action.describe()}")
