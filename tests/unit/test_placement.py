"""Placement: members of one database on distinct nodes (or zones), pins moved only for
members already lost, too few nodes reported, never silently stacked."""

from __future__ import annotations

from shoal.operator.placement import (
    MemberPlacement,
    constraints_with_pin,
    plan_placement,
    read_pin,
    report_placement,
)
from shoal.status import DatabaseState, DatabaseStatus
from shoal.swarm.nodes import NodeInfo, node_info


def node(
    nid: str,
    *,
    state: str = "ready",
    active: bool = True,
    role: str = "manager",
    zone: str | None = None,
) -> NodeInfo:
    return NodeInfo(
        id=nid,
        hostname=f"host-{nid}",
        role=role,
        state=state,
        active=active,
        labels={"zone": zone} if zone else {},
    )


def member(
    index: int,
    pin: str | None,
    *,
    node_id: str | None = None,
    running: bool = True,
    primary: bool = False,
) -> MemberPlacement:
    return MemberPlacement(
        index=index, pin=pin, node_id=node_id or pin, running=running, primary=primary
    )


THREE = [node("n1"), node("n2"), node("n3")]


def test_a_single_node_swarm_pins_nothing() -> None:
    plan = plan_placement("node.id", [], [node("n1")], [], 3)
    assert plan.exempt and plan.pins == {} and plan.problem is None


def test_no_spread_pins_nothing() -> None:
    plan = plan_placement(None, [], THREE, [], 3)
    assert plan.exempt and plan.pins == {}


def test_new_members_get_distinct_nodes() -> None:
    plan = plan_placement("node.id", [], THREE, [], 3)
    assert sorted(plan.pins.values()) == ["n1", "n2", "n3"]
    assert plan.problem is None


def test_a_new_member_avoids_the_nodes_its_peers_hold() -> None:
    plan = plan_placement("node.id", [], THREE, [member(0, "n3"), member(1, "n1")], 3)
    assert plan.pins == {2: "n2"}


def test_too_few_nodes_is_reported_and_the_sharing_is_counted() -> None:
    plan = plan_placement("node.id", [], THREE[:2], [], 3)
    assert len(plan.pins) == 3
    assert len(set(plan.pins.values())) == 2
    assert plan.problem is not None
    assert "2 eligible nodes for 3 members" in plan.problem
    assert "1 member(s) share" in plan.problem


def test_a_member_on_a_down_node_moves_to_a_free_node_and_nobody_else_moves() -> None:
    nodes = [node("n1", state="down"), node("n2"), node("n3"), node("n4")]
    members = [member(0, "n1", running=False), member(1, "n2"), member(2, "n3")]
    plan = plan_placement("node.id", [], nodes, members, 3)
    assert plan.pins == {0: "n4"}
    assert plan.problem is None


def test_a_primary_on_a_down_node_whose_task_swarm_still_shows_running_is_moved() -> None:
    nodes = [node("n1", state="down"), node("n2"), node("n3"), node("n4")]
    members = [member(0, "n1", primary=True), member(1, "n2"), member(2, "n3")]
    assert plan_placement("node.id", [], nodes, members, 3).pins == {0: "n4"}


def test_after_a_leader_election_nodes_of_unknown_state_keep_their_members() -> None:
    """Seen on the lab: two managers down, quorum back, every node `unknown` but the one
    that heartbeated first. Treating `unknown` as lost pinned all three members onto that
    node, which restarted them empty: the database was Lost."""
    nodes = [node("n1", state="unknown"), node("n2", state="unknown"), node("n3")]
    members = [member(0, "n1", primary=True), member(1, "n2"), member(2, "n3")]
    for settled in (False, True):
        plan = plan_placement("node.id", [], nodes, members, 3, settled=settled)
        assert plan.pins == {}, plan
        assert plan.problem is None


def test_a_member_on_an_unknown_node_whose_pin_is_invalid_is_left_alone() -> None:
    nodes = [node("n1", state="unknown", role="worker"), node("n2"), node("n3"), node("n4")]
    members = [member(0, "n1"), member(1, "n2"), member(2, "n3")]
    plan = plan_placement("node.id", ["node.role==manager"], nodes, members, 3, settled=True)
    assert 0 not in plan.pins


def test_a_member_on_a_drained_node_is_moved() -> None:
    nodes = [node("n1", active=False), node("n2"), node("n3"), node("n4")]
    members = [member(0, "n1", running=False), member(1, "n2"), member(2, "n3")]
    assert plan_placement("node.id", [], nodes, members, 3).pins == {0: "n4"}


def test_a_healthy_pinned_member_is_never_moved() -> None:
    nodes = [*THREE, node("n4"), node("n5")]
    members = [member(0, "n1"), member(1, "n2"), member(2, "n3")]
    plan = plan_placement("node.id", [], nodes, members, 3, settled=True)
    assert plan.pins == {}
    assert plan.problem is None


def test_a_member_that_is_merely_not_running_keeps_its_pin_while_its_node_is_ready() -> None:
    members = [member(0, "n1", running=False), member(1, "n2"), member(2, "n3")]
    assert plan_placement("node.id", [], THREE, members, 3).pins == {}


def test_when_a_node_comes_back_one_stacked_standby_moves_to_it() -> None:
    members = [member(0, "n1", primary=True), member(1, "n2"), member(2, "n1")]
    plan = plan_placement("node.id", [], THREE, members, 3, settled=True)
    assert plan.pins == {2: "n3"}


