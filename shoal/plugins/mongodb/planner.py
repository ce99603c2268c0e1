"""The MongoDB replica set planner: a pure function from an observation to a status and
actions.

Order of concerns in one cycle:
1. infrastructure and member services;
2. identity: initiate exactly once (only while no member holds a configuration and the
   status records no identity), record `settings.replicaSetId` as `status.identity` once a
   primary shows it, replace strangers (another replica set id or set name) - never join
   them; every copy gone is Lost;
3. the primary: MongoDB elects it (shoal never promotes). Of two members claiming primary,
   the one of the older election (lower term / electionId) is stepped down (`force`), and
   replaced if it still claims the role FENCE_ESCALATE_SECONDS later;
4. membership (membership.py): one configuration change per reconfig, at most one of
   them a voting change, on the primary, only once its current configuration is committed
   (held by a majority of the voting members). Scaling down steps a primary that is no
   longer declared down first, removes members from the configuration highest index first,
   and removes their services (`RemoveMember`) only once they are out of it.

A replaced member keeps its host (naming.py), so an empty container at a host the
configuration lists needs no reconfig: the primary's heartbeats give the new mongod the
configuration, it finds itself in it and performs an initial sync ("Replica Set Data
Synchronization": initial sync). It is never initiated on its own. Only a declared member
missing from the configuration is added, by a reconfig.

`shoal switchover NAME` is replSetStepDown on the primary without `force`: it waits for an
electable secondary to catch up, steps down, and MongoDB elects one; `--to` is refused
(MongoDB picks the new primary). A forced reconfig is planned only for a recover request
with data loss accepted (`shoal recover NAME --force-reconfig`), and only without a primary.
"""

from __future__ import annotations

from shoal.plugins.base import (
    ClearRequest,
    CreateMember,
    EnsureInfrastructure,
    Plan,
    RemoveMember,
)
from shoal.plugins.mongodb import naming
from shoal.plugins.mongodb.membership import initial_config, next_config, voting_changes
from shoal.plugins.mongodb.model import (
    ForceReconfigure,
    InitiateReplicaSet,
    Reconfigure,
    ReplicaSetConfig,
    StepDown,
)
from shoal.plugins.mongodb.progress import FenceRecord, MongoProgress
from shoal.plugins.mongodb.view import (
    FENCE_ESCALATE_SECONDS,
    MongoMember,
    MongoObservation,
    ReplicaSet,
    elapsed,
    elected,
    member_statuses,
    stamp,
)
from shoal.request import (
    FailoverRequest,
    RecoverRequest,
    ReinitRequest,
    Request,
    SwitchoverRequest,
)
from shoal.status import DatabaseState, FailoverTimeline

STEP_DOWN_SECONDS = 60  # replSetStepDown's stepDownSecs (its default)


def plan(obs: MongoObservation) -> Plan:
    rs = ReplicaSet(obs)
    return rs.finish(_plan(rs))


def _plan(rs: ReplicaSet) -> Plan:
    obs = rs.obs
    p = rs.new_plan()
    if not obs.infrastructure_ready:
        p.add(EnsureInfrastructure())
        p.status.message = "creating networks and secrets"
        p.requeue_after = 0.2
        return p
    p.add(*(CreateMember(m.index) for m in rs.declared if not m.service_exists))

    request = obs.request
    if isinstance(request, ReinitRequest):
        return _reinit(rs, p, request.id)
    if p.status.identity is None:
        return _creating(rs, p)

    for m in rs.strangers():
        pr = m.probe
        assert pr is not None
        rs.fence(
            p,
            m,
            "stranger replica set",
            f"holds replica set {pr.set_name!r} ({pr.replica_set_id}), not this database's "
            f"({p.status.identity}): replaced, never joined",
        )

    claims = [m for m in rs.primaries() if not rs.fenced(m)]
    if not claims:
        return _no_primary(rs, p, request)
    primary = claims[0]
    _remember_data(rs, p)
    for stale in claims[1:]:
        _fence_stale_primary(rs, p, stale, primary)
    for name, record in list(rs.progress.fences.items()):
        if record.kind == "stepdown" and all(m.name != name for m in claims[1:]):
            del rs.progress.fences[name]  # it no longer claims the role
    _record_primary(rs, p, primary)

    if isinstance(request, RecoverRequest | FailoverRequest):
        p.add(ClearRequest(request.id))
        p.status.message = (
            f"{request.kind} refused: {primary.name} is primary"
            if isinstance(request, RecoverRequest)
            else "failover refused: MongoDB elects its own primary "
            f"({primary.name} is primary); `shoal switchover` steps it down"
        )
    if isinstance(request, SwitchoverRequest) and _switchover(rs, p, primary, request):
        return p
    _membership(rs, p, primary)
    return _health(rs, p, primary)


