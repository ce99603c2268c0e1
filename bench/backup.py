"""RPO and restore time of a ~1 GB PostgreSQL database restored from its archive.

    python -m bench.backup [--runs 3] [--size-mb 1024]

On this swarm: an S3 stand-in (moto's server, tests/integration/s3), a 3-member sync
database with `spec.backup` (base backups every 5 minutes), filled to `--size-mb` of table
data, then its first base backup after the fill. Each run: a writer inserts ids through
the multi-host URI; every member's container is killed at once (the database goes `Lost`);
`shoal restore NEXT --from CURRENT --to-latest --wait` makes a new database from the
archive. Measured per run:

- restore time: from the `shoal restore` command to the new database `Healthy` (3 members),
  and to its first writable primary;
- RPO: the time between the kill and the acknowledgement of the newest acknowledged write
  the restored database does *not* hold (0 when it holds every one), and how many
  acknowledged writes it lacks. What the archive has not received when every copy dies is
  lost: `archive_timeout` (60 s) bounds how long a written segment stays unarchived.

The restored database is the next run's source (it archives and takes its own base backup
first), so every run restores the same ~1 GB.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from typing import Any

from bench.common import (
    apply,
    container_of,
    credentials,
    delete,
    log,
    machine,
    operator_image,
    psql,
    shoal,
    status,
    summary,
    unique,
    wait_until,
    write_result,
)
from bench.common import declaration as make_declaration
from bench.reseed import generate
from shoal import names
from shoal.platform.images import resolve_images, source_root
from tests.integration.s3 import Bucket, start_bucket, stop_bucket
from tests.integration.support import Writer

MEMBERS = 3
WRITE_SECONDS = 90.0


def declaration(name: str, bucket: Bucket, memory: str, cpus: float) -> str:
    import json

    spec = json.dumps(bucket.backup_spec("bench", every="5m", keep=2))
    return make_declaration(name, MEMBERS, memory, cpus) + f"  backup: {spec}\n"


def backup_of(name: str) -> dict[str, Any]:
    got = status(name).get("backup")
    return got if isinstance(got, dict) else {}


def wait_backup_after(name: str, after: float, timeout: float) -> dict[str, Any]:
    """The status's `backup` once a base backup that ended after `after` is recorded."""

    def done() -> dict[str, Any] | None:
        b = backup_of(name)
        return b if (b.get("last_base_backup_at") or 0) > after else None

    got: dict[str, Any] = wait_until(done, timeout, f"a base backup of {name}")[0]
    return got


def kill_every_member(name: str) -> float:
    cids = [c for i in range(MEMBERS) if (c := container_of(names.member_service(name, i)))]
    t = time.time()
    subprocess.run(["docker", "kill", *cids], capture_output=True, check=False)
    return t


def one_run(i: int, source: str, target: str) -> dict[str, Any]:
    creds = credentials(source)
    table = f"bench_acked_{i}"  # a table per run: the writer counts from 1
    w = Writer(source, operator_image(), creds["uri"], table, 600, ca=creds["ca"])
    wait_until(lambda: len(w.so_far()) >= 200, 120, "the writer to acknowledge rows")
    # Longer than archive_timeout (60 s): what was written before the last forced segment
    # switch is archived, what came after it is the part a loss of every member loses.
    time.sleep(WRITE_SECONDS)
    killed = kill_every_member(source)
    acked = w.so_far()
    w.kill()
    acked |= w.acknowledged(timeout=60)
    wait_until(lambda: status(source).get("state") == "Lost", 180, f"{source} Lost")
    t0 = time.time()
    r = shoal("restore", target, "--from", source, "--to-latest", timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"shoal restore: {r.stderr.strip()}")
    _, writable_at = wait_until(lambda: status(target).get("writable"), 3600, "writable")
    _, healthy_at = wait_until(
        lambda: status(target).get("state") == "Healthy", 3600, f"{target} Healthy"
    )
    primary = status(target)["primary"]
    exists = psql(primary, f"SELECT to_regclass('{table}') IS NOT NULL") == "t"
    present = (
        {int(x) for x in psql(primary, f"SELECT id FROM {table}").split()} if exists else set()
    )
    lost = sorted(acked - present)
    # What was lost spans from the oldest lost write's acknowledgement to the kill.
    oldest_lost = min((w.acked_at[x] for x in lost if x in w.acked_at), default=None)
    run = {
        "run": i,
        "source": source,
        "restored": target,
        "acknowledged": len(acked),
        "lost_acknowledged": len(lost),
        "rpo_seconds": round(killed - oldest_lost, 2) if oldest_lost is not None else 0.0,
        "writing_seconds_before_kill": round(killed - min(w.acked_at.values()), 2),
        "table_restored": exists,
        "restore_to_writable_seconds": round(writable_at - t0, 2),
        "restore_to_healthy_seconds": round(healthy_at - t0, 2),
        "database_bytes": int(psql(primary, "SELECT pg_database_size('app')")),
    }
    log(f"run {i}: {run}")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--memory", default="1G")
    ap.add_argument("--cpus", type=float, default=1.0)
    args = ap.parse_args()
    prefix = unique("bk")
    info = machine()
    bucket = start_bucket(prefix, resolve_images(source_root()).base)
    made: list[str] = []
    runs: list[dict[str, Any]] = []
    error: str | None = None
    fill: dict[str, Any] | None = None
    try:
        current = f"{prefix}-0"
        made.append(current)
        if apply(declaration(current, bucket, args.memory, args.cpus), wait=True).returncode:
            raise RuntimeError(f"{current} did not become Healthy")
        primary = status(current)["primary"]
        fill = generate(current, primary, args.size_mb)
        first = wait_backup_after(current, time.time() - 1, 900)
        log(f"base backup after the fill: {first}")
        for i in range(1, args.runs + 1):
            target = f"{prefix}-{i}"
            made.append(target)
            runs.append(one_run(i, current, target))
            current = target
            if i < args.runs:  # the next run restores from this one's own base backup
                wait_backup_after(current, time.time() - 1, 1800)
    except (RuntimeError, TimeoutError, KeyError) as e:
        error = str(e)
        log(f"stopped: {error}")
    finally:
        for name in reversed(made):
            delete(name)
        stop_bucket(bucket)
    ok = [r for r in runs if "error" not in r]
    write_result(
        "backup",
        {
            "machine": info,
            "size_mb_target": args.size_mb,
            "members": MEMBERS,
            "resources": {"memory": args.memory, "cpus": args.cpus},
            "fill": fill,
            "runs": runs,
            "error": error,
            "restore_to_healthy_seconds": summary([r["restore_to_healthy_seconds"] for r in ok]),
            "restore_to_writable_seconds": summary([r["restore_to_writable_seconds"] for r in ok]),
            "rpo_seconds": summary([r["rpo_seconds"] for r in ok]),
            "lost_acknowledged": [r["lost_acknowledged"] for r in ok],
        },
    )


if __name__ == "__main__":
    main()
