"""Node loss on a lab swarm: kill (or cut off) the primary's node -> first acknowledged write
on the new primary, and -> `shoal status` Healthy again with the lost member re-created on
another node. A real client writes from a container on a surviving manager.

    python -m bench.node_loss [--runs 5] [--fault kill|partition]

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

from bench.common import (
    apply,
    credentials,
    delete,
    docker,
    log,
    machine,
    shoal,
    summary,
    unique,
    wait_until,
    write_result,
)
from bench.common import declaration as make_declaration
from bench.failover import Writer, settled
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


def away_from_the_operator(db: str, s: dict[str, Any]) -> dict[str, Any]:
    """Switch over when the primary shares the operator's node (see the module docstring)."""
    op = operator_node()
    nodes = {m["name"]: m.get("node") for m in s["members"]}
    if nodes.get(s["primary"]) != op:
        return s
    target = next(n for n, h in nodes.items() if h != op and n != s["primary"])
    proc = shoal("switchover", db, "--to", target)
    if proc.returncode != 0:
        raise RuntimeError(f"switchover to {target} failed: {proc.stderr.strip()}")
    s2, _ = wait_until(
        lambda: (x := spread_settled(db)) and x["primary"] == target and x, 300, "switchover"
    )
    return dict(s2)


def one_run(db: str, creds: dict[str, Any], fault: str, i: int) -> dict[str, Any]:
    managers = [n["name"] for n in lab_nodes() if n["role"] == "manager"]
    os.environ["DOCKER_HOST"] = node_host(managers[0])
    s, _ = wait_until(lambda: spread_settled(db), 600, f"{db} settled before run {i}")
    s = away_from_the_operator(db, s)
    old = s["primary"]
    victim = next(m["node"] for m in s["members"] if m["name"] == old)
    op = operator_node()
    client = next(n for n in managers if n not in (victim,))
    os.environ["DOCKER_HOST"] = node_host(client)
    writer = Writer(db, creds, seconds=900)
    try:
        wait_until(lambda: writer.acknowledged() > 50, 120, "writer progress", every=0.1)
        t_fault = time.time()
        proc = shoal("lab", "fault", fault, victim)
        if proc.returncode != 0:
            raise RuntimeError(f"lab fault {fault} {victim}: {proc.stderr.strip()}")
        first, _ = wait_until(
            lambda: writer.first_ok_after(t_fault, old), 600, "first write on a new primary", 0.1
        )
        t_ack = float(first[2])

        def back() -> dict[str, Any] | None:
            x = spread_settled(db)
            return x if x and victim not in {m.get("node") for m in x["members"]} else None

        after, t_healthy = wait_until(back, 900, f"{db} Healthy without {victim}")
    finally:
        writer.stop()
        shoal("lab", "heal", victim)
    run = {
        "run": i,
        "fault": fault,
        "node": victim,
        "operator_node": op,
        "client_node": client,
        "old_primary": old,
        "new_primary": after["primary"],
        "first_acknowledged_write_seconds": round(t_ack - t_fault, 3),
        "healthy_seconds": round(t_healthy - t_fault, 3),
    }
    log(f"run {i}: {fault} {victim} ({old}); first write after "
        f"{run['first_acknowledged_write_seconds']:.1f}s on {first[3]}; Healthy after "
        f"{run['healthy_seconds']:.1f}s")  # fmt: skip
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fault", choices=("kill", "partition"), default="kill")
    ap.add_argument("--unreachable", type=int, default=5, help="failover.unreachableSeconds")
    args = ap.parse_args()
    managers = [n["name"] for n in lab_nodes() if n["role"] == "manager"]
    os.environ["DOCKER_HOST"] = node_host(managers[0])
    info = machine()
    db = unique("benchnode")
    text = make_declaration(db, 3, "256M", 0.5).replace(
        "unreachableSeconds: 10", f"unreachableSeconds: {args.unreachable}"
    )
    proc = apply(text, wait=True, timeout=600)
    if proc.returncode != 0:
        delete(db)
        raise SystemExit(f"apply {db} failed: {proc.stderr}")
    creds = credentials(db)
    runs: list[dict[str, Any]] = []
    stopped: str | None = None
    try:
        for i in range(1, args.runs + 1):
            try:
                runs.append(one_run(db, creds, args.fault, i))
            except (TimeoutError, RuntimeError) as e:
                log(f"run {i} failed, stopping: {e}")
                runs.append({"run": i, "error": str(e)})
                stopped = str(e)
                break
    finally:
        os.environ["DOCKER_HOST"] = node_host(managers[0])
        delete(db)
    ok = [r for r in runs if "error" not in r]
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
        },
        "first_acknowledged_write_seconds": summary(
            [r["first_acknowledged_write_seconds"] for r in ok]
        ),
        "healthy_seconds": summary([r["healthy_seconds"] for r in ok]),
        "failed_runs": len(runs) - len(ok),
        "stopped_early": stopped,
        "runs": runs,
    }
    write_result(f"node_loss_{args.fault}", doc)
    f, h = doc["first_acknowledged_write_seconds"], doc["healthy_seconds"]
    print(
        f"{args.fault} node -> first acked write: median {f['median']}s p95 {f['p95']}s "
        f"n={f['n']}\n{args.fault} node -> Healthy elsewhere: median {h['median']}s n={h['n']}"
    )


if __name__ == "__main__":
    main()
