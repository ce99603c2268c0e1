"""Placement: which node (or zone) each member may run on, so that no two members of one
database share one (the declaration's `placement.spread`, default `node.id`).

Swarm spreads the tasks of one service, not the services of one database
(moby/swarmkit#1442), and every member is its own service. So the operator pins each member
with a constraint `<spread key>==<value>` and keeps the pins distinct:

- a member is pinned when it is created, to a value no other member holds;
- a pin is moved only when its member is already lost: no ready, active, eligible node has
  the pinned value any more (the node is down, drained or gone). Changing a service's
  constraints restarts its task, and a restarted member starts empty, so a healthy member's
  pin is never touched;
- a member that had to share a value (too few eligible nodes) is moved, one per cycle and
  never the primary, as soon as a free value appears;
- too few eligible values for the members is reported (`problem`): the database is
  `Degraded`, never silently stacked.

A swarm of one node is exempt (there is nothing to spread over), as is `spread: null`.

Pure: nodes and members in, pins and a problem out. `observe.py` reads the nodes,
`apply.py` writes the pins.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.declaration.model import CONSTRAINT_RE
from shoal.plugins.base import Observation, PinMember
from shoal.status import DatabaseState, DatabaseStatus
from shoal.swarm.nodes import NodeInfo


@dataclass(frozen=True)
class MemberPlacement:
    """What placement reads of one member's service."""

    index: int
    pin: str | None  # the value of its spread constraint, None when not pinned
    node_id: str | None = None  # where its newest task is scheduled, if anywhere
    running: bool = False  # its newest task runs
    primary: bool = False


@dataclass
class PlacementPlan:
    # Members to (re-)pin: index -> value of the spread key. Creating a member reads its
    # value here too (`pin_for`).
    pins: dict[int, str] = field(default_factory=dict)
    problem: str | None = None
    exempt: bool = False

    def pin_for(self, index: int) -> str | None:
        return self.pins.get(index)


def pin_constraint(key: str, value: str) -> str:
    return f"{key}=={value}"


def read_pin(key: str, constraints: Sequence[str], user: Sequence[str] = ()) -> str | None:
    """The pinned value among a service's constraints: the first `key==value` on the
    spread key that is not one of the declaration's own (`constraints_with_pin`)."""
    for c in constraints:
        if c in user:
            continue
        m = CONSTRAINT_RE.match(c)
        if m is not None and m.group(1) == key and m.group(2) == "==":
            return m.group(3)
    return None


def constraints_with_pin(user: Sequence[str], key: str | None, value: str | None) -> list[str]:
    """A member service's constraints: the declaration's, then the operator's pin."""
    out = list(user)
    if key is not None and value is not None:
        pin = pin_constraint(key, value)
        if pin not in out:
            out.append(pin)
    return out


def eligible_values(
    spread: str, constraints: Sequence[str], nodes: Sequence[NodeInfo], holding: bool = False
) -> dict[str, list[NodeInfo]]:
    """Spread values that some active node meeting the user's constraints has: a ready one
    for a member to be placed, or (`holding`) any that Swarm has not declared down, for a
    member to stay where it is (after a leader election nodes are `unknown` for a while)."""
    values: dict[str, list[NodeInfo]] = {}
    for n in nodes:
        usable = not n.down if holding else n.ready
        if not (usable and n.active and all(n.satisfies(c) for c in constraints)):
            continue
        v = n.attribute(spread)
        if v is not None:
            values.setdefault(v, []).append(n)
    return values


def _describe(spread: str) -> str:
    return "nodes" if spread in ("node.id", "node.hostname") else f"values of {spread}"


