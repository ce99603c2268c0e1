"""The PostgreSQL planner on observations recorded from a real 3-member cluster.

`recordings/*.json` come from `shoal operator snapshot orders` run against a real swarm
(the operator paused while the faults were injected, so the intermediate states were caught):
each holds the declaration, the status the operator had written and every member agent's
real `GET /state`. Tests change one recorded fact at a time to reach the cases around it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from shoal.declaration import Durability, validate_document
from shoal.plugins.base import (
    ClearRequest,
    CreateMember,
    EnsureInfrastructure,
    MemberObservation,
    Observation,
    Plan,
    RemoveMember,
    ReplaceMember,
)
from shoal.plugins.postgres import planner
from shoal.plugins.postgres.durability import list_for, sync_standby_names
from shoal.plugins.postgres.failover import (
    PEERS_RELEASE_WAIT,
    PEERS_RELEASE_WAIT_EARLIER_AGENT,
    SWITCHOVER_TIMEOUT,
)
from shoal.plugins.postgres.model import (
    Bootstrap,
    Clone,
    Configure,
    Demote,
    EnsureSlots,
    Follow,
    PgProbe,
    Promote,
    RenewCertificate,
)
from shoal.plugins.postgres.planner import plan
from shoal.plugins.postgres.progress import PgProgress
from shoal.request import parse_request
from shoal.status import DatabaseState, DatabaseStatus
from shoal.swarm.tasks import TaskInfo

pytestmark = pytest.mark.unit
RECORDINGS = Path(__file__).parent / "recordings"
NOW = 1_800_000_000.0


def recording(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((RECORDINGS / f"{name}.json").read_text())
    return doc


MEMBERS = ["orders-0", "orders-1", "orders-2"]
# The list each member must have in force as a primary (durability.py).
LISTS = {m: list_for(m, MEMBERS, Durability.SYNC) for m in MEMBERS}


def steady(doc: dict[str, Any]) -> dict[str, Any]:
    """The recordings were made before standbys kept their own synchronous list: give each
    running standby the list the planner now keeps on it, as a steady cluster has."""
    doc = copy.deepcopy(doc)
    for name, raw in doc["probes"].items():
        if raw is not None and raw.get("role") == "standby":
            raw["synchronous_standby_names"] = LISTS[name]
    return doc


def observe(
    doc: dict[str, Any],
    *,
    members: int | None = None,
    unreachable: dict[str, float] | None = None,
    request: dict[str, Any] | None = None,
    replaced: dict[str, bool] | None = None,
    stranded: dict[str, float] | None = None,
    lease: dict[str, float] | None = None,
    task_lease: dict[str, float] | None = None,
    monotonic: float = 0.0,
    earlier_image: frozenset[str] = frozenset(),
) -> Observation[PgProbe]:
    """An observation from a recording. A member whose agent reports `empty` is a new
    container, so its task id differs from the one the status remembers holding data."""
    decl = copy.deepcopy(doc["declaration"])
    if members is not None:
        decl["spec"]["members"] = members
    database = validate_document(decl)
    status = DatabaseStatus.model_validate(doc["status"])
    obs_members = []
    for i, (name, raw) in enumerate(sorted(doc["probes"].items())):
        probe = PgProbe.parse(raw) if raw is not None else None
        remembered = PgProgress.from_status(status.progress).data_tasks.get(name, f"task-{name}")
        fresh = probe is not None and probe.state == "empty"
        # `replaced`: Swarm has replaced the member's task (a fence); True while it still
        # runs the earlier container.
        swapped = replaced is not None and name in replaced
        task = TaskInfo(
            task_id=f"new-{name}" if fresh or swapped else remembered,
            state="starting" if swapped else "running",
            node_id="n1",
            node="vm",
            container_id=None,
        )
        obs_members.append(
            MemberObservation(
                index=i,
                name=name,
                service_exists=True,
                task=task,
                # The replacement does not answer yet; an answer that names its task (the
                # old container's) is kept, for the planner to recognise.
                probe=None if swapped and (probe is None or probe.task_id is None) else probe,
                unreachable_for=(unreachable or {}).get(name, 0.0),
                previous_running=bool(swapped and replaced and replaced[name]),
                # `stranded`: a container of it may run on a node Swarm lost, with this
                # many seconds left on the lease the operator granted it.
                stranded=stranded is not None and name in stranded,
                # `lease`: seconds left on the lease of its earlier container (stranded or
                # still running), when given apart from `stranded`.
                lease_left=(lease or stranded or {}).get(name, 0.0),
                # `task_lease`: the same for the container of its newest task.
                task_lease_left=(task_lease or {}).get(name, 0.0),
                same_image=name not in earlier_image,
            )
        )
    return Observation(
        database=database,
        uid="u1",
        generation=1,
        status=status,
        members=obs_members,
        # as the store reads the anchor's label: the CLI's JSON, parsed to its typed model
        request=parse_request(json.dumps(request)) if request is not None else None,
        infrastructure_ready=True,
        now=NOW,
        token=1,
        monotonic=monotonic,
    )


def progress(p: Plan) -> PgProgress:
    return PgProgress.from_status(p.status.progress)


def kinds(p: Plan) -> list[str]:
    return [type(a).__name__ for a in p.actions]


def test_healthy_cluster_needs_nothing() -> None:
    p = plan(observe(steady(recording("healthy"))))
    assert p.actions == []
    assert p.status.state == DatabaseState.HEALTHY
    assert p.status.primary == "orders-1"
    assert p.status.members_ready == 3
    assert p.status.writable


def test_dead_primary_first_stops_every_standby_following_it() -> None:
    """Safety rule: no promotion while a reachable standby still follows the old primary."""
    p = plan(observe(recording("primary-killed")))
    assert p.status.state == DatabaseState.FAILING_OVER
    assert not any(isinstance(a, Promote) for a in p.actions)
    assert set(p.actions) == {
        Follow("orders-0", None, "orders_0"),
        Follow("orders-2", None, "orders_2"),
    }


def _stopped_following(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for name in ("orders-0", "orders-2"):
        doc["probes"][name]["upstream"] = None
        doc["probes"][name]["receiving"] = False
    return doc


def test_promotes_the_standby_with_the_most_wal() -> None:
    doc = _stopped_following(recording("primary-killed"))
    doc["probes"]["orders-2"]["wal_lsn"] += 8192
    # Recorded when a standby reported its checkpoint's timeline (1), which lags: it had
    # received timeline 2 as orders-0 had. Now the agent reports the newest in pg_wal/.
    doc["probes"]["orders-2"]["timeline"] = 2
    p = plan(observe(doc))
    assert Promote("orders-2", LISTS["orders-2"]) in p.actions
    assert Promote("orders-0", LISTS["orders-0"]) not in p.actions
    # The old primary's container is already gone (an empty replacement answers): nothing to
    # fence, its replacement will re-seed.
    assert not any(isinstance(a, ReplaceMember) for a in p.actions)
    assert progress(p).promoting == "orders-2"


def test_a_newer_timeline_wins_over_more_wal_on_an_older_one() -> None:
    """(timeline, LSN): WAL past the fork point on the old timeline is not newer data."""
    doc = _stopped_following(recording("primary-killed"))
    doc["probes"]["orders-2"]["wal_lsn"] += 10**6  # timeline 1, further along
    p = plan(observe(doc))
    assert [a.member for a in p.actions if isinstance(a, Promote)] == ["orders-0"]


def test_equal_wal_promotes_the_lowest_member() -> None:
    p = plan(observe(_stopped_following(recording("primary-killed"))))
    assert [a for a in p.actions if isinstance(a, Promote)] == [
        Promote("orders-0", LISTS["orders-0"])
    ]


def test_promoted_standby_is_adopted_and_counted_once() -> None:
    doc = recording("after-failover")
    doc["status"]["primary"] = "orders-1"  # the operator died before writing its decision
    doc["status"]["timeline"] = 1
    before = doc["status"]["failovers"]
    p = plan(observe(doc))
    assert p.status.primary == "orders-0"
    assert p.status.failovers == before + 1
    assert any(e.kind == "failover" for e in p.status.events[-1:])


def test_replaced_replica_is_reseeded_from_the_primary_with_its_slot() -> None:
    doc = recording("replica-replaced-empty")
    p = plan(observe(doc))
    sysid = doc["probes"]["orders-0"]["system_identifier"]
    assert Clone("orders-2", "orders-0", sysid, "orders_2", True) in p.actions
    assert p.status.reseeds == doc["status"]["reseeds"] + 1
    assert p.status.state == DatabaseState.DEGRADED
    assert p.status.writable


def test_unreachable_primary_waits_for_unreachable_seconds() -> None:
    doc = recording("healthy")
    doc["probes"]["orders-1"] = None  # paused or cut off; Swarm still says it runs
    waiting = plan(observe(doc, unreachable={"orders-1": 2.0}))
    assert waiting.actions == []
    assert waiting.status.state == DatabaseState.UNAVAILABLE
    assert not waiting.status.writable
    due = plan(observe(doc, unreachable={"orders-1": 10.5}))
    assert Follow("orders-0", None, "orders_0") in due.actions
    assert not any(isinstance(a, Promote) for a in due.actions)


def test_unreachable_primary_is_fenced_and_the_promotion_waits_for_its_container() -> None:
    """Property 7: fence first; promote only once Swarm no longer runs the old container."""
    doc = _stopped_following(recording("healthy"))
    doc["probes"]["orders-1"] = None
    fenced = plan(observe(doc, unreachable={"orders-1": 11.0}))
    assert ReplaceMember("orders-1", "fence the old primary") in fenced.actions
    assert not any(isinstance(a, Promote) for a in fenced.actions)
    doc["status"] = fenced.status.model_dump(mode="json")
    stopping = plan(observe(doc, replaced={"orders-1": True}))
    assert not any(isinstance(a, (Promote, ReplaceMember)) for a in stopping.actions)
    assert "orders-1" in stopping.status.message
    stopped = plan(observe(doc, replaced={"orders-1": False}))
    assert Promote("orders-0", LISTS["orders-0"]) in stopped.actions


def test_a_fenced_primary_swarm_cannot_stop_is_outlived_by_its_lease() -> None:
    """Property 13 for a node Swarm has not declared down yet (cut off from the managers):
    the fenced container may run on for 12-15 s; promote once its lease and its peers' are
    surely over, not before, even if Swarm still lists it running."""
    doc = _stopped_following(recording("healthy"))
    doc["probes"]["orders-1"] = None
    fenced = plan(observe(doc, unreachable={"orders-1": 11.0}))
    doc["status"] = fenced.status.model_dump(mode="json")
    running = {"orders-1": True}
    held = plan(observe(doc, replaced=running, lease={"orders-1": 4.0}))
    assert not any(isinstance(a, (Promote, ReplaceMember)) for a in held.actions)
    assert held.status.state == DatabaseState.UNAVAILABLE
    assert "lease" in held.status.message
    doc["status"] = held.status.model_dump(mode="json")
    late = observe(doc, replaced=running, lease={"orders-1": 0.5}, monotonic=1000.0)
    assert not any(isinstance(a, Promote) for a in plan(late).actions)
    peers = observe(doc, replaced=running, lease={"orders-1": -0.1}, monotonic=1.0)
    assert not any(isinstance(a, Promote) for a in plan(peers).actions)
    over = observe(
        doc, replaced=running, lease={"orders-1": -0.1}, monotonic=PEERS_RELEASE_WAIT + 0.01
    )
    assert Promote("orders-0", LISTS["orders-0"]) in plan(over).actions


def test_one_standby_is_released_ahead_so_the_failover_need_not_wait_for_the_peers() -> None:
    """Property 13 without the wait: the peers hold the old primary's lease only while every
    one of them replies, so releasing one standby PEERS_RELEASE_WAIT before
    `unreachableSeconds` is up ends that part by the time a failover may start."""
    doc = recording("healthy")
    doc["probes"]["orders-1"] = None  # cut off; Swarm still says it runs
    doc["probes"]["orders-2"]["wal_lsn"] -= 8192  # it has the least WAL
    early = 10 - PEERS_RELEASE_WAIT - 1.0
    assert plan(observe(doc, unreachable={"orders-1": early})).actions == []
    ahead = 10 - PEERS_RELEASE_WAIT
    released = plan(observe(doc, unreachable={"orders-1": ahead}))
    assert released.actions == [Follow("orders-2", None, "orders_2")]
    assert released.status.state == DatabaseState.UNAVAILABLE
    assert not progress(released).released  # not seen done yet
    doc["status"] = released.status.model_dump(mode="json")
    doc["probes"]["orders-2"]["upstream"] = None
    doc["probes"]["orders-2"]["receiving"] = False
    seen = plan(observe(doc, unreachable={"orders-1": ahead + 0.3}, monotonic=0.0))
    assert seen.actions == []  # released once, the others keep following
    assert progress(seen).released == "1:0.000"
    # Due: the others stop following and the old primary is fenced in the same step; once
    # Swarm has replaced its task (it cannot stop the container yet) and the operator's
    # renewal is over, the promotion needs no further wait for the peers.
    doc["status"] = seen.status.model_dump(mode="json")
    due = plan(observe(doc, unreachable={"orders-1": 10.2}, monotonic=4.0))
    assert due.actions == [
        Follow("orders-0", None, "orders_0"),
        ReplaceMember("orders-1", "fence the old primary"),
    ]
    doc = _stopped_following(doc)
    doc["status"] = due.status.model_dump(mode="json")
    again = plan(observe(doc, unreachable={"orders-1": 10.4}, monotonic=4.1))
    assert not any(isinstance(a, ReplaceMember | Promote) for a in again.actions)
    running = {"orders-1": True}
    over = observe(
        doc, replaced=running, lease={"orders-1": -0.1}, monotonic=PEERS_RELEASE_WAIT + 0.01
    )
    assert Promote("orders-0", LISTS["orders-0"]) in plan(over).actions
    held = observe(
        doc, replaced=running, lease={"orders-1": -0.1}, monotonic=PEERS_RELEASE_WAIT - 0.1
    )
    assert not any(isinstance(a, Promote) for a in plan(held).actions)


def test_the_pass_that_gives_up_on_an_unreachable_primary_ends_right_after_the_crossing() -> None:
    """While the primary does not answer, passes come at most every half second (0.2 s once
    a standby is released ahead), and back to back over the last probe timeout, so the
    crossing of `unreachableSeconds` is seen within one probe of it, not a requeue later."""
    doc = recording("healthy")
    doc["probes"]["orders-1"] = None

    def requeue(waited: float) -> float:
        return plan(observe(doc, unreachable={"orders-1": waited})).requeue_after

    assert requeue(1.0) == 0.5
    assert requeue(10 - 3.0) == 0.2
    assert requeue(10 - 1.6) == pytest.approx(0.1)
    assert requeue(10 - 1.0) == 0.05


def test_a_fenced_primary_whose_task_swarm_has_not_replaced_yet_is_waited_for() -> None:
    """Property 13 in the moment between the fence and Swarm's replacement task: the
    container is as condemned, and as alive, as one Swarm has replaced but cannot stop, so
    its lease and the peers' part of it are waited for all the same."""
    doc = _stopped_following(recording("healthy"))
    doc["probes"]["orders-1"] = None  # cut off; Swarm still says it runs
    fenced = plan(observe(doc, unreachable={"orders-1": 11.0}, monotonic=0.0))
    assert ReplaceMember("orders-1", "fence the old primary") in fenced.actions
    doc["status"] = fenced.status.model_dump(mode="json")
    # The same task still runs: Swarm has not made the replacement yet.
    leased = observe(doc, task_lease={"orders-1": 0.5}, monotonic=PEERS_RELEASE_WAIT + 1)
    assert not any(isinstance(a, Promote) for a in plan(leased).actions)
    peers = observe(doc, task_lease={"orders-1": -0.1}, monotonic=PEERS_RELEASE_WAIT - 0.1)
    assert not any(isinstance(a, Promote) for a in plan(peers).actions)
    over = observe(doc, task_lease={"orders-1": -0.1}, monotonic=PEERS_RELEASE_WAIT + 0.01)
    assert Promote("orders-0", LISTS["orders-0"]) in plan(over).actions


