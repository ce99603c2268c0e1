"""Failover and switchover planning for PostgreSQL.

Failover (docs/failure-modes.md, properties 1-4): every reachable standby first stops following
the old primary, so that a primary that was only paused or cut off cannot have a write
acknowledged by a standby that is about to be promoted past it; then the standby with the most
WAL is promoted; the old primary is fenced by replacing its task and comes back empty to
re-seed. With `synchronous_standby_names = ANY 1 (...)` every acknowledged commit was flushed
on at least one standby, so the standby with the most received WAL holds it whenever one that
had it is reachable.

Switchover: the primary is shut down cleanly (`pg_ctl stop -m fast` makes the walsenders send
everything up to the shutdown checkpoint before exiting) and restarted as a standby; once the
target has received up to that point it is promoted and the old primary follows it on the
new timeline, no re-seed needed (https://www.postgresql.org/docs/15/app-pg-ctl.html,
"fast" mode; https://www.postgresql.org/docs/15/warm-standby.html#STANDBY-SERVER-OPERATION).
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.declaration import Durability
from shoal.plugins.base import ClearRequest, Plan
from shoal.plugins.postgres import naming
from shoal.plugins.postgres.agent import lease
from shoal.plugins.postgres.durability import list_for
from shoal.plugins.postgres.model import PROBE_SECONDS, Demote, Follow, Promote
from shoal.plugins.postgres.progress import SwitchoverProgress
from shoal.plugins.postgres.view import Cluster, PgMember, elapsed, member_statuses, stamp
from shoal.request import FailoverRequest, Request, SwitchoverRequest
from shoal.status import DatabaseState, FailoverTimeline

SWITCHOVER_TIMEOUT = 30.0


def timeline(p: Plan, kind: str) -> FailoverTimeline:
    """The timeline of the failover or switchover in flight (`status.last_failover`): the
    current one when it is for the same primary and not over, else a new one."""
    s = p.status
    tl = s.last_failover
    if tl is None or tl.new_primary is not None or tl.kind != kind or tl.old_primary != s.primary:
        tl = FailoverTimeline(kind=kind, old_primary=s.primary)
        s.last_failover = tl
    return tl


def end_timeline(cluster: Cluster, p: Plan, primary: PgMember) -> None:
    """The recorded primary answers as primary: a failover timeline still open ends here
    (the primary came back before anything had to be promoted)."""
    tl = p.status.last_failover
    cluster.progress.released = ""  # a later failover starts its own count
    if tl is not None and tl.new_primary is None and tl.kind == "failover":
        tl.mark("primary answered again", cluster.obs.now)
        tl.new_primary = primary.name


def adopt(cluster: Cluster, p: Plan) -> PgMember | None:
    """Make the newest primary the recorded one: the member we decided to promote (possibly
    by an operator that died before writing the decision down), or any primary on a newer
    timeline than the recorded one. An old primary that comes back (paused, cut off) is on
    an older timeline, or was fenced, and never wins over the one promoted after it."""
    s = p.status
    progress = cluster.progress
    promoting = progress.promoting
    chosen = [
        m
        for m in cluster.live_primaries()
        if m.name != s.primary
        and (m.name == promoting or ((m.probe.timeline if m.probe else 0) or 0) > (s.timeline or 0))
    ]
    if not chosen:
        return None
    best = max(
        chosen, key=lambda m: (m.name == promoting, (m.probe.timeline if m.probe else 0) or 0)
    )
    assert best.probe is not None
    # A switchover still recorded means its Promote was sent (only Promote ends the wait)
    # by an operator that did not live to write that down.
    planned = "switchover" if progress.switchover is not None else progress.promoting_kind
    note = progress.forced_note
    progress.end_promotion()
    progress.switchover = None
    old = s.primary
    s.primary = best.name
    s.timeline = best.probe.timeline
    cluster.remember_data_task(best)
    tl = p.status.last_failover
    if tl is None or tl.new_primary is not None:
        tl = timeline(p, planned)  # promoted by an operator that wrote no timeline
    tl.mark("promoted", cluster.obs.now)
    tl.new_primary = best.name
    if planned == "switchover":
        p.event(cluster.obs.now, "switchover", best.name, f"switched over from {old}")
    else:
        s.failovers += 1
        p.event(
            cluster.obs.now,
            "failover",
            best.name,
            f"promoted after {old} was lost" + (f"; {note}" if note else ""),
        )
    return best


def plan_failover(cluster: Cluster, p: Plan, request: Request | None = None) -> Plan:
    obs = cluster.obs
    s = p.status
    spec = obs.database.spec
    p.requeue_after = 0.2
    if adopt(cluster, p) is not None:
        s.state = DatabaseState.FAILING_OVER
        p.requeue_after = 0.05
        s.members = member_statuses(cluster, None)
        return p
    tl = timeline(p, "failover")
    tl.mark("noticed", obs.now)
    old = obs.member(s.primary)
    old_alive = (
        old is not None
        and not old.swarm_dead
        and not cluster.task_changed(old)
        and not cluster.fenced(old)
    )
    if old is not None and old_alive and _role_unknown(old):
        # Swarm says it runs but it does not answer, or answers without knowing its role
        # (crash recovery, out of connections): paused, partitioned, overloaded. It may
        # still commit for clients it has, so only Swarm's word that it died skips this.
        waited = old.unreachable_for
        tl.mark("primary unreachable", obs.now)
        note_released(cluster, old)
        if waited < spec.failover.unreachable_seconds:
            s.state = DatabaseState.UNAVAILABLE
            s.message = (
                f"primary {old.name} unreachable for {waited:.1f}s; failover after "
                f"{spec.failover.unreachable_seconds}s"
            )
            s.members = member_statuses(cluster, None)
            most = 0.5
            if waited >= spec.failover.unreachable_seconds - peers_release_wait(old) - BREAK_AHEAD:
                p.add(*_break_peer_hold(cluster, old))
                most = 0.2
            p.requeue_after = _until_due(spec.failover.unreachable_seconds - waited, most)
            return p

    # The recorded primary itself is a candidate when it answers as a standby (demoted by a
    # switchover whose operator died before writing it down): it holds every write.
    candidates = [
        m
        for m in cluster.declared
        if (m is not old or (old_alive and m.probe is not None and m.probe.is_standby))
        and cluster.ours(m)
        and m.probe is not None
        and m.probe.is_standby
        and not cluster.fenced(m)
    ]
    s.members = member_statuses(cluster, None)
    forced = _forced_target(cluster, p, candidates, request)
    if not candidates:
        if not any(cluster.may_hold_data(m) for m in obs.members):
            if s.state != DatabaseState.LOST:
                p.event(obs.now, "lost", None, "every copy of the data is gone")
            s.state = DatabaseState.LOST
            # No primary: the last one's data died with it (`status --json` says null).
            s.primary = None
            name = obs.database.name
            s.message = (
                "every member lost its data; nothing will be initialised over it. "
                f"Run `shoal reinit {name} --accept-data-loss` to start empty"
            )
            if obs.database.spec.backup is not None:
                s.message += (
                    f", or `shoal restore NEW_NAME --from {name}` to make a database from "
                    f"its archive (`shoal backups {name}` shows what it holds)"
                )
            p.requeue_after = 2.0
            return p
        s.state = DatabaseState.UNAVAILABLE
        s.message = "no standby can take over yet"
        p.requeue_after = 0.5
        return p

    # Every standby that may hold the newest acknowledged commit must have told us its
    # position (docs/failure-modes.md, property 1): with `ANY k (n standbys)` a commit may
    # sit on any k of them, so one that is merely unreachable is waited for, never skipped.
    unknown = _unheard(cluster, old, candidates)
    if unknown and forced is None and spec.durability is Durability.SYNC:
        tl.mark("waiting for standbys", obs.now)
        s.state = DatabaseState.UNAVAILABLE
        who = ", ".join(m.name for m in unknown)
        s.message = (
            f"waiting for {who}: it may hold acknowledged writes the other standbys lack; "
            f"`shoal failover {obs.database.name} --to MEMBER --accept-data-loss` skips it"
        )
        p.requeue_after = 0.5
        return p

    s.state = DatabaseState.FAILING_OVER
    if old is not None:
        cluster.progress.failover_from = old.name
    following = [
        c for c in candidates if c.probe is not None and (c.probe.receiving or c.probe.upstream)
    ]
    if following:
        tl.mark("standbys stop following", obs.now)
        p.add(*(Follow(c.name, None, naming.slot_name(c.name)) for c in following))
        s.message = "stopping standbys from following the old primary"
        if old is not None and old.service_exists and old_alive and _role_unknown(old):
            # Gave up on it (`unreachableSeconds`): it is no candidate whatever the positions
            # say, so it is fenced in the same step rather than one pass later.
            tl.mark("fence old primary", obs.now)
            cluster.fence(
                p, old, "fence the old primary", "old primary fenced: its task is replaced"
            )
            s.message += f" and fencing {old.name}"
        p.requeue_after = 0.05
        return p

    note_released(cluster, old)
    released = elapsed(obs, cluster.progress.released) if cluster.progress.released else None
    if released is None:  # stamped by another operator: count from now
        cluster.progress.released = stamp(obs)
        released = 0.0

    best = forced.target if forced is not None else max(candidates, key=_position)
    if old is not None and old is not best and old.service_exists and old_alive:
        # Fence first; promote once Swarm confirms the old container stopped (next cycles),
        # so clients can never reach two primaries (docs/failure-modes.md, property 7).
        tl.mark("fence old primary", obs.now)
        cluster.fence(p, old, "fence the old primary", "old primary fenced: its task is replaced")
        s.message = f"fencing {old.name}; promoting {best.name} once its container has stopped"
        p.requeue_after = 0.1
        return p
    fenced_running = old is not None and cluster.fenced(old) and not old.swarm_dead
    wait = _lease_wait(old, best, released, fenced_running)
    if (
        old is not None
        and old is not best
        and (old.previous_running or fenced_running)
        and wait > 0
    ):
        # Swarm stops the fenced container within seconds on a node it reaches; on one cut
        # off from the managers it cannot, and the node is declared down only after 12-15 s.
        # Whichever comes first: Swarm confirms the stop, or the container's own lease is
        # surely over (it then accepts no write: agent/lease.py), as for a stranded one.
        tl.mark("wait for the fenced old primary", obs.now)
        s.state = DatabaseState.UNAVAILABLE
        s.message = (
            f"waiting for the fenced container of {old.name} to stop, or its lease to run "
            f"out (in {wait:.1f}s), before promoting"
        )
        p.requeue_after = min(max(wait, 0.05), 0.1)
        return p
    if old is not None and wait > 0:
        # Its container may still run where nothing can stop it: promote only once its
        # lease has surely run out, so the two never accept writes at the same time
        # (agent/lease.py; docs/failure-modes.md, property 13).
        tl.mark("wait for the old primary's lease", obs.now)
        s.state = DatabaseState.UNAVAILABLE
        s.message = (
            f"{old.name} may still run on a node Swarm lost; promoting {best.name} once its "
            f"lease has run out (in {wait:.1f}s)"
        )
        p.requeue_after = min(max(wait, 0.05), 0.5)
        return p
    tl.mark("promote", obs.now)
    p.add(Promote(best.name, _sync_list(cluster, best.name)))
    cluster.progress.promoting = best.name
    cluster.progress.promoting_kind = "failover"
    if forced is not None:
        p.add(ClearRequest(forced.request_id))
        skipped = ", ".join(m.name for m in unknown) or "nobody"
        cluster.progress.forced_note = (
            f"forced by the user, data loss accepted (skipped waiting for {skipped})"
        )
    s.message = f"promoting {best.name}"
    p.requeue_after = 0.05
    return p


# Once one of the old primary's peers was seen following nothing, the peers no longer hold
# its lease (that needs every one of them) once PEER_REPLY_LIMIT has passed since that peer's
# last reply; its agent has stopped PostgreSQL REACTION later; 0.5 s to spare.
PEERS_RELEASE_WAIT = lease.PEER_REPLY_LIMIT + lease.REACTION + 0.5
# The same for an old primary whose service runs an earlier member image (its agent asks
# for the peers' replies only once the renewal has run out).
PEERS_RELEASE_WAIT_EARLIER_AGENT = lease.PEER_REPLY_LIMIT + lease.REACTION_OF_EARLIER_AGENTS + 0.5


def peers_release_wait(old: PgMember) -> float:
    return PEERS_RELEASE_WAIT if old.same_image else PEERS_RELEASE_WAIT_EARLIER_AGENT


# How long before `unreachableSeconds` is up one standby is released (below).
BREAK_AHEAD = 0.5
# The longest a pass's probe of an unreachable member takes before the pass can count its
# silence (the whole probe timeout on a connection that hangs, as to a paused container;
# 0.3 s to connect to a node cut off).
UNANSWERED_PROBE = PROBE_SECONDS


def _until_due(left: float, most: float) -> float:
    """The requeue while the primary is unreachable: a pass every `most` seconds at the
    most, and back to back from UNANSWERED_PROBE before `unreachableSeconds` is up, so the
    pass that crosses it ends right after the crossing rather than up to a pass later."""
    return min(most, max(left - UNANSWERED_PROBE, 0.05))


def note_released(cluster: Cluster, old: PgMember | None) -> None:
    """Stamp `progress.released` the first time, while the recorded primary is missing,
    that one of its peers (every other declared member: the peers its lease names) is seen
    running as a standby that follows nothing: from then on the peers' part of its lease
    runs out (agent/lease.py needs every peer replying). Nothing re-points such a standby at
    the old primary but the normal plan once it answers again, and `end_timeline` clears the
    stamp then."""
    if old is None or cluster.progress.released:
        return
    if any(_released(m) for m in cluster.declared if m is not old):
        cluster.progress.released = stamp(cluster.obs)


def _released(m: PgMember) -> bool:
    pr = m.probe
    return (
        pr is not None
        and pr.answered
        and pr.is_standby
        and pr.upstream is None
        and not pr.receiving
    )


def _break_peer_hold(cluster: Cluster, old: PgMember) -> list[Follow]:
    """While the primary is unreachable but before `unreachableSeconds` is up: stop one
    standby following it, so the peers' part of its lease has run out by the time the
    failover may start (PEERS_RELEASE_WAIT), and a primary cut off from the operator and
    from its standbys alike is not waited for past `unreachableSeconds`.

    Harmless to a primary that is only slow to answer the operator: the other standbys keep
    confirming its commits (`ANY 1`), and the released one is pointed back at it by the
    normal plan as soon as it answers. So under `durability: sync` it is done only while
    another standby follows it; never twice."""
    if cluster.progress.released:
        return []
    following = [
        m
        for m in cluster.declared
        if m is not old
        and cluster.ours(m)
        and not cluster.fenced(m)
        and m.probe is not None
        and m.probe.answered
        and m.probe.is_standby
        and (m.probe.receiving or m.probe.upstream is not None)
    ]
    needed = 2 if cluster.obs.database.spec.durability is Durability.SYNC else 1
    if len(following) < needed:
        return []
    # The one with the least WAL (ties: the highest index): the others stay the candidates.
    breaker = min(following, key=_position)
    return [Follow(breaker.name, None, naming.slot_name(breaker.name))]


def _lease_wait(old: PgMember | None, best: PgMember, released: float, fenced: bool) -> float:
    """Seconds before `best` may be promoted over an old primary that may still run, on a
    lost node or as a fenced container Swarm has not stopped yet (0: no such wait), whether
    Swarm has already replaced its task or not (`fenced`: not yet). Forced failovers wait
    too: accepting the loss of writes the others lack does not make two writable primaries
    acceptable."""
    if old is None or old is best:
        return 0.0
    if fenced:  # its newest task is still the fenced container: Swarm has not replaced it
        left = max(old.lease_left, old.task_lease_left)
    elif old.stranded or old.previous_running:
        # Not the newest task's: that is its replacement, renewed as any answering member.
        left = old.lease_left
    else:
        return 0.0
    return max(left, peers_release_wait(old) - released)


def _role_unknown(m: PgMember) -> bool:
    return m.probe is None or not m.probe.answered


def _position(m: PgMember) -> tuple[int, int, int]:
    """Candidates compare by (timeline, LSN): WAL on a newer timeline supersedes any amount
    on an older one; equal positions prefer the lowest index."""
    pr = m.probe
    return ((pr.timeline or 0) if pr else 0, (pr.wal_lsn or 0) if pr else 0, -m.index)


def _unheard(cluster: Cluster, old: PgMember | None, candidates: list[PgMember]) -> list[PgMember]:
    """Declared standbys (the old primary's synchronous set) that may still hold data but
    whose position is not known from this observation."""
    heard = {c.name for c in candidates}
    return [
        m
        for m in cluster.declared
        if m is not old and m.name not in heard and cluster.may_hold_data(m)
    ]


@dataclass(frozen=True)
class _Forced:
    target: PgMember
    request_id: str


def _forced_target(
    cluster: Cluster, p: Plan, candidates: list[PgMember], request: Request | None
) -> _Forced | None:
    """`shoal failover NAME --to MEMBER --accept-data-loss`: the member to promote, when it
    is a standby of ours that answers; otherwise the request is refused and cleared."""
    if not isinstance(request, FailoverRequest):
        return None
    wanted = request.to
    target = next((c for c in candidates if c.name == wanted), None)
    if target is None or not request.accept_data_loss:
        p.add(ClearRequest(request.id))
        p.status.message = f"forced failover refused: {wanted} is not a standby that answers"
        p.event(cluster.obs.now, "failover", wanted or None, p.status.message)
        return None
    return _Forced(target, request.id)


def _sync_list(cluster: Cluster, member: str) -> str:
    declared = [m.name for m in cluster.declared]
    return list_for(member, declared, cluster.obs.database.spec.durability)


def plan_switchover(
    cluster: Cluster, p: Plan, request: SwitchoverRequest | None = None
) -> Plan | None:
    """Start a requested switchover or carry one on; None when a request is refused or the
    switchover in flight is abandoned (the planner then goes on as without one)."""
    obs = cluster.obs
    s = p.status
    if request is not None:
        return _start_switchover(cluster, p, request)
    sw = cluster.progress.switchover
    assert sw is not None
    old = obs.member(sw.from_member)
    target = obs.member(sw.to_member)
    waited = elapsed(obs, sw.started)
    if waited is None:  # started by another operator (or never stamped): count from now
        sw.started = stamp(obs)
        waited = 0.0
    if old is not None and (cluster.task_changed(old) or (old.probe and not cluster.ours(old))):
        # The old primary's container is gone in the middle of the switchover, and its data
        # with it: the switchover is over and the failover logic decides, waiting for every
        # standby that may hold the newest acknowledged commit (never "the target has all
        # of nothing").
        cluster.progress.switchover = None
        return None
    s.state = DatabaseState.FAILING_OVER
    s.members = member_statuses(cluster, None)
    p.requeue_after = 0.1
    if old is None or target is None or old.probe is None:
        s.message = "switchover: waiting for the old primary to answer"
        if waited > SWITCHOVER_TIMEOUT:
            cluster.progress.switchover = None  # the failover logic takes it from here
        return p
    tl = timeline(p, "switchover")
    if old.probe.is_primary:
        p.add(Demote(old.name))
        return p
    final = old.probe.wal_lsn or 0
    if (
        target.probe is not None
        and target.probe.is_standby
        and (target.probe.wal_lsn or 0) >= final
    ):
        tl.mark("promote", obs.now)
        p.add(Promote(target.name, _sync_list(cluster, target.name)))
        cluster.progress.promoting = target.name
        cluster.progress.promoting_kind = "switchover"
        cluster.progress.switchover = None
        s.message = f"switchover: promoting {target.name}"
        return p
    target_not_primary = (
        target.probe.has_data and not target.probe.is_primary
        if target.probe is not None
        else target.swarm_dead
    )
    if waited > SWITCHOVER_TIMEOUT and old.probe.is_standby and target_not_primary:
        # The target never caught up: give the role back to the old primary, which holds
        # every write it ever acknowledged. Only when the target is certainly no primary
        # (it answers as a standby, or Swarm runs no container of it): never two.
        p.add(Promote(old.name, _sync_list(cluster, old.name)))
        cluster.progress.promoting = old.name
        cluster.progress.promoting_kind = "switchover"
        cluster.progress.switchover = None
        p.event(obs.now, "switchover", old.name, "switchover aborted: target did not catch up")
        return p
    s.message = f"switchover: waiting for {target.name} to receive all WAL"
    return p


def _start_switchover(cluster: Cluster, p: Plan, request: SwitchoverRequest) -> Plan | None:
    obs = cluster.obs
    s = p.status
    primary = cluster.current_primary()
    p.add(ClearRequest(request.id))
    if primary is None:
        return None
    streaming = [m for m in cluster.ready_members(primary) if m is not primary]
    wanted = request.to
    if wanted:
        target = next((m for m in streaming if m.name == wanted), None)
        if wanted == primary.name:
            s.message = f"switchover: {wanted} is already the primary"
            return None
        if target is None:
            s.message = f"switchover refused: {wanted} is not a streaming standby"
            p.event(obs.now, "switchover", wanted, s.message)
            return None
    else:
        if not streaming:
            s.message = "switchover refused: no streaming standby"
            p.event(obs.now, "switchover", None, s.message)
            return None
        target = max(streaming, key=lambda m: ((m.probe.wal_lsn if m.probe else 0) or 0, -m.index))
    tl = timeline(p, "switchover")
    tl.mark("requested", obs.now)
    tl.mark("demote", obs.now)
    p.add(Demote(primary.name))
    cluster.progress.switchover = SwitchoverProgress(
        from_member=primary.name, to_member=target.name, started=stamp(obs)
    )
    s.state = DatabaseState.FAILING_OVER
    s.message = f"switchover: {primary.name} -> {target.name}"
    s.members = member_statuses(cluster, primary)
    p.requeue_after = 0.1
    return p
