"""The engine plugin interface (docs/architecture.md, "Engine plugins").

Each reconcile cycle hands a plugin an `Observation` (Swarm's view of every member plus the
plugin's own probe of each) and gets back a `Plan`: the database's status and an ordered list
of actions. Planning is a pure function; applying is separate and goes one action at a time,
then the operator observes again. Generic actions (create, remove, replace a member's
service) are applied by the operator; engine actions (bootstrap, re-seed, promote, fence ...)
by the plugin. MongoDB elects its own primary and will plan no `Promote`; PostgreSQL needs the
operator to choose, so both fit the same loop.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import aiohttp

from shoal.credentials import DatabaseCredentials
from shoal.declaration import Database, Engine
from shoal.request import Request
from shoal.status import DatabaseState, DatabaseStatus, Event, MemberState, MemberStatus
from shoal.swarm.client import SwarmApi
from shoal.swarm.nodes import NodeInfo
from shoal.swarm.tasks import TaskInfo

if TYPE_CHECKING:
    from shoal.chaos.engines import EngineSession

P = TypeVar("P")


@dataclass(frozen=True)
class ProxyBackend:
    """What the read-write proxy (`spec.expose.port`, operator/proxy.py) needs of an engine:
    the port members serve clients on, and an HTTP check that answers 200 only on the member
    that takes writes."""

    port: int
    check_port: int
    check_path: str


@dataclass(frozen=True)
class ServerBinary:
    """An engine's server binary that shoal cannot install itself (not in Debian, nothing to
    download it from): the user gives it to `shoal images build` as `--<option>-from IMAGE`
    (copied from `image_path` in that local image) or `--<option>-tarball PATH` (the
    vendor's Linux tarball, `tarball_path` under its top directory). It is kept in an image
    of its own, `image` (FROM scratch, the binary at `/<name>`), which the member image's
    recipe copies it from (build arg `SERVER`), so later builds need no option again."""

    name: str  # the binary, e.g. `mongod`
    option: str  # the options' prefix: `--<option>-from`, `--<option>-tarball`
    image: str  # the local image that keeps it
    image_path: str  # where it is in an image given with `--<option>-from`
    tarball_path: str  # where it is in the tarball, under the top directory
    example_image: str  # an image that has it, for messages

    def how_to_provide(self, engine: str) -> str:
        """The one sentence that says how to give shoal this binary."""
        return (
            f"the {engine} member image needs a {self.name} binary, which shoal cannot "
            f"download: build it with `shoal images build --{self.option}-from IMAGE` (an "
            f"image you have with {self.image_path}, e.g. {self.example_image}) or "
            f"`shoal images build --{self.option}-tarball PATH` (the official Linux tarball, "
            f"with {self.tarball_path})"
        )


@dataclass(frozen=True)
class ImageRecipe:
    """How an engine's member image is built (`shoal images build`, shoal/platform/images.py).
    A class attribute of the plugin, read without building a plugin or knowing any tag.

    The build context is the `recipe` directory of the plugin's package (its Dockerfile at
    the context's root), plus each of `sources`: what runs inside the member besides the
    engine, which finds no other shoal code there. A source is a directory of the plugin
    (`agent`), under its own name in the context, or, when it holds a `/`, a directory of
    the source tree (`shoal/agentkit`, what every member agent shares), under that same
    path. The image is tagged `<alias>-<hash of the context>` and `alias` is moved to the
    newest build."""

    package: str  # the plugin's package, dotted: its directory in the source tree holds the rest
    alias: str  # the stable tag, e.g. `shoal/<engine>:<engine version>-<shoal version>`
    recipe: str = "image"
    sources: tuple[str, ...] = ()
    # Debian packages the member needs, installed into the base image every image shares
    # (shoal/platform/base_image.py).
    base_packages: tuple[str, ...] = ()
    # The engine's server binary, when the user must provide it: without it the member image
    # is not built (and an operator runs none of the engine's databases: they say why).
    server: ServerBinary | None = None


@dataclass(frozen=True)
class LeaseGrant:
    """A renewal of a member's lease, sent with its probe: as primary it may keep accepting
    writes for `ttl` seconds without hearing from the operator again, or for as long as
    every one of `peers` (the other members) keeps following it."""

    ttl: float
    token: int  # the operator's fencing token: a deposed operator renews nothing
    peers: tuple[str, ...]


@dataclass(frozen=True)
class RenewalAnswer:
    """A member's answer to a renewal alone (`EnginePlugin.renew`)."""

    task_id: str | None  # the Swarm task of the container that took it (None: unknown)


@dataclass(frozen=True)
class MemberObservation(Generic[P]):
    index: int
    name: str
    service_exists: bool
    task: TaskInfo | None
    probe: P | None  # None when the member's engine did not answer
    # Seconds without a usable answer (none, or `EnginePlugin.answered` false) while Swarm
    # says it runs, by this operator's own monotonic clock.
    unreachable_for: float = 0.0
    # Swarm still runs an earlier container of this member (one being stopped by a fence or
    # a replacement): until it is gone, that container may still answer clients. A container
    # on a node Swarm lost (down) does not count: nothing can stop it or report its death,
    # and once the standbys stopped following it, it can acknowledge no commit under
    # `durability: sync` (docs/failure-modes.md, "Node loss").
    previous_running: bool = False
    # The spread value the operator pinned this member's service to (operator/placement.py).
    pin: str | None = None
    # A container of this member may still run on a node Swarm lost (down or removed):
    # nothing can stop it or confirm its death, only its own lease ends it.
    stranded: bool = False
    # Its service runs this operator's member image (False: one an earlier operator made,
    # whose agent may keep other timings; `EnginePlugin.lease_margin_other_image`).
    same_image: bool = True
    # Seconds until the lease of every earlier container of this member that may still run
    # (stranded on a lost node, or one Swarm still reports running, `previous_running`) is
    # surely over (the plugin's `lease_margin` included; operator/leases.py); <= 0 once it
    # is, when there is none, or when the engine keeps no lease.
    lease_left: float = 0.0
    # The same for the container of its newest task, while that runs: the one a fence
    # condemned, until Swarm has made the replacement task.
    task_lease_left: float = 0.0
    # The serial of the TLS certificate the member should serve now (shoal/tls.py); the
    # engine renews a member's certificate when it serves another. None: not known.
    certificate_serial: int | None = None

    @property
    def swarm_dead(self) -> bool:
        """Swarm itself reports that no container of this member is running: certain."""
        return self.task is None or not self.task.running


@dataclass(frozen=True)
class ProxyObservation:
    """The read-write proxy service of a database (`spec.expose.port`) as Swarm has it."""

    exists: bool = False
    port: int | None = None  # the published port
    config: str | None = None  # the name of the Docker config the service uses
    image_current: bool = True  # it runs the image this operator would give it
    configs: tuple[str, ...] = ()  # every proxy config of the database that exists


@dataclass(frozen=True)
class Observation(Generic[P]):
    database: Database
    uid: str
    generation: int
    status: DatabaseStatus  # as last written
    members: list[MemberObservation[P]]  # declared members first, then extra services
    request: Request | None
    infrastructure_ready: bool
    now: float  # wall clock: for events a person reads, never for a decision
    proxy: ProxyObservation = ProxyObservation()
    # The observing operator's fencing token and its own monotonic clock. A duration that a
    # decision depends on (a switchover's timeout, a fence's retry) is stamped with both and
    # only measured by the operator that stamped it: clocks of different operators differ.
    token: int = 0
    monotonic: float = 0.0
    nodes: tuple[NodeInfo, ...] = ()  # the swarm's nodes, for placement

    def member(self, name: str | None) -> MemberObservation[P] | None:
        return next((m for m in self.members if m.name == name), None)


def member_status(name: str, task: TaskInfo | None, answered: bool) -> MemberStatus:
    """A member's status line as far as Swarm tells it: its node and task, and, for a member
    whose engine gave no answer, its state (dead, unreachable while Swarm runs it, or still
    starting). Each engine's view fills in the rest from its answer."""
    st = MemberStatus(
        name=name, node=task.node if task else None, task_id=task.task_id if task else None
    )
    if not answered:
        st.state = (
            MemberState.DEAD
            if task is None or task.dead
            else MemberState.UNREACHABLE
            if task.running
            else MemberState.STARTING
        )
    return st


class UnusableAnswer(ValueError):
    """A member's answer that is malformed or of a newer format than this operator knows: no
    usable answer (counted like none: docs/failure-modes.md, "An agent's answer it cannot
    read")."""


def answer_document(answer: object, newest_format: int) -> dict[str, Any]:
    """`answer` as an object of a format this operator reads (1..`newest_format`; absent: 1),
    else `UnusableAnswer` saying why."""
    if not isinstance(answer, dict):
        raise UnusableAnswer(f"the answer is not an object but {type(answer).__name__}")
    fmt = answer.get("format", 1)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise UnusableAnswer(f"the answer's format {fmt!r:.40} is not a format")
    if fmt > newest_format:
        raise UnusableAnswer(
            f"the answer's format {fmt} is newer than this operator's ({newest_format})"
        )
    return answer


class UnusableAnswers:
    """Turns members' answers into typed probes, logging an unusable one once (again only
    when the reason changes or after a usable answer), so a member stuck on a bad answer
    does not flood the log every probe."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._why: dict[str, str] = {}  # member -> why its last answer was unusable

    def parse(self, member: str, answer: object, parse: Callable[[object], P]) -> P | None:
        try:
            probe = parse(answer)
        except UnusableAnswer as e:
            if self._why.get(member) != str(e):
                self._log.warning("%s: %s", member, e, extra={"event": "probe-unusable"})
            self._why[member] = str(e)
            return None
        self._why.pop(member, None)
        return probe


class ActionFailed(RuntimeError):
    """An engine refused or failed an action; the operator re-observes and re-plans."""


# --- actions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Action:
    def describe(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


@dataclass(frozen=True)
class EnsureInfrastructure(Action):
    """Networks and secrets of the database."""


@dataclass(frozen=True)
class CreateMember(Action):
    index: int


@dataclass(frozen=True)
class RemoveMember(Action):
    index: int


@dataclass(frozen=True)
class ReplaceMember(Action):
    """Fence or re-seed: Swarm replaces the member's task, its data dies with it."""

    member: str
    reason: str


@dataclass(frozen=True)
class PinMember(Action):
    """Move a lost member's placement pin (operator/placement.py): its new task starts on a
    node with that value, empty, and is re-seeded."""

    member: str
    value: str
    reason: str


@dataclass(frozen=True)
class ClearRequest(Action):
    request_id: str


@dataclass(frozen=True)
class EnsureProxy(Action):
    """Create or update the read-write proxy: published on `port`, checking `members`."""

    port: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class RemoveProxy(Action):
    """Remove the proxy service and every proxy config of the database."""


@dataclass(frozen=True)
class PruneProxyConfigs(Action):
    """Remove proxy configs no service uses any more (configs are immutable)."""

    configs: tuple[str, ...]


@dataclass
class Plan:
    status: DatabaseStatus
    actions: list[Action] = field(default_factory=list)
    requeue_after: float = 5.0

    @property
    def state(self) -> DatabaseState:
        return self.status.state

    def add(self, *actions: Action) -> None:
        self.actions.extend(actions)

    def event(self, at: float, kind: str, member: str | None, message: str) -> None:
        self.status.add_event(Event(at=at, kind=kind, member=member, message=message))


@dataclass
class ApplyContext:
    swarm: SwarmApi
    http: aiohttp.ClientSession
    credentials: DatabaseCredentials
    fence_token: int
    database: Database


class UnreadablePlanState(RuntimeError):
    """A plugin cannot read what it stored in the status (`status.progress` of a newer format,
    or malformed): it must not plan, and the operator acts on nothing for the database until
    a person looks (the same fail-closed path as an unreadable status label)."""


def member_http_session() -> aiohttp.ClientSession:
    """The HTTP session for members' agents. Members are `dnsrr` services whose name
    resolves to the task's own address, which changes every time Swarm replaces the task;
    aiohttp caches names for 10 s by default, and a probe sent to the dead task's address
    waits out its whole connect timeout (this held failover ~1 s per observation)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(use_dns_cache=False))


class EnginePlugin(ABC, Generic[P]):
    """One database engine. Registered by name in the `shoal.engines` entry point group
    (plugins/registry.py) and built with its member image tag (None: the default)."""

    engine: ClassVar[Engine]
    # How the member image is built (`shoal images build`); `member_image()` defaults to its
    # alias.
    image_recipe: ClassVar[ImageRecipe]
    # How the read-write proxy reaches and checks members; None: this engine has none (its
    # clients find the primary themselves, as MongoDB drivers do).
    proxy_backend: ClassVar[ProxyBackend | None] = None

    @abstractmethod
    def __init__(self, image: str | None = None) -> None: ...

    @abstractmethod
    async def probe_document(
        self, http: aiohttp.ClientSession, member: str, credentials: DatabaseCredentials
    ) -> dict[str, Any] | None:
        """The member's own answer about itself, as the engine sent it (recordings and
        `shoal operator snapshot`); None when it does not answer in time."""

    @abstractmethod
    def member_image(self) -> str:
        """The image tag of a data-bearing member."""

    def image_problem(self) -> str | None:
        """Why this operator cannot run the engine's members (its member image was never
        built here, so none was deployed with it); None when it can. The operator then
        acts on none of the engine's databases and puts this in their status."""
        return None

    def member_env(self, database: Database) -> tuple[str, ...]:
        """More `KEY=value` environment for every member of `database` (e.g. where it
        archives, from spec.backup)."""
        return ()

    # The command, run in the member image with the member's environment and secrets, that
    # prints `{"backups": [...]}` for `shoal backups` (docs/backup.md); None: the engine
    # keeps no backups.
    backup_list_command: ClassVar[tuple[str, ...] | None] = None

    @abstractmethod
    async def probe(
        self,
        http: aiohttp.ClientSession,
        member: str,
        credentials: DatabaseCredentials,
        lease: LeaseGrant | None = None,
    ) -> P | None:
        """Ask a member's engine about itself, renewing its lease when `lease` is given;
        None when it does not answer in time."""

    # Seconds to add to a lease's ttl, counted from sending the renewal, after which the
    # member has surely stopped: the renewal's delivery bound plus the member's reaction.
    lease_margin: ClassVar[float] = 0.0
    # The margin for a member whose service runs another image than this operator's (made
    # by an earlier operator): its agent may react to its lease more slowly.
    lease_margin_other_image: ClassVar[float] = 0.0

    def lease_ttl(self, database: Database) -> float | None:
        """The lease a primary of this database holds (None: the engine keeps no lease)."""
        return None

    async def renew(
        self,
        http: aiohttp.ClientSession,
        member: str,
        credentials: DatabaseCredentials,
        lease: LeaseGrant,
    ) -> RenewalAnswer | None:
        """Renew a member's lease and ask nothing else: the renewals between two
        reconcile passes (operator/renewals.py). None when it does not answer in time, or
        the engine keeps no lease."""
        return None

    def fence_token_seen(self, probe: P) -> int:
        """The highest fencing token the member has recorded (0 if the engine keeps none)."""
        return 0

    def answered(self, probe: P) -> bool:
        """False when the member replied but could not say what it is (its engine is in
        crash recovery, out of connections, ...): the operator then counts it as unreachable,
        so only Swarm's word that it is dead skips `failover.unreachableSeconds`."""
        return True

    def answering_task(self, probe: P) -> str | None:
        """The Swarm task of the container that sent this answer (None: the engine cannot
        say), so a lease renewal is booked against the container that received it."""
        return None

    @abstractmethod
    def plan(self, observation: Observation[P]) -> Plan:
        """Pure: decide from an observation. Must not perform I/O."""

    @abstractmethod
    async def apply(self, action: Action, ctx: ApplyContext) -> None:
        """Carry out one engine action (the generic ones are the operator's)."""

    @abstractmethod
    def connection(
        self, database: Database, password: str | None = None, ca_file: str | None = None
    ) -> str:
        """The client connection URI, always reaching the writable primary, verifying the
        members' certificates against the CA in `ca_file` (or the client's default)."""

    def chaos_session(self) -> type[EngineSession] | None:
        """The chaos suite's client session for this engine (shoal/chaos/engines.py), whose
        `port` clients connect to; None: the engine has no chaos client yet."""
        return None

    def connect_hint(self, uri: str) -> str | None:
        """A command that opens an interactive client on `uri`, for a person to run in a
        container of the base image on the database's network (`shoal credentials` prints
        it); None: none to suggest."""
        return None
