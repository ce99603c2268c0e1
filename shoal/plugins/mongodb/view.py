"""Read-only questions the MongoDB planner asks about one observation, and the member
statuses it writes (the same fields as PostgreSQL's, so `shoal status`, the metrics and the
dashboard read them unchanged)."""

from __future__ import annotations

from dataclasses import replace

from shoal.plugins.base import MemberObservation, Observation, Plan, ReplaceMember, member_status
from shoal.plugins.mongodb import naming
from shoal.plugins.mongodb.model import MongoProbe
from shoal.plugins.mongodb.progress import FenceRecord, MongoProgress
from shoal.status import MemberRole, MemberState, MemberStatus

MongoMember = MemberObservation[MongoProbe]
MongoObservation = Observation[MongoProbe]

# A secondary further behind the primary than this is not ready (the database is
# Degraded): the threshold of the ShoalReplicationLag alert (deploy/prometheus/alerts.yml).
READY_LAG_SECONDS = 30.0
# A deposed primary still claiming the role this long after a step-down is replaced.
FENCE_ESCALATE_SECONDS = 30.0


def stamp(obs: MongoObservation) -> str:
    """`token:monotonic` of the observing operator (see Observation.token)."""
    return f"{obs.token}:{obs.monotonic:.3f}"


def elapsed(obs: MongoObservation, raw: str) -> float | None:
    """Seconds since `raw` was stamped, or None when another operator stamped it."""
    token, sep, mono = raw.partition(":")
    if not sep or token != str(obs.token):
        return None
    try:
        return obs.monotonic - float(mono)
    except ValueError:
        return None


def elected(previous: str | None, current: str | None) -> bool:
    """An election happened between two observations of the primary's electionId: it
    changed (protocol version 1 encodes the winning election's term in it). The runtime and
    the planner count elections with this (`status.failovers`)."""
    return previous is not None and current is not None and previous != current


def _own_answer(m: MongoMember) -> MongoMember:
    """An answer from a container other than the member's current task is no answer for the
    member (an earlier container Swarm is still stopping may answer under its name)."""
    pr, task = m.probe, m.task
    if pr is None or pr.task is None or task is None or pr.task == task.task_id:
        return m
    return replace(m, probe=None)


