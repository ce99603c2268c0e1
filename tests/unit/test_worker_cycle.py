"""`DatabaseWorker.cycle` (shoal/operator/worker.py) end to end against the shared fake Swarm
(tests/conftest.py): the real store, lease, observer, PostgreSQL planner and applier; only
Docker is faked, and the members' agents answer through the plugin's probe seam with probes
recorded on a real cluster (recordings/, as test_pg_planner.py uses them). Engine actions
(which go to the agents over HTTP) are recorded instead of sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from shoal import names
from shoal.credentials import DatabaseCredentials
from shoal.declaration import Database, validate_document
from shoal.operator.apply import DatabaseGone
from shoal.operator.context import OperatorContext
from shoal.operator.members import ensure_infrastructure, member_service_spec
from shoal.operator.metrics import OperatorMetrics
from shoal.operator.observe import SILENT_PROBE
from shoal.operator.renewals import PASS_CHECK
from shoal.operator.runtime import Operator, OperatorSettings
from shoal.operator.shared import SharedReads
from shoal.operator.worker import DatabaseWorker
from shoal.plugins.base import (
    Action,
    ApplyContext,
    LeaseGrant,
    Observation,
    Plan,
    RenewalAnswer,
)
from shoal.plugins.postgres.model import Follow, PgProbe
from shoal.plugins.postgres.planner import list_for
from shoal.plugins.postgres.plugin import PostgresPlugin
from shoal.status import DatabaseState, DatabaseStatus
from shoal.swarm.cleanup import purge_database
from shoal.swarm.client import JSON, NETWORKS, SECRETS, SERVICES, Kind, SwarmError
from shoal.swarm.lease import Lease, LeaseRecord, LeaseSettings, lease_spec
from shoal.swarm.store import DatabaseStore
from tests.conftest import FakeSwarm, fake_node

pytestmark = pytest.mark.unit

RECORDINGS = Path(__file__).parent / "recordings"
KEY = b"k" * 32
MEMBERS = ["orders-0", "orders-1", "orders-2"]


def recording(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((RECORDINGS / f"{name}.json").read_text())
    return doc


class RecordedPostgres(PostgresPlugin):
    """The PostgreSQL plugin whose agents answer with recorded probes (a member missing from
    `probes` does not answer), and whose engine actions are recorded, not sent."""

    def __init__(self, probes: dict[str, PgProbe], applied: list[str]) -> None:
        super().__init__(image="shoal/postgres:test")
        self.probes = probes
        self.probed: list[str] = []
        self.renewed: list[str] = []
        self.hung: set[str] = set()  # members whose agent takes the request, never answers
        self.hanging = asyncio.Event()  # set once a probe of one of them is out
        self.plans: list[Plan] = []
        self.applied = applied  # shared with the fake's log: one order for every action

    async def probe(
        self,
        http: aiohttp.ClientSession,
        member: str,
        credentials: DatabaseCredentials,
        lease: LeaseGrant | None = None,
    ) -> PgProbe | None:
        self.probed.append(member)
        if member in self.hung:
            self.hanging.set()
            await asyncio.Event().wait()  # the plugin's own timeout is the caller's to apply
        return self.probes.get(member)

    async def renew(
        self,
        http: aiohttp.ClientSession,
        member: str,
        credentials: DatabaseCredentials,
        lease: LeaseGrant,
    ) -> RenewalAnswer | None:
        self.renewed.append(member)
        probe = self.probes.get(member)
        return RenewalAnswer(task_id=probe.task_id) if probe is not None else None

    def plan(self, observation: Observation[PgProbe]) -> Plan:
        planned = super().plan(observation)
        self.plans.append(planned)
        return planned

    async def apply(self, action: Action, ctx: ApplyContext) -> None:
        self.applied.append(f"engine {action.describe()}")


async def operator(
    swarm: FakeSwarm, plugin: PostgresPlugin, *, after_token: int = 0
) -> OperatorContext:
    """An operator holding the lease, with a fencing token above `after_token` (the one the
    recorded status was written with)."""
    if after_token:  # released by its last holder: taken at once, with the next token
        await swarm.create_service(lease_spec(LeaseRecord(holder="", token=after_token, beat=0)))
    lease = Lease(swarm, "operator-test", LeaseSettings(duration=600.0))  # type: ignore[arg-type]
    assert await lease.step()
    assert lease.token == after_token + 1
    return OperatorContext(
        swarm=swarm,
        store=DatabaseStore(swarm),
        http=cast(aiohttp.ClientSession, None),  # the plugin's probe seam is used instead
        key=KEY,
        lease=lease,
        metrics=OperatorMetrics(),
        plugins={"postgres": plugin},
    )


def declaration(doc: dict[str, Any]) -> Database:
    return validate_document(doc["declaration"])


def stored_status(swarm: FakeSwarm, db: str = "orders") -> DatabaseStatus:
    raw = swarm.labels(names.anchor_service(db))[names.LABEL_STATUS]
    return DatabaseStatus.model_validate(json.loads(raw))


def anchor_writes(swarm: FakeSwarm) -> int:
    return swarm.log.count(f"update service {names.anchor_service('orders')}")


def same_status(a: DatabaseStatus, b: DatabaseStatus | None) -> bool:
    assert b is not None
    return a.model_dump(mode="json") == b.model_dump(mode="json")


async def test_a_declared_database_without_members_gets_its_infrastructure_and_members() -> None:
    swarm = FakeSwarm()
    plugin = RecordedPostgres({}, swarm.log)
    ctx = await operator(swarm, plugin)
    await ctx.store.apply(declaration(recording("healthy")))
    swarm.log.clear()
    worker = DatabaseWorker(ctx, "orders")

    # first cycle: the networks and secrets, then the status
    await worker.cycle()
    assert [type(a).__name__ for a in plugin.plans[-1].actions] == ["EnsureInfrastructure"]
    assert swarm.names(NETWORKS) == {names.CONTROL_NETWORK, names.database_network("orders")}
    assert len(swarm.names(SECRETS)) == 3 + 3 + 3  # shared; an agent token and a TLS bundle each
    assert swarm.log[-1] == "update service shoal-db-orders"  # the status, after the actions
    status = stored_status(swarm)
    assert status.state == DatabaseState.CREATING and status.fence_token == ctx.lease.token
    assert plugin.probed == []  # no member runs: nobody to ask

    # second cycle: one service per member, in order; the status write loses a
    # compare-and-swap once (someone wrote the anchor meanwhile), re-reads and lands
    swarm.log.clear()
    swarm.conflicts_to_inject = 1
    await worker.cycle()
    assert swarm.log == [
        "create service orders-0",
        "create service orders-1",
        "create service orders-2",
        "update service shoal-db-orders",
    ]
    assert swarm.conflicts_to_inject == 0
    assert same_status(stored_status(swarm), worker.last_status)
    networks = {n["Name"]: n["Id"] for n in swarm.objects["networks"].values()}
    for i, member in enumerate(MEMBERS):
        service = await swarm.service(member)
        assert service is not None
        spec = service["Spec"]
        assert spec["Labels"][names.LABEL_ROLE] == "member"
        assert spec["Labels"][names.LABEL_MEMBER] == str(i)
        container = spec["TaskTemplate"]["ContainerSpec"]
        assert container["Image"] == "shoal/postgres:test" and container["Mounts"] == []
        assert {n["Target"] for n in spec["TaskTemplate"]["Networks"]} == set(networks.values())
        assert len(container["Secrets"]) == 5
        assert swarm.task_of(member)["Status"]["State"] == "running"
    assert swarm.names(SERVICES) == {names.LEASE_SERVICE, names.anchor_service("orders"), *MEMBERS}

    # third cycle: Swarm runs them now, so their agents are asked (none answers yet)
    await worker.cycle()
    assert plugin.probed == MEMBERS


async def test_a_dead_primary_task_starts_a_failover_and_the_status_lands_on_the_anchor() -> None:
    doc = recording("primary-killed")
    recorded = DatabaseStatus.model_validate(doc["status"])
    assert recorded.primary == "orders-1"
    swarm = FakeSwarm()
    probes = {m: PgProbe.parse(raw) for m, raw in doc["probes"].items() if raw is not None}
    plugin = RecordedPostgres(probes, swarm.log)
    # the recorded status was written with fencing token 3: this operator holds 4
    ctx = await operator(swarm, plugin, after_token=recorded.fence_token)
    db = declaration(doc)
    await ctx.store.apply(db)
    stored = await ctx.store.get("orders")
    assert stored is not None
    assert await ctx.store.write_status("orders", recorded)
    credentials = DatabaseCredentials.derive(KEY, stored.uid)
    infra = await ensure_infrastructure(swarm, db, stored.uid, credentials)
    for i in range(db.spec.members):
        await swarm.create_service(member_service_spec(db, i, plugin.member_image(), infra))
    for m in MEMBERS:  # the containers the status remembers holding each member's data
        swarm.task_of(m)["ID"] = recorded.progress[f"task:{m}"]
    swarm.task_dies("orders-1")  # Swarm reports the primary's task failed
    swarm.log.clear()
    worker = DatabaseWorker(ctx, "orders")

    await worker.cycle()
    assert plugin.probed == ["orders-0", "orders-2"]  # a dead task is not probed
    planned = plugin.plans[-1]
    assert planned.status.state == DatabaseState.FAILING_OVER
    assert [type(a).__name__ for a in planned.actions] == ["Follow", "Follow"]
    # every action applied, in the plan's order, and then the status written
    assert swarm.log == [
        *(f"engine {a.describe()}" for a in planned.actions),
        "update service shoal-db-orders",
    ]
    written = stored_status(swarm)
    assert same_status(written, worker.last_status)
    assert written.state == DatabaseState.FAILING_OVER
    assert written.fence_token == 4 == ctx.lease.token

    # once both standbys stopped following the dead primary, the one with the newest WAL is
    # promoted and the promotion in flight is remembered on the anchor
    for m in ("orders-0", "orders-2"):
        probes[m] = probes[m].model_copy(update={"upstream": None, "receiving": False})
    swarm.log.clear()
    plugin.probed.clear()
    await worker.cycle()
    planned = plugin.plans[-1]
    assert [type(a).__name__ for a in planned.actions] == ["Promote"]
    assert swarm.log == [
        f"engine {planned.actions[0].describe()}",
        "update service shoal-db-orders",
    ]
    written = stored_status(swarm)
    assert same_status(written, worker.last_status)
    assert written.progress["promoting"] == "orders-0"


async def test_a_delete_that_lands_while_a_cycle_creates_leaves_nothing_behind() -> None:
    """`shoal delete` purges everything and removes the anchor between the cycle's check of
    the anchor and its creations: what the cycle made afterwards would be owned by nothing.
    It is removed at once."""

    class DeletedMidway(FakeSwarm):
        deleted = False

        async def create(self, kind: Kind, spec: JSON) -> str:
            database_network = names.database_network("orders")
            if kind is NETWORKS and spec["Name"] == database_network and not self.deleted:
                self.deleted = True  # the CLI's whole delete, right before this creation
                assert await DatabaseStore(self).mark_deleting("orders")
                await purge_database(self, "orders")
            return await super().create(kind, spec)

    swarm = DeletedMidway()
    plugin = RecordedPostgres({}, swarm.log)
    ctx = await operator(swarm, plugin)
    await ctx.store.apply(declaration(recording("healthy")))
    worker = DatabaseWorker(ctx, "orders")
    with pytest.raises(DatabaseGone):
        await worker.cycle()
    assert swarm.deleted
    assert await swarm.with_label(NETWORKS, names.LABEL_DATABASE, "orders") == []
    assert await swarm.with_label(SECRETS, names.LABEL_DATABASE, "orders") == []
    assert await swarm.services_of("orders") == []
    assert swarm.names(NETWORKS) == {names.CONTROL_NETWORK}


async def healthy_database() -> tuple[FakeSwarm, OperatorContext, DatabaseWorker]:
    """A 3-member database as the `healthy` recording saw it: every member's task runs, every
    agent answers, the stored status is the recorded one (written with token 3)."""
    doc = recording("healthy")
    recorded = DatabaseStatus.model_validate(doc["status"])
    swarm = FakeSwarm()
    probes = {m: PgProbe.parse(raw) for m, raw in doc["probes"].items() if raw is not None}
    db = declaration(doc)
    # The recording's standbys list no synchronous standbys of their own: what the planner
    # asks of each (it would configure them every cycle otherwise; the probes are fixed).
    for m in ("orders-0", "orders-2"):
        wanted = list_for(m, MEMBERS, db.spec.durability)
        probes[m] = probes[m].model_copy(update={"synchronous_standby_names": wanted})
    plugin = RecordedPostgres(probes, swarm.log)
    ctx = await operator(swarm, plugin, after_token=recorded.fence_token)
    await ctx.store.apply(db)
    stored = await ctx.store.get("orders")
    assert stored is not None
    assert await ctx.store.write_status("orders", recorded)
    credentials = DatabaseCredentials.derive(KEY, stored.uid)
    infra = await ensure_infrastructure(swarm, db, stored.uid, credentials)
    for i in range(db.spec.members):
        await swarm.create_service(member_service_spec(db, i, plugin.member_image(), infra))
    for m in MEMBERS:
        swarm.task_of(m)["ID"] = recorded.progress[f"task:{m}"]
    return swarm, ctx, DatabaseWorker(ctx, "orders")


class Clock:
    """A monotonic clock the test moves (the shared reads' TTLs are judged on it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Docker API round trips of steady-state passes of a healthy database (nothing to do, the
# status unchanged), on average over a minute of passes, before issue 13 eight every pass:
# the anchor, the database's services, the nodes, its members' tasks, its proxy's configs,
# the control network, its network and its secrets.
# - Read live every pass: the anchor (declaration, request, status: a `shoal switchover`
#   must be seen at once) and the database's services (its members and its proxy).
# - Shared by every database for a moment (operator/shared.py): the nodes and the tasks
#   (every pass here, as passes are 5 s apart, longer than they are kept; the runtime's
#   polls read them for all databases at once, and then a pass reads neither), the
#   proxies' configs (kept 5 s).
# - The infrastructure (three reads) once every 30 s.
# Measured on this fake: 4.5 a pass alone, 2.7 with the polls keeping the shared reads
# fresh (the lease renewals between passes go to the members, not to Docker).
READS_PER_STEADY_PASS = 5.0
READS_PER_STEADY_PASS_WITH_POLLS = 3.0
SIMULATED_SECONDS = 60.0


@pytest.mark.parametrize("polled", [False, True])
async def test_steady_passes_of_a_healthy_database_make_few_docker_calls(polled: bool) -> None:
    """A regression guard on Docker API round trips (issue 13: they were most of the
    operator's busy time at 20 databases), not a timing test."""
    swarm, ctx, worker = await healthy_database()
    clock = Clock()
    ctx.shared = SharedReads(swarm, clock=clock)
    await worker.cycle()  # the first pass writes the status with this operator's token
    passes = calls = 0
    while clock.now < 1000.0 + SIMULATED_SECONDS:
        if polled:  # what the runtime's task and node polls read for every database
            await ctx.shared.tasks.refresh()
            await ctx.shared.nodes.refresh()
        swarm.calls.clear()
        delay, _engine = await worker.cycle()
        assert worker.last_status is not None
        assert worker.last_status.state == DatabaseState.HEALTHY
        assert not any(c.startswith(("POST", "DELETE")) for c in swarm.calls), swarm.calls
        assert swarm.calls[:2] == [
            f"GET services/{names.anchor_service('orders')}",
            f"GET services?label={names.LABEL_DATABASE}=orders",
        ]
        if polled:
            assert not any(c.startswith(("GET tasks", "GET nodes")) for c in swarm.calls)
        passes += 1
        calls += len(swarm.calls)
        assert delay > 1.0  # nothing to do: the worker sleeps until its periodic pass
        clock.now += delay
    bound = READS_PER_STEADY_PASS_WITH_POLLS if polled else READS_PER_STEADY_PASS
    assert calls / passes <= bound, (calls, passes)


async def test_a_death_the_task_poll_sees_is_in_what_the_woken_worker_observes() -> None:
    """The poll reads only the tasks of shoal's databases, and the worker it wakes observes
    that very read: no second read, no latency added to a failover. A killed member whose
    task Swarm has already replaced (desired state `shutdown`) is still in it."""
    swarm, ctx, worker = await healthy_database()
    await worker.cycle()
    await swarm.create_service(
        {"Name": "someone-else", "TaskTemplate": {}, "Mode": {"Replicated": {"Replicas": 1}}}
    )
    op = Operator(OperatorSettings(), KEY)
    op._lease = ctx.lease
    op.workers["orders"] = worker
    swarm.calls.clear()
    await op._poll_once(ctx, nodes=True)
    assert swarm.calls == [f"GET tasks?label={names.LABEL_DATABASE}", "GET nodes"]
    assert not worker.wake.is_set()

    dead = swarm.task_dies("orders-1")  # the primary is killed ...
    swarm.restart("orders-1")["Status"]["State"] = "preparing"  # ... and Swarm replaces it
    assert dead["DesiredState"] == "shutdown"
    swarm.calls.clear()
    await op._poll_once(ctx, nodes=False)
    assert swarm.calls == [f"GET tasks?label={names.LABEL_DATABASE}"]
    assert worker.wake.is_set()
    seen = {t["ID"]: t for t in await ctx.shared.tasks.get()}
    assert seen[dead["ID"]]["Status"]["State"] == "failed"
    assert "someone-else" not in {t["ServiceName"] for t in seen.values()}

    plugin = cast(RecordedPostgres, ctx.plugins["postgres"])
    del plugin.probes["orders-1"]
    plugin.probed.clear()
    swarm.calls.clear()
    await worker.cycle()
    assert not any(c.startswith("GET tasks") for c in swarm.calls), swarm.calls
    assert plugin.probed == ["orders-0", "orders-2"]  # the dead one is not asked
    assert plugin.plans[-1].status.state == DatabaseState.FAILING_OVER


async def test_a_node_that_changes_state_wakes_every_worker() -> None:
    swarm, ctx, worker = await healthy_database()
    op = Operator(OperatorSettings(), KEY)
    op._lease = ctx.lease
    op.workers["orders"] = worker
    await op._poll_once(ctx, nodes=True)
    assert not worker.wake.is_set()
    swarm.node_list.append(fake_node("node-2", "vm2"))
    await op._poll_once(ctx, nodes=False)  # nodes are read every node_poll_seconds only
    assert not worker.wake.is_set()
    await op._poll_once(ctx, nodes=True)
    assert worker.wake.is_set()
    assert [n["ID"] for n in await ctx.shared.nodes.get()] == ["node-1", "node-2"]


async def test_the_pass_after_an_action_reads_swarm_afresh() -> None:
    """Shared reads are never reused past an action of the operator: the pass after it sees
    Swarm as the action left it (here: the members it created, and their tasks)."""
    swarm = FakeSwarm()
    plugin = RecordedPostgres({}, swarm.log)
    ctx = await operator(swarm, plugin)
    await ctx.store.apply(declaration(recording("healthy")))
    worker = DatabaseWorker(ctx, "orders")
    await worker.cycle()  # the infrastructure
    await worker.cycle()  # the members
    swarm.calls.clear()
    await worker.cycle()  # at once (the worker requeues after 0.05 s)
    assert f"GET tasks?label={names.LABEL_DATABASE}" in swarm.calls
    assert plugin.probed == MEMBERS  # their tasks run: they were read after the creation


async def test_a_healthy_pass_leaves_the_primarys_lease_to_the_renewals() -> None:
    """The pass of a Healthy database runs at its own pace (5 s), not every third of the
    lease: the primary's renewals go out between passes (operator/renewals.py)."""
    _swarm, _ctx, worker = await healthy_database()
    delay, _engine = await worker.cycle()
    assert worker.last_status is not None
    assert worker.last_status.state == DatabaseState.HEALTHY
    assert delay == 5.0
    target = worker.renewer.target
    assert target is not None and target.member == "orders-1"
    every = target.every()
    assert every is not None and every < 5.0


async def test_a_renewal_the_primary_does_not_answer_wakes_the_worker_and_starts_its_count() -> (
    None
):
    _swarm, ctx, worker = await healthy_database()
    plugin = cast(RecordedPostgres, ctx.plugins["postgres"])
    await worker.cycle()
    target = worker.renewer.target
    assert target is not None
    observer = worker.renewer.observer
    assert await observer.renew(target.database, plugin, target.credentials, "orders-1")
    assert plugin.renewed == ["orders-1"]
    del plugin.probes["orders-1"]  # paused, or cut off: Swarm still runs it
    renewals = asyncio.create_task(worker.renewer.run())
    try:
        await asyncio.wait_for(worker.wake.wait(), timeout=10)
    finally:
        renewals.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewals
    # The woken pass finds it unreachable (counted from that renewal: observe.py).
    await worker.cycle()
    status = worker.last_status
    assert status is not None and status.state == DatabaseState.UNAVAILABLE
    assert "orders-1 unreachable" in plugin.plans[-1].status.message
    # Still the recorded primary, but renewed again only once a probe finds it answering.
    assert worker.renewer.target is not None and worker.renewer.target.member == "orders-1"
    # Nothing goes to a member that did not answer: only a probe renews it again.
    before = len(plugin.renewed)
    assert await observer.renew(target.database, plugin, target.credentials, "orders-1") is None
    assert len(plugin.renewed) == before


async def test_a_probe_carries_the_renewal_and_one_due_just_before_a_pass_waits_for_it() -> None:
    """A renewal goes out only when nothing renewed the primary for a third of its lease: a
    pass's probe carries one, and a renewal falling due just before a pass waits for that
    pass, a third of its period at the most (operator/renewals.py)."""
    _swarm, _ctx, worker = await healthy_database()
    await worker.cycle()
    renewer = worker.renewer
    target = renewer.target
    assert target is not None
    every = target.every()
    sent = renewer.observer.renewal_sent("orders-1")
    assert every is not None and sent is not None  # the pass's probe renewed it
    assert renewer.wait(sent + 0.1) == pytest.approx(every - 0.1)
    due = sent + every
    worker.next_pass = due + every  # no pass until after the renewal could wait
    assert renewer.wait(due) == 0.0
    worker.next_pass = due + every / 6  # a pass is due by then: its probe carries it
    assert 0.0 < renewer.wait(due) <= every / 3
    worker.next_pass = due - 1.0  # one runs now: looked at again shortly
    assert 0.0 < renewer.wait(due) <= PASS_CHECK
    assert renewer.wait(due + every / 3) == 0.0  # waited long enough: renewed alone


async def test_no_renewal_goes_out_while_a_probe_carrying_one_is_out() -> None:
    """Seen on a paused primary: a renewal sent while the pass's probe hung moved the end of
    the lease the failover waits for 1 s past the crossing of `unreachableSeconds`. The
    probe carries a renewal; its outcome, bounded by its timeout, decides."""
    _swarm, ctx, worker = await healthy_database()
    plugin = cast(RecordedPostgres, ctx.plugins["postgres"])
    await worker.cycle()
    plugin.hung.add("orders-1")
    cycle = asyncio.create_task(worker.cycle())
    try:
        await asyncio.wait_for(plugin.hanging.wait(), timeout=10)
        assert worker.observer.probing("orders-1")
        worker.next_pass = -math.inf  # no pass to wait for: only the probe holds it
        assert worker.renewer.wait(time.monotonic() + 100.0) == PASS_CHECK
    finally:
        cycle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cycle
    assert not worker.observer.probing("orders-1")
    assert worker.renewer.wait(time.monotonic() + 100.0) == 0.0


async def test_the_pass_a_silent_renewal_wakes_does_not_wait_out_that_members_probe() -> None:
    """A connection kept alive to a node cut off makes the probe wait its whole timeout: the
    pass woken by the unanswered renewal gives the member SILENT_PROBE, so the failover's
    first step (a standby released ahead) is not held up. The pass after gives it the whole
    timeout again (a slow primary is still heard)."""
    _swarm, ctx, worker = await healthy_database()
    plugin = cast(RecordedPostgres, ctx.plugins["postgres"])
    await worker.cycle()
    target = worker.renewer.target
    assert target is not None
    del plugin.probes["orders-1"]
    plugin.hung.add("orders-1")
    observer = worker.observer
    assert await observer.renew(target.database, plugin, target.credentials, "orders-1") is False
    await asyncio.wait_for(worker.cycle(), timeout=10)
    assert "orders-1 unreachable" in plugin.plans[-1].status.message
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(worker.cycle(), timeout=4 * SILENT_PROBE)


async def test_the_pass_that_crosses_unreachable_seconds_ends_at_the_crossing() -> None:
    """A paused primary's agent takes the connection and never answers: each probe would
    wait the engine's whole timeout, and the crossing of `unreachableSeconds` be seen up to
    that much later. The recorded primary's probe is cut at the crossing instead."""
    _swarm, ctx, worker = await healthy_database()
    plugin = cast(RecordedPostgres, ctx.plugins["postgres"])
    await worker.cycle()
    del plugin.probes["orders-1"]
    plugin.hung.add("orders-1")
    with pytest.raises(TimeoutError):  # far from the crossing: the whole timeout (never)
        await asyncio.wait_for(worker.cycle(), timeout=4 * SILENT_PROBE)
    stored = await ctx.store.get("orders")
    assert stored is not None
    unreachable = float(stored.declaration.spec.failover.unreachable_seconds)
    clock = worker.observer._unreachable
    # A pass that starts just after the crossing is held no longer than one that starts
    # just before it.
    for to_go in (0.2, -0.05):
        clock._since["orders-1"] = time.monotonic() - (unreachable - to_go)
        await asyncio.wait_for(worker.cycle(), timeout=10)
        assert any(isinstance(a, Follow) for a in plugin.plans[-1].actions)  # the failover began


async def test_the_primary_is_renewed_between_passes_even_when_the_status_cannot_be_written() -> (
    None
):
    """Found on the lab: Raft refused every write for a while; passes failed at the status
    write, backed off 2 s each, and the lone primary of a database being created outlived its
    2.25 s lease. The renewals' target is set from the plan, before anything can fail."""
    swarm, _ctx, worker = await healthy_database()
    assert worker.renewer.target is None

    async def refuse(service_id: str, version: int, spec: JSON) -> None:
        raise SwarmError("raft: failed to process the request: node lost leader status", 500)

    swarm.update_service = refuse  # type: ignore[method-assign]
    with pytest.raises(SwarmError):
        await worker.cycle()  # the first pass writes the status with this operator's token
    target = worker.renewer.target
    assert target is not None and target.member == "orders-1"


async def test_a_running_members_own_lease_is_kept_apart_from_its_earlier_containers() -> None:
    """`lease_left` counts only earlier containers that may still run (none here); the
    newest task's own lease, renewed by every probe, is `task_lease_left`. Mixing them made
    a stranded primary's replacement, answering under its name, hold the failover for good
    (`make multinode`, the operator's node cut off with the primary)."""
    _swarm, ctx, worker = await healthy_database()
    plugin = ctx.plugins["postgres"]
    stored = await ctx.store.get("orders")
    assert stored is not None
    credentials = DatabaseCredentials.derive(KEY, stored.uid)
    await worker.observer.observe(stored, plugin, credentials)  # renews every member
    obs = await worker.observer.observe(stored, plugin, credentials)
    for m in obs.members:
        assert m.lease_left <= 0, m.name
        assert m.task_lease_left > 0, m.name


async def test_a_member_made_from_an_earlier_image_is_observed_as_such() -> None:
    """Its agent may keep an earlier image's timings: its lease is counted with the
    plugin's `lease_margin_other_image` (the failover then waits that much longer)."""
    swarm, ctx, worker = await healthy_database()
    plugin = ctx.plugins["postgres"]
    service = next(s for s in swarm.objects["services"].values() if s["Spec"]["Name"] == "orders-1")
    service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] = "shoal/postgres:older@sha256:ab"
    pinned = next(s for s in swarm.objects["services"].values() if s["Spec"]["Name"] == "orders-2")
    spec = pinned["Spec"]["TaskTemplate"]["ContainerSpec"]
    spec["Image"] = plugin.member_image() + "@sha256:cd"  # Swarm pinned the digest: the same
    stored = await ctx.store.get("orders")
    assert stored is not None
    credentials = DatabaseCredentials.derive(KEY, stored.uid)
    obs = await worker.observer.observe(stored, plugin, credentials)
    same = {m.name: m.same_image for m in obs.members}
    assert same == {"orders-0": True, "orders-1": False, "orders-2": True}
    assert plugin.lease_margin_other_image > plugin.lease_margin
