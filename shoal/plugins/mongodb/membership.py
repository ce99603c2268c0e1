"""The replica set configurations shoal wants, one safe step at a time (pure).

Rules (each cited from the MongoDB manual):

* At most one voting member changes per reconfig ("replSetReconfig": a reconfig may add or
  remove at most one voting member, a change of `votes` counting as one). Every step below
  changes the vote of at most one member.
* At most 7 voting members ("Replica Set Members": a replica set has at most 7 voting
  members). The declaration allows at most 7 members; `voters_wanted` caps at 7 anyway.
* An odd number of voters where it costs no durability ("Replica Set Deployment
  Architectures": deploy an odd number of voting members; "Non-Voting Members": a
  non-voting member has `votes: 0` and `priority: 0`). So:

      declared members  1  2  3  4  5  6  7
      voting members    1  2  3  3  5  5  7

  With 4 or 6 members the highest-index one (the first removed by a scale-down) does not
  vote: an even count tolerates no more failures than the odd count below it, and splits
  2-2 or 3-3 with no majority on either side. Two members both vote: with one voter a
  `w: majority` write ("Write Concern": majority of the voting data-bearing members) would be
  acknowledged by the primary alone, breaking `durability: sync` (a write on >= 2 members).
* A member joins without a vote and gets it only once it is a caught-up SECONDARY ("Add
  Members to a Replica Set": add a new member as non-voting, priority 0, and make it voting
  once it reaches SECONDARY). A voter still in initial sync would raise the majority while
  unable to acknowledge anything.
* The primary is never removed or made non-voting here; the planner steps it down first.
* Member `_id`s are the members' indexes, so a member always has the same `_id` and host.

Each call returns the next configuration (version + 1) or None once `current` is what the
declaration wants: adding `n` members takes about 2n reconfigs, one vote at a time.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from shoal.plugins.mongodb import naming
from shoal.plugins.mongodb.model import ConfigMember, ConfigSettings, ReplicaSetConfig

MAX_VOTERS = 7


def voters_wanted(members: int) -> int:
    """How many of `members` declared members vote (the table above)."""
    if members <= 2:
        return members
    return min(members if members % 2 else members - 1, MAX_VOTERS)


def _voter(index: int, member: str) -> ConfigMember:
    return ConfigMember(id=index, host=naming.host(member), votes=1, priority=1.0)


def _non_voter(index: int, member: str) -> ConfigMember:
    return ConfigMember(id=index, host=naming.host(member), votes=0, priority=0.0)


def initial_config(set_name: str, declared: Sequence[tuple[int, str]]) -> ReplicaSetConfig:
    """replSetInitiate's configuration: every declared member, the lowest indexes voting
    ("Deploy a Replica Set": initiate with all members)."""
    want = voters_wanted(len(declared))
    members = tuple(
        _voter(i, name) if n < want else _non_voter(i, name)
        for n, (i, name) in enumerate(sorted(declared))
    )
    return ReplicaSetConfig(id=set_name, version=1, members=members)


def voting_changes(before: ReplicaSetConfig, after: ReplicaSetConfig) -> int:
    """How many voting members were added or removed, or changed their vote."""
    old = {m.host: m.votes for m in before.members}
    new = {m.host: m.votes for m in after.members}
    return sum(1 for h in old.keys() | new.keys() if old.get(h, 0) != new.get(h, 0))


def next_config(
    current: ReplicaSetConfig,
    declared: Sequence[tuple[int, str]],
    primary: str,
    ready: Collection[str],
) -> ReplicaSetConfig | None:
    """The next configuration on the way from `current` to the declared members, or None.

    `primary` is the primary's member name; `ready` the members that are caught-up
    secondaries (or the primary). One change per step, in this order: remove a member
    that is not declared (highest `_id` first, never the primary); add a declared member
    missing from it, without a vote; revoke a vote above `voters_wanted` (never the
    primary's, a member not ready first, then the highest `_id`); grant a vote to a ready
    non-voter (lowest `_id` first)."""
    hosts = {naming.host(name): i for i, name in declared}
    primary_host = naming.host(primary)
    members = list(current.members)

    extras = [m for m in members if m.host not in hosts and m.host != primary_host]
    if extras:
        gone = max(extras, key=lambda m: m.id)
        return _bump(current, [m for m in members if m is not gone])

    present = {m.host for m in members}
    missing = sorted((i, name) for i, name in declared if naming.host(name) not in present)
    if missing:
        i, name = missing[0]
        return _bump(current, [*members, _non_voter(i, name)])

    ready_hosts = {naming.host(r) for r in ready}
    want = voters_wanted(len(declared))
    voters = [m for m in members if m.voting]
    if len(voters) > want:
        candidates = [m for m in voters if m.host != primary_host]
        if candidates:
            drop = max(candidates, key=lambda m: (m.host not in ready_hosts, m.id))
            return _replace(current, members, drop, votes=0, priority=0.0)
    if len(voters) < want:
        candidates = [m for m in members if not m.voting and m.host in ready_hosts]
        if candidates:
            grant = min(candidates, key=lambda m: m.id)
            return _replace(current, members, grant, votes=1, priority=1.0)
    # A voter must be electable and a non-voter must not be ("Non-Voting Members").
    for m in members:
        if (m.voting and m.priority == 0 and not m.hidden) or (not m.voting and m.priority):
            return _replace(current, members, m, votes=m.votes, priority=float(m.votes))
    return None


def _replace(
    current: ReplicaSetConfig,
    members: list[ConfigMember],
    target: ConfigMember,
    *,
    votes: int,
    priority: float,
) -> ReplicaSetConfig:
    changed = target.model_copy(update={"votes": votes, "priority": priority})
    return _bump(current, [changed if m is target else m for m in members])


def _bump(current: ReplicaSetConfig, members: list[ConfigMember]) -> ReplicaSetConfig:
    """`current` with `members` and the next version; the replica set id kept, other
    settings left to MongoDB's defaults (model.ReplicaSetConfig), `term` left to the
    primary."""
    settings = ConfigSettings(replica_set_id=current.replica_set_id)
    return ReplicaSetConfig(
        id=current.id,
        version=current.version + 1,
        protocol_version=current.protocol_version,
        members=tuple(sorted(members, key=lambda m: m.id)),
        settings=settings if current.replica_set_id else None,
    )