def test_the_replacement_of_a_stranded_old_primary_is_not_waited_for() -> None:
    """Found by `make multinode` (the operator's node cut off with the primary): the
    replacement Swarm started elsewhere answers under the old primary's name and each probe
    renews it; waiting for *its* lease never ended. Only the stranded container's counts."""
    doc = _lost_node_primary()
    renewed = {"orders-1": 5.0}  # the replacement's, renewed by every probe
    held = plan(observe(doc, replaced={"orders-1": False}, stranded={"orders-1": 4.0}))
    doc["status"] = held.status.model_dump(mode="json")
    over = observe(
        doc,
        replaced={"orders-1": False},
        stranded={"orders-1": -0.1},
        task_lease=renewed,
        monotonic=PEERS_RELEASE_WAIT + 0.01,
    )
    assert Promote("orders-0", LISTS["orders-0"]) in plan(over).actions


def test_an_old_primary_of_an_earlier_image_is_given_its_agents_slower_reaction() -> None:
    """Members made by an earlier operator keep their image, and its agent asked for the
    peers' replies only once its renewal had run out (1 s slower): the wait counts that."""
    doc = _stopped_following(recording("healthy"))
    doc["probes"]["orders-1"] = None
    old = frozenset({"orders-1"})
    fenced = plan(observe(doc, unreachable={"orders-1": 11.0}, earlier_image=old))
    doc["status"] = fenced.status.model_dump(mode="json")
    running = {"orders-1": True}
    assert PEERS_RELEASE_WAIT_EARLIER_AGENT > PEERS_RELEASE_WAIT

    def at(t: float, image: frozenset[str]) -> Plan:
        o = observe(
            doc, replaced=running, lease={"orders-1": -0.1}, monotonic=t, earlier_image=image
        )
        return plan(o)

    between = PEERS_RELEASE_WAIT + 0.01
    assert Promote("orders-0", LISTS["orders-0"]) in at(between, frozenset()).actions
    assert not any(isinstance(a, Promote) for a in at(between, old).actions)
    late = PEERS_RELEASE_WAIT_EARLIER_AGENT + 0.01
    assert Promote("orders-0", LISTS["orders-0"]) in at(late, old).actions