# --- identity ----------------------------------------------------------------------------
def _creating(rs: ReplicaSet, p: Plan) -> Plan:
    """Before the identity is recorded: initiate once, then record the replica set id."""
    obs = rs.obs
    p.status.state = DatabaseState.CREATING
    p.requeue_after = 1.0
    p.status.members = member_statuses(rs, None)
    ours_by_name = [
        m for m in rs.declared if m.probe is not None and m.probe.set_name == rs.set_name
    ]
    for m in rs.declared:
        if m.probe is not None and m.probe.initiated and m.probe.set_name != rs.set_name:
            rs.fence(
                p, m, "stranger replica set", f"holds replica set {m.probe.set_name!r}: replaced"
            )
    primaries = [
        m
        for m in ours_by_name
        if m.probe is not None and m.probe.is_primary and m.probe.replica_set_id is not None
    ]
    if primaries:
        # The replica set exists (this operator's initiate, or one of an operator that died
        # before recording it): its id is the database's identity from now on.
        first = primaries[0]
        assert first.probe is not None
        p.status.identity = first.probe.replica_set_id
        p.status.primary = first.name
        p.status.timeline = first.probe.term
        rs.progress.election_id = first.probe.election_id
        p.event(obs.now, "bootstrap", first.name, f"replica set {p.status.identity} created")
        p.requeue_after = 0.1
        return p
    if any(m.probe is not None and m.probe.initiated for m in ours_by_name):
        p.status.message = "waiting for the replica set's first primary"
        return p
    waiting = [m.name for m in rs.declared if m.probe is None]
    if waiting or len(rs.declared) < obs.database.spec.members:
        p.status.message = "waiting for " + (", ".join(waiting) or "members") + " to answer"
        return p
    seed = rs.declared[0]
    config = initial_config(rs.set_name, [(m.index, m.name) for m in rs.declared])
    p.add(InitiateReplicaSet(seed.name, config))
    p.status.message = f"initiating replica set {rs.set_name} on {seed.name}"
    return p


def _remember_data(rs: ReplicaSet, p: Plan) -> None:
    """Which container holds each member's data; an empty replacement of a member that held
    data is a re-seed (counted once), done by MongoDB's initial sync."""
    for m in rs.obs.members:
        if m.task is None or m.probe is None:
            continue
        if rs.ours(m) and m.probe.state in ("primary", "secondary"):
            rs.progress.data_tasks[m.name] = m.task.task_id
            rs.progress.reseeding.pop(m.name, None)
        elif rs.task_changed(m) and rs.progress.reseeding.get(m.name) != m.task.task_id:
            rs.progress.reseeding[m.name] = m.task.task_id
            p.status.reseeds += 1
            p.event(rs.obs.now, "reseed", m.name, "came back empty: re-seeded by initial sync")


def _no_primary(rs: ReplicaSet, p: Plan, request: Request | None) -> Plan:
    obs = rs.obs
    s = p.status
    s.members = member_statuses(rs, None)
    p.requeue_after = 0.5
    if not any(rs.may_hold_data(m) for m in obs.members):
        if s.state != DatabaseState.LOST:
            p.event(obs.now, "lost", None, "every copy of the data is gone")
        s.state = DatabaseState.LOST
        s.primary = None
        s.message = (
            "every member lost its data; nothing will be initiated over it. "
            f"Run `shoal reinit {obs.database.name} --accept-data-loss` to start empty"
        )
        p.requeue_after = 2.0
        if isinstance(request, RecoverRequest | FailoverRequest | SwitchoverRequest):
            p.add(ClearRequest(request.id))
        return p
    s.state = DatabaseState.UNAVAILABLE
    if isinstance(request, RecoverRequest):
        return _force_reconfigure(rs, p, request)
    if isinstance(request, FailoverRequest | SwitchoverRequest):
        p.add(ClearRequest(request.id))
    config = _newest_config(rs)
    voters = config.voters if config is not None else ()
    answering = {
        naming.host(m.name)
        for m in obs.members
        if rs.ours(m) and m.probe is not None and m.probe.state != "removed"
    }
    up = [v for v in voters if v.host in answering]
    if config is not None and len(up) < config.majority:
        s.message = (
            f"no primary: only {len(up)} of {len(voters)} voting members answer, MongoDB "
            f"cannot elect one. `shoal recover {obs.database.name} --force-reconfig` "
            "re-forms the replica set from them, losing writes only the others hold"
        )
    else:
        s.message = "no primary: waiting for MongoDB to elect one"
    return p


def _newest_config(rs: ReplicaSet) -> ReplicaSetConfig | None:
    configs = [m.probe.config for m in rs.obs.members if rs.ours(m) and m.probe and m.probe.config]
    return max(configs, key=lambda c: (c.term or -1, c.version), default=None)


