"""Planned switchover: `shoal switchover NAME` -> first acknowledged write on the new primary,
seen by the same real client as `bench.failover` (a container on the database's network
inserting as fast as it can through the multi-host URI), and the operator's own phases
(`status.last_failover`).

    python -m bench.switchover [--runs 10]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import (
    apply,
    credentials,
    delete,
    log,
    machine,
    phase_summaries,
    shoal,
    status,
    summary,
    timeline_phases,
    unique,
    wait_until,
    write_result,
)
from bench.common import declaration as make_declaration
from bench.failover import Writer, settled


def one_run(db: str, writer: Writer, i: int) -> dict[str, Any]:
    s, _ = wait_until(lambda: settled(db), 300, f"{db} settled before run {i}")
    old = s["primary"]
    before = writer.acknowledged()
    wait_until(lambda: writer.acknowledged() > before + 50, 60, "writer progress", every=0.1)
    t0 = time.time()
    proc = shoal("switchover", db)
    if proc.returncode != 0:
        raise RuntimeError(f"shoal switchover failed: {proc.stderr.strip()}")
    first, _ = wait_until(
        lambda: writer.first_ok_after(t0, old), 120, "first write on the new primary", 0.05
    )
    t_ack = float(first[2])
    _, t_settled = wait_until(lambda: settled(db), 300, f"{db} settled after the switchover")
    doc = status(db)
    phases = timeline_phases(doc, "switchover", old, t0)
    phases["first acknowledged write"] = round(t_ack - t0, 3)
    last_ok = writer.last_ok_before(float(first[1]))
    run = {
        "run": i,
        "old_primary": old,
        "new_primary_seen_by_client": first[3],
        "new_primary_in_status": doc.get("primary"),
        "switchover_seconds": round(t_ack - t0, 4),
        "write_gap_seconds": round(t_ack - last_ok, 4) if last_ok else None,
        "settled_seconds": round(t_settled - t0, 3),
        "phases_after_request": phases,
        "client_errors": writer.errors_between(t0, t_ack)[:3],
    }
    log(
        f"run {i}: {old} -> {first[3]}: first write after {run['switchover_seconds']:.2f}s "
        f"(gap {run['write_gap_seconds']}s); "
        + ", ".join(f"{k} +{v:.2f}" for k, v in phases.items())
    )
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--memory", default="256M")
    ap.add_argument("--cpus", type=float, default=0.5)
    ap.add_argument("--pause", type=float, default=2.0, help="seconds between runs")
    args = ap.parse_args()
    info = machine()
    db = unique("benchsw")
    log(f"creating {db}")
    proc = apply(make_declaration(db, 3, args.memory, args.cpus), wait=True, timeout=300)
    if proc.returncode != 0:
        delete(db)
        raise SystemExit(f"apply {db} failed: {proc.stderr}")
    writer = Writer(db, credentials(db), seconds=args.runs * 300)
    runs: list[dict[str, Any]] = []
    try:
        for i in range(1, args.runs + 1):
            try:
                runs.append(one_run(db, writer, i))
            except (TimeoutError, RuntimeError) as e:
                log(f"run {i} failed, stopping: {e}")
                runs.append({"run": i, "error": str(e)})
                break
            time.sleep(args.pause)
        acked = writer.acknowledged()
    finally:
        writer.stop()
        log(f"deleting {db}")
        delete(db)
    ok = [r for r in runs if "error" not in r]
    doc: dict[str, Any] = {
        "machine": info,
        "config": {
            "runs": args.runs,
            "members": 3,
            "durability": "sync",
            "resources": {"memory": args.memory, "cpus": args.cpus},
            "client": "as bench.failover (shoal/plugins/postgres/netclients.py, transitions)",
            "clock": "host time.time() before `shoal switchover` vs writer time.time() at ack",
        },
        "switchover_seconds": summary([r["switchover_seconds"] for r in ok]),
        "write_gap_seconds": summary(
            [r["write_gap_seconds"] for r in ok if r["write_gap_seconds"] is not None]
        ),
        "phases_after_request": phase_summaries(ok, "phases_after_request"),
        "failed_runs": len(runs) - len(ok),
        "acknowledged_writes": acked,
        "runs": runs,
    }
    write_result("switchover", doc)
    s, g = doc["switchover_seconds"], doc["write_gap_seconds"]
    print(
        f"switchover (request -> first acked write on the new primary): median {s['median']}s "
        f"p95 {s['p95']}s n={s['n']}\nwrite gap: median {g['median']}s p95 {g['p95']}s"
    )


if __name__ == "__main__":
    main()
