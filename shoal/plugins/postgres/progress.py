"""What the PostgreSQL planner must remember between cycles, and across operators: which
container holds each member's data, which containers were fenced, and the failover or
switchover in flight. Kept in the status label (`status.progress`), so a new operator resumes
exactly where a killed one stopped.

Typed and versioned: `PROGRESS_FORMAT` is written with it; an operator that meets a newer
format, or a record it cannot parse, refuses to plan (`UnreadableProgress`) rather than guess.
The flat string map older operators wrote (`task:<member>`, `fence:<member>` =
`<task>@<stamp>`, `switchover_to`, ...) is read as format 1.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shoal.plugins.base import UnreadablePlanState

PROGRESS_FORMAT = 3  # 3: `released`


class UnreadableProgress(UnreadablePlanState):
    """The stored progress is of a newer format or malformed: nothing may be planned."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FenceRecord(_Model):
    """A fence issued against one container (task) of a member."""

    task_id: str
    stamped: str  # `token:monotonic` of the operator that issued it (view.stamp)


class SwitchoverProgress(_Model):
    from_member: str
    to_member: str
    started: str = ""  # `token:monotonic` (view.stamp); "" until stamped


class PgProgress(_Model):
    format: int = PROGRESS_FORMAT
    # member -> the Swarm task whose container is known to hold the member's data
    data_tasks: dict[str, str] = Field(default_factory=dict)
    fences: dict[str, FenceRecord] = Field(default_factory=dict)
    ever_healthy: bool = False
    # A promotion decided but not yet seen done (adopt() finishes it).
    promoting: str | None = None
    promoting_kind: Literal["failover", "switchover"] = "failover"
    failover_from: str | None = None
    forced_note: str = ""
    switchover: SwitchoverProgress | None = None
    # When, in the failover in flight, every candidate was first seen following nothing
    # (view.stamp): from then on no standby the operator can promote keeps the old
    # primary's lease alive (agent/lease.py, the peers' part).
    released: str = ""

    @classmethod
    def from_status(cls, raw: dict[str, Any]) -> PgProgress:
        if not raw:
            return cls()
        fmt = raw.get("format", 1)
        if not isinstance(fmt, int) or fmt > PROGRESS_FORMAT:
            raise UnreadableProgress(
                f"progress format {fmt!r} is newer than this operator's ({PROGRESS_FORMAT})"
            )
        try:
            if fmt == 1:
                return _from_flat(raw)
            return cls.model_validate(raw)
        except (ValidationError, ValueError, TypeError) as e:
            raise UnreadableProgress(f"progress cannot be read: {e}") from None

    def to_status(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def end_promotion(self) -> None:
        self.promoting = None
        self.promoting_kind = "failover"
        self.failover_from = None
        self.forced_note = ""
        self.released = ""


def _from_flat(raw: dict[str, Any]) -> PgProgress:
    """Format 1: the flat string map of earlier operators."""
    p = PgProgress()
    for key, value in raw.items():
        if not isinstance(value, str):
            raise ValueError(f"{key}: not a string")
        kind, sep, member = key.partition(":")
        if sep and kind == "task":
            p.data_tasks[member] = value
        elif sep and kind == "fence":
            task_id, _, stamped = value.partition("@")
            p.fences[member] = FenceRecord(task_id=task_id, stamped=stamped)
    p.ever_healthy = raw.get("ever_healthy") == "1"
    p.promoting = raw.get("promoting") or None
    kind = raw.get("promoting_kind", "failover")
    p.promoting_kind = "switchover" if kind == "switchover" else "failover"
    p.failover_from = raw.get("failover_from") or None
    p.forced_note = raw.get("forced_note", "")
    if raw.get("switchover_to"):
        p.switchover = SwitchoverProgress(
            from_member=raw.get("switchover_from", ""),
            to_member=raw["switchover_to"],
            started=raw.get("switchover_started", ""),
        )
    return p
