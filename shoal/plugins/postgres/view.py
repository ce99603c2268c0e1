"""Read-only questions the PostgreSQL planner asks about one observation."""

from __future__ import annotations

from dataclasses import replace

from shoal.plugins.base import MemberObservation, Observation, Plan, member_status
from shoal.plugins.postgres.model import PgProbe
from shoal.plugins.postgres.progress import FenceRecord, PgProgress
from shoal.status import MemberRole, MemberState, MemberStatus

PgMember = MemberObservation[PgProbe]
# A fence is a forced service update; Swarm needs a few seconds to stop the old container.
# Re-issuing it every cycle only churns tasks, so it is repeated only after this long.
FENCE_RETRY_SECONDS = 30.0


def stamp(obs: Observation[PgProbe]) -> str:
    """`token:monotonic` of the observing operator (see Observation.token)."""
    return f"{obs.token}:{obs.monotonic:.3f}"


def elapsed(obs: Observation[PgProbe], raw: str) -> float | None:
    """Seconds since `raw` was stamped, or None when another operator (another token)
    stamped it: its monotonic clock means nothing here, so the caller starts counting anew."""
    token, sep, mono = raw.partition(":")
    if not sep or token != str(obs.token):
        return None
    try:
        return obs.monotonic - float(mono)
    except ValueError:
        return None


def _own_answer(m: PgMember) -> PgMember:
    """An answer from a container that is not the member's current task is no answer for the
    member: while a fenced (replaced) container is being stopped it may still answer under
    the member's name, as the old primary, and must be neither obeyed nor fenced again."""
    pr, task = m.probe, m.task
    if pr is None or pr.task_id is None or task is None or pr.task_id == task.task_id:
        return m
    return replace(m, probe=None)