def test_the_only_standby_confirming_commits_is_not_released_ahead() -> None:
    doc = recording("healthy")
    doc["probes"]["orders-1"] = None
    doc["probes"]["orders-2"] = None  # unreachable too: orders-0 alone confirms commits
    p = plan(observe(doc, unreachable={"orders-1": 9.0, "orders-2": 9.0}))
    assert not any(isinstance(a, Follow) for a in p.actions)
    # Under `durability: async` no commit waits for it: released all the same.
    doc["declaration"]["spec"]["durability"] = "async"
    p = plan(observe(doc, unreachable={"orders-1": 9.0, "orders-2": 9.0}))
    assert Follow("orders-0", None, "orders_0") in p.actions


def test_a_primary_that_answers_again_gets_its_released_standby_back() -> None:
    doc = recording("healthy")
    doc["probes"]["orders-2"]["upstream"] = None
    doc["probes"]["orders-2"]["receiving"] = False
    status = DatabaseStatus.model_validate(doc["status"])
    pr = PgProgress.from_status(status.progress)
    pr.released = "1:0.000"
    status.progress = pr.to_status()
    doc["status"] = status.model_dump(mode="json")
    p = plan(observe(doc))
    assert Follow("orders-2", "orders-1", "orders_2") in p.actions
    assert not progress(p).released


def _lost_node_primary() -> dict[str, Any]:
    """The primary (orders-1) was on a node Swarm declared down: its newest task is a
    replacement that has not started, the standbys already follow nothing."""
    doc = _stopped_following(recording("healthy"))
    doc["probes"]["orders-1"] = None
    return doc


