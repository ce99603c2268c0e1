"""Failover time: `docker kill` of the primary's container -> first acknowledged write on the
new primary, seen by a real client inserting as fast as it can from a container on the
database's overlay network; and kill -> `shoal status` Healthy again. With `--fault pause`
the primary is frozen (`docker pause`) instead: Swarm still says it runs, so the operator
waits `--unreachable` seconds and fences it before promoting.

    python -m bench.failover [--runs 10] [--fault kill|pause] [--unreachable 10] [--keep]

Host and writer container share one kernel clock (single machine), so the writer's
`time.time()` stamps and the kill stamp taken here are directly comparable.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    apply,
    client_image,
    container_of,
    credentials,
    delete,
    docker,
    healthy,
    log,
    machine,
    phase_summaries,
    status,
    summary,
    timeline_phases,
    unique,
    wait_until,
    write_result,
)
from bench.common import declaration as make_declaration
from shoal import names
from shoal.plugins.postgres.netclients import launch


@dataclass
class WriterEvents:
    lines: list[list[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[list[str]]:
        with self.lock:
            return list(self.lines)


class Writer:
    def __init__(
        self, db: str, creds: dict[str, Any], seconds: float, network: str | None = None
    ) -> None:
        self.name = f"{db}-writer"
        self.events = WriterEvents()
        # The writer prints only transitions (shoal/plugins/postgres/netclients.py, "transitions").
        self.proc = launch(
            network or names.database_network(db),
            client_image(),
            "transitions",
            {"uri": creds["uri"], "ca": creds["ca"], "seconds": seconds},
            self.name,
            "bench-writer",
            stderr=subprocess.DEVNULL,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split(maxsplit=4)
            if parts:
                with self.events.lock:
                    self.events.lines.append(parts)

    def acknowledged(self) -> int:
        for ev in reversed(self.events.snapshot()):
            if ev[0] == "beat":
                return int(ev[2])
        return 0

    def first_ok_after(self, t: float, not_host: str) -> list[str] | None:
        for ev in self.events.snapshot():
            if ev[0] == "ok" and float(ev[2]) > t and ev[3] != not_host:
                return ev
        return None

    def last_ok_before(self, t: float) -> float | None:
        """Ack time of the last write before the outage that ends with the write sent at t
        (it may be acknowledged by the old primary a little after `docker kill` began)."""
        best: float | None = None
        for ev in self.events.snapshot():
            if ev[0] in ("ok", "last") and float(ev[2]) < t:
                best = float(ev[2])
        return best

    def between(self, a: float, b: float) -> list[str]:
        """The writer's transition lines in [a, b] (for the record)."""
        out = []
        for ev in self.events.snapshot():
            t = float(ev[1]) if ev[0] in ("err", "beat") else float(ev[2])
            if a <= t <= b and ev[0] != "beat":
                out.append(" ".join(ev)[:160])
        return out

    def errors_between(self, a: float, b: float) -> list[str]:
        return [
            ev[2] if len(ev) > 2 else ""
            for ev in self.events.snapshot()
            if ev[0] == "err" and a <= float(ev[1]) <= b
        ]

    def stop(self) -> None:
        docker("rm", "-f", self.name, check=False)
        self.proc.wait(timeout=30)


def settled(db: str) -> dict[str, Any] | None:
    """Healthy, one primary, every other member a streaming replica with ~no lag."""
    s = status(db)
    if not healthy(s, 3):
        return None
    roles = sorted(m.get("role") for m in s["members"])
    if roles != ["primary", "replica", "replica"]:
        return None
    if any((m.get("lag_bytes") or 0) > 1024 * 1024 for m in s["members"]):
        return None
    return s


def one_run(db: str, writer: Writer, i: int, fault: str = "kill") -> dict[str, Any]:
    s, _ = wait_until(lambda: settled(db), 300, f"{db} settled before run {i}")
    old = s["primary"]
    cid = container_of(old)
    if not cid:
        raise RuntimeError(f"no container for primary {old}")
    # the writer must be writing before the kill
    before = writer.acknowledged()
    wait_until(lambda: writer.acknowledged() > before + 50, 60, "writer progress", every=0.1)
    t_kill = time.time()
    docker(fault, cid)
    t_killed = time.time()
    first, _ = wait_until(
        lambda: writer.first_ok_after(t_kill, old), 300, "first write on a new primary", 0.05
    )
    t_ack = float(first[2])
    _, t_healthy = wait_until(lambda: settled(db), 300, f"{db} Healthy after the {fault}")
    if fault == "pause":  # fenced: its container is being removed, if it is not gone yet
        docker("unpause", cid, check=False)
    healthy_doc = status(db)
    last_ok = writer.last_ok_before(float(first[1]))
    phases = timeline_phases(healthy_doc, "failover", old, t_kill)
    phases["first acknowledged write"] = round(t_ack - t_kill, 3)
    run = {
        "run": i,
        "killed_member": old,
        "killed_container": cid,
        "new_primary_seen_by_client": first[3],
        "new_primary_in_status": healthy_doc.get("primary"),
        "t_kill": t_kill,
        "docker_kill_seconds": round(t_killed - t_kill, 4),
        "failover_seconds": round(t_ack - t_kill, 4),
        "write_gap_seconds": round(t_ack - last_ok, 4) if last_ok else None,
        "healthy_seconds": round(t_healthy - t_kill, 3),
        "acked_by_old_primary_after_kill_began": last_ok is not None and last_ok > t_kill,
        "client_errors": writer.errors_between(t_kill, t_ack)[:3],
        "writer_transitions": writer.between(t_kill - 2, t_ack + 0.1)[:12],
        "phases_after_kill": phases,
    }
    log(
        f"run {i}: killed {old}; first write on {first[3]} after "
        f"{run['failover_seconds']:.2f}s; Healthy after {run['healthy_seconds']:.1f}s; "
        + ", ".join(f"{k} +{v:.2f}" for k, v in phases.items())
    )
    return run


