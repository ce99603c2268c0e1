"""spec.backup and spec.restore: the declaration's rules, what members are told, the
planner's part (base backups when due, on a standby; the WAL switch a standby's backup waits
for; the status), the agent's pure helpers on barman's recorded output, and the metrics.

The planner cases start from the recorded healthy cluster (recordings/healthy.json) and add
the `archive` and `base_backup` fields the agent reports (agent/member.py: state_body), as
written by hand after agent/backup.py; barman-cloud-backup-list's output
(recordings/barman/backup-list-standby.json) was recorded from barman-cli-cloud 3.4 against
the moto server of the integration tests, a backup taken on a standby."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from shoal.declaration import DeclarationError, load_declaration, validate_document
from shoal.operator.metrics import OperatorMetrics
from shoal.plugins.postgres import backup as pg_backup
from shoal.plugins.postgres.agent import backup as agent_backup
from shoal.plugins.postgres.model import StartBaseBackup, SwitchWal
from shoal.plugins.postgres.planner import plan
from shoal.status import BackupStatus, DatabaseStatus
from tests.unit.test_pg_planner import NOW, observe, recording, steady

pytestmark = pytest.mark.unit
RECORDED = Path(__file__).parent / "recordings" / "barman"

BACKUP = {
    "s3": {"bucket": "shoal-backups", "endpoint": "http://s3:9000", "credentialsSecret": "s3c"},
    "baseBackups": {"every": "6h"},
    "retention": {"baseBackups": 3},
}


def decl(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "shoal/v1",
        "kind": "Database",
        "metadata": {"name": "orders"},
        "spec": {"engine": "postgres", **spec},
    }


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(DeclarationError) as e:
        validate_document(doc)
    return e.value.problems


# --- declaration ------------------------------------------------------------------------


def test_a_backup_declaration_is_accepted_with_defaults() -> None:
    db = validate_document(decl(backup={"s3": {"bucket": "b-1", "credentialsSecret": "c"}}))
    assert db.spec.backup is not None
    assert db.spec.backup.s3.destination() == "s3://b-1/shoal"
    assert db.spec.backup.base_backups.seconds == 86400
    assert db.spec.backup.retention.policy() == "REDUNDANCY 7"


def test_every_backup_problem_is_reported_at_once() -> None:
    bad = {
        "s3": {"bucket": "B", "path": "/x", "endpoint": "ftp://x", "credentialsSecret": "a b"},
        "baseBackups": {"every": "1m"},
        "retention": {"baseBackups": 3, "recoveryWindow": "7d"},
    }
    got = problems(decl(backup=bad, restore={"from": "other", "to": "2026-12-06T07:00:00"}))
    fields = [line.split(":", 1)[0] for line in got]
    assert fields == [
        "spec.backup.s3.bucket",
        "spec.backup.s3.path",
        "spec.backup.s3.endpoint",
        "spec.backup.s3.credentialsSecret",
        "spec.backup.baseBackups.every",
        "spec.backup.retention",
        "spec.restore.to",
    ], got


def test_a_restore_needs_a_backup_section_and_another_database() -> None:
    assert problems(decl(restore={"from": "other"})) == [
        "spec.restore: needs spec.backup: the archive to restore from (its bucket and path) "
        "and where this database archives"
    ]
    own = problems(decl(backup=BACKUP, restore={"from": "orders"}))
    assert own[0].startswith("spec: restore.from must name another database")


def test_restore_times_need_a_zone_and_are_kept_in_utc() -> None:
    db = validate_document(
        decl(backup=BACKUP, restore={"from": "other", "to": "2026-12-06T09:30:00+02:00"})
    )
    assert db.spec.restore is not None
    assert db.spec.restore.target_time() == "2026-12-06T07:30:00+00:00"
    # An unquoted YAML timestamp is parsed by YAML itself; without a zone it is refused.
    text = (
        "apiVersion: shoal/v1\nkind: Database\nmetadata: {name: orders}\nspec:\n"
        "  engine: postgres\n  backup: {s3: {bucket: abc, credentialsSecret: c}}\n"
        "  restore: {from: other, to: 2026-12-06 07:30:00}\n"
    )
    with pytest.raises(DeclarationError) as e:
        load_declaration(text)
    assert e.value.problems[0].startswith("spec.restore.to:")


def test_mongodb_backups_are_refused_until_built() -> None:
    got = problems(
        {**decl(backup=BACKUP), "spec": {"engine": "mongodb", "members": 3, "backup": BACKUP}}
    )
    assert got == ["spec.backup: backups of engine mongodb are not supported yet"]


# --- what members are told --------------------------------------------------------------


def test_member_environment_names_the_archive_and_the_restore() -> None:
    db = validate_document(decl(backup=BACKUP, restore={"from": "old", "to": "latest"}))
    (env,) = pg_backup.member_env(db)
    key, _, value = env.partition("=")
    cfg = agent_backup.Config.parse(value)
    assert key == agent_backup.ENV == pg_backup.ENV
    assert cfg.destination == "s3://shoal-backups/shoal" and cfg.server == "orders"
    assert cfg.endpoint == "http://s3:9000" and cfg.retention == "REDUNDANCY 3"
    assert cfg.restore_from == "old" and cfg.restore_to is None
    assert pg_backup.member_env(validate_document(decl())) == ()


def test_agent_refuses_a_malformed_configuration() -> None:
    for text in ("{", "[]", '{"server": "x"}', '{"destination": "http://x", "server": "x"}'):
        with pytest.raises(agent_backup.BackupError):
            agent_backup.Config.parse(text)


def test_archiving_settings_only_with_a_backup() -> None:
    assert agent_backup.archive_settings(None) == ""
    text = agent_backup.archive_settings(agent_backup.Config("s3://b/p", "orders"))
    assert "archive_mode = always\n" in text
    assert f"archive_command = '{agent_backup.ARCHIVE_COMMAND}'" in text


# --- barman's output --------------------------------------------------------------------


def test_recorded_listing_summarised_and_chosen() -> None:
    rows = json.loads((RECORDED / "backup-list-standby.json").read_text())["backups_list"]
    (b,) = [agent_backup.summary(r) for r in rows]
    assert b["id"] == "20261206T060223" and b["status"] == "DONE"
    assert b["from_standby"] and b["timeline"] == 1
    assert b["end_at"] is not None and b["end_at"] - (b["begin_at"] or 0) == 1.0
    assert agent_backup.choose([b], None) is b
    assert agent_backup.choose([b], b["end_at"] + 1) is b
    with pytest.raises(agent_backup.BackupError, match="ended before the restore target"):
        agent_backup.choose([b], b["end_at"])
    newer = {**b, "id": "n", "end_at": b["end_at"] + 100}
    failed = {**b, "id": "f", "status": "FAILED", "end_at": b["end_at"] + 200}
    assert agent_backup.choose([b, newer, failed], None)["id"] == "n"
    assert agent_backup.choose([b, newer], b["end_at"] + 50)["id"] == b["id"]


def test_pending_counts_ready_files_and_the_oldest_age(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(agent_backup.pg, "DATA_DIR", tmp_path)
    assert agent_backup.pending(1000.0) == {"segments": 0, "oldest_seconds": 0.0}
    status = tmp_path / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    for name, mtime in (("A.ready", 900.0), ("B.ready", 950.0), ("C.done", 100.0)):
        (status / name).touch()
        os.utime(status / name, (mtime, mtime))
    assert agent_backup.pending(1000.0) == {"segments": 2, "oldest_seconds": 100.0}


# --- the planner --------------------------------------------------------------------------


def with_backup(
    doc: dict[str, Any],
    jobs: dict[str, dict[str, Any]] | None = None,
    waits: str | None = None,
    backup_status: BackupStatus | None = None,
) -> dict[str, Any]:
    doc = copy.deepcopy(steady(doc))
    doc["declaration"]["spec"]["backup"] = BACKUP
    for name, raw in doc["probes"].items():
        raw["archive"] = {
            "failed_count": 2 if raw["role"] == "primary" else 0,
            "last_archived_wal": "000000020000000000000007",
            "last_archived_at": NOW - 30,
            "segments": 1 if raw["role"] == "primary" else 0,
            "oldest_seconds": 4.26,
            "backup_waits_for_wal": name == waits,
        }
        raw["base_backup"] = (jobs or {}).get(name, {"state": "idle"})
    if backup_status is not None:
        doc["status"]["backup"] = backup_status.model_dump(mode="json")
    return doc


def test_the_first_base_backup_is_taken_at_once_on_a_streaming_standby() -> None:
    p = plan(observe(with_backup(recording("healthy"))))
    assert p.actions == [StartBaseBackup("orders-0")]
    assert p.status.state.value == "Healthy"  # a backup is routine, not a degradation
    b = p.status.backup
    assert b is not None and b.destination == "s3://shoal-backups/shoal/orders"
    assert (b.pending_segments, b.pending_seconds, b.archive_failures) == (1, 4.3, 2)
    assert b.interval_seconds == 6 * 3600


def test_no_second_backup_while_one_runs_and_none_before_it_is_due() -> None:
    running = {"orders-2": {"state": "running", "started_at": NOW - 5}}
    p = plan(observe(with_backup(recording("healthy"), running)))
    assert p.actions == [] and p.status.backup is not None
    assert p.status.backup.running_on == "orders-2"
    recent = BackupStatus(last_base_backup_at=NOW - 3600, interval_seconds=6 * 3600)
    assert plan(observe(with_backup(recording("healthy"), backup_status=recent))).actions == []
    old = BackupStatus(last_base_backup_at=NOW - 6 * 3600, interval_seconds=6 * 3600)
    assert plan(observe(with_backup(recording("healthy"), backup_status=old))).actions == [
        StartBaseBackup("orders-0")
    ]


def test_a_standby_backup_waiting_for_its_last_segment_makes_the_primary_switch() -> None:
    running = {"orders-0": {"state": "running", "started_at": NOW - 5}}
    p = plan(observe(with_backup(recording("healthy"), running, waits="orders-0")))
    assert p.actions == [SwitchWal("orders-1")]


def test_a_finished_backup_is_recorded_once() -> None:
    done = {"orders-0": {"state": "succeeded", "finished_at": NOW - 2, "backup_id": "B1"}}
    p = plan(observe(with_backup(recording("healthy"), done)))
    b = p.status.backup
    assert b is not None and p.actions == []
    assert (b.last_base_backup_at, b.last_base_backup_id, b.base_backups_taken) == (
        NOW - 2,
        "B1",
        1,
    )
    assert [e.kind for e in p.status.events].count("backup") == 1
    again = plan(observe(with_backup(recording("healthy"), done, backup_status=b)))
    assert again.status.backup is not None and again.status.backup.base_backups_taken == 1
    assert [e.kind for e in again.status.events].count("backup") == 0


def test_a_failed_backup_is_retried_after_a_pause() -> None:
    failed = {"orders-0": {"state": "failed", "finished_at": NOW - 5, "error": "bucket away"}}
    p = plan(observe(with_backup(recording("healthy"), failed)))
    assert p.actions == []
    assert p.status.backup is not None and p.status.backup.last_failure == "bucket away"
    later = p.status.backup.model_copy(
        update={"last_failure_at": NOW - pg_backup.RETRY_AFTER_SECONDS}
    )
    assert plan(observe(with_backup(recording("healthy"), backup_status=later))).actions == [
        StartBaseBackup("orders-0")
    ]


def test_without_backup_no_backup_status_and_no_action() -> None:
    p = plan(observe(steady(recording("healthy"))))
    assert p.status.backup is None and p.actions == []


# --- metrics --------------------------------------------------------------------------------


def test_backup_metrics_follow_the_status() -> None:
    m = OperatorMetrics()
    s = DatabaseStatus(
        name="orders",
        engine="postgres",
        backup=BackupStatus(
            interval_seconds=3600,
            last_base_backup_at=NOW,
            pending_segments=3,
            pending_seconds=42.0,
            archive_failures=1,
        ),
    )
    m.publish(s)
    text = m.render().decode()
    labels = '{database="orders",engine="postgres"}'
    for line in (
        f"shoal_backup_last_success_timestamp_seconds{labels} 1.8e+09",
        f"shoal_backup_interval_seconds{labels} 3600.0",
        f"shoal_wal_archive_pending_segments{labels} 3.0",
        f"shoal_wal_archive_lag_seconds{labels} 42.0",
        f"shoal_wal_archive_failed_attempts{labels} 1.0",
    ):
        assert line in text, line
    from tests.unit.test_metrics import BACKUP_CONTRACT

    assert set(BACKUP_CONTRACT) <= m.metric_names()
    m.publish(s.model_copy(update={"backup": None}))
    assert "shoal_wal_archive_lag_seconds{" not in m.render().decode()


# --- the store ------------------------------------------------------------------------------


def test_backup_and_restore_are_fixed_once_the_database_exists() -> None:
    import asyncio

    from shoal.swarm.store import ApplyOutcome, DatabaseStore
    from tests.conftest import FakeSwarm

    async def go() -> None:
        store = DatabaseStore(FakeSwarm())
        assert (await store.apply(validate_document(decl(backup=BACKUP))))[0] is (
            ApplyOutcome.CREATED
        )
        other = {**BACKUP, "baseBackups": {"every": "12h"}}
        for changed in (decl(backup=other), decl(), decl(backup=BACKUP, restore={"from": "x"})):
            with pytest.raises(DeclarationError) as e:
                await store.apply(validate_document(changed))
            assert e.value.problems[0].split(":")[0] in ("spec.backup", "spec.restore")
        stored = await store.get("orders")
        assert stored is not None and stored.declaration.spec.backup is not None
        assert stored.declaration.spec.backup.base_backups.every == "6h"
        same = validate_document(decl(backup=BACKUP, members=5))
        assert (await store.apply(same))[0] is ApplyOutcome.CONFIGURED

    asyncio.run(go())


def test_the_primary_takes_a_backup_only_when_no_standby_can_for_long() -> None:
    doc = with_backup(recording("healthy"))
    for name in ("orders-0", "orders-2"):
        doc["probes"][name]["receiving"] = False  # not streaming: not ready
    assert plan(observe(doc)).actions[-1:] != [StartBaseBackup("orders-1")]
    assert not any(isinstance(a, StartBaseBackup) for a in plan(observe(doc)).actions)
    long_ago = BackupStatus(last_base_backup_at=NOW - 9 * 3600, interval_seconds=6 * 3600)
    doc["status"]["backup"] = long_ago.model_dump(mode="json")
    assert StartBaseBackup("orders-1") in plan(observe(doc)).actions


def test_a_clones_copied_wal_is_marked_archived_and_nothing_else(tmp_path: Path) -> None:
    wal = tmp_path / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    for name in ("000000010000000000000002", "000000010000000000000003", "00000002.history",
                 "000000010000000000000004.partial", "xlogtemp.12"):  # fmt: skip
        (wal / name).touch()
    (wal / "archive_status" / "000000010000000000000003.ready").touch()
    assert agent_backup.mark_copied_wal_archived(wal) == 2
    assert sorted(p.name for p in (wal / "archive_status").iterdir()) == [
        "000000010000000000000002.done",
        "000000010000000000000003.ready",
        "00000002.history.done",
    ]