def test_an_old_primary_on_a_lost_node_is_outlived_by_its_lease_before_a_promotion() -> None:
    """Property 13: no promotion while the old primary's lease may still hold, neither the
    operator's renewal nor its peers' (they stopped following it only just now)."""
    doc = _lost_node_primary()
    held = plan(observe(doc, replaced={"orders-1": False}, stranded={"orders-1": 4.0}))
    assert not any(isinstance(a, Promote) for a in held.actions)
    assert held.status.state == DatabaseState.UNAVAILABLE
    assert "lease" in held.status.message
    assert progress(held).released  # the peers' part is counted from this observation
    doc["status"] = held.status.model_dump(mode="json")
    # The operator's renewal has run out, but the peers stopped following it 1 s ago.
    peers = plan(
        observe(doc, replaced={"orders-1": False}, stranded={"orders-1": -0.1}, monotonic=1.0)
    )
    assert not any(isinstance(a, Promote) for a in peers.actions)
    doc["status"] = peers.status.model_dump(mode="json")
    over = plan(
        observe(
            doc,
            replaced={"orders-1": False},
            stranded={"orders-1": -0.1},
            monotonic=PEERS_RELEASE_WAIT + 0.01,
        )
    )
    assert Promote("orders-0", LISTS["orders-0"]) in over.actions


def test_a_lost_node_lease_count_from_another_operator_starts_again() -> None:
    doc = _lost_node_primary()
    held = plan(observe(doc, replaced={"orders-1": False}, stranded={"orders-1": -1.0}))
    doc["status"] = held.status.model_dump(mode="json")
    other = observe(
        doc, replaced={"orders-1": False}, stranded={"orders-1": -1.0}, monotonic=1000.0
    )
    other = dataclasses.replace(other, token=2)
    assert not any(isinstance(a, Promote) for a in plan(other).actions)


def test_a_primary_whose_death_swarm_saw_needs_no_lease_wait() -> None:
    """Killed on a live node: its engine reported the container dead, nothing to outlive."""
    doc = _lost_node_primary()
    p = plan(observe(doc, replaced={"orders-1": False}, stranded={}))
    assert Promote("orders-0", LISTS["orders-0"]) in p.actions


def test_every_copy_gone_is_lost_and_never_bootstrapped() -> None:
    doc = recording("primary-killed")
    for name in doc["probes"]:
        doc["probes"][name] = {"state": "empty", "member": name}
    p = plan(observe(doc))
    assert p.status.state == DatabaseState.LOST
    assert not any(isinstance(a, (Bootstrap, Clone, Promote)) for a in p.actions)
    assert p.status.identity == doc["status"]["identity"]
    again = plan(observe({**doc, "status": p.status.model_dump(mode="json")}))
    assert again.status.state == DatabaseState.LOST
    assert not any(isinstance(a, Bootstrap) for a in again.actions)


def test_paused_members_might_hold_data_so_not_lost() -> None:
    doc = recording("primary-killed")
    doc["probes"]["orders-0"] = None  # unreachable, same container: data may be there
    doc["probes"]["orders-2"] = {"state": "empty", "member": "orders-2"}
    p = plan(observe(doc, unreachable={"orders-0": 30.0}))
    assert p.status.state == DatabaseState.UNAVAILABLE


def test_reinit_after_loss_is_explicit() -> None:
    doc = recording("primary-killed")
    for name in doc["probes"]:
        doc["probes"][name] = {"state": "empty", "member": name}
    lost = plan(observe(doc)).status
    doc["status"] = lost.model_dump(mode="json")
    p = plan(observe(doc, request={"kind": "reinit", "id": "r1"}))
    assert p.status.identity is None
    assert ClearRequest("r1") in p.actions
    doc["status"] = p.status.model_dump(mode="json")
    boot = plan(observe(doc))
    assert boot.actions == [Bootstrap("orders-0")]


def test_reinit_of_a_healthy_database_is_refused() -> None:
    p = plan(observe(recording("healthy"), request={"kind": "reinit", "id": "r2"}))
    assert p.status.identity is not None
    assert p.actions == [ClearRequest("r2")]


def test_bootstrap_happens_on_the_first_member_only() -> None:
    doc = recording("healthy")
    doc["status"] = {"name": "orders", "engine": "postgres"}
    for name in doc["probes"]:
        doc["probes"][name] = {"state": "empty", "member": name}
    p = plan(observe(doc))
    assert p.actions == [Bootstrap("orders-0")]
    assert p.status.state == DatabaseState.CREATING


def test_a_bootstrapped_member_that_stopped_itself_is_recorded_and_promoted_again() -> None:
    """Its lease ran out before the cluster was recorded (a lone primary has no peers): it
    restarted as a standby following nothing, with the only copy of the data. Found on the
    lab, where it waited in Creating for good."""
    doc = recording("healthy")
    status = DatabaseStatus.model_validate(doc["status"])
    doc["status"] = DatabaseStatus(name=status.name, engine="postgres").model_dump(mode="json")
    fenced = dict(doc["probes"]["orders-1"], role="standby", upstream=None, receiving=False)
    doc["probes"] = {"orders-0": fenced, "orders-1": None, "orders-2": None}
    created = plan(observe(doc))
    assert created.status.identity == fenced["system_identifier"]
    assert created.status.primary == "orders-0"
    doc["status"] = created.status.model_dump(mode="json")
    again = plan(observe(doc))
    assert any(isinstance(a, Promote) and a.member == "orders-0" for a in again.actions)


def test_an_empty_or_following_seed_is_not_taken_for_the_cluster() -> None:
    doc = recording("healthy")
    status = DatabaseStatus.model_validate(doc["status"])
    doc["status"] = DatabaseStatus(name=status.name, engine="postgres").model_dump(mode="json")
    following = dict(doc["probes"]["orders-0"])  # a standby of someone: not ours to adopt
    doc["probes"] = {"orders-0": following, "orders-1": None, "orders-2": None}
    assert plan(observe(doc)).status.identity is None


def test_identity_is_recorded_from_the_bootstrapped_member() -> None:
    doc = recording("healthy")
    sysid = doc["probes"]["orders-1"]["system_identifier"]
    doc["status"] = {"name": "orders", "engine": "postgres"}
    p = plan(observe(doc))
    assert p.status.identity == sysid


def test_member_of_a_foreign_cluster_is_replaced() -> None:
    doc = recording("healthy")
    doc["probes"]["orders-2"]["system_identifier"] = "1234567890"
    p = plan(observe(doc))
    assert ReplaceMember("orders-2", "foreign system identifier") in p.actions