class ReplicaSet:
    """One observation plus the status being planned and the planner's typed progress."""

    def __init__(self, obs: MongoObservation) -> None:
        obs = replace(obs, members=[_own_answer(m) for m in obs.members])
        self.obs = obs
        n = obs.database.spec.members
        self.declared = sorted((m for m in obs.members if m.index < n), key=lambda m: m.index)
        self.extra = sorted((m for m in obs.members if m.index >= n), key=lambda m: m.index)
        self.status = obs.status.model_copy(deep=True)
        self.progress = MongoProgress.from_status(self.status.progress)
        self.set_name = naming.replica_set_name(obs.database.name)

    def new_plan(self) -> Plan:
        s = self.status
        s.members_desired = self.obs.database.spec.members
        s.generation = self.obs.generation
        s.observed_at = self.obs.now
        s.writable = False
        s.members_ready = 0
        s.message = ""
        for m in self.obs.members:
            record = self.progress.fences.get(m.name)
            if record and m.task is not None and record.task_id != m.task.task_id:
                del self.progress.fences[m.name]
        return Plan(status=s)

    def finish(self, p: Plan) -> Plan:
        p.status.progress = self.progress.to_status()
        return p

    # -- identity --------------------------------------------------------------------------
    def ours(self, m: MongoMember) -> bool:
        """It holds a configuration of our replica set (recorded identity, our set name)."""
        pr = m.probe
        return (
            pr is not None
            and pr.initiated
            and pr.set_name == self.set_name
            and pr.replica_set_id is not None
            and pr.replica_set_id == self.status.identity
        )

    def strangers(self) -> list[MongoMember]:
        """Members holding another replica set (another replicaSetId or set name): never
        joined, replaced."""
        out = []
        for m in self.obs.members:
            pr = m.probe
            if pr is None or not pr.initiated or self.status.identity is None:
                continue
            other_id = pr.replica_set_id is not None and pr.replica_set_id != self.status.identity
            other_name = pr.set_name is not None and pr.set_name != self.set_name
            if other_id or other_name:
                out.append(m)
        return out

    def may_hold_data(self, m: MongoMember) -> bool:
        """False only when the member's data is certainly gone."""
        pr = m.probe
        if pr is not None:
            if self.ours(m):
                return True
            # initiated, of our set name, but its configuration could not be read: unknown
            return pr.initiated and pr.replica_set_id is None and pr.set_name == self.set_name
        if m.task is None or not m.task.running:
            return False
        return not self.task_changed(m) and m.name in self.progress.data_tasks

    def task_changed(self, m: MongoMember) -> bool:
        remembered = self.progress.data_tasks.get(m.name)
        return remembered is not None and m.task is not None and m.task.task_id != remembered

    # -- primaries and fences ------------------------------------------------------------
    def fenced(self, m: MongoMember) -> bool:
        """The container this member runs in now is being replaced (a step-down alone does
        not condemn it: it may be elected again)."""
        record = self.progress.fences.get(m.name)
        return (
            record is not None
            and record.kind == "replace"
            and m.task is not None
            and record.task_id == m.task.task_id
        )

    def primaries(self) -> list[MongoMember]:
        """Members of our set claiming primary, newest election first: by term (electionId
        encodes it), then config version."""
        claims = [m for m in self.obs.members if self.ours(m) and m.probe and m.probe.is_primary]
        return sorted(claims, key=_election_key, reverse=True)

    def fence(self, p: Plan, m: MongoMember, reason: str, message: str) -> None:
        """Replace `m`'s container (its data dies with it), once per container."""
        task_id = m.task.task_id if m.task else ""
        record = self.progress.fences.get(m.name)
        if record is not None and record.task_id == task_id and record.kind == "replace":
            waited = elapsed(self.obs, record.stamped)
            if waited is None or waited < FENCE_ESCALATE_SECONDS:
                return
        self.progress.fences[m.name] = FenceRecord(
            task_id=task_id, stamped=stamp(self.obs), kind="replace"
        )
        p.add(ReplaceMember(m.name, reason))
        p.event(self.obs.now, "fence", m.name, message)

    # -- readiness -----------------------------------------------------------------------
    def ready(self, primary: MongoMember) -> list[MongoMember]:
        """The primary and every declared member its replSetGetStatus shows as a healthy
        SECONDARY within READY_LAG_SECONDS of it."""
        pp = primary.probe
        assert pp is not None
        lags = pp.lags()
        out = [primary]
        for m in self.declared:
            if m is primary or not self.ours(m) or pp.status is None:
                continue
            seen = pp.status.member(naming.host(m.name))
            lag = lags.get(naming.host(m.name))
            if (
                seen is not None
                and seen.up
                and seen.state_name == "secondary"
                and lag is not None
                and lag < READY_LAG_SECONDS
            ):
                out.append(m)
        return out


def _election_key(m: MongoMember) -> tuple[int, str, int]:
    pr = m.probe
    assert pr is not None
    return (pr.term if pr.term is not None else -1, pr.election_id or "", pr.config_version or 0)


def member_statuses(rs: ReplicaSet, primary: MongoMember | None) -> list[MemberStatus]:
    lags = primary.probe.lags() if primary is not None and primary.probe is not None else {}
    out = []
    for m in rs.declared + rs.extra:
        pr = m.probe
        st = member_status(m.name, m.task, answered=pr is not None)
        if pr is None:  # its state is Swarm's word alone
            out.append(st)
            continue
        if rs.fenced(m):
            st.state = MemberState.FENCED
        elif not pr.initiated:
            st.state, st.role = MemberState.EMPTY, MemberRole.SYNCING
        elif not rs.ours(m):
            st.state = MemberState.FAILED
        elif pr.state in ("primary", "secondary"):
            st.state, st.up = MemberState.RUNNING, True
            st.timeline = pr.term
            if m is primary:
                st.role, st.lag_seconds = MemberRole.PRIMARY, 0.0
            else:
                st.role = MemberRole.REPLICA if pr.state == "secondary" else MemberRole.UNKNOWN
                st.lag_seconds = lags.get(naming.host(m.name))
        elif pr.state in ("startup", "startup2", "recovering"):
            # startup2: initial sync; recovering: catching up, or too stale to (re-seed)
            st.state, st.role = MemberState.SEEDING, MemberRole.SYNCING
        else:
            st.state = MemberState.FAILED
        out.append(st)
    return out