def plan_placement(
    spread: str | None,
    constraints: Sequence[str],
    nodes: Sequence[NodeInfo],
    members: Sequence[MemberPlacement],
    desired: int,
    settled: bool = False,
) -> PlacementPlan:
    """Pins for the declared members 0..desired-1 (see the module's docstring). `settled`:
    every declared member was ready at the last status, so one may be moved (re-seeded)."""
    if spread is None or len(nodes) <= 1:
        return PlacementPlan(exempt=True)
    values = eligible_values(spread, constraints, nodes)
    keep = eligible_values(spread, constraints, nodes, holding=True)
    by_node = {n.id: n for n in nodes}
    existing = {m.index: m for m in members if m.index < desired}
    held: Counter[str] = Counter()
    holder: dict[int, str] = {}
    now: list[int] = []  # to be created, or lost already: pinned at once
    later: list[MemberPlacement] = []  # running where it should not: moved one at a time
    for i in range(desired):
        m = existing.get(i)
        if m is None:
            now.append(i)
            continue
        node = by_node.get(m.node_id or "")
        value = m.pin
        if value is None and node is not None:
            # Not pinned (made before pins, or on a swarm that grew from one node): it holds
            # the value of the node it runs on, and keeps running there.
            value = node.attribute(spread)
        if value is not None and value in keep:
            held[value] += 1
            holder[i] = value
        elif not m.running or node is None or node.down or not node.active:
            # Its value has no usable node, and it does not run or its node is down,
            # drained or gone: it is lost already, a new pin costs nothing.
            now.append(i)
        elif node.ready:
            later.append(m)  # it runs on a node placement no longer allows (declaration)
        # else: its node's state is unknown (a leader election): leave it alone
    plan = PlacementPlan()
    for i in now:
        choice = _choose(values, held)
        if choice is not None:
            plan.pins[i] = choice
            held[choice] += 1
    if not plan.pins and settled and values:
        stacked = [existing[i] for i, v in sorted(holder.items(), reverse=True) if held[v] > 1]
        for m in [*later, *stacked]:
            free = sorted(v for v in values if held[v] == 0)
            target = free[0] if free else (_choose(values, held) if m in later else None)
            if m.primary or target is None:
                continue
            plan.pins[m.index] = target
            if m.index in holder:
                held[holder[m.index]] -= 1
            held[target] += 1
            break
    shared = sum(c - 1 for c in held.values() if c > 1)
    if not keep:
        plan.problem = (
            f"no active node meets the placement ({', '.join(constraints) or 'any node'}"
            f", spread over {spread}): members cannot be placed"
        )
    elif len(keep) < desired or shared:
        plan.problem = (
            f"{len(keep)} eligible {_describe(spread)} for {desired} members: "
            f"{shared} member(s) share a {spread} with another; add "
            f"{_describe(spread)} (or lower `members`) to tolerate losing one"
        )
    return plan


def _choose(values: Mapping[str, list[NodeInfo]], held: Counter[str]) -> str | None:
    """A value no member holds; else (too few values, reported as a problem, never
    silent) the least used one; None when no node is eligible at all."""
    if not values:
        return None
    return min(sorted(values), key=lambda v: held[v])


def placement_of(obs: Observation[Any]) -> PlacementPlan:
    """Placement for one observed database (engine-neutral: Swarm's view only)."""
    spec = obs.database.spec
    members = [
        MemberPlacement(
            index=m.index,
            pin=m.pin,
            node_id=m.task.node_id if m.task is not None else None,
            running=m.task is not None and m.task.running,
            primary=m.name == obs.status.primary,
        )
        for m in obs.members
        if m.service_exists
    ]
    return plan_placement(
        spec.placement.spread,
        spec.placement.constraints,
        obs.nodes,
        members,
        spec.members,
        settled=obs.status.members_ready >= spec.members,
    )


def pin_actions(obs: Observation[Any], plan: PlacementPlan) -> list[PinMember]:
    """Moves of existing members (a member still to be created reads its pin at creation)."""
    spread = obs.database.spec.placement.spread
    actions = []
    for m in obs.members:
        value = plan.pin_for(m.index)
        if value is None or not m.service_exists or value == m.pin:
            continue
        why = (
            f"its {spread} has no ready node"
            if m.task is None or not m.task.running or m.task.node_down
            else f"it shares a {spread} with another member, or runs where placement forbids"
        )
        actions.append(PinMember(m.name, value, why))
    return actions


def report_placement(status: DatabaseStatus, plan: PlacementPlan) -> None:
    """Members that share a node (or zone) make a healthy database `Degraded`: it would not
    survive losing that node. The problem is said in the status message either way."""
    if plan.problem is None:
        return
    if status.state == DatabaseState.HEALTHY:
        status.state = DatabaseState.DEGRADED
    status.message = f"{status.message}; {plan.problem}" if status.message else plan.problem