def test_stale_primary_that_comes_back_is_fenced() -> None:
    doc = recording("after-failover")
    doc["probes"]["orders-1"].update(role="primary", upstream=None, timeline=1)
    p = plan(observe(doc))
    assert ReplaceMember("orders-1", "stale primary after failover") in p.actions
    assert p.status.primary == "orders-0"


def test_standby_following_the_wrong_upstream_is_repointed() -> None:
    doc = recording("after-failover")
    doc["probes"]["orders-2"]["upstream"] = "orders-1"
    p = plan(observe(doc))
    assert Follow("orders-2", "orders-0", "orders_2") in p.actions


def test_slots_of_members_that_no_longer_exist_are_dropped() -> None:
    doc = recording("healthy")
    doc["probes"]["orders-1"]["slots"].append(
        {"name": "orders_5", "active": False, "restart_lsn": 1}
    )
    p = plan(observe(doc))
    assert EnsureSlots("orders-1", ("orders_0", "orders_2")) in p.actions


def test_async_durability_clears_the_synchronous_standby_list() -> None:
    doc = recording("healthy")
    doc["declaration"]["spec"]["durability"] = "async"
    p = plan(observe(doc))
    assert Configure("orders-1", (), "") in p.actions


def test_sync_list_names_every_declared_standby() -> None:
    from shoal.declaration import Durability

    assert sync_standby_names(["b-2", "b-0"], Durability.SYNC) == 'ANY 1 ("b_0", "b_2")'
    assert sync_standby_names(["b-0"], Durability.ASYNC) == ""


def test_scaling_up_creates_members_and_seeds_them() -> None:
    doc = recording("healthy")
    doc["declaration"]["spec"]["members"] = 5
    obs = observe(doc)
    missing = [
        MemberObservation[PgProbe](
            index=i, name=f"orders-{i}", service_exists=False, task=None, probe=None
        )
        for i in (3, 4)
    ]
    obs = Observation(**{**obs.__dict__, "members": [*obs.members, *missing]})
    p = plan(obs)
    assert CreateMember(3) in p.actions and CreateMember(4) in p.actions
    assert EnsureSlots("orders-1", ("orders_0", "orders_2", "orders_3", "orders_4")) in p.actions


def test_scaling_down_never_removes_the_primary() -> None:
    doc = recording("healthy")  # orders-1 is primary
    doc["declaration"]["spec"]["durability"] = "async"
    p = plan(observe(doc, members=1))  # orders-1 and orders-2 become extra
    assert not any(isinstance(a, RemoveMember) and a.index == 1 for a in p.actions)


def test_scaling_down_switches_the_primary_over_first() -> None:
    doc = recording("healthy")
    doc["declaration"]["spec"]["durability"] = "async"
    doc["declaration"]["spec"]["members"] = 1
    p = plan(observe(doc, members=1))
    assert Demote("orders-1") in p.actions
    sw = progress(p).switchover
    assert sw is not None and sw.to_member == "orders-0"


def test_requested_switchover_demotes_then_promotes_when_caught_up() -> None:
    doc = recording("healthy")
    start = plan(observe(doc, request={"kind": "switchover", "to": "orders-2", "id": "s1"}))
    assert Demote("orders-1") in start.actions and ClearRequest("s1") in start.actions
    doc["status"] = start.status.model_dump(mode="json")
    doc["probes"]["orders-1"].update(role="standby", upstream=None, receiving=False)
    p = plan(observe(doc))
    assert Promote("orders-2", LISTS["orders-2"]) in p.actions
    assert progress(p).promoting_kind == "switchover"


def test_switchover_to_a_non_streaming_member_is_refused() -> None:
    doc = recording("replica-replaced-empty")
    p = plan(observe(doc, request={"kind": "switchover", "to": "orders-2", "id": "s2"}))
    assert not any(isinstance(a, Demote) for a in p.actions)
    assert "refused" in p.status.message


def test_missing_infrastructure_comes_first() -> None:
    obs = observe(recording("healthy"))
    obs = Observation(**{**obs.__dict__, "infrastructure_ready": False})
    assert plan(obs).actions == [EnsureInfrastructure()]


def _paused_primary_came_back(doc: dict[str, Any]) -> dict[str, Any]:
    """Found by the full chaos run: orders-1 (the primary) was paused, a failover promoted
    orders-0 and fenced orders-1; orders-1 was unpaused before Swarm stopped it and answered
    as a primary again, on the old timeline, while the recorded primary was still orders-1."""
    doc = _stopped_following(doc)
    doc["probes"]["orders-1"] = None
    return doc


def test_old_primary_coming_back_never_wins_over_the_promoted_one() -> None:
    doc = _paused_primary_came_back(recording("healthy"))
    fenced = plan(observe(doc, unreachable={"orders-1": 11.0}))
    assert ReplaceMember("orders-1", "fence the old primary") in fenced.actions
    doc["status"] = fenced.status.model_dump(mode="json")
    decided = plan(observe(doc, replaced={"orders-1": False}))
    assert Promote("orders-0", LISTS["orders-0"]) in decided.actions
    # orders-0 is promoted (new timeline); orders-1 wakes up still claiming to be primary.
    doc["status"] = decided.status.model_dump(mode="json")
    old_tl = copy.deepcopy(recording("healthy")["probes"]["orders-1"])
    # Its answer names the container it came from: the fenced one, not the replacement.
    old_tl["task_id"] = doc["status"]["progress"].get("task:orders-1", "task-orders-1")
    doc["probes"]["orders-1"] = old_tl
    doc["probes"]["orders-0"].update(role="primary", upstream=None, timeline=old_tl["timeline"] + 1)
    after = plan(observe(doc, replaced={"orders-1": True}))
    assert after.status.primary == "orders-0"
    assert not any(isinstance(a, ReplaceMember) and a.member == "orders-0" for a in after.actions)
    # orders-1 was fenced when the failover was decided: not fenced again while Swarm works.
    assert not any(isinstance(a, ReplaceMember) and a.member == "orders-1" for a in after.actions)


def test_promoted_member_is_adopted_even_on_an_equal_timeline() -> None:
    """A standby that had not switched to the newest timeline, once promoted, lands on a
    timeline equal to the recorded one; the recorded decision still identifies it."""
    doc = recording("after-failover")
    tl = doc["probes"]["orders-0"]["timeline"]
    doc["status"]["primary"] = "orders-2"
    doc["status"]["timeline"] = tl
    doc["status"]["progress"]["promoting"] = "orders-0"
    doc["probes"]["orders-2"] = {"state": "empty", "member": "orders-2"}
    p = plan(observe(doc))
    assert p.status.primary == "orders-0"
    assert progress(p).promoting is None


