"""Observe: one database as Swarm and its members' engines report it now, as a typed
`Observation` for the plugin's pure planner (the first step of observe -> plan -> apply ->
status)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

from shoal import names
from shoal.credentials import DatabaseCredentials
from shoal.declaration import Database
from shoal.operator.context import OperatorContext
from shoal.operator.leases import LeaseBook
from shoal.operator.members import image_matches, infrastructure_ready
from shoal.operator.placement import read_pin
from shoal.operator.proxy import observe_proxy
from shoal.plugins.base import EnginePlugin, MemberObservation, Observation, ProxyObservation
from shoal.swarm.client import JSON
from shoal.swarm.nodes import NodeInfo, node_info
from shoal.swarm.store import StoredDatabase
from shoal.swarm.tasks import TaskInfo


def newest_tasks(tasks: list[JSON]) -> dict[str, JSON]:
    """Per service id, the task that stands for the member now: the newest one Swarm wants
    running, else the newest of all (so a dead member shows its death)."""
    best: dict[str, JSON] = {}
    for t in tasks:
        sid = t["ServiceID"]
        key = (t.get("DesiredState") == "running", t["Version"]["Index"])
        cur = best.get(sid)
        if cur is None or key > (cur.get("DesiredState") == "running", cur["Version"]["Index"]):
            best[sid] = t
    return best


def task_info(t: JSON, nodes: dict[str, NodeInfo]) -> TaskInfo:
    status = t.get("Status", {})
    node_id = str(t.get("NodeID", ""))
    node = nodes.get(node_id)
    return TaskInfo(
        task_id=str(t["ID"]),
        state=str(status.get("State", "new")),
        node_id=node_id,
        node=node.hostname if node is not None else None,
        container_id=(status.get("ContainerStatus") or {}).get("ContainerID"),
        error=status.get("Err"),
        node_down=node is not None and node.down,
    )


MIN_GRANT = 1.0  # seconds: a shorter renewal is not sent (the agents refuse it)
# The probe of a member whose renewal just went unanswered, in the pass that silence woke:
# it is given this long, not the engine's whole probe timeout (a connection kept alive to a
# node cut off waits all of it), so the failover's first steps are not held up by it. Later
# passes give it the whole timeout again: a primary that is merely slow is still heard.
SILENT_PROBE = 0.5
# Task states in which a container of the task may exist and answer.
MAY_RUN = frozenset({"assigned", "accepted", "preparing", "ready", "starting", "running"})


def _may_answer(info: TaskInfo | None) -> bool:
    return info is not None and info.state in ("starting", "running")


class Observer:
    """Observes one database. Keeps, per member, when this process first saw it running
    but not answering: `unreachable_for` is measured on this process's monotonic clock."""

    def __init__(self, ctx: OperatorContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self._unreachable = UnreachableClock()
        self._book: LeaseBook | None = None
        self._may_run: dict[str, list[str]] = {}  # member -> its tasks that may have a container
        self._renewal_sent: dict[str, float] = {}  # member -> when a renewal last went to it
        self._silent: set[str] = set()  # members whose renewal went unanswered, not probed since
        self._probing: set[str] = set()  # members a probe carrying a renewal is out to

    @property
    def _leases(self) -> LeaseBook:
        if self._book is None:
            # Opened at the first observation. An operator deposed just before this one took
            # over may have renewed members until its own leadership lease ran out: count
            # from then (operator/leases.py).
            self._book = LeaseBook(opened=time.monotonic() + self.ctx.lease.settings.duration)
        return self._book

    async def observe(
        self, stored: StoredDatabase, plugin: EnginePlugin[Any], credentials: DatabaseCredentials
    ) -> Observation[Any]:
        swarm = self.ctx.swarm
        db = stored.declaration
        of_db = await swarm.services_of(self.name)
        services = [
            s for s in of_db if s["Spec"].get("Labels", {}).get(names.LABEL_ROLE) == "member"
        ]
        by_index: dict[int, JSON] = {}
        for s in services:
            idx = names.member_index(self.name, s["Spec"]["Name"])
            if idx is not None:
                by_index[idx] = s
        # The nodes and the tasks are the same reads for every database: shared for a moment
        # (operator/shared.py; a death seen by the task poll is in the read the woken worker
        # takes). Independent reads go out together (each may be a round trip to the
        # manager, slow on a busy one); the infrastructure and the proxy alongside the probes.
        shared = self.ctx.shared
        raw_nodes, of_swarm = await all_of(
            shared.nodes.get(), shared.tasks.get() if services else _empty()
        )
        member_ids = {s["ID"] for s in services}
        every: list[JSON] = [t for t in of_swarm if t.get("ServiceID") in member_ids]
        nodes = {n.id: n for n in map(node_info, raw_nodes)}
        tasks: dict[str, JSON] = {}
        # service id -> its earlier tasks Swarm still runs (on nodes it has not lost)
        earlier_running: dict[str, list[str]] = {}
        stranded: dict[str, list[str]] = {}  # service id -> its tasks running on lost nodes
        may_run: dict[str, list[str]] = {}  # service id -> its tasks that may have a container
        if services:
            tasks = newest_tasks(every)
            for task in every:
                if (
                    task["ID"] != tasks[task["ServiceID"]]["ID"]
                    and task.get("Status", {}).get("State") == "running"
                    and not _on_lost_node(task, nodes)
                ):
                    earlier_running.setdefault(task["ServiceID"], []).append(task["ID"])
            for task in every:
                state = task.get("Status", {}).get("State")
                if state in MAY_RUN:
                    may_run.setdefault(task["ServiceID"], []).append(task["ID"])
                if state == "running" and _on_lost_node(task, nodes):
                    stranded.setdefault(task["ServiceID"], []).append(task["ID"])
            self._leases.prune({task["ID"] for task in every})
        spread = db.spec.placement.spread
        indices = sorted(set(range(db.spec.members)) | set(by_index))
        member_names = [names.member_service(self.name, i) for i in indices]
        infos: list[TaskInfo | None] = []
        for i in indices:
            svc = by_index.get(i)
            t = tasks.get(svc["ID"]) if svc else None
            infos.append(task_info(t, nodes) if t else None)
        # Only a member whose newest task runs can answer: probing one Swarm reports dead
        # would hold the whole observation (and so the failover) for the probe's timeout.
        ttl = plugin.lease_ttl(db)
        declared = member_names[: db.spec.members]
        granted = self._granted(ttl)
        token = self.ctx.lease.token
        grants = [self._leases.grant(n, granted, declared, token) for n in member_names]
        silent, self._silent = self._silent, set()
        sent = time.monotonic()
        renewing = {
            n
            for n, info, grant in zip(member_names, infos, grants, strict=True)
            if grant is not None and _may_answer(info)
        }
        for n in renewing:
            self._renewal_sent[n] = sent
        self._probing |= renewing
        try:
            infra_ready, proxy, *probes = await all_of(
                self._infrastructure_ready(stored),
                self._proxy(plugin.member_image(), of_db),
                *(
                    _within(
                        plugin.probe(self.ctx.http, n, credentials, grant),
                        self._probe_limit(n, silent, stored, sent),
                    )
                    if _may_answer(info)
                    else _none()
                    for n, info, grant in zip(member_names, infos, grants, strict=True)
                ),
            )
        finally:
            self._probing -= renewing
        now_mono = time.monotonic()
        now_utc = datetime.now(UTC)
        members = []
        for i, n, info, probe, grant in zip(
            indices, member_names, infos, probes, grants, strict=True
        ):
            svc = by_index.get(i)
            usable = probe is not None and plugin.answered(probe)
            sid = svc["ID"] if svc is not None else ""
            same_image = svc is None or image_matches(_image_of(svc), plugin.member_image())
            margin = (
                plugin.lease_margin
                if same_image
                else max(plugin.lease_margin, plugin.lease_margin_other_image)
            )
            self._may_run[n] = may_run.get(sid, [])
            self._leases.book(
                n,
                sent,
                renewed=grant is not None and _may_answer(info),
                answered_by=plugin.answering_task(probe) if probe is not None else None,
                may_run=self._may_run[n],
                answered=usable,
            )
            unreachable_for = self._unreachable.note(
                n, answered=usable, running=info is not None and info.running,
                sent=sent, now=now_mono,
            )  # fmt: skip
            members.append(
                MemberObservation(
                    index=i,
                    name=n,
                    service_exists=svc is not None,
                    task=info,
                    probe=probe,
                    unreachable_for=unreachable_for,
                    previous_running=svc is not None and svc["ID"] in earlier_running,
                    pin=_pin(svc, spread, db.spec.placement.constraints),
                    stranded=sid in stranded,
                    same_image=same_image,
                    lease_left=self._leases.left(
                        stranded.get(sid, []) + earlier_running.get(sid, []),
                        ttl,
                        margin,
                        now_mono,
                    ),
                    task_lease_left=self._leases.left(
                        [info.task_id] if info is not None and info.running else [],
                        ttl,
                        margin,
                        now_mono,
                    ),
                    certificate_serial=credentials.ca.serial_for(
                        n, names.member_dns_names(self.name, i), now_utc
                    ),
                )
            )
        return Observation(
            database=db,
            uid=stored.uid,
            generation=stored.generation,
            status=stored.status,
            members=members,
            request=stored.request,
            infrastructure_ready=infra_ready,
            now=time.time(),
            proxy=proxy,
            token=self.ctx.lease.token,
            monotonic=time.monotonic(),
            nodes=tuple(nodes.values()),
        )

    def _probe_limit(
        self, member: str, silent: set[str], stored: StoredDatabase, sent: float
    ) -> float | None:
        """How long a probe sent at `sent` may take (None: the engine's own timeout).
        SILENT_PROBE in the pass an unanswered renewal woke. For the recorded primary not
        answering: no longer than until `unreachableSeconds` is up, and SILENT_PROBE once
        it is, so the pass that crosses it ends at the crossing, not up to a whole probe
        timeout (1.5 s on a paused container) after it, also when it started just after;
        an answer that would have come later comes after the primary was given up on."""
        if member in silent:
            return SILENT_PROBE
        since = self._unreachable.since(member)
        if since is None or member != stored.status.primary:
            return None
        left = since + float(stored.declaration.spec.failover.unreachable_seconds) - sent
        return max(left, SILENT_PROBE)

    def probing(self, member: str) -> bool:
        """A probe carrying a renewal is out to `member` and has not come back."""
        return member in self._probing

    def renewal_sent(self, member: str) -> float | None:
        """When a renewal (alone or with a probe) last went to `member` (monotonic)."""
        return self._renewal_sent.get(member)

    def _granted(self, ttl: float | None) -> float | None:
        """The lease to grant now. Never past this operator's own leadership lease: an
        operator cut off from the managers (deposed, replaced elsewhere) must stop keeping
        its primaries alive."""
        granted = min(ttl, self.ctx.lease.remaining()) if ttl is not None else None
        return None if granted is None or granted < MIN_GRANT else granted

    async def renew(
        self,
        db: Database,
        plugin: EnginePlugin[Any],
        credentials: DatabaseCredentials,
        member: str,
    ) -> bool | None:
        """Renew one member's lease with a request that asks nothing else, between two
        passes (operator/renewals.py). True when it answered, False when not (its
        unreachable count starts from this request, as from an unanswered probe), None when
        no renewal was due: the engine keeps no lease, this operator may not grant one, or
        the member did not answer the last probe (only a probe renews such a member)."""
        declared = [names.member_service(self.name, i) for i in range(db.spec.members)]
        grant = self._leases.grant(
            member, self._granted(plugin.lease_ttl(db)), declared, self.ctx.lease.token
        )
        if grant is None or member not in self._may_run:
            return None
        sent = time.monotonic()
        self._renewal_sent[member] = sent
        answer = await plugin.renew(self.ctx.http, member, credentials, grant)
        self._leases.book_renewal(
            member,
            sent,
            answered_by=answer.task_id if answer is not None else None,
            may_run=self._may_run[member],
            answered=answer is not None,
        )
        if answer is None:
            self._silent.add(member)
            self._unreachable.note(
                member, answered=False, running=True, sent=sent, now=time.monotonic()
            )
        return answer is not None

    async def _infrastructure_ready(self, stored: StoredDatabase) -> bool:
        """Whether the database's networks and secrets are all there; once they are, Swarm is
        not asked again for a while (operator/shared.py: none of them can be removed while
        a member uses it, and every action of the operator asks afresh)."""
        db = stored.declaration
        shared = self.ctx.shared
        if shared.infrastructure_known_ready(self.name, stored.uid, db.spec.members):
            return True
        ready = await infrastructure_ready(self.ctx.swarm, db, stored.uid)
        if ready:
            shared.infrastructure_ready(self.name, stored.uid, db.spec.members)
        return ready

    async def _proxy(self, image: str, services: list[JSON]) -> ProxyObservation:
        configs = [
            c
            for c in await self.ctx.shared.proxy_configs.get()
            if c["Spec"].get("Labels", {}).get(names.LABEL_DATABASE) == self.name
        ]
        return observe_proxy(self.name, image, services, configs)


class UnreachableClock:
    """How long each member has not answered while Swarm runs it (`unreachableSeconds` is
    compared with this). The count starts when the first unanswered request was *sent*: the
    member was silent from then on, and a probe that timed out took its whole timeout to
    say so (1.5 s that a paused primary's failover used to wait on top). Requests overlap
    (a pass's probe and a renewal between passes), so their outcomes arrive out of order:
    each is placed by its send time. A silence noted after a later request was answered is
    over already; one noted after a later unanswered request moves the start back (seen on
    a paused primary: a renewal sent 1 s after the pass's probe timed out first, and the
    count started 1 s late)."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}  # earliest unanswered send after the last answer
        self._heard: dict[str, float] = {}  # send time of the latest answered request

    def since(self, member: str) -> float | None:
        """When the member's silence began (None: it answers)."""
        return self._since.get(member)

    def note(self, member: str, *, answered: bool, running: bool, sent: float, now: float) -> float:
        if not running:
            self._since.pop(member, None)
            self._heard.pop(member, None)
            return 0.0
        if answered:
            self._heard[member] = max(self._heard.get(member, sent), sent)
            if self._since.get(member, sent) <= sent:
                self._since.pop(member, None)
            return 0.0
        if sent < self._heard.get(member, sent):
            return 0.0  # a later request was answered: that silence is over
        since = min(self._since.get(member, sent), sent)
        self._since[member] = since
        return now - since


def _on_lost_node(task: JSON, nodes: dict[str, NodeInfo]) -> bool:
    """The task's node is down, or no longer in the swarm (`docker node rm`)."""
    node_id = str(task.get("NodeID", ""))
    node = nodes.get(node_id)
    return node.down if node is not None else bool(node_id)


def _image_of(service: JSON) -> str:
    return str(service["Spec"].get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", ""))


def _pin(service: JSON | None, spread: str | None, user: list[str]) -> str | None:
    if service is None or spread is None:
        return None
    placement = service["Spec"].get("TaskTemplate", {}).get("Placement") or {}
    return read_pin(spread, placement.get("Constraints") or [], user)


async def all_of(*aws: Awaitable[Any]) -> list[Any]:
    """Their results, in order, once every one has finished; the first failure is raised
    then (none is left running behind it)."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


async def _empty() -> list[JSON]:
    return []


async def _none() -> None:
    return None


async def _within(probe: Awaitable[Any], limit: float | None) -> Any:
    """The probe's answer, or None (no answer) when `limit` seconds pass first."""
    if limit is None:
        return await probe
    try:
        async with asyncio.timeout(limit):
            return await probe
    except TimeoutError:
        return None
