"""Failover side by side: a 3-member Patroni cluster and a 3-member shoal database on the same
swarm, the same writer, the same kill (`docker kill` of the primary's container), in one run.

    python -m bench.patroni [--runs 10]

Patroni 3.0.2 and etcd 3.4 are Debian's packages (`bench/patroni/Dockerfile`, on shoal's own
base image), one Swarm service per member plus one for etcd, no volumes either, each member
limited like shoal's (256M, 0.5 CPU). Patroni runs with the fastest settings its
documentation allows ("Dynamic Configuration Settings": `ttl` minimum 20, `loop_wait`
minimum 1, `retry_timeout` minimum 3, and `loop_wait + 2 * retry_timeout <= ttl`) and
`synchronous_mode: true`, shoal with its defaults and `durability: sync`. The writer is the
same client (shoal/plugins/postgres/netclients.py, "transitions"), and it finds the primary
the same way for both: a multi-host URI with `target_session_attrs=read-write`.

A killed Patroni member is not restarted by Swarm while its failover is measured (restart
condition none), then re-created empty, as Swarm does for shoal, and re-seeded by Patroni
(pg_basebackup) before the next run.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench import common, failover
from bench.common import container_of, docker, log, wait_until

IMAGE = "shoal/patroni-bench:15"
SCOPE = "benchpat"
NETWORK = "benchpat-net"
ETCD = "benchpat-etcd"
MEMBERS = tuple(f"benchpat-{i}" for i in range(1, 4))
PASSWORD = "bench-only-password"
# The fastest settings Patroni documents as allowed (and their rule holds: 1 + 2*3 <= 20).
DCS = {"ttl": 20, "loop_wait": 1, "retry_timeout": 3, "synchronous_mode": True}


def patroni_config(member: str) -> str:
    """The member's patroni.yml (JSON is YAML)."""
    cfg = {
        "scope": SCOPE,
        "name": member,
        "restapi": {"listen": "0.0.0.0:8008", "connect_address": f"{member}:8008"},
        "etcd3": {"hosts": f"{ETCD}:2379"},
        "bootstrap": {
            "dcs": {**DCS, "postgresql": {"use_pg_rewind": False, "parameters": {}}},
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}],
            "pg_hba": [
                "local all all trust",
                "host replication replicator all scram-sha-256",
                "host all all all scram-sha-256",
            ],
        },
        "postgresql": {
            "listen": "0.0.0.0:5432",
            "connect_address": f"{member}:5432",
            "data_dir": "/var/lib/postgresql/patroni/data",
            "bin_dir": "/usr/lib/postgresql/15/bin",
            "authentication": {
                "superuser": {"username": "postgres", "password": PASSWORD},
                "replication": {"username": "replicator", "password": PASSWORD},
            },
            "parameters": {"unix_socket_directories": "/var/run/postgresql"},
        },
    }
    return json.dumps(cfg)


def create_member(member: str, memory: str, cpus: float) -> None:
    config = patroni_config(member)
    script = f"printf '%s' '{config}' > /tmp/patroni.yml && exec patroni /tmp/patroni.yml"
    docker(
        "service", "create", "--quiet", "--detach", "--name", member, "--network", NETWORK,
        "--endpoint-mode", "dnsrr", "--restart-condition", "none", "--user", "postgres",
        "--limit-memory", memory, "--limit-cpu", str(cpus), "--label", "shoal.bench=patroni",
        "--entrypoint", "sh", IMAGE, "-c", script,
    )  # fmt: skip


def create_cluster(memory: str, cpus: float) -> None:
    docker("build", "-q", "-t", IMAGE, "bench/patroni", timeout=900)
    docker("network", "create", "--driver", "overlay", "--attachable", "--label",
           "shoal.bench=patroni", NETWORK)  # fmt: skip
    docker(
        "service", "create", "--quiet", "--detach", "--name", ETCD, "--network", NETWORK,
        "--endpoint-mode", "dnsrr", "--label", "shoal.bench=patroni", "--entrypoint", "etcd", IMAGE,
        "--name", ETCD, "--data-dir", "/tmp/etcd",
        "--listen-client-urls", "http://0.0.0.0:2379",
        "--advertise-client-urls", f"http://{ETCD}:2379",
    )  # fmt: skip
    for member in MEMBERS:
        create_member(member, memory, cpus)


def remove_cluster() -> None:
    for service in (*MEMBERS, ETCD):
        docker("service", "rm", service, check=False)
    wait_until(
        lambda: docker("network", "rm", NETWORK, check=False) != "" or None, 60, "network gone"
    )