def test_a_fence_is_issued_once_per_container() -> None:
    doc = recording("after-failover")
    doc["probes"]["orders-1"].update(role="primary", upstream=None, timeline=1)
    first = plan(observe(doc))
    assert ReplaceMember("orders-1", "stale primary after failover") in first.actions
    doc["status"] = first.status.model_dump(mode="json")
    second = plan(observe(doc))
    assert not any(isinstance(a, ReplaceMember) for a in second.actions)


def test_a_new_member_is_seeded_not_counted_as_a_reseed() -> None:
    doc = recording("healthy")
    doc["declaration"]["spec"]["members"] = 4
    obs = observe(doc)
    new = MemberObservation[PgProbe](
        index=3,
        name="orders-3",
        service_exists=True,
        task=TaskInfo("t3", "running", "n1", "vm", None),
        probe=PgProbe(state="empty"),
    )
    p = plan(Observation(**{**obs.__dict__, "members": [*obs.members, new]}))
    clones = [a for a in p.actions if isinstance(a, Clone)]
    assert clones and clones[0].member == "orders-3" and not clones[0].reseed
    assert p.status.reseeds == doc["status"]["reseeds"]


def test_every_standby_keeps_the_list_it_needs_as_a_primary() -> None:
    """Recorded: standbys with no synchronous list. Each gets its own (the other members),
    the primary's is left alone, so a promotion never starts asynchronous."""
    p = plan(observe(recording("healthy")))
    configures = {
        a.member: a.synchronous_standby_names for a in p.actions if isinstance(a, Configure)
    }
    assert configures == {"orders-0": LISTS["orders-0"], "orders-2": LISTS["orders-2"]}
    assert all(LISTS[m] for m in MEMBERS)


def test_promote_carries_a_non_empty_list_under_sync() -> None:
    p = plan(observe(_stopped_following(recording("primary-killed"))))
    promotes = [a for a in p.actions if isinstance(a, Promote)]
    assert promotes and all(a.synchronous_standby_names.startswith("ANY 1 (") for a in promotes)


# --- property 1: a standby that may hold the newest commit is waited for -----------------
def _killed_primary_with_unreachable(standby: str) -> dict[str, Any]:
    """orders-1 (primary) is dead and re-created empty; `standby` does not answer but Swarm
    runs the same container (paused, cut off): it may hold commits the other one lacks."""
    doc = _stopped_following(recording("primary-killed"))
    doc["probes"][standby] = None
    return doc


def test_unreachable_standby_is_waited_for_not_skipped() -> None:
    doc = _killed_primary_with_unreachable("orders-2")
    doc["probes"]["orders-0"]["wal_lsn"] += 10**6  # the other one has far more WAL
    p = plan(observe(doc, unreachable={"orders-2": 60.0}))
    assert not any(isinstance(a, Promote) for a in p.actions)
    assert p.status.state == DatabaseState.UNAVAILABLE
    assert "orders-2" in p.status.message and "--accept-data-loss" in p.status.message


def test_standby_whose_data_is_certainly_gone_is_not_waited_for() -> None:
    doc = _stopped_following(recording("primary-killed"))
    doc["probes"]["orders-2"] = {"state": "empty", "member": "orders-2"}  # new container
    p = plan(observe(doc))
    assert [a.member for a in p.actions if isinstance(a, Promote)] == ["orders-0"]


def test_async_keeps_promoting_the_most_advanced_reachable_standby() -> None:
    doc = _killed_primary_with_unreachable("orders-2")
    doc["declaration"]["spec"]["durability"] = "async"
    p = plan(observe(doc, unreachable={"orders-2": 60.0}))
    assert [a.member for a in p.actions if isinstance(a, Promote)] == ["orders-0"]


def test_forced_failover_needs_the_flag_and_is_recorded() -> None:
    doc = _killed_primary_with_unreachable("orders-2")
    req = {"kind": "failover", "to": "orders-0", "id": "r1", "accept_data_loss": True}
    p = plan(observe(doc, unreachable={"orders-2": 60.0}, request=req))
    assert Promote("orders-0", LISTS["orders-0"]) in p.actions
    assert ClearRequest("r1") in p.actions
    # The promoted member is adopted next cycle; the event says data loss was accepted.
    doc["status"] = p.status.model_dump(mode="json")
    doc["probes"]["orders-0"]["role"] = "primary"
    doc["probes"]["orders-0"]["timeline"] = 3
    after = plan(observe(doc, unreachable={"orders-2": 61.0}))
    events = [e for e in after.status.events if e.kind == "failover" and e.member == "orders-0"]
    assert events and "data loss accepted" in events[-1].message

    without = {**req, "accept_data_loss": False, "id": "r2"}
    refused = plan(observe(doc | {"status": recording("primary-killed")["status"]},
                           unreachable={"orders-2": 60.0}, request=without))  # fmt: skip
    assert not any(isinstance(a, Promote) for a in refused.actions)
    assert ClearRequest("r2") in refused.actions


# --- property 6: an answering-but-broken primary is not dead ------------------------------
def test_primary_answering_without_a_role_waits_unreachable_seconds() -> None:
    doc = _stopped_following(recording("healthy"))
    broken = doc["probes"]["orders-1"]
    broken.update(role=None, system_identifier=None, error="probe query failed: too many")
    p = plan(observe(doc, unreachable={"orders-1": 2.0}))
    assert not any(isinstance(a, (Promote, ReplaceMember)) for a in p.actions)
    assert p.status.state == DatabaseState.UNAVAILABLE
    later = plan(observe(doc, unreachable={"orders-1": 11.0}))
    assert ReplaceMember("orders-1", "fence the old primary") in later.actions
    doc["status"] = later.status.model_dump(mode="json")
    confirmed = plan(observe(doc, replaced={"orders-1": False}))
    assert Promote("orders-0", LISTS["orders-0"]) in confirmed.actions


# --- property 4: no two primaries across an operator hand-over ----------------------------
def test_demoted_primary_without_a_recorded_switchover_is_a_candidate_not_fenced() -> None:
    """The operator died after Demote, before writing the switchover down: its successor
    finds the recorded primary running as a standby. It holds every write: it may be chosen
    again, and it is never fenced."""
    doc = _stopped_following(recording("healthy"))
    doc["probes"]["orders-1"].update(role="standby", receiving=False, upstream=None)
    doc["probes"]["orders-1"]["wal_lsn"] += 64  # its shutdown checkpoint
    p = plan(observe(doc))
    assert [a.member for a in p.actions if isinstance(a, Promote)] == ["orders-1"]
    assert not any(isinstance(a, ReplaceMember) for a in p.actions)


