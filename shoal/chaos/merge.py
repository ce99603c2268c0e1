"""`shoal chaos report merge DIR...`: add several runs' reports up (a soak split over
several runs). Pure: documents in, one document out; reading the files is `load_reports`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from statistics import median
from typing import Any

from shoal.chaos.report import percentile

SUMMED = ("attempted", "acknowledged", "failed", "unknown", "lost", "phantom", "diverged")


class ReportError(ValueError):
    """A report directory that cannot be read; the message names it."""


def load_reports(dirs: Sequence[Path]) -> list[dict[str, Any]]:
    if not dirs:
        raise ReportError("no report directory given")
    docs = []
    for d in dirs:
        path = d / "report.json" if d.is_dir() else d
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ReportError(f"{d}: no readable report.json ({e})") from None
        if not isinstance(doc, dict) or not all(k in doc for k in ("acknowledged", "faults")):
            raise ReportError(f"{d}: report.json is not a chaos report")
        docs.append(doc)
    return docs


def recovery_table(faults: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per fault type: injections, recovered, median / p95 / max recovery seconds."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for f in faults:
        by_type.setdefault(str(f.get("type", "?")), []).append(f)
    rows = []
    for kind in sorted(by_type):
        times = [float(f["recovery_seconds"]) for f in by_type[kind]
                 if f.get("recovery_seconds") is not None]  # fmt: skip
        rows.append(
            {
                "type": kind,
                "injections": len(by_type[kind]),
                "recovered": len(times),
                "median_recovery_seconds": round(median(times), 3) if times else None,
                "p95_recovery_seconds": _r(percentile(times, 0.95)),
                "max_recovery_seconds": round(max(times), 3) if times else None,
            }
        )
    return rows


def merge_reports(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    faults = [{**f, "run_id": d.get("run_id")} for d in docs for f in d.get("faults") or []]
    merged: dict[str, Any] = {k: sum(int(d.get(k) or 0) for d in docs) for k in SUMMED}
    merged.update(
        runs=[
            {k: d.get(k) for k in ("run_id", "db", "suite", "started", "valid", "lost")}
            for d in docs
        ],
        valid=all(bool(d.get("valid")) for d in docs),
        max_outage_seconds=max(
            (float(d.get("max_outage_seconds") or 0) for d in docs), default=0.0
        ),
        lost_ids={str(d.get("run_id")): d.get("lost_ids") or [] for d in docs if d.get("lost")},
        faults=faults,
        recovery=recovery_table(faults),
    )
    return merged


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
