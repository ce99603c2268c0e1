"""The PostgreSQL planner: a pure function from an observation to a status and actions.

Order of concerns in one cycle (only the first unsettled one acts when it must):
1. infrastructure and member services;
2. identity: bootstrap exactly once, record the system identifier, refuse foreign members;
3. the primary: keep it, or fail over (`failover.py`), or switch over on request;
4. the standbys: seed, follow, slots, synchronous standby list, parameters.
"""

from __future__ import annotations

from shoal.plugins.base import (
    ClearRequest,
    CreateMember,
    EnsureInfrastructure,
    MemberObservation,
    Observation,
    Plan,
    RemoveMember,
)
from shoal.plugins.postgres import naming
from shoal.plugins.postgres.agent.parameters import setting_text
from shoal.plugins.postgres.backup import plan_backups
from shoal.plugins.postgres.durability import list_for
from shoal.plugins.postgres.failover import adopt, end_timeline, plan_failover, plan_switchover
from shoal.plugins.postgres.model import (
    Bootstrap,
    Clone,
    Configure,
    EnsureSlots,
    Follow,
    PgProbe,
    RenewCertificate,
)
from shoal.plugins.postgres.progress import PgProgress
from shoal.plugins.postgres.view import Cluster, member_statuses
from shoal.request import FailoverRequest, RecoverRequest, ReinitRequest, SwitchoverRequest
from shoal.status import DatabaseState, MemberState

PgObservation = Observation[PgProbe]
PgMember = MemberObservation[PgProbe]
# A standby that follows the primary and has not streamed for this long is re-seeded: a
# walreceiver reconnects within a second or two, even after its primary changed.
STALLED_RESEED_SECONDS = 30.0


def plan(obs: PgObservation) -> Plan:
    cluster = Cluster(obs)
    return cluster.finish(_plan(cluster))


def _plan(cluster: Cluster) -> Plan:
    obs = cluster.obs
    p = cluster.new_plan()
    spec = obs.database.spec

    if not obs.infrastructure_ready:
        p.add(EnsureInfrastructure())
        p.status.message = "creating networks and secrets"
        p.requeue_after = 0.2
        return p
    missing = [m.index for m in cluster.declared if not m.service_exists]
    p.add(*(CreateMember(i) for i in missing))

    request = obs.request
    if isinstance(request, ReinitRequest):
        return _reinit(cluster, p, request.id)
    if isinstance(request, RecoverRequest):
        # PostgreSQL has no such step: `shoal failover --accept-data-loss` is its way.
        p.add(ClearRequest(request.id))
        p.status.message = (
            "recover refused: use `shoal failover NAME --to MEMBER --accept-data-loss`"
        )
        request = None

    # Identity: recorded once, never replaced by a fresh empty cluster.
    if p.status.identity is None:
        return _creating(cluster, p)
    for m in cluster.foreign():
        cluster.fence(
            p, m, "foreign system identifier", "member holds a different cluster; replaced"
        )

    # Adopt first: a switchover's target promoted by an operator that died before writing
    # it down is the primary now, and the switchover is over (docs/failure-modes.md, 4).
    adopt(cluster, p)
    if cluster.switchover_in_progress():
        carried = plan_switchover(cluster, p)
        if carried is not None:
            return carried
    primary = cluster.current_primary()
    if primary is None:
        return plan_failover(cluster, p, request)
    end_timeline(cluster, p, primary)
    if isinstance(request, FailoverRequest):
        p.add(ClearRequest(request.id))
        p.status.message = f"forced failover refused: {primary.name} is a working primary"

    # A second primary of our cluster is an old one (a paused or partitioned primary that
    # came back after a failover): fence it, its data is behind and its timeline is over.
    for other in cluster.other_primaries(primary):
        cluster.fence(
            p,
            other,
            "stale primary after failover",
            f"old primary fenced; {primary.name} is primary",
        )

    if isinstance(request, SwitchoverRequest):
        started = plan_switchover(cluster, p, request=request)
        if started is not None:
            return started
    if primary.index >= spec.members:
        # Scaling down never removes the primary: hand its role to a declared member first.
        started = plan_switchover(cluster, p, request=SwitchoverRequest(id=""))
        if started is not None:
            return started

    _standbys(cluster, p, primary)
    _scale_down(cluster, p, primary)
    declared = [m.name for m in cluster.declared]
    params = tuple(sorted((k, setting_text(v)) for k, v in spec.postgres.parameters.items()))
    # Every member, standbys included, keeps the list it would need as a primary
    # (durability.py): a promotion then never starts asynchronous.
    standbys = [m for m in cluster.declared if m is not primary and m.probe and m.probe.is_standby]
    for m in [primary, *standbys]:
        assert m.probe is not None
        wanted = list_for(m.name, declared, spec.durability)
        overrides = m.probe.durability_overrides if m is primary else ()
        if (
            m.probe.synchronous_standby_names != wanted
            or m.probe.parameters != dict(params)
            or overrides
        ):
            p.add(Configure(m.name, params, wanted))
        if overrides:
            p.event(
                obs.now,
                "durability",
                m.name,
                "reset settings that would weaken durability: " + "; ".join(overrides),
            )

    ready = cluster.ready_members(primary)
    p.status.members_ready = len(ready)
    p.status.writable = True
    healthy = len(ready) == spec.members and not p.actions
    p.status.state = DatabaseState.HEALTHY if healthy else DatabaseState.DEGRADED
    if healthy:
        cluster.progress.ever_healthy = True
    p.status.message = p.status.message or (
        "" if healthy else f"{len(ready)}/{spec.members} members ready"
    )
    p.status.members = member_statuses(cluster, primary)
    p.requeue_after = 5.0 if healthy else 1.0
    # Certificates are renewed by a reload, in any state: a renewal is routine, not a
    # reason to call the database degraded. So are base backups and WAL switches.
    p.add(*renewals([primary, *standbys]))
    plan_backups(obs.database, p, obs.now, primary, standbys, ready)
    return p


