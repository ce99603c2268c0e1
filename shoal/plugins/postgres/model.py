"""What the PostgreSQL plugin observes of a member and the engine actions it can plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from shoal.plugins.base import Action, UnusableAnswer, answer_document

# The newest format of the agent's `GET /state` answer this parser knows. The agent writes
# its own (agent/member.py: STATE_FORMAT, absent before it was introduced: format 1); a unit
# test keeps the two equal, so a new agent format cannot ship without the parser learning it.
PROBE_FORMAT = 1
# The longest the operator waits for a `GET /state` answer (plugin.PROBE_TIMEOUT); the
# failover plans its passes around it (failover.py: UNANSWERED_PROBE).
PROBE_SECONDS = 1.5


class ArchiveState(BaseModel):
    """A member's WAL archiving (agent/backup.py): pg_stat_archiver and the segments
    PostgreSQL finished but has not archived yet (pg_wal/archive_status/*.ready)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    failed_count: int = 0
    last_archived_wal: str | None = None
    last_archived_at: float | None = None
    last_failed_wal: str | None = None
    last_failed_at: float | None = None
    segments: int = 0  # finished, not archived yet
    oldest_seconds: float = 0.0  # how long the oldest of them has waited
    # A base backup here waits in pg_backup_stop for its last segment to be archived.
    backup_waits_for_wal: bool = False


class BaseBackupJob(BaseModel):
    """The last base backup a member's agent ran (agent/member.py: start_base_backup)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: Literal["idle", "running", "succeeded", "failed"] = "idle"
    started_at: float | None = None
    finished_at: float | None = None
    backup_id: str | None = None
    error: str | None = None


class PgProbe(BaseModel):
    """A member agent's `GET /state`, typed and validated. LSNs are byte positions.

    `parse` turns an answer into one; it raises `UnusableAnswer` when the answer is malformed
    or of a format newer than `PROBE_FORMAT`: then the member gave no usable answer, and is
    counted like one that did not answer (plugin.py: `probe`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: Literal["empty", "bootstrapping", "cloning", "running", "stopped", "failed"] = "failed"
    role: Literal["primary", "standby"] | None = None
    system_identifier: str | None = None
    timeline: int | None = None
    wal_lsn: int | None = None
    replay_lsn: int | None = None
    receiving: bool = False
    upstream: str | None = None
    slots: tuple[str, ...] = ()
    synchronous_standby_names: str = ""
    lag_seconds: float | None = None
    fence_token: int = 0
    parameters: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    task_id: str | None = None  # the Swarm task of the container that answered
    # A primary's timeline history: (ancestor timeline, LSN where it ended), oldest first.
    history: tuple[tuple[int, int], ...] = ()
    # A primary's role- or database-level settings that weaken durability ("app in every
    # database: synchronous_commit"): reset by the next Configure.
    durability_overrides: tuple[str, ...] = ()
    # The serial of the TLS certificate PostgreSQL serves (hex on the wire); None without TLS.
    certificate_serial: int | None = None
    # A standby told to follow `upstream` that has not streamed from it for this long, by
    # its agent's clock (0: streaming, or following nobody). Its WAL may be gone upstream.
    stalled_seconds: float = 0.0
    # With spec.backup only (None without, and from agents that predate it).
    archive: ArchiveState | None = None
    base_backup: BaseBackupJob | None = None

    @property
    def answered(self) -> bool:
        """False when the agent runs PostgreSQL but its query failed: the role is unknown,
        and a primary in that state may still be committing for the clients it has."""
        return not (self.state == "running" and self.role is None)

    @property
    def has_data(self) -> bool:
        return self.state == "running" and self.system_identifier is not None

    @property
    def is_primary(self) -> bool:
        return self.has_data and self.role == "primary"

    @property
    def is_standby(self) -> bool:
        return self.has_data and self.role == "standby"

    @staticmethod
    def parse(answer: object) -> PgProbe:
        """The agent's answer, typed; `UnusableAnswer` says why it cannot be used."""
        document = answer_document(answer, PROBE_FORMAT)
        try:
            return PgProbe.model_validate(document)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise UnusableAnswer(
                f"the answer is malformed ({e.error_count()} problem(s); {where}: {err['msg']})"
            ) from None

    # -- the wire's shapes: null for "nothing", slots as objects, the serial in hex
    @field_validator(
        "receiving", "slots", "synchronous_standby_names", "fence_token", "parameters",
        "history", "durability_overrides", "stalled_seconds", mode="before",
    )  # fmt: skip
    @classmethod
    def _null_is_default(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None and info.field_name is not None:
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return v

    @field_validator("upstream", "task_id", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return v or None

    @field_validator("system_identifier", mode="before")
    @classmethod
    def _identifier_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("slots", mode="before")
    @classmethod
    def _slot_names(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return [s["name"] if isinstance(s, dict) and "name" in s else s for s in v]
        return v

    @field_validator("slots")
    @classmethod
    def _sorted(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(v))

    @field_validator("certificate_serial", mode="before")
    @classmethod
    def _hex(cls, v: Any) -> Any:
        return int(v, 16) if isinstance(v, str) else v


# --- engine actions ----------------------------------------------------------------------
@dataclass(frozen=True)
class Bootstrap(Action):
    member: str


@dataclass(frozen=True)
class Clone(Action):
    """Seed an empty member from the primary (a re-seed when `reseed`)."""

    member: str
    source: str
    system_identifier: str
    slot: str
    reseed: bool


@dataclass(frozen=True)
class Follow(Action):
    """Point a standby at `upstream`; None stops it following anyone."""

    member: str
    upstream: str | None
    slot: str


@dataclass(frozen=True)
class Promote(Action):
    """Promote a standby. `synchronous_standby_names` is put in force on it *before*
    `pg_promote`, so its first write as a primary already waits for a standby."""

    member: str
    synchronous_standby_names: str = ""


@dataclass(frozen=True)
class Demote(Action):
    member: str


@dataclass(frozen=True)
class EnsureSlots(Action):
    member: str
    slots: tuple[str, ...]


@dataclass(frozen=True)
class StartBaseBackup(Action):
    """A base backup of this member to spec.backup's archive, in the background."""

    member: str


@dataclass(frozen=True)
class SwitchWal(Action):
    """Close the primary's current WAL segment, so the segment a standby's base backup
    ended in gets archived and the backup completes."""

    member: str


@dataclass(frozen=True)
class RenewCertificate(Action):
    """Hand a running member the server certificate of the current period (shoal/tls.py);
    the agent loads it with a reload."""

    member: str


@dataclass(frozen=True)
class Configure(Action):
    member: str
    parameters: tuple[tuple[str, str], ...]
    synchronous_standby_names: str
