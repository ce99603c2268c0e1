"""Re-seed time of a ~1 GB PostgreSQL member against a plain copy of the same data directory.

    python -m bench.reseed [--runs 3] [--size-mb 1024]

Re-seed: `docker kill` of a replica's container -> `shoal status` shows that member (a new
task) as a running replica with lag below 1 MiB and the database Healthy. This is the whole
user-visible path: detection, Swarm's replacement task, the clone from a peer, start-up and
catch-up.

Baseline: the raw bytes of the primary's data directory streamed into another member's
container, `docker exec P tar -C /var/lib/shoal -c pgdata | docker exec -i R tar -C /tmp -x`
(no PostgreSQL involved: the floor for moving those bytes between two containers here).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from typing import Any

from bench.common import (
    apply,
    container_of,
    delete,
    docker,
    log,
    machine,
    psql,
    status,
    summary,
    unique,
    wait_until,
    write_result,
)
from bench.common import declaration as make_declaration
from bench.failover import settled

DATA_PARENT = "/var/lib/shoal"
LAG_OK = 1024 * 1024


def generate(db: str, primary: str, size_mb: int) -> dict[str, Any]:
    """~size_mb of table data: 100k-row batches of ~1 KB rows until the database is big enough."""
    t0 = time.time()
    psql(primary, "CREATE TABLE IF NOT EXISTS bench_pad (id bigint primary key, payload text)")
    target = size_mb * 1024 * 1024
    start = int(psql(primary, "SELECT coalesce(max(id), 0) FROM bench_pad"))
    batch = 100_000
    while True:
        size = int(psql(primary, "SELECT pg_database_size(current_database())"))
        if size >= target:
            break
        psql(
            primary,
            "INSERT INTO bench_pad SELECT g, repeat(md5(g::text), 30) "
            f"FROM generate_series({start + 1}, {start + batch}) g",
        )
        start += batch
        log(f"{db}: {size / 2**20:.0f} MiB -> +{batch} rows")
    psql(primary, "CHECKPOINT")
    size = int(psql(primary, "SELECT pg_database_size(current_database())"))
    return {"rows": start, "database_bytes": size, "seconds": round(time.time() - t0, 1)}


def pgdata_bytes(member: str) -> int:
    cid = container_of(member)
    assert cid
    out = docker("exec", cid, "du", "-sb", f"{DATA_PARENT}/pgdata", timeout=300)
    return int(out.split()[0])


def baseline_copy(source: str, target: str, with_wal: bool) -> dict[str, Any]:
    """Stream the primary's data directory into `target`'s /tmp. Without `with_wal` the
    recycled WAL segments in pg_wal (up to max_wal_size, 1 GB by default, that a clone does
    not need) are left out, which is closer to what a re-seed has to move."""
    src, dst = container_of(source), container_of(target)
    if not src or not dst:
        raise RuntimeError("containers missing for the baseline copy")
    docker("exec", dst, "sh", "-c", "rm -rf /tmp/bench-copy && mkdir -p /tmp/bench-copy")
    exclude = [] if with_wal else ["--exclude=pgdata/pg_wal/*"]
    t0 = time.time()
    reader = subprocess.Popen(
        ["docker", "exec", src, "tar", "-C", DATA_PARENT, *exclude, "-c", "pgdata"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    writer = subprocess.run(
        ["docker", "exec", "-i", dst, "tar", "-C", "/tmp/bench-copy", "-x"],
        stdin=reader.stdout,
        capture_output=True,
        timeout=1800,
    )
    if reader.stdout is not None:
        reader.stdout.close()
    reader.wait(timeout=60)
    seconds = time.time() - t0
    copied = int(docker("exec", dst, "du", "-sb", "/tmp/bench-copy").split()[0])
    docker("exec", dst, "rm", "-rf", "/tmp/bench-copy", timeout=300)
    if writer.returncode != 0:
        raise RuntimeError(f"baseline tar failed: {writer.stderr.decode()[:300]}")
    what = "with pg_wal" if with_wal else "without pg_wal"
    log(f"baseline ({what}): {copied / 2**20:.0f} MiB {source} -> {target} in {seconds:.1f}s")
    return {
        "seconds": round(seconds, 3),
        "bytes": copied,
        "with_wal": with_wal,
        "source": source,
        "target": target,
    }


def reseed(db: str, member: str) -> dict[str, Any]:
    before = {m["name"]: m for m in status(db)["members"]}
    old_task = before[member].get("task_id")
    cid = container_of(member)
    if not cid:
        raise RuntimeError(f"no container for {member}")
    seen: dict[str, float] = {}
    t_kill = time.time()
    docker("kill", cid)

    def back() -> bool:
        s = status(db)
        for m in s.get("members") or []:
            if m["name"] != member or m.get("task_id") == old_task:
                continue
            key = f"{m.get('state')}/{m.get('role')}"
            seen.setdefault(key, round(time.time() - t_kill, 2))
            return bool(
                m.get("role") == "replica"
                and m.get("state") == "running"
                and m.get("lag_bytes") is not None
                and m["lag_bytes"] <= LAG_OK
                and s.get("state") == "Healthy"
            )
        return False

    _, t_back = wait_until(back, 1800, f"{member} streaming again", every=0.5)
    seconds = t_back - t_kill
    log(f"re-seed: {member} streaming again {seconds:.1f}s after the kill")
    return {"seconds": round(seconds, 3), "member": member, "first_seen": seen}


def main() -> None:
    ap = argparse.ArgumentParser(description="re-seed of a ~1 GB member vs a raw copy")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    info = machine()
    db = unique("benchrs")
    log(f"creating {db}")
    proc = apply(make_declaration(db, 3, "1G", 1.0), wait=True, timeout=600)
    if proc.returncode != 0:
        delete(db)
        raise SystemExit(f"apply {db} failed: {proc.stderr}")
    runs: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    try:
        s, _ = wait_until(lambda: settled(db), 600, f"{db} settled")
        data = generate(db, s["primary"], args.size_mb)
        log(f"{db}: generated {data}")
        for i in range(1, args.runs + 1):
            s, _ = wait_until(lambda: settled(db), 1800, f"{db} settled before run {i}")
            primary = s["primary"]
            replica = sorted(m["name"] for m in s["members"] if m["name"] != primary)[i % 2]
            data.setdefault("pgdata_bytes", pgdata_bytes(primary))
            data.setdefault(
                "pg_wal_bytes", int(psql(primary, "SELECT sum(size) FROM pg_ls_waldir()"))
            )
            try:
                full = baseline_copy(primary, replica, with_wal=True)
                base = baseline_copy(primary, replica, with_wal=False)
                time.sleep(5)
                rs = reseed(db, replica)
                runs.append(
                    {
                        "run": i,
                        "baseline": base,
                        "baseline_with_wal": full,
                        "reseed": rs,
                        "ratio": round(rs["seconds"] / base["seconds"], 3),
                        "ratio_vs_copy_with_wal": round(rs["seconds"] / full["seconds"], 3),
                    }
                )
            except (TimeoutError, RuntimeError) as e:
                log(f"run {i} failed: {e}")
                runs.append({"run": i, "error": str(e)})
    finally:
        if not args.keep:
            log(f"deleting {db}")
            delete(db)
    ok = [r for r in runs if "error" not in r]
    base_s = summary([r["baseline"]["seconds"] for r in ok])
    full_s = summary([r["baseline_with_wal"]["seconds"] for r in ok])
    rs_s = summary([r["reseed"]["seconds"] for r in ok])
    doc: dict[str, Any] = {
        "machine": info,
        "config": {
            "members": 3,
            "durability": "sync",
            "resources": {"memory": "1G", "cpus": 1.0},
            "size_mb_target": args.size_mb,
            "baseline": "docker exec P tar -C /var/lib/shoal --exclude=pgdata/pg_wal/* -c pgdata "
            "| docker exec -i R tar -C /tmp/bench-copy -x (baseline_with_wal: pg_wal included)",
            "reseed_done": "new task of the killed member: role replica, state running, "
            f"lag_bytes <= {LAG_OK}, database Healthy",
        },
        "data": data,
        "baseline_seconds": base_s,
        "reseed_seconds": rs_s,
        "ratio_of_medians": (
            round(rs_s["median"] / base_s["median"], 3) if ok and base_s["median"] else None
        ),
        "ratio_per_run": summary([r["ratio"] for r in ok]),
        "baseline_with_wal_seconds": full_s,
        "ratio_of_medians_vs_copy_with_wal": (
            round(rs_s["median"] / full_s["median"], 3) if ok and full_s["median"] else None
        ),
        "failed_runs": len(runs) - len(ok),
        "runs": runs,
    }
    write_result("reseed", doc)
    print(
        f"re-seed median {rs_s['median']}s, raw copy median {base_s['median']}s, "
        f"ratio {doc['ratio_of_medians']} (n={rs_s['n']})"
    )


if __name__ == "__main__":
    main()