def test_a_stacked_primary_is_never_moved_its_standby_is() -> None:
    members = [member(0, "n2"), member(1, "n1"), member(2, "n1", primary=True)]
    plan = plan_placement("node.id", [], THREE, members, 3, settled=True)
    assert plan.pins == {1: "n3"}


def test_no_move_while_the_database_is_not_settled() -> None:
    members = [member(0, "n1", primary=True), member(1, "n2"), member(2, "n1")]
    plan = plan_placement("node.id", [], THREE, members, 3, settled=False)
    assert plan.pins == {}
    assert plan.problem is not None and "share" in plan.problem


def test_only_one_member_moves_per_cycle() -> None:
    nodes = [*THREE, node("n4")]
    members = [
        member(0, "n1", primary=True),
        member(1, "n1"),
        member(2, "n1"),
        member(3, "n2"),
    ]
    plan = plan_placement("node.id", [], nodes, members, 4, settled=True)
    assert len(plan.pins) == 1


def test_zones_spread_over_labelled_nodes_only() -> None:
    nodes = [
        node("n1", zone="a"),
        node("n2", zone="a"),
        node("n3", zone="b"),
        node("n4"),  # no zone label: not eligible for a zone spread
        node("n5", zone="c"),
    ]
    plan = plan_placement("node.labels.zone", [], nodes, [], 3)
    assert sorted(plan.pins.values()) == ["a", "b", "c"]
    assert plan.problem is None


def test_two_zones_for_three_members_is_a_problem_named_in_zones() -> None:
    nodes = [node("n1", zone="a"), node("n2", zone="b"), node("n3", zone="b")]
    plan = plan_placement("node.labels.zone", [], nodes, [], 3)
    assert plan.problem is not None
    assert "2 eligible values of node.labels.zone for 3 members" in plan.problem


def test_user_constraints_and_drained_nodes_limit_the_eligible_nodes() -> None:
    nodes = [
        node("n1"),
        node("n2", role="worker"),
        node("n3", role="worker"),
        node("n4", role="worker", active=False),  # drained
    ]
    plan = plan_placement("node.id", ["node.role==worker"], nodes, [], 3)
    assert set(plan.pins.values()) == {"n2", "n3"}
    assert plan.problem is not None and "2 eligible nodes" in plan.problem


def test_no_eligible_node_at_all_pins_nothing_and_says_so() -> None:
    plan = plan_placement("node.id", ["node.labels.ssd==yes"], THREE, [], 3)
    assert plan.pins == {}
    assert plan.problem is not None and "no active node" in plan.problem


def test_a_member_running_where_the_declaration_no_longer_allows_moves_alone() -> None:
    nodes = [node("n1", role="worker"), node("n2"), node("n3"), node("n4", role="worker")]
    members = [member(0, "n1"), member(1, "n2"), member(2, "n3", primary=True)]
    plan = plan_placement("node.id", ["node.role==worker"], nodes, members, 3, settled=True)
    # n2 and n3 are managers now: one non-primary moves per cycle, the primary stays.
    assert plan.pins == {1: "n4"}


def test_an_unpinned_member_holds_the_node_it_runs_on() -> None:
    members = [member(0, None, node_id="n1"), member(1, None, node_id="n2")]
    plan = plan_placement("node.id", [], THREE, members, 3)
    assert plan.pins == {2: "n3"}


def test_the_pin_is_read_apart_from_the_users_own_constraints() -> None:
    user = ["node.labels.zone==a"]
    assert read_pin("node.labels.zone", user, user) is None
    full = constraints_with_pin(user, "node.id", "n7")
    assert full == ["node.labels.zone==a", "node.id==n7"]
    assert read_pin("node.id", full, user) == "n7"
    assert constraints_with_pin(user, None, "n7") == user


def test_a_placement_problem_makes_a_healthy_database_degraded() -> None:
    status = DatabaseStatus(name="orders", engine="postgres", state=DatabaseState.HEALTHY)
    plan = plan_placement("node.id", [], THREE[:2], [], 3)
    report_placement(status, plan)
    assert status.state == DatabaseState.DEGRADED
    assert plan.problem is not None and plan.problem in status.message
    failing = DatabaseStatus(name="o", engine="postgres", state=DatabaseState.FAILING_OVER)
    report_placement(failing, plan)
    assert failing.state == DatabaseState.FAILING_OVER


def test_nodes_are_read_from_dockers_answer() -> None:
    raw = {
        "ID": "abc",
        "Spec": {"Role": "worker", "Availability": "drain", "Labels": {"zone": "b"}},
        "Description": {
            "Hostname": "h1",
            "Platform": {"OS": "linux", "Architecture": "aarch64"},
            "Engine": {"Labels": {"disk": "ssd"}},
        },
        "Status": {"State": "down"},
    }
    n = node_info(raw)
    assert (n.id, n.hostname, n.role, n.ready, n.active) == ("abc", "h1", "worker", False, False)
    assert n.down
    assert not node_info({**raw, "Status": {"State": "unknown"}}).down
    assert n.attribute("node.labels.zone") == "b"
    assert n.attribute("engine.labels.disk") == "ssd"
    assert n.attribute("node.platform.arch") == "aarch64"
    assert n.attribute("node.labels.rack") is None
    assert n.satisfies("node.labels.zone==b") and n.satisfies("node.labels.rack!=x")
    assert not n.satisfies("node.role==manager")
