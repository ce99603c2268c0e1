"""PostgreSQL's side of spec.backup in the operator (docs/backup.md): what the members are
told (their `SHOAL_BACKUP` environment, read by agent/backup.py) and the planner's part:
the archive's state in the status, base backups when due, and the WAL switch a standby's
base backup waits for. Pure, except `member_env`'s JSON."""

from __future__ import annotations

import json

from shoal.declaration import Database
from shoal.plugins.base import MemberObservation, Plan
from shoal.plugins.postgres.model import PgProbe, StartBaseBackup, SwitchWal
from shoal.status import BackupStatus

PgMember = MemberObservation[PgProbe]
ENV = "SHOAL_BACKUP"  # agent/backup.py: ENV
# After a failed base backup, the next attempt waits this long (the bucket may be away).
RETRY_AFTER_SECONDS = 60.0


def member_env(db: Database) -> tuple[str, ...]:
    backup = db.spec.backup
    if backup is None:
        return ()
    restore = db.spec.restore
    config = {
        "destination": backup.s3.destination(),
        "server": db.name,
        "endpoint": backup.s3.endpoint,
        "region": backup.s3.region,
        "retention": backup.retention.policy(),
        "restore_from": restore.source if restore is not None else None,
        "restore_to": restore.target_time() if restore is not None else None,
    }
    return (f"{ENV}={json.dumps(config, sort_keys=True, separators=(',', ':'))}",)


def plan_backups(
    db: Database,
    p: Plan,
    now: float,
    primary: PgMember,
    standbys: list[PgMember],
    ready: list[PgMember],
) -> None:
    """Record the archive's state and the members' base backup jobs in the status; start a
    base backup when one is due (on a streaming standby when there is one, else on the
    primary); switch the primary's WAL when a standby's backup waits for its last segment."""
    spec = db.spec.backup
    if spec is None:
        p.status.backup = None
        return
    b = (p.status.backup or BackupStatus()).model_copy()
    b.destination = f"{spec.s3.destination()}/{db.name}"
    b.interval_seconds = spec.base_backups.seconds
    archive = primary.probe.archive if primary.probe is not None else None
    if archive is not None:
        b.archived_wal = archive.last_archived_wal
        b.archived_at = archive.last_archived_at
        b.pending_segments = archive.segments
        b.pending_seconds = round(archive.oldest_seconds, 1)
        b.archive_failures = archive.failed_count
    running: str | None = None
    for m in [primary, *standbys]:
        job = m.probe.base_backup if m.probe is not None else None
        if job is None:
            continue
        if job.state == "running":
            running = m.name
        elif job.state == "succeeded" and _newer(job.finished_at, b.last_base_backup_at):
            b.last_base_backup_at = job.finished_at
            b.last_base_backup_id = job.backup_id
            b.last_base_backup_member = m.name
            b.base_backups_taken += 1
            p.event(now, "backup", m.name, f"base backup {job.backup_id} taken")
        elif job.state == "failed" and _newer(job.finished_at, b.last_failure_at):
            b.last_failure_at = job.finished_at
            b.last_failure = job.error or "failed"
            p.event(now, "backup", m.name, f"base backup failed: {b.last_failure}")
    b.running_on = running
    p.status.backup = b
    if any(m.probe is not None and m.probe.archive is not None
           and m.probe.archive.backup_waits_for_wal for m in standbys):  # fmt: skip
        p.add(SwitchWal(primary.name))
    if running is None and _due(b, now):
        # A standby spares the primary the read of every data file; any streaming one is as
        # good as another (the backup's WAL comes from the archive). The primary takes it
        # only when no standby is declared, or when none has streamed for half an interval
        # past the due time (a long outage must not stop backups altogether).
        standby = next((m for m in ready if m is not primary), None)
        if standby is not None:
            p.add(StartBaseBackup(standby.name))
        elif db.spec.members == 1 or _overdue(b, now):
            p.add(StartBaseBackup(primary.name))


def _newer(at: float | None, than: float | None) -> bool:
    return at is not None and (than is None or at > than)


def _overdue(b: BackupStatus, now: float) -> bool:
    last = b.last_base_backup_at
    return last is not None and now - last >= 1.5 * b.interval_seconds


def _due(b: BackupStatus, now: float) -> bool:
    if b.last_failure_at is not None and now - b.last_failure_at < RETRY_AFTER_SECONDS:
        return False
    return b.last_base_backup_at is None or now - b.last_base_backup_at >= b.interval_seconds
