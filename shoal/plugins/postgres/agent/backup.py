"""Continuous WAL archiving, base backups and restore to an S3-compatible bucket with
barman-cloud (Debian's barman-cli-cloud 3.4; docs/backup.md says why this tool). Stdlib only.

The operator puts the database's `spec.backup` (and `spec.restore`) in the member's
environment as JSON (`SHOAL_BACKUP`, written by shoal/plugins/postgres/backup.py) and
mounts the user's credentials secret as `/run/secrets/backup-credentials` (the AWS
credentials file format, read by boto3 inside barman-cloud).

Archiving (`archive_mode = always`, PostgreSQL docs, "Continuous Archiving and Point-in-Time
Recovery", 26.2.9 "Continuous Archiving in Standby"): every member archives each WAL segment
it has, the primary the ones it writes, each standby the ones it receives. A segment the
primary wrote but had not archived before it died is then still archived by the standbys
that received it, so a failover leaves no gap in the archive; two members uploading the same
complete segment upload the same bytes. A promoted standby archives its last partial segment
of the old timeline as `.partial` and the new timeline's history file, as PostgreSQL does.

`python3 -P -m agent.backup archive PATH` and `... restore NAME PATH` are the
`archive_command` and `restore_command` PostgreSQL runs; `... list` prints the archive's base
backups as JSON (`shoal backups`, from a one-off task of the member image).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import pg

ENV = "SHOAL_BACKUP"
CREDENTIALS = "backup-credentials"  # under pg.SECRETS_DIR
CA_BUNDLE = "backup-ca.pem"
SEGMENT_BYTES = 16 * 1024 * 1024
DEFAULT_REGION = "us-east-1"
# `archive_timeout`: a segment with any write in it is switched and archived within this
# long, which bounds what a loss of every member loses of what the archive holds (RPO).
ARCHIVE_TIMEOUT = "60s"
ARCHIVE_COMMAND = "python3 -P -m agent.backup archive %p"
RESTORE_COMMAND = "python3 -P -m agent.backup restore %f %p"
TOOL_TIMEOUT = 3600.0
LIST_TIMEOUT = 120.0
# barman's `end_time` in backup.info: a local time without a zone (our containers run UTC).
BARMAN_TIME = "%a %b %d %H:%M:%S %Y"
WAL_FILE_RE = re.compile(r"^[0-9A-F]{24}$")


class BackupError(Exception):
    """A barman-cloud command failed; the message is safe to show."""


@dataclass(frozen=True)
class Config:
    destination: str  # s3://bucket/path
    server: str  # this database's archive: destination/server
    endpoint: str | None = None
    region: str | None = None
    retention: str = "REDUNDANCY 7"  # barman's retention policy
    restore_from: str | None = None  # the database whose archive this one starts from
    restore_to: str | None = None  # ISO time; None: every archived WAL

    @staticmethod
    def parse(text: str) -> Config:
        try:
            d = json.loads(text)
            cfg = Config(
                destination=str(d["destination"]),
                server=str(d["server"]),
                endpoint=d.get("endpoint"),
                region=d.get("region"),
                retention=str(d.get("retention") or "REDUNDANCY 7"),
                restore_from=d.get("restore_from"),
                restore_to=d.get("restore_to"),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise BackupError(f"{ENV} is not a backup configuration: {e}") from None
        if not cfg.destination.startswith("s3://"):
            raise BackupError(f"{ENV}: destination must be an s3:// URL")
        return cfg


def load(environ: dict[str, str] | None = None) -> Config | None:
    text = (os.environ if environ is None else environ).get(ENV)
    return Config.parse(text) if text else None


def cloud_args(cfg: Config) -> list[str]:
    args = ["--cloud-provider", "aws-s3"]
    if cfg.endpoint:
        args += ["--endpoint-url", cfg.endpoint]
    return args


def tool_env(cfg: Config) -> dict[str, str]:
    env = pg._env()
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(pg.SECRETS_DIR / CREDENTIALS)
    env["AWS_CONFIG_FILE"] = "/dev/null"
    env["AWS_DEFAULT_REGION"] = cfg.region or DEFAULT_REGION
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    ca = pg.SECRETS_DIR / CA_BUNDLE
    if ca.is_file():
        env["AWS_CA_BUNDLE"] = str(ca)
    return env


def run_tool(cfg: Config, args: list[str], timeout: float = TOOL_TIMEOUT) -> str:
    try:
        r = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, env=tool_env(cfg),
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise BackupError(f"{args[0]} did not finish within {timeout:g}s") from None
    except OSError as e:
        raise BackupError(f"{args[0]}: {e}") from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
        tail = " | ".join(lines[-3:])[-600:]
        raise BackupError(f"{args[0]} exited with code {r.returncode}: {tail}")
    return r.stdout


def archive_settings(cfg: Config | None) -> str:
    """Lines of shoal.conf (agent/pg.py: write_static_config) for a member that archives."""
    if cfg is None:
        return ""
    return (
        "archive_mode = always\n"
        f"archive_command = '{ARCHIVE_COMMAND}'\n"
        f"archive_timeout = '{ARCHIVE_TIMEOUT}'\n"
    )


# --------------------------------------------------------------- archive state (probe)


def pending(now: float | None = None) -> dict[str, Any]:
    """WAL segments (and history files) PostgreSQL has finished but not archived yet: the
    `.ready` files of pg_wal/archive_status, and the age of the oldest."""
    now = time.time() if now is None else now
    status = pg.DATA_DIR / "pg_wal" / "archive_status"
    count, oldest = 0, None
    try:
        with os.scandir(status) as it:
            for e in it:
                if e.name.endswith(".ready"):
                    count += 1
                    mtime = e.stat().st_mtime
                    oldest = mtime if oldest is None else min(oldest, mtime)
    except OSError:
        pass
    return {"segments": count, "oldest_seconds": 0.0 if oldest is None else max(0.0, now - oldest)}


def mark_copied_wal_archived(pg_wal: Path) -> int:
    """After a clone: the WAL files that came with the copy (pg_basebackup's stream) are
    its source's, which archives them (archive_mode = always on every member); mark them
    done here as PostgreSQL marks WAL restored from the archive. Without it, a base backup
    taken on this standby would wait in pg_backup_stop for a segment its archiver never
    takes up (no status file at all), and the standby would upload the copy's segments a
    second time. Segments it then receives by streaming get `.ready` and are archived."""
    status = pg_wal / "archive_status"
    status.mkdir(mode=0o700, exist_ok=True)
    marked = 0
    for f in pg_wal.iterdir():
        if not f.is_file() or not (WAL_FILE_RE.match(f.name) or f.name.endswith(".history")):
            continue
        if (status / f"{f.name}.ready").exists() or (status / f"{f.name}.done").exists():
            continue
        (status / f"{f.name}.done").touch(mode=0o600)
        marked += 1
    return marked


# --------------------------------------------------------------- listing and choosing


def list_backups(cfg: Config, server: str | None = None) -> list[dict[str, Any]]:
    out = run_tool(
        cfg,
        ["barman-cloud-backup-list", *cloud_args(cfg), "--format", "json", cfg.destination,
         server or cfg.server],
        timeout=LIST_TIMEOUT,
    )  # fmt: skip
    try:
        rows = json.loads(out).get("backups_list", [])
    except ValueError:
        raise BackupError("barman-cloud-backup-list printed no JSON") from None
    return [summary(r) for r in rows if isinstance(r, dict)]


def _epoch(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.strptime(text, BARMAN_TIME).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """What shoal shows and decides on of barman's backup.info."""
    return {
        "id": row.get("backup_id"),
        "status": row.get("status"),
        "begin_at": _epoch(row.get("begin_time")),
        "end_at": _epoch(row.get("end_time")),
        "begin_wal": row.get("begin_wal"),
        "end_wal": row.get("end_wal"),
        "timeline": row.get("timeline"),
        "system_identifier": row.get("systemid"),
        "from_standby": "BACKUP FROM: standby" in str(row.get("backup_label") or ""),
    }


def choose(backups: list[dict[str, Any]], target: float | None) -> dict[str, Any]:
    """The newest complete base backup that ended before `target` (None: the newest)."""
    done = [b for b in backups if b["status"] == "DONE" and b["end_at"] is not None]
    if target is not None:
        done = [b for b in done if b["end_at"] < target]
    if not done:
        when = "" if target is None else " that ended before the restore target"
        raise BackupError(f"no complete base backup{when} in the archive")
    return max(done, key=lambda b: b["end_at"])


# --------------------------------------------------------------- commands PostgreSQL runs


def main(argv: list[str]) -> int:
    """archive_command / restore_command. Exit 0 only when done: PostgreSQL retries an
    archive that failed and keeps the segment meanwhile; a restore that fails ends the
    archive recovery at the last segment found (how PostgreSQL finds the end of the
    archive)."""
    try:
        cfg = load()
        if cfg is None:
            raise BackupError(f"{ENV} is not set")
        if len(argv) == 2 and argv[0] == "archive":
            run_tool(cfg, ["barman-cloud-wal-archive", *cloud_args(cfg), "--gzip",
                           cfg.destination, cfg.server, argv[1]])  # fmt: skip
            return 0
        if len(argv) == 3 and argv[0] == "restore":
            source = cfg.restore_from or cfg.server
            run_tool(cfg, ["barman-cloud-wal-restore", *cloud_args(cfg), cfg.destination,
                           source, argv[1], argv[2]])  # fmt: skip
            return 0
        if argv == ["list"]:  # `shoal backups`: the base backups of the archive, as JSON
            sys.stdout.write(json.dumps({"backups": list_backups(cfg)}) + "\n")
            return 0
        raise BackupError("usage: archive PATH | restore NAME PATH | list")
    except BackupError as e:
        sys.stderr.write(f"shoal-backup: {e}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