def renewals(members: list[PgMember]) -> list[RenewCertificate]:
    """A running member that serves a certificate other than the current period's gets it
    (the period turned, or the member started from its secret's first certificate)."""
    return [
        RenewCertificate(m.name)
        for m in members
        if m.probe is not None
        and m.probe.certificate_serial is not None
        and m.certificate_serial is not None
        and m.probe.certificate_serial != m.certificate_serial
    ]


def _creating(cluster: Cluster, p: Plan) -> Plan:
    obs = cluster.obs
    p.status.state = DatabaseState.CREATING
    p.requeue_after = 1.0
    # An operator that died between bootstrap and recording finds the primary it made, or
    # the member it made that stopped itself as a standby because its lease ran out before
    # the cluster was recorded (agent/lease.py: a lone primary has no peers to hold it). No
    # member of ours gets data before the identity is recorded but from our Bootstrap, so
    # that is the cluster; recorded as the primary, the failover rules promote it again.
    made = [
        m
        for m in cluster.declared
        if m.probe is not None
        and m.probe.system_identifier is not None
        and (
            m.probe.is_primary
            or (m.probe.is_standby and m.probe.has_data and m.probe.upstream is None)
        )
    ]
    if made:
        first = min(made, key=lambda m: (not m.probe.is_primary if m.probe else True, m.index))
        assert first.probe is not None
        p.status.identity = first.probe.system_identifier
        p.status.primary = first.name
        p.status.timeline = first.probe.timeline
        cluster.remember_data_task(first)
        p.event(obs.now, "bootstrap", first.name, f"cluster {p.status.identity} created")
        p.requeue_after = 0.1
        return p
    seed = cluster.declared[0] if cluster.declared else None
    if seed is None or seed.probe is None:
        p.status.message = "waiting for the first member to start"
    elif seed.probe.state == "empty":
        p.add(Bootstrap(seed.name))
        p.status.message = f"initialising the cluster on {seed.name}"
    elif seed.probe.state == "bootstrapping" and obs.database.spec.restore is not None:
        restore = obs.database.spec.restore
        p.status.message = f"restoring {restore.source}'s archive to {restore.to} on {seed.name}"
    else:
        why = f": {seed.probe.error}" if seed.probe.error else ""
        p.status.message = f"waiting for {seed.name} ({seed.probe.state}{why})"
    p.status.members = member_statuses(cluster, None)
    return p


