"""What the PostgreSQL plugin observes of a member and the engine actions it can plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.plugins.base import Action


def setting_text(v: str | int | float | bool) -> str:
    """A declared parameter as PostgreSQL's configuration text (booleans as on/off); the one
    conversion used for both the bootstrap parameters and later reconfiguration."""
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


@dataclass(frozen=True)
class PgProbe:
    """A member agent's `GET /state`, typed. LSNs are byte positions."""

    state: str  # empty | bootstrapping | cloning | running | stopped | failed
    role: str | None = None  # primary | standby
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
    parameters: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    task_id: str | None = None  # the Swarm task of the container that answered
    # A primary's timeline history: (ancestor timeline, LSN where it ended), oldest first.
    history: tuple[tuple[int, int], ...] = ()
    # A primary's role- or database-level settings that weaken durability ("app in every
    # database: synchronous_commit"): reset by the next Configure.
    durability_overrides: tuple[str, ...] = ()
    # The serial of the TLS certificate PostgreSQL serves; None without TLS.
    certificate_serial: int | None = None
    # A standby told to follow `upstream` that has not streamed from it for this long, by
    # its agent's clock (0: streaming, or following nobody). Its WAL may be gone upstream.
    stalled_seconds: float = 0.0

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
    def from_json(d: dict[str, Any]) -> PgProbe:
        def opt_int(v: Any) -> int | None:
            return int(v) if v is not None else None

        slots = d.get("slots") or []
        return PgProbe(
            state=str(d.get("state", "failed")),
            role=d.get("role"),
            system_identifier=(
                str(d["system_identifier"]) if d.get("system_identifier") is not None else None
            ),
            timeline=opt_int(d.get("timeline")),
            wal_lsn=opt_int(d.get("wal_lsn")),
            replay_lsn=opt_int(d.get("replay_lsn")),
            receiving=bool(d.get("receiving", False)),
            upstream=d.get("upstream") or None,
            slots=tuple(sorted(str(s["name"]) if isinstance(s, dict) else str(s) for s in slots)),
            synchronous_standby_names=str(d.get("synchronous_standby_names") or ""),
            lag_seconds=float(d["lag_seconds"]) if d.get("lag_seconds") is not None else None,
            fence_token=int(d.get("fence_token") or 0),
            parameters={str(k): str(v) for k, v in (d.get("parameters") or {}).items()},
            error=d.get("error"),
            task_id=str(d["task_id"]) if d.get("task_id") else None,
            durability_overrides=tuple(str(x) for x in d.get("durability_overrides") or []),
            history=tuple(
                (int(h[0]), int(h[1]))
                for h in d.get("history") or []
                if isinstance(h, list | tuple) and len(h) == 2
            ),
            certificate_serial=_hex_or_none(d.get("certificate_serial")),
            stalled_seconds=float(d.get("stalled_seconds") or 0.0),
        )


def _hex_or_none(v: Any) -> int | None:
    try:
        return int(str(v), 16) if v is not None else None
    except ValueError:
        return None


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
class RenewCertificate(Action):
    """Hand a running member the server certificate of the current period (shoal/tls.py);
    the agent loads it with a reload."""

    member: str


@dataclass(frozen=True)
class Configure(Action):
    member: str
    parameters: tuple[tuple[str, str], ...]
    synchronous_standby_names: str