def test_the_only_copy_restarted_as_a_standby_after_a_crash_is_promoted_again() -> None:
    """PostgreSQL died under the primary before any standby was seeded; its agent ran it
    again as a standby following nothing (agent/member.py: _restart_after_crash). It holds
    the only copy: it is promoted, never fenced (that would make the database Lost)."""
    doc = recording("healthy")
    for name in ("orders-0", "orders-2"):
        doc["probes"][name] = {"state": "empty", "member": name}
    doc["probes"]["orders-1"].update(role="standby", receiving=False, upstream=None)
    p = plan(observe(doc))
    assert [a.member for a in p.actions if isinstance(a, Promote)] == ["orders-1"]
    assert not any(isinstance(a, ReplaceMember) for a in p.actions)
    assert p.status.state != DatabaseState.LOST


def test_a_standby_that_cannot_stream_from_the_primary_is_reseeded() -> None:
    """Seen at 20 databases on two cores: failovers under overload left a standby asking
    the new primary for WAL it had already removed, Degraded for good. Following the
    primary without streaming for STALLED_RESEED_SECONDS gets it re-seeded; a standby
    reconnecting for a moment does not."""
    doc = steady(recording("healthy"))
    assert doc["probes"]["orders-2"]["upstream"] == "orders-1"
    doc["probes"]["orders-2"].update(receiving=False, stalled_seconds=3.0)
    briefly = plan(observe(doc))
    assert not any(isinstance(a, ReplaceMember) for a in briefly.actions)
    doc["probes"]["orders-2"]["stalled_seconds"] = planner.STALLED_RESEED_SECONDS + 1
    stuck = plan(observe(doc))
    assert ReplaceMember("orders-2", "cannot stream from the primary") in stuck.actions
    assert not any(isinstance(a, ReplaceMember) and a.member != "orders-2" for a in stuck.actions)


def test_durations_stamped_by_another_operator_are_not_compared() -> None:
    """A switchover started by a previous operator (another token, another clock) is timed
    by this operator from when it first sees it, whatever the stamps' numbers say."""
    doc = recording("healthy")
    doc["status"]["progress"].update(
        switchover_from="orders-1", switchover_to="orders-0", switchover_started="3:99999.0"
    )
    doc["probes"]["orders-1"].update(role="standby", receiving=False, upstream=None)
    doc["probes"]["orders-0"]["wal_lsn"] -= 10**6  # the target has not caught up
    obs = dataclasses.replace(observe(doc), token=4, monotonic=5.0)
    p = plan(obs)
    sw = progress(p).switchover
    assert sw is not None and sw.started == "4:5.000"
    assert not any(isinstance(a, Promote) for a in p.actions), "no abort on a foreign clock"
    doc["status"] = p.status.model_dump(mode="json")
    later = plan(dataclasses.replace(observe(doc), token=4, monotonic=5.0 + 31))
    assert [a.member for a in later.actions if isinstance(a, Promote)] == ["orders-1"]


# --- property 3: timelines ----------------------------------------------------------------
def _primary_on_timeline_2_with(standby_lsn_past_fork: int) -> dict[str, Any]:
    """orders-1 is primary on timeline 2, branched from timeline 1 at FORK; orders-0 is a
    standby still on timeline 1 at FORK + `standby_lsn_past_fork` (not streaming)."""
    doc = recording("healthy")
    fork = doc["probes"]["orders-1"]["wal_lsn"] - 4096
    doc["probes"]["orders-1"].update(timeline=2, history=[[1, fork]])
    doc["status"]["timeline"] = 2
    doc["probes"]["orders-0"].update(
        timeline=1, wal_lsn=fork + standby_lsn_past_fork, receiving=False
    )
    return doc


def test_standby_forked_off_the_primarys_timeline_is_reseeded_not_followed() -> None:
    p = plan(observe(_primary_on_timeline_2_with(+512)))
    assert ReplaceMember("orders-0", "forked off the primary's timeline") in p.actions
    assert not any(isinstance(a, Follow) and a.member == "orders-0" for a in p.actions)
    assert p.status.state == DatabaseState.DEGRADED


def test_standby_at_the_fork_point_just_follows() -> None:
    p = plan(observe(_primary_on_timeline_2_with(0)))
    assert not any(isinstance(a, ReplaceMember) for a in p.actions)


# --- property 9: a fence is issued once, not every cycle ----------------------------------
def test_the_fenced_container_answering_under_the_members_name_is_not_fenced_again() -> None:
    """Seen in the full chaos runs: after a fence the member's newest task is its
    replacement, but the old container, still stopping, answers under the member's name as
    the old primary. Its answer (another task id) is no answer for the member: no second
    fence, which would replace the replacement before it could start."""
    doc = recording("after-failover")
    old = next(n for n, pr in doc["probes"].items() if n != doc["status"]["primary"])
    doc["probes"][old] = copy.deepcopy(doc["probes"][doc["status"]["primary"]])
    doc["probes"][old].update(member=old, timeline=1, task_id="the-old-container")
    p = plan(observe(doc))
    assert not any(isinstance(a, ReplaceMember) and a.member == old for a in p.actions)
    assert p.status.primary == doc["status"]["primary"]


def test_the_same_answer_from_the_members_current_task_is_fenced_once() -> None:
    doc = recording("after-failover")
    old = next(n for n, pr in doc["probes"].items() if n != doc["status"]["primary"])
    remembered = doc["status"]["progress"].get(f"task:{old}", f"task-{old}")
    doc["probes"][old] = copy.deepcopy(doc["probes"][doc["status"]["primary"]])
    doc["probes"][old].update(member=old, timeline=1, task_id=remembered)
    p = plan(observe(doc))
    fences = [a for a in p.actions if isinstance(a, ReplaceMember) and a.member == old]
    assert len(fences) == 1
    doc["status"] = p.status.model_dump(mode="json")
    again = plan(observe(doc))
    assert not any(isinstance(a, ReplaceMember) and a.member == old for a in again.actions)


def test_a_failover_leaves_a_timeline_of_its_phases() -> None:
    """`status.last_failover`: noticed → standbys stop following → promote → promoted, each
    once although the planner re-decides every cycle, and ended by the promoted primary."""
    first = observe(recording("primary-killed"))
    p1 = plan(first)
    p1 = plan(first)  # the same observation again: no phase twice
    doc = _stopped_following(recording("primary-killed"))
    doc["status"] = p1.status.model_dump(mode="json")
    p2 = plan(dataclasses.replace(observe(doc), now=NOW + 0.4))
    assert Promote("orders-0", LISTS["orders-0"]) in p2.actions
    after = recording("after-failover")
    after["status"] = p2.status.model_dump(mode="json")
    p3 = plan(dataclasses.replace(observe(after), now=NOW + 0.9))
    assert p3.status.primary == "orders-0"
    tl = p3.status.last_failover
    assert tl is not None and tl.kind == "failover"
    assert (tl.old_primary, tl.new_primary) == ("orders-1", "orders-0")
    assert tl.offsets() == [
        ("noticed", 0.0),
        ("standbys stop following", 0.0),
        ("promote", 0.4),
        ("promoted", 0.9),
    ]
    # Later cycles leave the finished timeline as it is.
    after["status"] = p3.status.model_dump(mode="json")
    assert plan(dataclasses.replace(observe(after), now=NOW + 5)).status.last_failover == tl


