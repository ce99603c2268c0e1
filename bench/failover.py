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

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import common
from bench.common import healthy, log, ok_runs, runs_summary, status, wait_until
from shoal import names
from shoal.plugins.postgres.clients import TransitionsWriter


class Writer(TransitionsWriter):
    """The `transitions` client (shoal/plugins/postgres/netclients.py) of `db`, in a
    container of the operator's image on the database's network (or on `network`)."""

    def __init__(
        self, db: str, creds: dict[str, Any], seconds: float, network: str | None = None
    ) -> None:
        cfg = {"uri": creds["uri"], "ca": creds["ca"], "seconds": seconds}
        network = network or names.database_network(db)
        super().__init__(network, common.client_image(), cfg, f"{db}-writer", "bench-writer")

    def stop(self, timeout: float = 30) -> None:
        super().stop(timeout)


def writing(writer: Writer, more: int = 50, timeout: float = 60) -> None:
    """Wait until the writer has `more` writes acknowledged than now: it writes before a
    fault."""
    before = writer.acknowledged()
    wait_until(lambda: writer.acknowledged() > before + more, timeout, "writer progress", 0.1)


@dataclass
class FirstWrite:
    """The first write acknowledged by another primary than the old one after a fault
    (`ok <t_sent> <t_acked> <host> <n>`), and when the last write before it was."""

    line: list[str]
    last_ok: float | None

    @property
    def t_ack(self) -> float:
        return float(self.line[2])

    @property
    def host(self) -> str:
        return self.line[3]

    @property
    def gap(self) -> float | None:
        """Seconds without an acknowledged write."""
        return round(self.t_ack - self.last_ok, 4) if self.last_ok else None


def first_write(
    writer: Writer, t: float, old: str, timeout: float, what: str, every: float = 0.05
) -> FirstWrite:
    first, _ = wait_until(lambda: writer.first_ok_after(t, old), timeout, what, every)
    return FirstWrite(first, writer.last_ok_before(float(first[1])))


def series(
    db: str,
    seconds: float,
    one_run: Callable[[Writer, int], dict[str, Any]],
    runs: int,
    pause: float,
    interruptible: bool = False,
    keep: bool = False,
) -> tuple[list[dict[str, Any]], str | None, int]:
    """`runs` runs of `one_run(writer, i)` (common.repeat) with one writer on `db` for at
    most `seconds`; then the writer is stopped and `db` deleted (unless `keep`). Returns
    the runs, why they stopped early and how many writes the writer had acknowledged."""
    writer = Writer(db, common.credentials(db), seconds)
    try:
        done, stopped = common.repeat(
            lambda i: one_run(writer, i), runs, pause, interruptible=interruptible
        )
        acked = writer.acknowledged()
    finally:
        writer.stop()
        if not keep:
            log(f"deleting {db}")
            common.delete(db)
    return done, stopped, acked


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
    cid = common.container_of(old)
    if not cid:
        raise RuntimeError(f"no container for primary {old}")
    writing(writer)  # the writer must be writing before the kill
    t_kill = time.time()
    common.docker(fault, cid)
    t_killed = time.time()
    first = first_write(writer, t_kill, old, 300, "first write on a new primary")
    t_ack = first.t_ack
    _, t_healthy = wait_until(lambda: settled(db), 300, f"{db} Healthy after the {fault}")
    if fault == "pause":  # fenced: its container is being removed, if it is not gone yet
        common.docker("unpause", cid, check=False)
    healthy_doc = status(db)
    last_ok = first.last_ok
    phases = common.timeline_phases(healthy_doc, "failover", old, t_kill)
    phases["first acknowledged write"] = round(t_ack - t_kill, 3)
    run = {
        "run": i,
        "killed_member": old,
        "killed_container": cid,
        "new_primary_seen_by_client": first.host,
        "new_primary_in_status": healthy_doc.get("primary"),
        "t_kill": t_kill,
        "docker_kill_seconds": round(t_killed - t_kill, 4),
        "failover_seconds": round(t_ack - t_kill, 4),
        "write_gap_seconds": first.gap,
        "healthy_seconds": round(t_healthy - t_kill, 3),
        "acked_by_old_primary_after_kill_began": last_ok is not None and last_ok > t_kill,
        "client_errors": writer.errors_between(t_kill, t_ack)[:3],
        "writer_transitions": writer.between(t_kill - 2, t_ack + 0.1)[:12],
        "phases_after_kill": phases,
    }
    log(
        f"run {i}: killed {old}; first write on {first.host} after "
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
    info = common.machine()
    db = common.unique("benchfo")
    text = common.declaration(db, 3, memory, cpus, unreachable_seconds=unreachable)
    log(f"creating {db}")
    t0 = time.time()
    common.create(db, text, create_timeout)
    log(f"{db} Healthy after {time.time() - t0:.1f}s")
    runs, stopped, acked = series(
        db, runs_wanted * 600, lambda w, i: one_run(db, w, i, fault), runs_wanted, pause,
        interruptible=True, keep=keep,
    )  # fmt: skip
    ok = ok_runs(runs)
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
        "failover_seconds": runs_summary(ok, "failover_seconds"),
        "write_gap_seconds": runs_summary(ok, "write_gap_seconds"),
        "healthy_seconds": runs_summary(ok, "healthy_seconds"),
        "docker_kill_seconds": runs_summary(ok, "docker_kill_seconds"),
        "phases_after_kill": common.phase_summaries(ok, "phases_after_kill"),
        "failed_runs": len(runs) - len(ok),
        "stopped_early": stopped,
        "acknowledged_writes": acked,
        "runs": runs,
    }
    return doc


def main() -> None:
    # SIGTERM (and SIGINT) stop after writing partial results
    common.interrupt_on_signals()
    ap = common.runs_parser(__doc__, runs=10, pause=3.0)
    ap.add_argument("--keep", action="store_true", help="do not delete the database")
    ap.add_argument("--create-timeout", type=float, default=300)
    ap.add_argument("--fault", choices=("kill", "pause"), default="kill")
    ap.add_argument("--unreachable", type=float, default=10, help="failover.unreachableSeconds")
    args = ap.parse_args()
    doc = measure(
        args.runs, args.memory, args.cpus, args.pause, args.keep, args.create_timeout,
        args.fault, args.unreachable,
    )  # fmt: skip
    common.write_result("failover" if args.fault == "kill" else f"failover_{args.fault}", doc)
    print(common.spread("failover (kill -> first acked write)", doc["failover_seconds"]))
    print(common.spread("kill -> Healthy", doc["healthy_seconds"]))
    print("phases (seconds after the kill, median):")
    for name, sm in doc["phases_after_kill"].items():
        print(f"  {name:<28} {sm['median']}")


if __name__ == "__main__":
    main()
