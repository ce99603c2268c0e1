"""The chaos report: `report.json` (the fields docs/chaos.md lists, plus throughput, latency
percentiles and the lost ids) and `index.html` with a matplotlib timeline (`timeline.png`:
throughput and latency per second, fault windows shaded and labelled)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from shoal.chaos.checker import CheckResult
from shoal.chaos.history import FaultRecord, Op

WRITE_OPS = ("insert", "transfer")


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def per_second(ops: Sequence[Op]) -> list[dict[str, Any]]:
    """One row per second since the first operation: ok/fail/unknown writes, latency p50/max."""
    if not ops:
        return []
    t0 = math.floor(min(o.start for o in ops))
    rows: dict[int, dict[str, Any]] = {}
    lat: dict[int, list[float]] = {}
    for o in ops:
        if o.op not in WRITE_OPS:
            continue
        s = int(o.end - t0)
        row = rows.setdefault(s, {"t": t0 + s, "ok": 0, "fail": 0, "unknown": 0})
        row[o.outcome] += 1
        if o.outcome == "ok":
            lat.setdefault(s, []).append(o.latency)
    last = int(max(o.end for o in ops) - t0)
    out = []
    for s in range(last + 1):
        row = rows.get(s, {"t": t0 + s, "ok": 0, "fail": 0, "unknown": 0})
        row["latency_p50_ms"] = _ms(percentile(lat.get(s, []), 0.5))
        row["latency_max_ms"] = _ms(max(lat[s]) if s in lat else None)
        out.append(row)
    return out


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def build_report(
    result: CheckResult,
    ops: Sequence[Op],
    meta: dict[str, Any],
    converged: bool,
) -> dict[str, Any]:
    ok_lat = [o.latency for o in ops if o.op in WRITE_OPS and o.outcome == "ok"]
    return {
        **meta,
        "workload": result.workload,
        "valid": result.valid and converged,
        "converged": converged,
        "attempted": result.attempted,
        "acknowledged": result.acknowledged,
        "failed": result.failed,
        "unknown": result.unknown,
        "unknown_present": result.unknown_present,
        "unknown_absent": result.unknown_absent,
        "lost": len(result.lost),
        "lost_ids": result.lost[:1000],
        "lost_by_member": {m: ids[:100] for m, ids in result.lost_by_member.items()},
        "phantom": len(result.phantom),
        "phantom_ids": result.phantom[:1000],
        "diverged": len(result.diverged),
        "diverged_members": result.diverged,
        "reference_member": result.reference_member,
        "bank": {
            "expected_total": result.bank_expected_total,
            "bad_reads": result.bank_bad_reads,
            "bad_members": result.bank_bad_members,
            "broken": result.bank_broken,
        },
        "max_outage_seconds": round(result.max_outage_seconds, 3),
        "max_outage_window": result.max_outage_window,
        "latency_ms": {
            "p50": _ms(percentile(ok_lat, 0.5)),
            "p95": _ms(percentile(ok_lat, 0.95)),
            "p99": _ms(percentile(ok_lat, 0.99)),
            "max": _ms(max(ok_lat) if ok_lat else None),
        },
        "faults": [
            {
                **asdict(f),
                "recovery_seconds": _round(f.recovery_seconds),
                "recovery_after_end_seconds": _round(f.recovery_after_end_seconds),
            }
            for f in result.faults
        ],
        "throughput": per_second(ops),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def plot_timeline(ops: Sequence[Op], faults: Sequence[FaultRecord], path: Path) -> bool:
    """Write the PNG timeline; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = per_second(ops)
    t0 = rows[0]["t"] if rows else 0.0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 6.5), sharex=True)
    xs = [r["t"] - t0 for r in rows]
    ax1.plot(xs, [r["ok"] for r in rows], color="tab:green", label="ok writes/s")
    ax1.plot(xs, [r["fail"] for r in rows], color="tab:red", label="failed/s", lw=0.8)
    ax1.plot(xs, [r["unknown"] for r in rows], color="tab:orange", label="unknown/s", lw=0.8)
    ax1.set_ylabel("operations / s")
    ax1.legend(loc="upper right", fontsize=8)
    lat = [(o.end - t0, o.latency * 1000) for o in ops if o.op in WRITE_OPS and o.outcome == "ok"]
    if lat:
        ax2.scatter([p[0] for p in lat], [p[1] for p in lat], s=2, color="tab:blue")
        ax2.set_yscale("log")
    ax2.set_ylabel("ok write latency (ms)")
    ax2.set_xlabel("seconds since start")
    end_all = xs[-1] if xs else 0.0
    for i, f in enumerate(faults):
        start, end = f.start - t0, (f.end if f.end is not None else t0 + end_all) - t0
        for ax in (ax1, ax2):
            ax.axvspan(start, max(end, start + 0.3), color=f"C{i % 10}", alpha=0.18)
        ax1.annotate(
            f"{f.type}\n{f.target}",
            xy=(start, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=6,
            rotation=90,
            va="top",
            ha="right",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(
    directory: Path,
    report: dict[str, Any],
    ops: Sequence[Op],
    faults: Sequence[FaultRecord],
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    has_plot = plot_timeline(ops, faults, directory / "timeline.png")
    verdict = "PASS" if report.get("valid") else "FAIL"
    keys = [
        "db",
        "workload",
        "acknowledged",
        "failed",
        "unknown",
        "lost",
        "phantom",
        "diverged",
        "converged",
        "max_outage_seconds",
    ]
    summary = "".join(
        f"<tr><th>{k}</th><td>{html.escape(str(report.get(k)))}</td></tr>" for k in keys
    )
    fault_rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(f.get(k)))}</td>"
            for k in ("type", "target", "start", "end", "recovery_seconds")
        )
        + "</tr>"
        for f in report.get("faults", [])
    )
    plot = (
        '<img src="timeline.png" alt="timeline" style="max-width:100%">'
        if has_plot
        else ("<p>(matplotlib not installed: no timeline)</p>")
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>shoal chaos report</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:left}}
.PASS{{color:green}}.FAIL{{color:#b00}}</style></head><body>
<h1>Chaos report: <span class="{verdict}">{verdict}</span></h1>
<table>{summary}</table>
<h2>Timeline</h2>{plot}
<h2>Faults</h2><table><tr><th>type</th><th>target</th><th>start</th><th>end</th>
<th>recovery_seconds</th></tr>{fault_rows}</table>
<p>Full data: <a href="report.json">report.json</a>, <a href="history.jsonl">history.jsonl</a></p>
</body></html>
"""
    (directory / "index.html").write_text(page, encoding="utf-8")
    return directory / "report.json"