def measure(
    runs_wanted: int,
    memory: str,
    cpus: float,
    pause: float,
    keep: bool = False,
    create_timeout: float = 300,
    fault: str = "kill",
    unreachable: float = 10,
) -> dict[str, Any]:
    """Create a 3-member sync database, kill (or pause) its primary `runs_wanted` times,
    return the result document (also what bench.patroni puts beside Patroni's)."""
    info = machine()
    db = unique("benchfo")
    text = make_declaration(db, 3, memory, cpus, unreachable_seconds=unreachable)
    log(f"creating {db}")
    t0 = time.time()
    proc = apply(text, wait=True, timeout=create_timeout)
    if proc.returncode != 0:
        delete(db)
        raise SystemExit(f"apply {db} failed: {proc.stderr}")
    log(f"{db} Healthy after {time.time() - t0:.1f}s")
    writer = Writer(db, credentials(db), seconds=runs_wanted * 600)
    runs: list[dict[str, Any]] = []
    stopped: str | None = None
    try:
        for i in range(1, runs_wanted + 1):
            try:
                runs.append(one_run(db, writer, i, fault))
            except (TimeoutError, RuntimeError) as e:
                # the database did not recover: later runs would only measure that again
                log(f"run {i} failed, stopping: {e}")
                runs.append({"run": i, "error": str(e)})
                stopped = str(e)
                break
            except KeyboardInterrupt:
                stopped = "interrupted"
                log("interrupted: writing the runs done so far")
                break
            time.sleep(pause)
        acked = writer.acknowledged()
    finally:
        writer.stop()
        if not keep:
            log(f"deleting {db}")
            delete(db)
    ok = [r for r in runs if "error" not in r]
    doc: dict[str, Any] = {
        "machine": info,
        "config": {
            "runs": runs_wanted,
            "members": 3,
            "durability": "sync",
            "fault": f"docker {fault} of the primary's container",
            "unreachable_seconds": unreachable,
            "resources": {"memory": memory, "cpus": cpus},
            "client": "psycopg autocommit INSERT loop, multi-host URI from `shoal credentials` "
            "(target_session_attrs=read-write, connect_timeout=2), 50 ms back-off on error",
            "clock": "host time.time() before `docker kill` vs writer time.time() at ack",
        },
        "failover_seconds": summary([r["failover_seconds"] for r in ok]),
        "write_gap_seconds": summary(
            [r["write_gap_seconds"] for r in ok if r["write_gap_seconds"] is not None]
        ),
        "healthy_seconds": summary([r["healthy_seconds"] for r in ok]),
        "docker_kill_seconds": summary([r["docker_kill_seconds"] for r in ok]),
        "phases_after_kill": phase_summaries(ok, "phases_after_kill"),
        "failed_runs": len(runs) - len(ok),
        "stopped_early": stopped,
        "acknowledged_writes": acked,
        "runs": runs,
    }
    return doc


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # SIGTERM (and SIGINT, which background shells ignore) stop after writing partial results
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--memory", default="256M")
    ap.add_argument("--cpus", type=float, default=0.5)
    ap.add_argument("--pause", type=float, default=3.0, help="seconds between runs")
    ap.add_argument("--keep", action="store_true", help="do not delete the database")
    ap.add_argument("--create-timeout", type=float, default=300)
    ap.add_argument("--fault", choices=("kill", "pause"), default="kill")
    ap.add_argument("--unreachable", type=float, default=10, help="failover.unreachableSeconds")
    args = ap.parse_args()
    doc = measure(
        args.runs, args.memory, args.cpus, args.pause, args.keep, args.create_timeout,
        args.fault, args.unreachable,
    )  # fmt: skip
    write_result("failover" if args.fault == "kill" else f"failover_{args.fault}", doc)
    f, h = doc["failover_seconds"], doc["healthy_seconds"]
    print(
        f"failover (kill -> first acked write): median {f['median']}s p95 {f['p95']}s n={f['n']}\n"
        f"kill -> Healthy: median {h['median']}s p95 {h['p95']}s n={h['n']}"
    )
    print("phases (seconds after the kill, median):")
    for name, sm in doc["phases_after_kill"].items():
        print(f"  {name:<28} {sm['median']}")


if __name__ == "__main__":
    main()