def _standbys(cluster: Cluster, p: Plan, primary: PgMember) -> None:
    obs = cluster.obs
    assert primary.probe is not None and primary.probe.system_identifier is not None
    wanted_slots = tuple(sorted(naming.slot_name(m.name) for m in cluster.declared if m != primary))
    if tuple(sorted(primary.probe.slots)) != wanted_slots:
        # Slots first: a member being seeded or following needs its slot to keep WAL for
        # it; slots of members that no longer exist are dropped so WAL cannot pile up.
        p.add(EnsureSlots(primary.name, wanted_slots))
    ever_healthy = cluster.progress.ever_healthy
    for m in cluster.declared:
        if m is primary or m.probe is None:
            continue
        slot = naming.slot_name(m.name)
        if m.probe.state in ("empty", "failed"):
            # A re-seed replaces data this member held before; a new member is just seeded.
            reseed = ever_healthy and m.name in cluster.progress.data_tasks
            p.add(Clone(m.name, primary.name, primary.probe.system_identifier, slot, reseed))
            if reseed:
                p.status.reseeds += 1
                p.event(obs.now, "reseed", m.name, f"re-seeding from {primary.name}")
        elif m.probe.is_standby and cluster.ours(m) and cluster.forked(m, primary):
            cluster.fence(
                p,
                m,
                "forked off the primary's timeline",
                f"holds WAL past timeline {m.probe.timeline}'s end on {primary.name}: re-seeded",
            )
        elif (
            m.probe.is_standby
            and m.probe.upstream == primary.name
            and m.probe.stalled_seconds >= STALLED_RESEED_SECONDS
        ):
            # It follows the primary but cannot stream: typically the WAL it needs is gone
            # there (a primary promoted before it held a slot for it). Its data is behind the
            # primary's on the same history (a fork is the case above), so nothing only it
            # holds is lost; without a re-seed it would never catch up.
            cluster.fence(
                p,
                m,
                "cannot stream from the primary",
                f"has not streamed from {primary.name} for {m.probe.stalled_seconds:.0f}s: "
                "re-seeded",
            )
        elif m.probe.is_standby and m.probe.upstream != primary.name:
            p.add(Follow(m.name, primary.name, slot))
        elif m.probe.state == "stopped" and _was_stopped(cluster, m.name):
            # Stopped for two observations in a row (a demoted primary restarting as a
            # standby is stopped for a moment): PostgreSQL died under its agent.
            cluster.fence(p, m, "stopped member", "PostgreSQL stopped; member replaced")


def _was_stopped(cluster: Cluster, name: str) -> bool:
    return any(
        ms.name == name and ms.state == MemberState.FENCED for ms in cluster.obs.status.members
    )


def _scale_down(cluster: Cluster, p: Plan, primary: PgMember) -> None:
    for m in cluster.extra:
        if m is primary:
            continue  # the switchover planned for it comes first (see failover.py)
        p.add(RemoveMember(m.index))


def _reinit(cluster: Cluster, p: Plan, request_id: str) -> Plan:
    """The user accepted data loss: forget the identity; the next cycles bootstrap anew."""
    obs = cluster.obs
    if p.status.state != DatabaseState.LOST:
        p.add(ClearRequest(request_id))
        p.status.message = "re-initialisation refused: the database is not Lost"
        return p
    p.status.identity = None
    p.status.primary = None
    p.status.timeline = None
    cluster.progress = PgProgress()
    p.status.state = DatabaseState.CREATING
    p.event(obs.now, "reinit", None, "data loss accepted; initialising an empty database")
    p.add(ClearRequest(request_id))
    p.requeue_after = 0.1
    return p