def _force_reconfigure(rs: ReplicaSet, p: Plan, request: RecoverRequest) -> Plan:
    """A forced reconfig from the members that answer, on the one with the newest optime
    ("Reconfigure a Replica Set with Unavailable Members": force). Explicit only."""
    obs = rs.obs
    p.add(ClearRequest(request.id))
    if not request.accept_data_loss:
        p.status.message = "recover refused: it needs --force-reconfig (data loss accepted)"
        return p
    survivors = [
        m
        for m in obs.members
        if rs.ours(m)
        and m.probe is not None
        and m.probe.config is not None
        and m.probe.state not in ("removed", "startup", "startup2")
    ]
    if not survivors:
        p.status.message = "recover refused: no member that answers holds the replica set"
        return p
    via = max(survivors, key=_optime_key)
    assert via.probe is not None and via.probe.config is not None
    keep = {naming.host(m.name) for m in survivors}
    current = via.probe.config
    members = tuple(
        m
        if m.host != naming.host(via.name) or m.voting
        else m.model_copy(update={"votes": 1, "priority": 1.0})
        for m in current.members
        if m.host in keep
    )
    config = current.model_copy(update={"version": current.version + 1, "members": members})
    dropped = sorted(set(current.hosts) - keep)
    p.add(ForceReconfigure(via.name, config))
    note = (
        f"forced reconfig on {via.name} (requested): dropped {', '.join(dropped) or 'nothing'}; "
        "writes only they held are lost"
    )
    p.event(obs.now, "force-reconfig", via.name, note)
    p.status.message = note
    return p


def _optime_key(m: MongoMember) -> tuple[int, int, int]:
    op = m.probe.optime if m.probe is not None else None
    return op.key if op is not None else (-1, -1, -1)


# --- the primary -------------------------------------------------------------------------
def _fence_stale_primary(rs: ReplicaSet, p: Plan, stale: MongoMember, primary: MongoMember) -> None:
    """A member of an older election still claims primary (a partition healed, a paused
    primary woke up): step it down at once; replace it if it still claims the role later."""
    obs = rs.obs
    task_id = stale.task.task_id if stale.task else ""
    record = rs.progress.fences.get(stale.name)
    assert stale.probe is not None and primary.probe is not None
    if record is not None and record.task_id == task_id and record.kind == "stepdown":
        waited = elapsed(obs, record.stamped)
        if waited is not None and waited >= FENCE_ESCALATE_SECONDS:
            rs.fence(
                p,
                stale,
                "deposed primary did not step down",
                f"still claims primary {waited:.0f}s after a step-down; replaced",
            )
            return
        if waited is None:  # stamped by another operator: count from now
            rs.progress.fences[stale.name] = record.model_copy(update={"stamped": stamp(obs)})
        p.add(StepDown(stale.name, STEP_DOWN_SECONDS, force=True))
        return
    rs.progress.fences[stale.name] = FenceRecord(
        task_id=task_id, stamped=stamp(obs), kind="stepdown"
    )
    p.add(StepDown(stale.name, STEP_DOWN_SECONDS, force=True))
    p.event(
        obs.now,
        "fence",
        stale.name,
        f"claims primary in term {stale.probe.term} while {primary.name} is primary in term "
        f"{primary.probe.term}: stepped down",
    )


def _record_primary(rs: ReplicaSet, p: Plan, primary: MongoMember) -> None:
    obs = rs.obs
    pr = primary.probe
    assert pr is not None
    s = p.status
    if elected(rs.progress.election_id, pr.election_id):
        s.failovers += 1
        tl = FailoverTimeline(kind="failover", old_primary=s.primary, new_primary=primary.name)
        tl.mark("elected", obs.now)
        s.last_failover = tl
        p.event(obs.now, "election", primary.name, f"elected primary in term {pr.term}")
    elif s.primary != primary.name:
        p.event(obs.now, "primary", primary.name, f"primary in term {pr.term}")
    if pr.election_id is not None:
        rs.progress.election_id = pr.election_id
    s.primary = primary.name
    s.timeline = pr.term


