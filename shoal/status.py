"""What the operator writes back to Swarm and everybody else reads: the CLI (`shoal get`,
`shoal status --json`), the metrics, the status page and the chaos suite.

The JSON form of `DatabaseStatus` is the `shoal status NAME --json` contract (docs/operations.md).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class DatabaseState(StrEnum):
    CREATING = "Creating"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    FAILING_OVER = "FailingOver"
    UNAVAILABLE = "Unavailable"
    LOST = "Lost"
    DELETING = "Deleting"


class MemberRole(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"
    SYNCING = "syncing"
    CONFIG = "config"
    ROUTER = "router"
    UNKNOWN = "unknown"


class MemberState(StrEnum):
    STARTING = "starting"  # task scheduled or container up, engine not answering yet
    EMPTY = "empty"  # fresh container waiting to be seeded
    SEEDING = "seeding"  # cloning from a peer
    RUNNING = "running"
    UNREACHABLE = "unreachable"  # task running per Swarm, engine does not answer
    DEAD = "dead"  # Swarm reports the task dead
    FAILED = "failed"
    FENCED = "fenced"


class MemberStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    role: MemberRole = MemberRole.UNKNOWN
    state: MemberState = MemberState.STARTING
    node: str | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    timeline: int | None = None
    task_id: str | None = None
    up: bool = False


class Event(BaseModel):
    """Something a person watching the database wants to know happened."""

    model_config = ConfigDict(extra="ignore")

    at: float  # unix time
    kind: str  # failover, switchover, reseed, fence, bootstrap, lost, ...
    member: str | None = None
    message: str = ""


class FailoverPhase(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str  # what the operator decided or saw: noticed, standbys-stopped, promote, ...
    at: float  # unix time of the observation it was decided on (for reading, not deciding)


class FailoverTimeline(BaseModel):
    """The phases of the newest failover or switchover, for people and benchmarks
    (`shoal status`, `bench.failover`). Times are wall-clock times of whichever operator
    wrote them; no decision reads them (decisions use fencing tokens and monotonic clocks)."""

    model_config = ConfigDict(extra="ignore")

    kind: str  # failover | switchover
    old_primary: str | None = None
    new_primary: str | None = None  # set when the new primary is seen: the timeline ends
    phases: list[FailoverPhase] = Field(default_factory=list)

    MAX_PHASES: ClassVar[int] = 20

    def mark(self, name: str, at: float) -> None:
        """Record a phase the first time it happens (planners re-decide every cycle)."""
        if any(ph.name == name for ph in self.phases) or len(self.phases) >= self.MAX_PHASES:
            return
        self.phases.append(FailoverPhase(name=name, at=at))

    def offsets(self) -> list[tuple[str, float]]:
        """Each phase's seconds after the first one."""
        if not self.phases:
            return []
        t0 = self.phases[0].at
        return [(ph.name, round(ph.at - t0, 3)) for ph in self.phases]


class BackupStatus(BaseModel):
    """Where a database with spec.backup stands with its archive (docs/backup.md). Times
    are unix times as the members' agents saw them; read by people, metrics and alerts."""

    model_config = ConfigDict(extra="ignore")

    destination: str = ""  # s3://bucket/path/NAME
    interval_seconds: int = 0  # spec.backup.baseBackups.every
    last_base_backup_at: float | None = None  # when the newest good base backup ended
    last_base_backup_id: str | None = None
    last_base_backup_member: str | None = None
    base_backups_taken: int = 0  # by this database's operators, counted in the status
    last_failure_at: float | None = None
    last_failure: str = ""
    running_on: str | None = None  # the member taking a base backup now
    # The primary's archiver: the newest segment archived and when, the segments finished
    # but not archived yet and how long the oldest has waited, failed attempts since the
    # primary's PostgreSQL started.
    archived_wal: str | None = None
    archived_at: float | None = None
    pending_segments: int = 0
    pending_seconds: float = 0.0
    archive_failures: int = 0


# The status label's format. An operator that meets a newer one refuses to act on the
# database (swarm/store.py) rather than guess at what it means. 2: typed, nested `progress`
# (format 1's flat string map is still read).
STATUS_FORMAT = 2


class DatabaseStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: int = STATUS_FORMAT
    name: str
    engine: str
    state: DatabaseState = DatabaseState.CREATING
    primary: str | None = None
    network: str = ""
    connection: str = ""
    members: list[MemberStatus] = Field(default_factory=list)
    members_desired: int = 0
    members_ready: int = 0
    writable: bool = False
    generation: int = 0  # the declaration generation this status was computed for
    observed_at: float = 0.0
    message: str = ""
    # Cluster identity recorded at bootstrap (PostgreSQL system identifier, MongoDB
    # replica set id). Once set it is never cleared except by an explicit data-loss command.
    identity: str | None = None
    timeline: int | None = None
    failovers: int = 0
    reseeds: int = 0
    events: list[Event] = Field(default_factory=list)
    last_failover: FailoverTimeline | None = None
    # Engine plugins keep their multi-step progress here (a failover or switchover in
    # flight) so that a new operator resumes it: JSON the plugin types and versions itself
    # (plugins/postgres/progress.py), opaque to everybody else.
    progress: dict[str, Any] = Field(default_factory=dict)
    fence_token: int = 0
    backup: BackupStatus | None = None

    def add_event(self, event: Event, keep: int = 30) -> None:
        self.events = [*self.events, event][-keep:]