def cluster_state() -> dict[str, str] | None:
    """member -> role ("leader", "sync_standby", "replica") of the running members, from
    Patroni's REST API `GET /cluster`, asked inside any member that answers."""
    for member in MEMBERS:
        cid = container_of(member)
        if not cid:
            continue
        out = docker(
            "exec", cid, "python3", "-c",
            "import urllib.request;print(urllib.request.urlopen("
            "'http://localhost:8008/cluster', timeout=3).read().decode())",
            check=False, timeout=20,
        )  # fmt: skip
        try:
            doc = json.loads(out)
        except ValueError:
            continue
        return {
            m["name"]: m["role"]
            for m in doc.get("members", [])
            if m.get("state") in ("running", "streaming")
        }
    return None


def settled() -> str | None:
    """The leader's name once there are a leader, a synchronous standby and a replica."""
    roles = cluster_state() or {}
    if sorted(roles.values()) != ["leader", "replica", "sync_standby"]:
        return None
    return next(m for m, r in roles.items() if r == "leader")


def uri() -> str:
    hosts = ",".join(f"{m}:5432" for m in MEMBERS)
    return (
        f"postgresql://postgres:{PASSWORD}@{hosts}/postgres"
        "?target_session_attrs=read-write&connect_timeout=2"
    )


def one_run(writer: failover.Writer, i: int, memory: str, cpus: float) -> dict[str, Any]:
    leader, _ = wait_until(settled, 600, f"Patroni settled before run {i}", every=1)
    cid = container_of(leader)
    if not cid:
        raise RuntimeError(f"no container for the leader {leader}")
    failover.writing(writer)
    t_kill = time.time()
    docker("kill", cid)
    first = failover.first_write(writer, t_kill, leader, 300, "first write on a new leader")
    t_ack = first.t_ack
    run = {
        "run": i,
        "killed_member": leader,
        "new_primary_seen_by_client": first.host,
        "failover_seconds": round(t_ack - t_kill, 4),
        "write_gap_seconds": first.gap,
        "client_errors": writer.errors_between(t_kill, t_ack)[:3],
    }
    log(
        f"patroni run {i}: killed {leader}; first write on {first.host} "
        f"after {run['failover_seconds']:.2f}s"
    )
    # As Swarm would for shoal: a new, empty container for the killed member.
    docker("service", "rm", leader)
    wait_until(lambda: container_of(leader) is None or None, 60, f"{leader} gone")
    create_member(leader, memory, cpus)
    return run


def patroni_runs(runs: int, memory: str, cpus: float, pause: float) -> dict[str, Any]:
    log("creating the Patroni cluster")
    t0 = time.time()
    create_cluster(memory, cpus)
    out: list[dict[str, Any]] = []
    writer: failover.Writer | None = None
    try:
        wait_until(settled, 600, "Patroni cluster settled", every=1)
        log(f"Patroni settled after {time.time() - t0:.1f}s")
        writer = failover.Writer(SCOPE, {"uri": uri(), "ca": None}, runs * 600, network=NETWORK)
        w = writer
        out, _ = common.repeat(lambda i: one_run(w, i, memory, cpus), runs, pause, "patroni run")
    finally:
        if writer is not None:
            writer.stop()
        remove_cluster()
    ok = common.ok_runs(out)
    return {
        "settings": {"dcs": DCS, "version": "patroni 3.0.2, etcd 3.4.23 (Debian bookworm)"},
        "failover_seconds": common.runs_summary(ok, "failover_seconds"),
        "write_gap_seconds": common.runs_summary(ok, "write_gap_seconds"),
        "failed_runs": len(out) - len(ok),
        "runs": out,
    }


def main() -> None:
    common.interrupt_on_signals()
    args = common.runs_parser(__doc__, runs=10, pause=3.0).parse_args()
    info = common.machine()
    patroni = patroni_runs(args.runs, args.memory, args.cpus, args.pause)
    shoal = failover.measure(args.runs, args.memory, args.cpus, args.pause)
    p, s = patroni["failover_seconds"], shoal["failover_seconds"]
    ratio = round(s["median"] / p["median"], 3) if p.get("median") and s.get("median") else None
    doc = {
        "machine": info,
        "config": {
            "runs": args.runs,
            "members": 3,
            "resources": {"memory": args.memory, "cpus": args.cpus},
            "kill": "docker kill of the primary's container",
            "client": "psycopg autocommit INSERT loop, multi-host URI "
            "(target_session_attrs=read-write, connect_timeout=2), 50 ms back-off on error",
        },
        "shoal_over_patroni_median_failover": ratio,
        "patroni": patroni,
        "shoal": {k: v for k, v in shoal.items() if k != "machine"},
    }
    common.write_result("patroni", doc)
    print(
        f"failover (kill -> first acked write), median: shoal {s.get('median')}s, "
        f"patroni {p.get('median')}s; ratio {ratio}"
    )


if __name__ == "__main__":
    main()
