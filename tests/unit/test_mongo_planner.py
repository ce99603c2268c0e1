"""The MongoDB planner on probe documents WRITTEN BY HAND following the MongoDB manual's
"hello", "replSetGetStatus" and "replSetGetConfig" pages (tests/unit/mongo_docs.py): nothing
here was recorded from a real mongod (none exists on this machine). Each safety rule of the
planner has a test here that fails when the rule is broken."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from shoal.declaration import Database, validate_document
from shoal.plugins.base import (
    Action,
    ClearRequest,
    CreateMember,
    MemberObservation,
    Observation,
    Plan,
    RemoveMember,
    ReplaceMember,
)
from shoal.plugins.mongodb import naming
from shoal.plugins.mongodb.durability import write_concern
from shoal.plugins.mongodb.membership import (
    MAX_VOTERS,
    initial_config,
    voters_wanted,
    voting_changes,
)
from shoal.plugins.mongodb.model import (
    ForceReconfigure,
    InitiateReplicaSet,
    MongoProbe,
    Reconfigure,
    ReplicaSetConfig,
    StepDown,
)
from shoal.plugins.mongodb.planner import plan
from shoal.plugins.mongodb.progress import MongoProgress, UnreadableProgress
from shoal.plugins.mongodb.view import FENCE_ESCALATE_SECONDS, elected
from shoal.request import parse_request
from shoal.status import DatabaseState, DatabaseStatus, MemberRole
from shoal.swarm.tasks import TaskInfo
from tests.unit import mongo_docs as docs

pytestmark = pytest.mark.unit
NOW = 1_800_000_000.0
DB = "orders"


def names(n: int) -> list[str]:
    return [f"{DB}-{i}" for i in range(n)]


def database(members: int = 3, durability: str | None = None) -> Database:
    durability = durability or ("sync" if members > 1 else "async")
    return validate_document(
        {
            "apiVersion": "shoal/v1",
            "kind": "Database",
            "metadata": {"name": DB},
            "spec": {"engine": "mongodb", "members": members, "durability": durability},
        }
    )


def task_of(name: str, generation: int = 0) -> str:
    return f"task-{name}" + (f"-{generation}" if generation else "")


def observe(
    probes: dict[str, dict[str, Any] | None],
    *,
    members: int = 3,
    status: DatabaseStatus | None = None,
    request: dict[str, Any] | None = None,
    tasks: dict[str, str] | None = None,
    dead: tuple[str, ...] = (),
    monotonic: float = 100.0,
    token: int = 1,
) -> Observation[MongoProbe]:
    """An observation of `probes` (member -> probe document, None: no answer). Each
    answering member's document names its task, as the agent's does."""
    tasks = tasks or {}
    obs_members = []
    for name in sorted(probes, key=lambda n: int(n.rsplit("-", 1)[1])):
        raw = probes[name]
        task_id = tasks.get(name, task_of(name))
        probe = None
        if raw is not None:
            probe = MongoProbe.parse({**raw, "task": task_id})
        obs_members.append(
            MemberObservation(
                index=int(name.rsplit("-", 1)[1]),
                name=name,
                service_exists=True,
                task=TaskInfo(
                    task_id=task_id,
                    state="failed" if name in dead else "running",
                    node_id="n1",
                    node="vm",
                    container_id=None,
                ),
                probe=probe,
            )
        )
    # declared members without a service, as the operator observes them
    obs_members += [
        MemberObservation(index=i, name=n, service_exists=False, task=None, probe=None)
        for i, n in enumerate(names(members))
        if n not in probes
    ]
    obs_members.sort(key=lambda m: m.index)
    return Observation(
        database=database(members),
        uid="u1",
        generation=1,
        status=status if status is not None else healthy_status(),
        members=obs_members,
        request=parse_request(json.dumps(request)) if request is not None else None,
        infrastructure_ready=True,
        now=NOW,
        token=token,
        monotonic=monotonic,
    )


def healthy_status(primary: str = "orders-0", **progress: Any) -> DatabaseStatus:
    p = MongoProgress(
        data_tasks={n: task_of(n) for n in names(7)},
        election_id="7fffffff0000000000000001",
        ever_healthy=True,
        **progress,
    )
    return DatabaseStatus(
        name=DB,
        engine="mongodb",
        state=DatabaseState.HEALTHY,
        identity=docs.SET_ID,
        primary=primary,
        progress=p.to_status(),
    )


def creating_status() -> DatabaseStatus:
    return DatabaseStatus(name=DB, engine="mongodb")


def config(n: int = 3, version: int = 1, voters: int | None = None) -> dict[str, Any]:
    v = n if voters is None else voters
    return docs.config_doc(
        DB, [(m, int(i < v), float(i < v)) for i, m in enumerate(names(n))], version=version
    )


def steady(n: int = 3, primary: str = "orders-0", **kw: Any) -> dict[str, dict[str, Any] | None]:
    """Every member of an n-member set answers: `primary` PRIMARY, the others SECONDARY."""
    cfg = kw.pop("cfg", None) or config(n)
    states = {m: (1 if m == primary else 2) for m in names(n)}
    return {m: docs.member(m, states, cfg, **kw) for m in names(n)}


def of(p: Plan, kind: type[Action]) -> list[Any]:
    return [a for a in p.actions if isinstance(a, kind)]


# --- creating: initiate exactly once -----------------------------------------------------
def test_initiate_waits_for_every_declared_member() -> None:
    probes: dict[str, dict[str, Any] | None] = {m: docs.empty() for m in names(3)}
    probes["orders-2"] = None
    p = plan(observe(probes, status=creating_status()))
    assert of(p, InitiateReplicaSet) == []
    assert p.state == DatabaseState.CREATING and "orders-2" in p.status.message


def test_initiate_once_on_the_first_member_with_every_member() -> None:
    p = plan(observe({m: docs.empty() for m in names(3)}, status=creating_status()))
    (init,) = of(p, InitiateReplicaSet)
    assert init.member == "orders-0"
    assert init.config.id == naming.replica_set_name(DB) == DB
    assert init.config.version == 1
    assert [(m.id, m.host, m.votes) for m in init.config.members] == [
        (0, "orders-0:27017", 1),
        (1, "orders-1:27017", 1),
        (2, "orders-2:27017", 1),
    ]
    assert init.config.to_document()["members"][0] == {
        "_id": 0,
        "host": "orders-0:27017",
        "votes": 1,
        "priority": 1.0,
    }


def test_no_second_initiate_once_any_member_holds_a_configuration() -> None:
    """An initiate in flight (a member holds the configuration, no primary yet) is never
    repeated, not even on another member."""
    probes = {m: docs.empty() for m in names(3)}
    probes["orders-1"] = docs.member("orders-1", {m: 2 for m in names(3)}, config(3))
    p = plan(observe(probes, status=creating_status()))
    assert of(p, InitiateReplicaSet) == []
    assert "first primary" in p.status.message


def test_identity_recorded_from_the_first_primary() -> None:
    p = plan(observe(steady(3, term=1), status=creating_status()))
    assert of(p, InitiateReplicaSet) == []
    assert p.status.identity == docs.SET_ID
    assert p.status.primary == "orders-0"
    assert [e.kind for e in p.status.events] == ["bootstrap"]


def test_never_initiate_once_the_identity_is_recorded() -> None:
    """Every member empty after the identity was recorded is Lost, never a new set."""
    p = plan(observe({m: docs.empty() for m in names(3)}, tasks={m: "new" for m in names(3)}))
    assert of(p, InitiateReplicaSet) == []
    assert p.state == DatabaseState.LOST
    assert "reinit" in p.status.message and p.status.primary is None
    assert [e.kind for e in p.status.events] == ["lost"]


def test_lost_when_swarm_reports_every_member_dead() -> None:
    p = plan(observe({m: None for m in names(3)}, dead=tuple(names(3))))
    assert p.state == DatabaseState.LOST


def test_not_lost_while_a_member_that_held_data_may_still_run() -> None:
    """Unreachable (Swarm says it runs the container that held data): maybe paused."""
    probes: dict[str, dict[str, Any] | None] = {m: docs.empty() for m in names(3)}
    probes["orders-1"] = None
    tasks = {"orders-0": "new", "orders-2": "new"}
    p = plan(observe(probes, tasks=tasks))
    assert p.state == DatabaseState.UNAVAILABLE
    assert of(p, InitiateReplicaSet) == []


def test_reinit_after_lost_initiates_again() -> None:
    lost = healthy_status().model_copy(update={"state": DatabaseState.LOST})
    empty = {m: docs.empty() for m in names(3)}
    p = plan(observe(empty, status=lost, request={"kind": "reinit", "id": "r1"}))
    assert p.status.identity is None and ClearRequest("r1") in p.actions
    p2 = plan(observe(empty, status=p.status))
    assert len(of(p2, InitiateReplicaSet)) == 1


# --- replacements and strangers ----------------------------------------------------------
def test_empty_replacement_at_a_configured_host_is_left_to_initial_sync() -> None:
    """orders-2 came back empty (new task) at the host the configuration lists: MongoDB's
    heartbeats hand it the configuration; no initiate and no reconfig, a re-seed counted."""
    probes = steady(3)
    probes["orders-2"] = docs.empty()
    p = plan(observe(probes, tasks={"orders-2": "task-orders-2-1"}))
    assert of(p, InitiateReplicaSet) == [] and of(p, Reconfigure) == []
    assert p.state == DatabaseState.DEGRADED and p.status.writable
    assert p.status.reseeds == 1
    st = {m.name: m for m in p.status.members}["orders-2"]
    assert st.role == MemberRole.SYNCING
    # counted once per replacement
    p2 = plan(observe(probes, tasks={"orders-2": "task-orders-2-1"}, status=p.status))
    assert p2.status.reseeds == 1


def test_declared_member_missing_from_the_configuration_is_added_by_reconfig() -> None:
    """A new member (scale-up) answers empty: added without a vote, by the primary."""
    probes = steady(3)
    probes["orders-3"] = docs.empty()
    p = plan(observe(probes, members=4))
    assert of(p, InitiateReplicaSet) == []
    (rc,) = of(p, Reconfigure)
    assert rc.via == "orders-0"
    added = rc.config.member("orders-3:27017")
    assert added is not None and (added.votes, added.priority, added.id) == (0, 0.0, 3)
    assert rc.config.version == 2 and rc.config.replica_set_id == docs.SET_ID


def test_stranger_replica_set_is_replaced_not_joined() -> None:
    probes = steady(3)
    foreign = docs.config_doc(DB, [("orders-2", 1, 1.0)], set_id=docs.OTHER_SET_ID)
    probes["orders-2"] = docs.member("orders-2", {"orders-2": 1}, foreign)
    p = plan(observe(probes))
    assert ReplaceMember("orders-2", "stranger replica set") in p.actions
    assert of(p, StepDown) == []  # it is no primary of ours
    assert of(p, Reconfigure) == []  # its host stays; its replacement re-syncs there
    assert p.status.primary == "orders-0"


def test_stranger_set_name_is_replaced() -> None:
    probes = steady(3)
    other = docs.config_doc("elsewhere", [("orders-1", 1, 1.0)])
    probes["orders-1"] = docs.member("orders-1", {"orders-1": 2}, other)
    p = plan(observe(probes))
    assert ReplaceMember("orders-1", "stranger replica set") in p.actions


# --- primaries ---------------------------------------------------------------------------
def two_primaries() -> dict[str, dict[str, Any] | None]:
    """orders-0 was primary in term 1 and partitioned; orders-1 won term 2. Both claim."""
    cfg = config(3)
    old = docs.member("orders-0", {"orders-0": 1, "orders-1": 8, "orders-2": 8}, cfg, term=1)
    states = {"orders-0": 8, "orders-1": 1, "orders-2": 2}
    return {
        "orders-0": old,
        "orders-1": docs.member("orders-1", states, cfg, term=2),
        "orders-2": docs.member("orders-2", states, cfg, term=2),
    }


def test_two_primaries_the_older_election_steps_down() -> None:
    p = plan(observe(two_primaries()))
    assert of(p, StepDown) == [StepDown("orders-0", 60, force=True)]
    assert p.status.primary == "orders-1"
    assert p.status.failovers == 1  # the electionId changed: one election
    assert {e.kind for e in p.status.events} >= {"fence", "election"}


def rename(doc: dict[str, Any] | None, names_: dict[str, str]) -> dict[str, Any] | None:
    text = json.dumps(doc)
    for i, old in enumerate(names_):
        text = text.replace(old, f"@{i}@")
    for i, new in enumerate(names_.values()):
        text = text.replace(f"@{i}@", new)
    result: dict[str, Any] | None = json.loads(text)
    return result


def test_two_primaries_order_does_not_depend_on_member_index() -> None:
    probes = two_primaries()
    swapped = {"orders-0": probes["orders-1"], "orders-1": probes["orders-0"]}
    swap = {"orders-0": "orders-1", "orders-1": "orders-0"}
    swapped = {k: rename(v, swap) for k, v in swapped.items()}
    swapped["orders-2"] = probes["orders-2"]
    p = plan(observe(swapped))
    assert of(p, StepDown) == [StepDown("orders-1", 60, force=True)]
    assert p.status.primary == "orders-0"


def test_deposed_primary_still_claiming_is_replaced_later() -> None:
    first = plan(observe(two_primaries(), monotonic=100.0))
    again = plan(observe(two_primaries(), status=first.status, monotonic=110.0))
    assert of(again, StepDown) == [StepDown("orders-0", 60, force=True)]
    assert of(again, ReplaceMember) == []
    late = 100.0 + FENCE_ESCALATE_SECONDS + 1
    last = plan(observe(two_primaries(), status=again.status, monotonic=late))
    assert ReplaceMember("orders-0", "deposed primary did not step down") in last.actions


def test_no_promote_and_no_force_reconfigure_without_a_request() -> None:
    """Two of three voters gone: MongoDB cannot elect; shoal waits and says how to recover,
    but never forces a reconfig on its own."""
    states = {"orders-0": 8, "orders-1": 8, "orders-2": 2}
    probes: dict[str, dict[str, Any] | None] = {
        "orders-0": None,
        "orders-1": None,
        "orders-2": docs.member("orders-2", states, config(3)),
    }
    p = plan(observe(probes, dead=("orders-0", "orders-1")))
    assert of(p, ForceReconfigure) == [] and of(p, Reconfigure) == []
    assert p.state == DatabaseState.UNAVAILABLE
    assert "shoal recover orders --force-reconfig" in p.status.message


def test_force_reconfigure_only_on_request_from_the_newest_survivor() -> None:
    states = {"orders-0": 8, "orders-1": 2, "orders-2": 2}
    probes: dict[str, dict[str, Any] | None] = {
        "orders-0": None,
        "orders-1": docs.member("orders-1", states, config(3), seconds={"orders-1": 5}),
        "orders-2": docs.member("orders-2", states, config(3)),
    }
    probes["orders-1"] = docs.member(
        "orders-1", states, config(3), seconds={"orders-1": docs.BASE_SECONDS - 5}
    )
    request = {"kind": "recover", "id": "r9", "accept_data_loss": True}
    p = plan(observe(probes, dead=("orders-0",), request=request))
    (force,) = of(p, ForceReconfigure)
    assert force.via == "orders-2"  # the newer optime
    assert force.config.hosts == ("orders-1:27017", "orders-2:27017")
    assert force.config.version == 2
    assert ClearRequest("r9") in p.actions
    assert [e.kind for e in p.status.events] == ["force-reconfig"]


def test_recover_is_refused_while_there_is_a_primary() -> None:
    request = {"kind": "recover", "id": "r9", "accept_data_loss": True}
    p = plan(observe(steady(3), request=request))
    assert of(p, ForceReconfigure) == [] and ClearRequest("r9") in p.actions
    assert "refused" in p.status.message


def test_election_is_counted_once() -> None:
    status = healthy_status()
    p = plan(observe(steady(3, primary="orders-1", term=2), status=status))
    assert p.status.failovers == 1 and p.status.primary == "orders-1"
    assert p.status.last_failover is not None and p.status.last_failover.new_primary == "orders-1"
    p2 = plan(observe(steady(3, primary="orders-1", term=2), status=p.status))
    assert p2.status.failovers == 1
    assert elected("a" * 24, "b" * 24) and not elected(None, "b" * 24)


# --- switchover --------------------------------------------------------------------------
def test_switchover_steps_the_primary_down_without_force() -> None:
    p = plan(observe(steady(3), request={"kind": "switchover", "id": "s1"}))
    assert p.actions[0] == StepDown("orders-0", 60, force=False)
    assert ClearRequest("s1") in p.actions and of(p, Reconfigure) == []
    assert p.status.last_failover is not None and p.status.last_failover.kind == "switchover"


def test_switchover_to_a_member_is_refused() -> None:
    p = plan(observe(steady(3), request={"kind": "switchover", "id": "s1", "to": "orders-2"}))
    assert of(p, StepDown) == [] and ClearRequest("s1") in p.actions
    assert "refused" in p.status.message


# --- health ------------------------------------------------------------------------------
def test_healthy_set() -> None:
    p = plan(observe(steady(3)))
    assert p.state == DatabaseState.HEALTHY and p.actions == []
    assert p.status.writable and p.status.members_ready == 3 and p.status.members_desired == 3
    roles = [(m.name, m.role, m.lag_seconds) for m in p.status.members]
    assert roles == [
        ("orders-0", MemberRole.PRIMARY, 0.0),
        ("orders-1", MemberRole.REPLICA, 0.0),
        ("orders-2", MemberRole.REPLICA, 0.0),
    ]


def test_a_lagging_secondary_is_not_ready() -> None:
    probes = steady(3, seconds={"orders-2": docs.BASE_SECONDS - 60})
    p = plan(observe(probes))
    assert p.state == DatabaseState.DEGRADED and p.status.members_ready == 2
    assert {m.name: m.lag_seconds for m in p.status.members}["orders-2"] == 60.0


def test_no_reconfig_before_the_current_configuration_is_committed() -> None:
    """The primary holds version 2; the others still version 1: wait."""
    probes = steady(3)
    states = {m: (1 if m == "orders-0" else 2) for m in names(3)}
    probes["orders-0"] = docs.member("orders-0", states, config(3, version=2))
    probes["orders-3"] = docs.empty()
    p = plan(observe(probes, members=4))
    assert of(p, Reconfigure) == []
    assert "majority" in p.status.message


# --- membership: voting rules over whole scaling sequences ---------------------------------
def test_voters_wanted() -> None:
    assert [voters_wanted(n) for n in range(1, 8)] == [1, 2, 3, 3, 5, 5, 7]
    assert all(voters_wanted(n) <= MAX_VOTERS for n in range(1, 50))
    four = initial_config(DB, list(enumerate(names(4))))
    assert [m.votes for m in four.members] == [1, 1, 1, 0]
    assert [m.priority for m in four.members] == [1.0, 1.0, 1.0, 0.0]


@dataclass
class World:
    """A replica set that applies the planner's actions: the primary is `orders-0`, every
    member in the configuration catches up at once, a new service starts empty."""

    config: ReplicaSetConfig
    services: set[str]
    history: list[ReplicaSetConfig] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def probes(self) -> dict[str, dict[str, Any] | None]:
        doc = {**self.config.to_document(), "term": 1}
        states = {naming.member_of(h): (1 if h == "orders-0:27017" else 2) for h in doc_hosts(doc)}
        out: dict[str, dict[str, Any] | None] = {}
        for m in self.services:
            out[m] = docs.member(m, states, doc) if m in states else docs.empty()
        return out

    def apply(self, p: Plan) -> None:
        for a in p.actions:
            if isinstance(a, Reconfigure):
                assert a.via == "orders-0"
                assert a.config.version == self.config.version + 1
                self.history.append(a.config)
                self.config = a.config
            elif isinstance(a, RemoveMember):
                name = f"{DB}-{a.index}"
                assert naming.host(name) not in self.config.hosts, "removed while configured"
                self.services.discard(name)
                self.removed.append(name)
            elif isinstance(a, CreateMember):
                self.services.add(f"{DB}-{a.index}")
            else:
                raise AssertionError(f"unexpected action {a}")


def doc_hosts(doc: dict[str, Any]) -> list[str]:
    return [m["host"] for m in doc["members"]]


def run(world: World, members: int, limit: int = 60) -> Plan:
    status = healthy_status()
    for _ in range(limit):
        p = plan(observe(world.probes(), members=members, status=status))
        assert p.status.primary == "orders-0"
        assert of(p, InitiateReplicaSet) == [] and of(p, StepDown) == []
        if not p.actions:
            return p
        world.apply(p)
        status = p.status
    raise AssertionError("the planner did not settle")


def check_steps(start: ReplicaSetConfig, history: list[ReplicaSetConfig]) -> None:
    before = start
    for cfg in history:
        assert voting_changes(before, cfg) <= 1, (before, cfg)
        assert len(cfg.voters) <= MAX_VOTERS
        assert all(m.priority == 0 for m in cfg.members if not m.voting)
        assert "orders-0:27017" in cfg.hosts and cfg.member("orders-0:27017").voting  # type: ignore[union-attr]
        before = cfg


def test_scaling_1_to_7_and_back_to_1_one_voting_change_per_reconfig() -> None:
    one = ReplicaSetConfig.model_validate(config(1))
    world = World(config=one, services={"orders-0"})
    for target in (7, 1):
        start = world.config
        world.history.clear()
        p = run(world, target)
        check_steps(start, world.history)
        assert p.state == DatabaseState.HEALTHY
        assert sorted(world.config.hosts) == sorted(naming.host(m) for m in names(target))
        assert len(world.config.voters) == voters_wanted(target)
        assert world.services == set(names(target))
    # 7 -> 1 removed the highest indexes first
    assert world.removed == [f"{DB}-{i}" for i in range(6, 0, -1)]


@pytest.mark.parametrize(("start", "target"), [(3, 4), (4, 5), (5, 6), (6, 3), (2, 1), (1, 2)])
def test_scaling_steps_keep_the_voting_rules(start: int, target: int) -> None:
    initiated = initial_config(DB, list(enumerate(names(start)))).to_document()
    initiated["settings"] = {"replicaSetId": {"$oid": docs.SET_ID}}
    world = World(config=ReplicaSetConfig.model_validate(initiated), services=set(names(start)))
    first = world.config
    run(world, target)
    check_steps(first, world.history)
    assert len(world.config.voters) == voters_wanted(target)
    assert len(world.config.members) == target


def test_scale_down_steps_down_a_primary_that_is_no_longer_declared() -> None:
    probes = steady(3, primary="orders-2")
    p = plan(observe(probes, members=2, status=healthy_status(primary="orders-2")))
    assert of(p, StepDown) == [StepDown("orders-2", 60, force=False)]
    assert of(p, Reconfigure) == [] and of(p, RemoveMember) == []


def test_new_voter_only_once_secondary() -> None:
    """A member in the configuration without a vote gets it only once it is a caught-up
    SECONDARY (here orders-2, still in initial sync, then caught up)."""
    cfg = config(3, version=2, voters=2)
    syncing = {"orders-0": 1, "orders-1": 2, "orders-2": 5}
    p = plan(observe({m: docs.member(m, syncing, cfg) for m in names(3)}))
    assert of(p, Reconfigure) == [] and p.state == DatabaseState.DEGRADED
    caught_up = {"orders-0": 1, "orders-1": 2, "orders-2": 2}
    p = plan(observe({m: docs.member(m, caught_up, cfg) for m in names(3)}))
    (rc,) = of(p, Reconfigure)
    granted = rc.config.member("orders-2:27017")
    assert granted is not None and (granted.votes, granted.priority) == (1, 1.0)
    assert rc.config.version == 3


# --- progress and durability -------------------------------------------------------------
def test_newer_progress_is_refused() -> None:
    status = healthy_status().model_copy(update={"progress": {"format": 99}})
    with pytest.raises(UnreadableProgress):
        plan(observe(steady(3), status=status))


def test_write_concern() -> None:
    assert write_concern(database(3, "sync")).to_document() == {"w": "majority", "j": True}
    assert write_concern(database(3, "async")).to_document() == {"w": 1, "j": True}
