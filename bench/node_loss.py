"""Node loss on a lab swarm: kill (or cut off) the primary's node -> first acknowledged write
on the new primary, and -> `shoal status` Healthy again with the lost member re-created on
another node. A real client writes from a container on a surviving manager.

    python -m bench.node_loss [--runs 5] [--fault kill|partition] [--primary-on-worker]

Needs a lab (`shoal lab up --nodes 4 --managers 3`); DOCKER_HOST is set per step here. The
primary's node is never the operator's: losing both at once is a different measurement
(Swarm restarts the operator first, docs/failure-modes.md property 11). The lab's nodes
and the host share one kernel clock, so the writer's stamps and the fault's compare.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from bench import common
from bench.common import docker, log, shoal, wait_until
from bench.failover import Writer, first_write, settled, writing
from shoal import names
from shoal.lab.model import node_docker_host as node_host


def lab_nodes() -> list[dict[str, Any]]:
    proc = shoal("lab", "ls", "--json")
    if proc.returncode != 0:
        raise SystemExit(f"no lab: {proc.stderr.strip()} (shoal lab up --nodes 4 --managers 3)")
    nodes: list[dict[str, Any]] = json.loads(proc.stdout)
    return nodes


def operator_node() -> str:
    out = docker("service", "ps", names.OPERATOR_SERVICE, "--filter", "desired-state=running",
                 "--format", "{{.Node}}")  # fmt: skip
    return out.split()[0] if out.split() else ""


def spread_settled(db: str) -> dict[str, Any] | None:
    s = settled(db)
    if s is None:
        return None
    hosts = {m.get("node") for m in s["members"]}
    return s if None not in hosts and len(hosts) == len(s["members"]) else None


def place_primary(db: str, s: dict[str, Any], on_worker: bool) -> dict[str, Any]:
    """Switch over when the primary shares the operator's node (see the module docstring),
    or, with `on_worker`, when it is on a manager while a member is on a worker node:
    cutting off a manager may cost the swarm its Raft leader, for a minute at times, which
    is Swarm's time, not the failover's."""
    op = operator_node()
    nodes = {m["name"]: m.get("node") for m in s["members"]}
    workers = {n["name"] for n in lab_nodes() if n["role"] != "manager"}
    allowed = [n for n, h in nodes.items() if h != op]
    preferred = [n for n in allowed if nodes[n] in workers] if on_worker else allowed
    choices = preferred or allowed  # no member on a worker: any node but the operator's
    if s["primary"] in choices:
        return s
    target = choices[0]
    proc = shoal("switchover", db, "--to", target)
    if proc.returncode != 0:
        raise RuntimeError(f"switchover to {target} failed: {proc.stderr.strip()}")
    s2, _ = wait_until(
        lambda: (x := spread_settled(db)) and x["primary"] == target and x, 300, "switchover"
    )
    return dict(s2)


def one_run(db: str, creds: dict[str, Any], fault: str, i: int, on_worker: bool) -> dict[str, Any]:
    managers = [n["name"] for n in lab_nodes() if n["role"] == "manager"]
    os.environ["DOCKER_HOST"] = node_host(managers[0])
    s, _ = wait_until(lambda: spread_settled(db), 600, f"{db} settled before run {i}")
    s = place_primary(db, s, on_worker)
    old = s["primary"]
    victim = next(m["node"] for m in s["members"] if m["name"] == old)
    op = operator_node()
    client = next(n for n in managers if n not in (victim,))
    os.environ["DOCKER_HOST"] = node_host(client)
    writer = Writer(db, creds, seconds=900)
    try:
        writing(writer, timeout=120)
        t_fault = time.time()
        proc = shoal("lab", "fault", fault, victim)
        # The fault is in place when the command returns: a partition is a dozen
        # `docker exec iptables` in the node, hooked in last (shoal/lab/model.py).
        t_cut = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"lab fault {fault} {victim}: {proc.stderr.strip()}")
        first = first_write(writer, t_fault, old, 600, "first write on a new primary", 0.1)
        t_ack = first.t_ack

        def back() -> dict[str, Any] | None:
            x = spread_settled(db)
            return x if x and victim not in {m.get("node") for m in x["members"]} else None

        after, t_healthy = wait_until(back, 900, f"{db} Healthy without {victim}")
    finally:
        writer.stop()
        shoal("lab", "heal", victim)
    # The operator's timeline of this failover (status.last_failover): one machine, one
    # clock for the lab's nodes, the operator and this client.
    phases = common.timeline_phases(after, "failover", old, t_fault)
    phases["first acknowledged write"] = round(t_ack - t_fault, 3)
    run = {
        "run": i,
        "fault": fault,
        "node": victim,
        "operator_node": op,
        "client_node": client,
        "old_primary": old,
        "new_primary": after["primary"],
        "first_acknowledged_write_seconds": round(t_ack - t_fault, 3),
        "fault_command_seconds": round(t_cut - t_fault, 3),
        "first_acknowledged_write_after_fault_in_place_seconds": round(t_ack - t_cut, 3),
        "healthy_seconds": round(t_healthy - t_fault, 3),
        "phases_after_fault": phases,
    }
    log(f"run {i}: {fault} {victim} ({old}); first write after "
        f"{run['first_acknowledged_write_seconds']:.1f}s on {first.host}; Healthy after "
        f"{run['healthy_seconds']:.1f}s")  # fmt: skip
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fault", choices=("kill", "partition"), default="kill")
    ap.add_argument("--unreachable", type=int, default=5, help="failover.unreachableSeconds")
    ap.add_argument(
        "--primary-on-worker",
        action="store_true",
        help="before each run, switch the primary to a member on a worker node when one is",
    )
    args = ap.parse_args()
    managers = [n["name"] for n in lab_nodes() if n["role"] == "manager"]
    os.environ["DOCKER_HOST"] = node_host(managers[0])
    info = common.machine()
    db = common.unique("benchnode")
    text = common.declaration(db, 3, "256M", 0.5, unreachable_seconds=args.unreachable)
    common.create(db, text, 600)
    creds = common.credentials(db)
    try:
        runs, stopped = common.repeat(
            lambda i: one_run(db, creds, args.fault, i, args.primary_on_worker), args.runs
        )
    finally:
        os.environ["DOCKER_HOST"] = node_host(managers[0])
        common.delete(db)
    ok = common.ok_runs(runs)
    doc: dict[str, Any] = {
        "machine": info,
        "config": {
            "runs": args.runs,
            "fault": args.fault,
            "lab": f"{len(lab_nodes())} dind nodes, {len(managers)} managers (shoal lab up)",
            "members": 3,
            "durability": "sync",
            "unreachableSeconds": args.unreachable,
            "client": "bench.failover's writer, on a surviving manager",
            "primary_on_worker": args.primary_on_worker,
        },
        "first_acknowledged_write_seconds": common.runs_summary(
            ok, "first_acknowledged_write_seconds"
        ),
        "fault_command_seconds": common.runs_summary(ok, "fault_command_seconds"),
        "first_acknowledged_write_after_fault_in_place_seconds": common.runs_summary(
            ok, "first_acknowledged_write_after_fault_in_place_seconds"
        ),
        "healthy_seconds": common.runs_summary(ok, "healthy_seconds"),
        "phases_after_fault": common.phase_summaries(ok, "phases_after_fault"),
        "failed_runs": len(runs) - len(ok),
        "stopped_early": stopped,
        "runs": runs,
    }
    common.write_result(f"node_loss_{args.fault}", doc)
    f, h = doc["first_acknowledged_write_seconds"], doc["healthy_seconds"]
    print(common.spread(f"{args.fault} node -> first acked write", f))
    print(common.spread(f"{args.fault} node -> Healthy elsewhere", h))
    print(
        common.spread(
            f"{args.fault} in place -> first acked write",
            doc["first_acknowledged_write_after_fault_in_place_seconds"],
        )
    )
    print(common.spread("shoal lab fault itself", doc["fault_command_seconds"]))
    print("phases (seconds after the fault, median):")
    for name, sm in doc["phases_after_fault"].items():
        print(f"  {name:<40} {sm['median']:.2f}")


if __name__ == "__main__":
    main()