class Cluster:
    """One observation plus the status being planned (a copy the plan may change) and the
    planner's typed progress (`progress.py`), written back into the status by `finish`."""

    def __init__(self, obs: Observation[PgProbe]) -> None:
        obs = replace(obs, members=[_own_answer(m) for m in obs.members])
        self.obs = obs
        n = obs.database.spec.members
        self.declared = sorted((m for m in obs.members if m.index < n), key=lambda m: m.index)
        self.extra = sorted((m for m in obs.members if m.index >= n), key=lambda m: m.index)
        self.status = obs.status.model_copy(deep=True)
        self.progress = PgProgress.from_status(self.status.progress)

    def finish(self, p: Plan) -> Plan:
        p.status.progress = self.progress.to_status()
        return p

    def new_plan(self) -> Plan:
        s = self.status
        s.members_desired = self.obs.database.spec.members
        s.generation = self.obs.generation
        s.observed_at = self.obs.now
        s.writable = False
        s.members_ready = 0
        s.message = ""
        # Remember which container holds data: a member whose task changed since is empty,
        # whatever else it says (its data died with the old container).
        for m in self.obs.members:
            if (
                m.probe is not None
                and m.probe.has_data
                and m.task is not None
                and (s.identity is None or m.probe.system_identifier == s.identity)
            ):
                self.progress.data_tasks[m.name] = m.task.task_id
        for m in self.obs.members:
            record = self.progress.fences.get(m.name)
            if record and m.task is not None and record.task_id != m.task.task_id:
                del self.progress.fences[m.name]
        return Plan(status=s)

    def fenced(self, m: PgMember) -> bool:
        """The container this member runs in now was condemned by a fence: whatever it says,
        it is never again a primary or a candidate (its replacement will start empty)."""
        record = self.progress.fences.get(m.name)
        return record is not None and m.task is not None and record.task_id == m.task.task_id

    def fence(self, p: Plan, m: PgMember, reason: str, message: str) -> None:
        """Fence `m` once per container (again only if Swarm has not replaced it in time)."""
        from shoal.plugins.base import ReplaceMember

        record = self.progress.fences.get(m.name)
        task_id = m.task.task_id if m.task else ""
        fresh = FenceRecord(task_id=task_id, stamped=stamp(self.obs))
        if record is not None and record.task_id == task_id:
            waited = elapsed(self.obs, record.stamped)
            if waited is None:  # fenced by an earlier operator: count from now
                self.progress.fences[m.name] = fresh
                return
            if waited < FENCE_RETRY_SECONDS:
                return
        self.progress.fences[m.name] = fresh
        p.add(ReplaceMember(m.name, reason))
        p.event(self.obs.now, "fence", m.name, message)

    def remember_data_task(self, m: PgMember) -> None:
        if m.task is not None:
            self.progress.data_tasks[m.name] = m.task.task_id

    def task_changed(self, m: PgMember) -> bool:
        remembered = self.progress.data_tasks.get(m.name)
        return remembered is not None and m.task is not None and m.task.task_id != remembered

    def ours(self, m: PgMember) -> bool:
        return (
            m.probe is not None
            and m.probe.has_data
            and m.probe.system_identifier == self.status.identity
        )

    def foreign(self) -> list[PgMember]:
        return [
            m
            for m in self.obs.members
            if m.probe is not None
            and m.probe.has_data
            and self.status.identity is not None
            and m.probe.system_identifier != self.status.identity
        ]

    def may_hold_data(self, m: PgMember) -> bool:
        """False only when the member's data is certainly gone."""
        if m.probe is not None:
            if m.probe.state == "running" and m.probe.system_identifier is None:
                return True  # it runs PostgreSQL but its probe query failed: unknown
            return self.ours(m) or m.probe.state in ("bootstrapping", "stopped")
        if m.task is None or not m.task.running:
            return False
        return not self.task_changed(m) and m.name in self.progress.data_tasks

    def current_primary(self) -> PgMember | None:
        m = self.obs.member(self.status.primary)
        if m is None or m.probe is None or not self.ours(m) or not m.probe.is_primary:
            return None
        if self.task_changed(m) or self.fenced(m):
            return None
        return m

    def live_primaries(self) -> list[PgMember]:
        """Running primaries of our cluster that no fence has condemned."""
        return [
            m
            for m in self.declared + self.extra
            if self.ours(m) and m.probe is not None and m.probe.is_primary and not self.fenced(m)
        ]

    def other_primaries(self, primary: PgMember) -> list[PgMember]:
        return [
            m
            for m in self.obs.members
            if m is not primary and self.ours(m) and m.probe is not None and m.probe.is_primary
        ]

    def forked(self, m: PgMember, primary: PgMember) -> bool:
        """`m` holds WAL the primary's history does not: it received WAL on an older timeline
        past the point where the primary's timeline branched off it (a standby that stayed
        with the old primary after a forced failover). It can never follow; it is re-seeded.
        This is the divergence test pg_rewind makes."""
        pr, pp = m.probe, primary.probe
        if pr is None or pp is None or pr.timeline is None or pp.timeline is None:
            return False
        if pr.timeline >= pp.timeline or pr.wal_lsn is None:
            return False
        ended = dict(pp.history).get(pr.timeline)
        return ended is not None and pr.wal_lsn > ended

    def switchover_in_progress(self) -> bool:
        return self.progress.switchover is not None

    def ready_members(self, primary: PgMember) -> list[PgMember]:
        return [primary] + [
            m
            for m in self.declared
            if m is not primary
            and self.ours(m)
            and m.probe is not None
            and m.probe.is_standby
            and m.probe.receiving
            and m.probe.upstream == primary.name
        ]


def member_statuses(cluster: Cluster, primary: PgMember | None) -> list[MemberStatus]:
    primary_lsn = primary.probe.wal_lsn if primary is not None and primary.probe else None
    out = []
    for m in cluster.declared + cluster.extra:
        pr = m.probe
        st = member_status(m.name, m.task, answered=pr is not None)
        if pr is None:  # its state is Swarm's word alone
            out.append(st)
            continue
        if pr.state == "running" and cluster.ours(m):
            st.state = MemberState.RUNNING
            st.up = True
            st.timeline = pr.timeline
            if pr.role == "primary":
                st.role = MemberRole.PRIMARY
                st.lag_bytes, st.lag_seconds = 0, 0.0
            else:
                st.role = MemberRole.REPLICA if pr.receiving else MemberRole.UNKNOWN
                position = pr.replay_lsn if pr.replay_lsn is not None else pr.wal_lsn
                if primary_lsn is not None and position is not None:
                    st.lag_bytes = max(0, primary_lsn - position)
                st.lag_seconds = pr.lag_seconds
        elif pr.state in ("empty", "cloning", "bootstrapping"):
            st.state = MemberState.EMPTY if pr.state == "empty" else MemberState.SEEDING
            st.role = MemberRole.SYNCING
        elif pr.state == "stopped":
            st.state = MemberState.FENCED
        else:
            st.state = MemberState.FAILED
        out.append(st)
    return out