def test_role_level_durability_overrides_on_the_primary_are_reset() -> None:
    """`ALTER ROLE app SET synchronous_commit = off` (PostgreSQL lets any role do it for
    itself) would silently void `durability: sync`: the primary is reconfigured, which
    resets it, and an event says what was found."""
    doc = steady(recording("healthy"))
    doc["probes"]["orders-1"]["durability_overrides"] = [
        "app in every database: synchronous_commit"
    ]
    p = plan(observe(doc))
    assert [a.member for a in p.actions if isinstance(a, Configure)] == ["orders-1"]
    assert p.status.state == DatabaseState.DEGRADED
    assert any(
        e.kind == "durability" and "synchronous_commit" in e.message for e in p.status.events
    )
    assert plan(observe(steady(recording("healthy")))).actions == []


@pytest.mark.parametrize("old_primary", ["demoted", "killed"])
def test_a_switchover_target_promoted_by_a_dead_operator_is_adopted(old_primary: str) -> None:
    """Property 4 for switchovers (seen in the safety soak): the operator that sent Promote
    to the target died before writing it down. Its successor finds the switchover still
    recorded and the target already a primary on the next timeline: it adopts it, never
    waits for the target to "catch up" forever, and never promotes the old primary back
    (its 30 s timeout would have made two primaries)."""
    doc = recording("healthy")
    start = plan(observe(doc, request={"kind": "switchover", "to": "orders-2", "id": "s1"}))
    doc["status"] = start.status.model_dump(mode="json")
    doc["probes"]["orders-2"].update(role="primary", timeline=3, upstream=None, receiving=False)
    if old_primary == "demoted":
        doc["probes"]["orders-1"].update(role="standby", upstream=None, receiving=False)
    else:  # killed: an empty replacement answers under its name
        doc["probes"]["orders-1"] = {"state": "empty", "fence_token": 0}
    for later in (0.0, 40.0):  # whenever the successor looks, before or after the timeout
        p = plan(dataclasses.replace(observe(doc), monotonic=later))
        assert p.status.primary == "orders-2"
        assert not any(isinstance(a, Promote) for a in p.actions), p.actions
        assert progress(p).switchover is None
        assert any(e.kind == "switchover" for e in p.status.events)


def test_an_old_primary_lost_mid_switchover_hands_over_to_the_failover_rules() -> None:
    """The old primary's container died during the switchover (its replacement answers
    empty): the target is not simply promoted as "caught up with nothing"; the failover
    rules decide, and here the other standby holds more WAL."""
    doc = recording("healthy")
    start = plan(observe(doc, request={"kind": "switchover", "to": "orders-2", "id": "s1"}))
    doc["status"] = start.status.model_dump(mode="json")
    doc["probes"]["orders-1"] = {"state": "empty", "fence_token": 0}
    doc["probes"]["orders-0"]["wal_lsn"] += 4096
    p = plan(observe(doc))
    assert progress(p).switchover is None
    assert not any(isinstance(a, Promote) and a.member == "orders-2" for a in p.actions)
    p2 = plan(observe(_stopped_following({**doc, "status": p.status.model_dump(mode="json")})))
    assert [a.member for a in p2.actions if isinstance(a, Promote)] == ["orders-0"]


def test_a_switchover_timeout_never_promotes_the_old_primary_beside_an_unknown_target() -> None:
    """After 30 s the old primary gets its role back only when the target is certainly no
    primary; a target that does not answer (but Swarm still runs it) may have been promoted."""
    doc = recording("healthy")
    start = plan(observe(doc, request={"kind": "switchover", "to": "orders-2", "id": "s1"}))
    doc["status"] = start.status.model_dump(mode="json")
    doc["probes"]["orders-1"].update(role="standby", upstream=None, receiving=False)
    doc["probes"]["orders-2"] = None
    first = plan(dataclasses.replace(observe(doc), monotonic=0.0))
    doc["status"] = first.status.model_dump(mode="json")
    late = plan(dataclasses.replace(observe(doc), monotonic=SWITCHOVER_TIMEOUT + 5))
    assert not any(isinstance(a, Promote) for a in late.actions), late.actions


def _with_certificates(
    obs: Observation[PgProbe], served: dict[str, int | None], known: bool = True
) -> Observation[PgProbe]:
    """Each member should serve serial 100 + index (None: not `known`); `served` is what
    each agent reports."""
    members = [
        dataclasses.replace(
            m,
            certificate_serial=100 + i if known else None,
            probe=m.probe.model_copy(update={"certificate_serial": served.get(m.name)})
            if m.probe is not None
            else None,
        )
        for i, m in enumerate(obs.members)
    ]
    return dataclasses.replace(obs, members=members)


def test_a_member_serving_another_periods_certificate_is_renewed_and_stays_healthy() -> None:
    obs = observe(steady(recording("healthy")))
    p = plan(_with_certificates(obs, {"orders-0": 100, "orders-1": 7, "orders-2": 102}))
    assert p.actions == [RenewCertificate("orders-1")]  # the primary too, by a reload
    assert p.status.state == DatabaseState.HEALTHY  # a renewal is routine


def test_certificates_in_place_or_unknown_need_nothing() -> None:
    obs = observe(steady(recording("healthy")))
    # orders-2 runs without TLS (no serial): nothing to renew, nothing to guess
    served: dict[str, int | None] = {"orders-0": 100, "orders-1": 101, "orders-2": None}
    assert plan(_with_certificates(obs, served)).actions == []
    # the operator does not know what is due: never renew blindly
    assert plan(_with_certificates(obs, {"orders-1": 7}, known=False)).actions == []


def test_recover_request_is_refused_by_postgres() -> None:
    """`recover` (a forced re-forming, MongoDB's forced reconfig) has no PostgreSQL step:
    the request is cleared with a pointer to `shoal failover`, and nothing else changes."""
    request = {"kind": "recover", "id": "r1", "accept_data_loss": True}
    p = plan(observe(steady(recording("healthy")), request=request))
    assert ClearRequest("r1") in p.actions
    assert "shoal failover" in p.status.message
    quiet = plan(observe(steady(recording("healthy"))))
    assert [a for a in p.actions if a != ClearRequest("r1")] == quiet.actions
