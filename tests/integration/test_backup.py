"""Backups and point-in-time restore against a real S3-compatible server on the swarm
(moto's server mode, tests/integration/s3/Dockerfile; docs/backup.md says what it does not
stand in for).

One history, with two faults at once in its middle: the bucket stops answering (its
container paused) and, while it is away, the primary is killed. Commits go on throughout;
archiving waits (the metrics say so) and catches up when the bucket is back, the standbys
archiving what the dead primary had not. Then every member is killed at once (`Lost`), and
restores from the archive must hold every write acknowledged before the last archived
point (to latest), and exactly the writes before a chosen time (point in time)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from tests.integration.s3 import Bucket, start_bucket, stop_bucket
from tests.integration.support import (
    Writer,
    apply,
    container_of,
    credentials,
    declaration,
    docker,
    psql,
    row_ids,
    service_logs,
    shoal,
    status,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


@pytest.fixture
def bucket(operator: BuiltImages, unique_name: str) -> Iterator[Bucket]:
    b = start_bucket(unique_name, operator.base)
    try:
        yield b
    finally:
        stop_bucket(b)


def backup_status(name: str) -> dict[str, object]:
    got = status(name).get("backup")
    return got if isinstance(got, dict) else {}


def metric(name: str, database: str) -> float | None:
    try:
        with urllib.request.urlopen("http://127.0.0.1:9650/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and f'database="{database}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def primary_of(name: str) -> str:
    p = status(name).get("primary")
    assert isinstance(p, str), status(name)
    return p


def archive_now(name: str) -> None:
    """Close the primary's segment and wait until the archive has it: the point up to which
    a loss of every member loses nothing."""
    primary = primary_of(name)
    segment = psql(primary, "SELECT pg_walfile_name(pg_switch_wal())")
    wait_for(
        lambda: (
            psql(primary, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= segment
        ),
        180,
        f"{segment} to be archived by {primary}",
    )


def kill_every_member(name: str, members: int) -> None:
    for i in range(members):
        cid = container_of(names.member_service(name, i))
        if cid:
            subprocess.run(["docker", "kill", cid], capture_output=True)


def test_archive_survives_a_failover_during_a_bucket_outage_and_restores_every_archived_write(
    bucket: Bucket, operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name
    latest, pitr = f"{name}-l", f"{name}-p"
    apply(declaration(name, members=3, backup=bucket.backup_spec("ci")), tmp_path)
    try:
        wait_state(name, "Healthy", timeout=300)
        # The first base backup is taken at once, on a standby (the primary switches WAL so
        # the backup's last segment is archived and pg_backup_stop returns).
        first = wait_for(
            lambda: backup_status(name).get("last_base_backup_at") and backup_status(name),
            240,
            f"the first base backup (status: {backup_status(name)})",
        )
        assert first["last_base_backup_member"] != status(name)["primary"], first
        assert (metric("shoal_backup_last_success_timestamp_seconds", name) or 0) > 0

        # Two batches with a known instant between them, for the point-in-time restore.
        primary = primary_of(name)
        psql(primary, "CREATE TABLE pitr (id int PRIMARY KEY)", timeout=60)
        psql(primary, "INSERT INTO pitr SELECT generate_series(1, 100)")
        time.sleep(1.0)
        between = time.time()
        time.sleep(1.0)
        psql(primary, "INSERT INTO pitr SELECT generate_series(101, 200)")
        archive_now(name)

        creds = credentials(name)
        w = Writer(name, operator.operator, creds["uri"], "acked", 600, ca=creds["ca"])
        wait_for(lambda: len(w.so_far()) >= 30, 90, f"the writer to acknowledge rows; {w.errors}")

        # Fault 1: the bucket stops answering. Commits go on; segments wait.
        s3 = bucket.container()
        docker("pause", s3)
        old = primary_of(name)
        psql(old, "SELECT pg_switch_wal()")
        wait_for(
            lambda: (metric("shoal_wal_archive_pending_segments", name) or 0) >= 1,
            60, "the pending segments to show in the metrics",
        )  # fmt: skip
        acked_before = len(w.so_far())
        wait_for(lambda: len(w.so_far()) > acked_before + 50, 60, "commits during the outage")

        # Fault 2, while the bucket is away: the primary dies with segments not archived.
        psql(old, "SELECT pg_switch_wal()")
        old_cid = container_of(old)
        assert old_cid
        docker("kill", old_cid)
        wait_for(lambda: status(name).get("primary") not in (None, old), 60, "a failover")
        after_failover = len(w.so_far())
        wait_for(lambda: len(w.so_far()) > after_failover + 50, 90, "commits after the failover")

        docker("unpause", s3)
        acked = w.so_far()
        w.kill()
        acked = w.acknowledged(timeout=60) | acked
        assert acked, "the writer acknowledged nothing"
        archive_now(name)
        wait_for(
            lambda: metric("shoal_wal_archive_pending_segments", name) == 0,
            180, "archiving to catch up",
        )  # fmt: skip

        # Every copy gone.
        kill_every_member(name, 3)
        lost = wait_state(name, "Lost", timeout=120)
        assert f"shoal restore NEW_NAME --from {name}" in lost["message"]

        listed = shoal("backups", name, "--json", timeout=300)
        assert listed.returncode == 0, listed.stderr
        doc = json.loads(listed.stdout)
        done = [b for b in doc["backups"] if b["status"] == "DONE"]
        assert done and doc["recoverable"]["from"] is not None, doc

        # To the end of the archive: every acknowledged write of the whole history.
        r = shoal("restore", latest, "--from", name, "--to-latest", "--wait", timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr + service_logs([f"{latest}-0"])
        restored = primary_of(latest)
        missing = acked - row_ids(restored, "acked")
        assert not missing, f"{len(missing)} acknowledged writes missing after the restore"
        assert row_ids(restored, "pitr") == set(range(1, 201))
        assert (status(latest).get("timeline") or 0) > (lost.get("timeline") or 0)
        # The restored database is a database of its own: it archives and backs up.
        wait_for(lambda: backup_status(latest).get("last_base_backup_at"), 240, "its backup")

        # To the instant between the two batches: the first only.
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(between))
        stamp += f".{int((between % 1) * 1e6):06d}Z"
        r = shoal("restore", pitr, "--from", name, "--to", stamp, "--wait", timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr + service_logs([f"{pitr}-0"])
        assert row_ids(primary_of(pitr), "pitr") == set(range(1, 101))
    finally:
        for db in (pitr, latest, name):
            shoal("delete", db, "--wait", timeout=300)


def test_restore_refuses_bad_input_and_changes_nothing(
    operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name
    apply(declaration(name, members=1, durability="async"), tmp_path)
    try:
        cases = [
            (["restore", f"{name}-x", "--from", f"{name}-none"], "no database named"),
            (["restore", f"{name}-x", "--from", name], "declares no spec.backup"),
            (["backups", name], "declares no spec.backup"),
            (
                ["restore", f"{name}-x", "--from", name, "--to", "yesterday", "--to-latest"],
                "not both",
            ),
        ]
        for args, said in cases:
            r = shoal(*args, timeout=120)
            assert r.returncode == 2, (args, r.stdout, r.stderr)
            assert said in r.stderr + r.stdout, (args, r.stderr)
        assert shoal("status", f"{name}-x", "--json").returncode != 0
    finally:
        shoal("delete", name, "--wait", timeout=300)
