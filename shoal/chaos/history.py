"""Operation histories (Jepsen style): what every client operation did and when.

One record per operation, serialised as one JSON object per line (JSONL). Times are unix
seconds (float) taken by the client; `outcome` is `ok` (acknowledged), `fail` (certainly
not applied) or `unknown` (a timeout or a dropped connection while committing: it may or
may not have been applied).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

OpKind = Literal["insert", "read", "transfer"]
Outcome = Literal["ok", "fail", "unknown"]
OP_KINDS: frozenset[str] = frozenset({"insert", "read", "transfer"})
OUTCOMES: frozenset[str] = frozenset({"ok", "fail", "unknown"})


@dataclass(frozen=True)
class Op:
    """One completed client operation.

    insert:   key = row id, value = row text
    transfer: key = [from_account, to_account], value = amount
    read:     key = None (set: all ids) or "total" (bank), value = what was read
    """

    process: int
    op: OpKind
    key: Any
    value: Any
    start: float
    end: float
    outcome: Outcome
    error: str | None = None
    host: str | None = None  # the member that served the operation, when known

    @property
    def latency(self) -> float:
        return self.end - self.start

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Op:
        if d.get("op") not in OP_KINDS:
            raise ValueError(f"op must be one of {sorted(OP_KINDS)}, got {d.get('op')!r}")
        if d.get("outcome") not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, got {d.get('outcome')!r}")
        return cls(
            process=int(d["process"]),
            op=d["op"],
            key=d.get("key"),
            value=d.get("value"),
            start=float(d["start"]),
            end=float(d["end"]),
            outcome=d["outcome"],
            error=d.get("error"),
            host=d.get("host"),
        )


@dataclass(frozen=True)
class FaultRecord:
    """One fault injection as the runner performed it."""

    type: str
    target: str
    start: float
    end: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dump_ops(ops: Iterable[Op], out: IO[str]) -> int:
    n = 0
    for op in ops:
        out.write(op.to_json() + "\n")
        n += 1
    return n


def parse_lines(lines: Iterable[str]) -> Iterator[Op]:
    """Parse JSONL; blank lines and lines that are not JSON objects with an `op` are skipped
    (the client's stdout may carry a stray log line), malformed records raise ValueError."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(d, dict) and "op" in d:
            yield Op.from_dict(d)


def load_ops(path: Path) -> list[Op]:
    with path.open(encoding="utf-8") as f:
        return list(parse_lines(f))


def save_ops(ops: Iterable[Op], path: Path) -> int:
    with path.open("w", encoding="utf-8") as f:
        return dump_ops(ops, f)
