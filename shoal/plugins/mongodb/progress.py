"""What the MongoDB planner remembers between cycles and across operators, kept in
`status.progress`: which container holds each member's data, members being re-seeded, the
fences issued, and the election last seen. Typed and versioned like PostgreSQL's
(plugins/postgres/progress.py): a newer format or a malformed record is refused, and the
operator then plans nothing for the database (`UnreadablePlanState`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shoal.plugins.base import UnreadablePlanState

PROGRESS_FORMAT = 1


class UnreadableProgress(UnreadablePlanState):
    """The stored progress is of a newer format or malformed: nothing may be planned."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FenceRecord(_Model):
    """A fence issued against one container (task) of a member."""

    task_id: str
    stamped: str  # `token:monotonic` of the operator that issued it (view.stamp)
    kind: Literal["stepdown", "replace"]


class MongoProgress(_Model):
    format: int = PROGRESS_FORMAT
    engine: Literal["mongodb"] = "mongodb"  # marks the progress as this plugin's
    # member -> the Swarm task whose container is known to hold the member's data
    data_tasks: dict[str, str] = Field(default_factory=dict)
    # member -> the task of its empty replacement, counted once as a re-seed
    reseeding: dict[str, str] = Field(default_factory=dict)
    fences: dict[str, FenceRecord] = Field(default_factory=dict)
    # The electionId of the newest primary seen: another one is an election.
    election_id: str | None = None
    ever_healthy: bool = False

    @classmethod
    def from_status(cls, raw: dict[str, Any]) -> MongoProgress:
        if not raw:
            return cls()
        fmt = raw.get("format", 1)
        if not isinstance(fmt, int) or fmt > PROGRESS_FORMAT:
            raise UnreadableProgress(
                f"progress format {fmt!r} is newer than this operator's ({PROGRESS_FORMAT})"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise UnreadableProgress(f"progress cannot be read: {e}") from None

    def to_status(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
