"""Planned switchover: `shoal switchover NAME` -> first acknowledged write on the new primary,
seen by the same real client as `bench.failover` (a container on the database's network
inserting as fast as it can through the multi-host URI), and the operator's own phases
(`status.last_failover`).

    python -m bench.switchover [--runs 10]
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from bench import common
from bench.common import log, ok_runs, runs_summary, wait_until
from bench.failover import Writer, first_write, series, settled, writing


def one_run(db: str, writer: Writer, i: int) -> dict[str, Any]:
    s, _ = wait_until(lambda: settled(db), 300, f"{db} settled before run {i}")
    old = s["primary"]
    writing(writer)
    t0 = time.time()
    proc = common.shoal("switchover", db)
    if proc.returncode != 0:
        raise RuntimeError(f"shoal switchover failed: {proc.stderr.strip()}")
    first = first_write(writer, t0, old, 120, "first write on the new primary")
    t_ack = first.t_ack
    _, t_settled = wait_until(lambda: settled(db), 300, f"{db} settled after the switchover")
    doc = common.status(db)
    phases = common.timeline_phases(doc, "switchover", old, t0)
    phases["first acknowledged write"] = round(t_ack - t0, 3)
    run = {
        "run": i,
        "old_primary": old,
        "new_primary_seen_by_client": first.host,
        "new_primary_in_status": doc.get("primary"),
        "switchover_seconds": round(t_ack - t0, 4),
        "write_gap_seconds": first.gap,
        "settled_seconds": round(t_settled - t0, 3),
        "phases_after_request": phases,
        "client_errors": writer.errors_between(t0, t_ack)[:3],
    }
    log(
        f"run {i}: {old} -> {first.host}: first write after {run['switchover_seconds']:.2f}s "
        f"(gap {run['write_gap_seconds']}s); "
        + ", ".join(f"{k} +{v:.2f}" for k, v in phases.items())
    )
    return run


def main() -> None:
    args = common.runs_parser(__doc__, runs=10, pause=2.0).parse_args()
    info = common.machine()
    db = common.unique("benchsw")
    log(f"creating {db}")
    common.create(db, common.declaration(db, 3, args.memory, args.cpus))
    runs, _, acked = series(db, args.runs * 300, partial(one_run, db), args.runs, args.pause)
    ok = ok_runs(runs)
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
        "switchover_seconds": runs_summary(ok, "switchover_seconds"),
        "write_gap_seconds": runs_summary(ok, "write_gap_seconds"),
        "phases_after_request": common.phase_summaries(ok, "phases_after_request"),
        "failed_runs": len(runs) - len(ok),
        "acknowledged_writes": acked,
        "runs": runs,
    }
    common.write_result("switchover", doc)
    print(
        common.spread(
            "switchover (request -> first acked write on the new primary)",
            doc["switchover_seconds"],
        )
    )
    print(common.spread("write gap", doc["write_gap_seconds"]))


if __name__ == "__main__":
    main()
