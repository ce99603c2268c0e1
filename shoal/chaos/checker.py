"""The checker (pure): decide from a history and the final reads of every member whether the
database kept its promises, and measure outages and recoveries.

- lost:     acknowledged inserts missing on the primary or on any member;
- phantom:  rows present that were never attempted, or whose insert certainly failed
            (an `unknown` insert may be present or absent);
- diverged: members that, after convergence, do not hold what the reference member holds
            (the primary when readable, else the most common content); an unreadable member
            counts as diverged;
- bank:     every successful read of the total and every member's final total equals the
            initial total;
- outages:  longest gap between consecutive acknowledged writes, or between the start of a
            fault and the next acknowledged write that started after it;
- recovery: per fault, from injection to the end of the first acknowledged write that
            started after it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.chaos.history import FaultRecord, Op

WRITE_OPS = frozenset({"insert", "transfer"})


@dataclass(frozen=True)
class MemberRead:
    """What one member held at the end; `ids`/`balances` are None when it could not be read."""

    ids: frozenset[int] | None = None
    balances: Mapping[int, int] | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MemberRead:
        ids = d.get("ids")
        bal = d.get("balances")
        return cls(
            ids=None if ids is None else frozenset(int(i) for i in ids),
            balances=None if bal is None else {int(k): int(v) for k, v in bal.items()},
            error=d.get("error"),
        )


@dataclass(frozen=True)
class FaultOutcome:
    type: str
    target: str
    start: float
    end: float | None
    recovery_seconds: float | None  # None: no acknowledged write after the injection
    recovery_after_end_seconds: float | None


@dataclass
class CheckResult:
    workload: str
    attempted: int = 0
    acknowledged: int = 0
    failed: int = 0
    unknown: int = 0
    lost: list[int] = field(default_factory=list)
    lost_by_member: dict[str, list[int]] = field(default_factory=dict)
    phantom: list[int] = field(default_factory=list)
    unknown_present: int = 0
    unknown_absent: int = 0
    diverged: list[str] = field(default_factory=list)
    reference_member: str | None = None
    bank_expected_total: int | None = None
    bank_bad_reads: int = 0
    bank_bad_members: dict[str, int] = field(default_factory=dict)
    max_outage_seconds: float = 0.0
    max_outage_window: tuple[float, float] | None = None
    faults: list[FaultOutcome] = field(default_factory=list)

    @property
    def bank_broken(self) -> bool:
        return self.bank_bad_reads > 0 or bool(self.bank_bad_members)

    @property
    def valid(self) -> bool:
        return not self.lost and not self.diverged and not self.bank_broken


def _ok_writes(ops: Iterable[Op]) -> list[Op]:
    return sorted((o for o in ops if o.op in WRITE_OPS and o.outcome == "ok"), key=lambda o: o.end)


def _first_ok_after(writes: Sequence[Op], t: float) -> Op | None:
    """The acknowledged write that started at or after `t` and ended first."""
    best: Op | None = None
    for o in writes:
        if o.start >= t and (best is None or o.end < best.end):
            best = o
    return best


def outages(ops: Sequence[Op], faults: Sequence[FaultRecord] = ()) -> list[tuple[float, float]]:
    """Windows without an acknowledged write: gaps between consecutive acknowledged writes,
    and each fault's start to the next acknowledged write (or to the end of the history)."""
    if not ops:
        return []
    writes = _ok_writes(ops)
    end_of_history = max(o.end for o in ops)
    windows: list[tuple[float, float]] = []
    first_start = min(o.start for o in ops)
    if writes:
        windows.append((first_start, writes[0].end))
        windows.extend((a.end, b.end) for a, b in itertools.pairwise(writes))
    else:
        windows.append((first_start, end_of_history))
    for f in faults:
        nxt = _first_ok_after(writes, f.start)
        windows.append((f.start, nxt.end if nxt else max(end_of_history, f.start)))
    return windows


def _reference(reads: Mapping[str, MemberRead], primary: str | None) -> str | None:
    readable = {m: r for m, r in reads.items() if r.error is None and r.ids is not None}
    if primary in readable:
        return primary
    if not readable:
        return None
    counts = Counter(_content(r) for r in readable.values())
    common = counts.most_common(1)[0][0]
    return sorted(m for m, r in readable.items() if _content(r) == common)[0]


def _content(r: MemberRead) -> tuple[frozenset[int] | None, tuple[tuple[int, int], ...]]:
    return r.ids, tuple(sorted((r.balances or {}).items()))


def _same(a: MemberRead, b: MemberRead) -> bool:
    return a.ids == b.ids and dict(a.balances or {}) == dict(b.balances or {})


def check(
    ops: Sequence[Op],
    reads: Mapping[str, MemberRead],
    *,
    workload: str = "set",
    primary: str | None = None,
    faults: Sequence[FaultRecord] = (),
    bank_total: int | None = None,
) -> CheckResult:
    res = CheckResult(workload=workload)
    writes = [o for o in ops if o.op in WRITE_OPS]
    res.attempted = len(writes)
    res.acknowledged = sum(o.outcome == "ok" for o in writes)
    res.failed = sum(o.outcome == "fail" for o in writes)
    res.unknown = sum(o.outcome == "unknown" for o in writes)

    # Convergence: everybody must hold what the reference holds.
    ref_name = _reference(reads, primary)
    res.reference_member = ref_name
    for m in sorted(reads):
        r = reads[m]
        unreadable = r.error is not None or r.ids is None
        if ref_name is None or unreadable or not _same(r, reads[ref_name]):
            res.diverged.append(m)

    if workload == "set":
        inserts = [o for o in ops if o.op == "insert"]
        acked = {int(o.key) for o in inserts if o.outcome == "ok"}
        failed = {int(o.key) for o in inserts if o.outcome == "fail"} - acked
        unknown = {int(o.key) for o in inserts if o.outcome == "unknown"} - acked
        attempted = acked | failed | unknown
        lost: set[int] = set()
        present: set[int] = set()
        for m, r in sorted(reads.items()):
            if r.ids is None:
                continue
            missing = sorted(acked - r.ids)
            if missing:
                res.lost_by_member[m] = missing
                lost.update(missing)
            present |= r.ids
        res.lost = sorted(lost)
        res.phantom = sorted((present - attempted) | (present & failed))
        res.unknown_present = len(unknown & present)
        res.unknown_absent = len(unknown - present)
    else:
        res.bank_expected_total = bank_total
        if bank_total is not None:
            res.bank_bad_reads = sum(
                1
                for o in ops
                if o.op == "read"
                and o.outcome == "ok"
                and o.value is not None
                and int(o.value) != bank_total
            )
            for m, r in sorted(reads.items()):
                if r.balances is not None and sum(r.balances.values()) != bank_total:
                    res.bank_bad_members[m] = sum(r.balances.values())

    windows = outages(ops, faults)
    if windows:
        longest = max(windows, key=lambda w: w[1] - w[0])
        res.max_outage_seconds = max(0.0, longest[1] - longest[0])
        res.max_outage_window = longest
    ok = _ok_writes(ops)
    for f in faults:
        in_effect = float(f.detail.get("in_effect", f.start))
        nxt = _first_ok_after(ok, in_effect)
        after_end = _first_ok_after(ok, f.end) if f.end is not None else None
        res.faults.append(
            FaultOutcome(
                type=f.type,
                target=f.target,
                start=f.start,
                end=f.end,
                recovery_seconds=None if nxt is None else nxt.end - f.start,
                recovery_after_end_seconds=(
                    None if after_end is None or f.end is None else after_end.end - f.end
                ),
            )
        )
    return res