def _switchover(rs: ReplicaSet, p: Plan, primary: MongoMember, request: SwitchoverRequest) -> bool:
    """replSetStepDown without force; MongoDB elects a caught-up secondary. True when the
    step-down was planned (nothing else is planned in that cycle)."""
    p.add(ClearRequest(request.id))
    if request.to is not None and request.to != primary.name:
        p.status.message = (
            "switchover --to refused: MongoDB elects its own primary; "
            f"`shoal switchover {rs.obs.database.name}` steps {primary.name} down"
        )
        return False
    if request.to == primary.name:
        p.status.message = f"switchover: {primary.name} is already primary"
        return False
    config = primary.probe.config if primary.probe else None
    electable = [
        m
        for m in rs.ready(primary)
        if m is not primary
        and config is not None
        and (c := config.member(naming.host(m.name))) is not None
        and c.voting
        and c.priority > 0
    ]
    if not electable:
        p.status.message = "switchover refused: no caught-up electable secondary"
        return False
    p.actions.insert(0, StepDown(primary.name, STEP_DOWN_SECONDS, force=False))
    tl = FailoverTimeline(kind="switchover", old_primary=primary.name)
    tl.mark("step-down", rs.obs.now)
    p.status.last_failover = tl
    p.event(rs.obs.now, "switchover", primary.name, "stepping down; MongoDB elects a secondary")
    p.status.state = DatabaseState.FAILING_OVER
    p.status.members = member_statuses(rs, primary)
    p.status.message = f"switchover: {primary.name} steps down"
    p.requeue_after = 0.5
    return True


# --- membership --------------------------------------------------------------------------
def _membership(rs: ReplicaSet, p: Plan, primary: MongoMember) -> None:
    obs = rs.obs
    pr = primary.probe
    assert pr is not None
    current = pr.config
    if current is None:
        return
    if primary.index >= obs.database.spec.members:
        # Scaling down never removes the primary: it steps down first.
        p.add(StepDown(primary.name, STEP_DOWN_SECONDS, force=False))
        p.status.message = f"{primary.name} is no longer declared: stepping it down first"
        return
    if not committed(rs, current):
        p.status.message = (
            f"waiting for configuration version {current.version} to reach a majority"
        )
        return
    ready = [m.name for m in rs.ready(primary)]
    wanted = next_config(current, [(m.index, m.name) for m in rs.declared], primary.name, ready)
    if wanted is not None:
        assert voting_changes(current, wanted) <= 1
        p.add(Reconfigure(primary.name, wanted))
        p.event(obs.now, "reconfig", primary.name, _describe(current, wanted))
    for m in rs.extra:
        if m is not primary and naming.host(m.name) not in current.hosts and m.service_exists:
            p.add(RemoveMember(m.index))


def committed(rs: ReplicaSet, config: ReplicaSetConfig) -> bool:
    """A majority of `config`'s voting members hold it (same version and term): only then
    may the next reconfig be sent ("replSetReconfig": the current configuration must be
    committed before a new one is installed)."""
    held = 0
    for v in config.voters:
        m = rs.obs.member(naming.member_of(v.host))
        if m is None or m.probe is None or not rs.ours(m) or m.probe.config is None:
            continue
        theirs = m.probe.config
        if theirs.version == config.version and (
            theirs.term is None or config.term is None or theirs.term == config.term
        ):
            held += 1
    return held >= config.majority


def _describe(before: ReplicaSetConfig, after: ReplicaSetConfig) -> str:
    old = {m.host: m for m in before.members}
    new = {m.host: m for m in after.members}
    parts = [f"remove {h}" for h in old.keys() - new.keys()]
    parts += [f"add {h} (votes {new[h].votes})" for h in new.keys() - old.keys()]
    parts += [
        f"{h} votes {new[h].votes}"
        for h in old.keys() & new.keys()
        if (old[h].votes, old[h].priority) != (new[h].votes, new[h].priority)
    ]
    return f"configuration version {after.version}: " + ", ".join(sorted(parts))


# --- health ------------------------------------------------------------------------------
def _health(rs: ReplicaSet, p: Plan, primary: MongoMember) -> Plan:
    spec = rs.obs.database.spec
    pr = primary.probe
    assert pr is not None
    ready = rs.ready(primary)
    s = p.status
    s.members_ready = len(ready)
    s.writable = pr.hello.is_writable_primary
    healthy = len(ready) == spec.members and not p.actions and s.writable
    s.state = DatabaseState.HEALTHY if healthy else DatabaseState.DEGRADED
    if healthy:
        rs.progress.ever_healthy = True
    s.message = s.message or ("" if healthy else f"{len(ready)}/{spec.members} members ready")
    s.members = member_statuses(rs, primary)
    p.requeue_after = 5.0 if healthy else 1.0
    return p


def _reinit(rs: ReplicaSet, p: Plan, request_id: str) -> Plan:
    """The user accepted data loss: forget the identity; the next cycles initiate anew."""
    p.add(ClearRequest(request_id))
    if p.status.state != DatabaseState.LOST:
        p.status.message = "re-initialisation refused: the database is not Lost"
        return p
    p.status.identity = None
    p.status.primary = None
    p.status.timeline = None
    rs.progress = MongoProgress()
    p.status.state = DatabaseState.CREATING
    p.event(rs.obs.now, "reinit", None, "data loss accepted; initiating an empty replica set")
    p.requeue_after = 0.1
    return p
