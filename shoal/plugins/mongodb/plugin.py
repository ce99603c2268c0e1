"""The MongoDB engine plugin: a replica set, one member per Swarm service.

Probes go to each member's agent (agent/, HTTPS on port 8008 with the member's token), which
answers with its mongod's `hello`, `replSetGetStatus` and `replSetGetConfig` (model.py says
the shape). Actions: the agent initiates the set and creates the users (`POST /initiate`,
the one thing that needs the localhost exception); a reconfig and a step-down go from the
operator straight to mongod with pymongo (clients.py), as the operator's administrator.

MongoDB elects its own primary: the plugin never promotes. Clients need no proxy either:
a driver given the member list and the replica set's name finds the primary itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import aiohttp

from shoal import __version__, names
from shoal.credentials import DatabaseCredentials
from shoal.declaration import Database, Engine
from shoal.plugins.agent_transport import AgentError, member_call
from shoal.plugins.base import (
    Action,
    ApplyContext,
    EnginePlugin,
    ImageRecipe,
    LeaseGrant,
    Observation,
    Plan,
    ProxyBackend,
    ServerBinary,
    UnusableAnswers,
)
from shoal.plugins.mongodb import agent_client, durability, naming, planner
from shoal.plugins.mongodb.model import (
    ForceReconfigure,
    InitiateReplicaSet,
    MongoProbe,
    Reconfigure,
    StepDown,
)

if TYPE_CHECKING:
    from shoal.chaos.engines import EngineSession

log = logging.getLogger("shoal.mongodb")

ENGINE = "mongodb"
SERVER = ServerBinary(
    name="mongod",
    option=ENGINE,
    image=f"shoal/mongodb-server:{__version__}",
    image_path="/usr/bin/mongod",
    tarball_path="bin/mongod",
    example_image="mongo:7.0",
)


def mongodb_uri(
    database: Database, hosts: list[str], password: str | None = None, ca_file: str | None = None
) -> str:
    """A replica set URI for the application's user: the driver finds the primary among
    `hosts`, over TLS verified against the CA in `ca_file` (or the client's default trust),
    with the write concern the declaration's durability asks for and majority reads."""
    auth = names.APP_USER + (f":{quote(password, safe='')}" if password else "")
    hostlist = ",".join(naming.host(h) for h in hosts)
    concern = durability.write_concern(database)
    query = [
        f"replicaSet={quote(naming.replica_set_name(database.name), safe='')}",
        "tls=true",
        *([f"tlsCAFile={quote(ca_file, safe='/')}"] if ca_file else []),
        f"w={concern.w}",
        f"journal={'true' if concern.j else 'false'}",
        f"readConcernLevel={durability.READ_CONCERN}",
        "retryWrites=true",
    ]
    return f"mongodb://{auth}@{hostlist}/{names.APP_DATABASE}?{'&'.join(query)}"


class MongoPlugin(EnginePlugin[MongoProbe]):
    engine: ClassVar[Engine] = Engine.MONGODB
    proxy_backend: ClassVar[ProxyBackend | None] = None  # drivers find the primary

    # The member image: the user's mongod (SERVER, `shoal images build --mongodb-from IMAGE`
    # or `--mongodb-tarball PATH`) on the base image, and the agent (agent/) as its main
    # process. Debian's python3-pymongo is installed by the recipe itself (image/Dockerfile),
    # not in the base image every engine shares.
    image_recipe: ClassVar[ImageRecipe] = ImageRecipe(
        package="shoal.plugins.mongodb",
        alias=f"shoal/mongodb:7.0-{__version__}",
        recipe="image",
        sources=("agent", "shoal/agentkit"),
        server=SERVER,
    )

    def __init__(self, image: str | None = None) -> None:
        # No image given (no SHOAL_MONGODB_IMAGE): whoever deployed this operator had no
        # MongoDB member image to give it, as `shoal operator deploy` gives only built ones.
        self.image_given = image is not None
        self.image = image or self.image_recipe.alias
        self._answers = UnusableAnswers(log)

    def member_image(self) -> str:
        return self.image

    def image_problem(self) -> str | None:
        if self.image_given:
            return None
        return (
            "no MongoDB member image was deployed with this operator: "
            f"{SERVER.how_to_provide(ENGINE)}, then `shoal operator deploy`"
        )

    async def probe_document(
        self,
        http: aiohttp.ClientSession,
        member: str,
        credentials: DatabaseCredentials,
        lease: LeaseGrant | None = None,
    ) -> dict[str, Any] | None:
        try:
            return await member_call(
                http, member, credentials, "GET", "/state", timeout=agent_client.PROBE_TIMEOUT
            )
        except AgentError:
            return None

    async def probe(
        self,
        http: aiohttp.ClientSession,
        member: str,
        credentials: DatabaseCredentials,
        lease: LeaseGrant | None = None,
    ) -> MongoProbe | None:
        data = await self.probe_document(http, member, credentials)
        if data is None:
            return None
        return self._answers.parse(member, data, MongoProbe.parse)

    def answering_task(self, probe: MongoProbe) -> str | None:
        return probe.task

    def plan(self, observation: Observation[MongoProbe]) -> Plan:
        return planner.plan(observation)

    def connection(
        self, database: Database, password: str | None = None, ca_file: str | None = None
    ) -> str:
        hosts = [names.member_service(database.name, i) for i in range(database.spec.members)]
        return mongodb_uri(database, hosts, password, ca_file)

    def chaos_session(self) -> type[EngineSession] | None:
        from shoal.plugins.mongodb.chaos import MongoSession

        return MongoSession

    async def apply(self, action: Action, ctx: ApplyContext) -> None:
        # pymongo only where an action needs it: every CLI command loads the plugins.
        from shoal.plugins.mongodb import clients

        credentials = ctx.credentials
        match action:
            case InitiateReplicaSet(member=m, config=config):
                body = agent_client.initiate_body(ctx.fence_token, config.to_document())
                await member_call(ctx.http, m, credentials, "POST", "/initiate", body)
                log.info("%s: replica set %s initiated", m, config.id, extra={"event": "initiated"})
            case Reconfigure(via=m, config=config):
                ca = await asyncio.to_thread(clients.ca_file, credentials.ca.cert_pem)
                await clients.reconfigure(m, credentials, config, ca)
            case ForceReconfigure(via=m, config=config):
                # Only ever planned for `shoal recover NAME --force-reconfig` (planner.py).
                log.warning(
                    "%s: FORCED reconfig to members %s (requested; writes only the members "
                    "left out held are lost)",
                    m,
                    ", ".join(config.hosts),
                    extra={"event": "force-reconfig"},
                )
                ca = await asyncio.to_thread(clients.ca_file, credentials.ca.cert_pem)
                await clients.reconfigure(m, credentials, config, ca, force=True)
            case StepDown(member=m, seconds=s, catch_up_seconds=c, force=f):
                ca = await asyncio.to_thread(clients.ca_file, credentials.ca.cert_pem)
                await clients.step_down(m, credentials, ca, seconds=s, catch_up_seconds=c, force=f)
            case _:
                raise TypeError(f"not a MongoDB action: {action.describe()}")
