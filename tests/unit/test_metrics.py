"""OperatorMetrics: the exposition carries the contract of docs/operations.md, "Metrics"."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shoal.operator.metrics import CONTENT_TYPE, OperatorMetrics
from shoal.status import (
    DatabaseState,
    DatabaseStatus,
    MemberRole,
    MemberState,
    MemberStatus,
)

pytestmark = pytest.mark.unit

CONTRACT = [
    "shoal_database_members_desired",
    "shoal_database_members_ready",
    "shoal_database_writable",
    "shoal_database_state",
    "shoal_member_up",
    "shoal_member_role",
    "shoal_member_replication_lag_bytes",
    "shoal_member_replication_lag_seconds",
    "shoal_failovers_total",
    "shoal_member_reseeds_total",
    "shoal_reconcile_duration_seconds",
    "shoal_reconcile_errors_total",
    "shoal_operator_leader",
]
# With spec.backup only (docs/backup.md): series exist for databases that declare it.
BACKUP_CONTRACT = [
    "shoal_backup_last_success_timestamp_seconds",
    "shoal_backup_interval_seconds",
    "shoal_wal_archive_pending_segments",
    "shoal_wal_archive_lag_seconds",
    "shoal_wal_archive_failed_attempts",
]

Sample = tuple[str, dict[str, str], float]


def samples(m: OperatorMetrics) -> list[Sample]:
    out: list[Sample] = []
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out.append((s.name, dict(s.labels), s.value))
    return out


def value(m: OperatorMetrics, name: str, **labels: str) -> float | None:
    found = [v for n, lab, v in samples(m) if n == name and lab == labels]
    assert len(found) <= 1, found
    return found[0] if found else None


def series(m: OperatorMetrics, name: str, **match: str) -> list[dict[str, str]]:
    return [
        lab
        for n, lab, _ in samples(m)
        if n == name and all(lab.get(k) == v for k, v in match.items())
    ]


def orders(state: DatabaseState = DatabaseState.HEALTHY, n: int = 3) -> DatabaseStatus:
    members = [
        MemberStatus(
            name=f"orders-{i}",
            role=MemberRole.PRIMARY if i == 0 else MemberRole.REPLICA,
            state=MemberState.RUNNING,
            node="node-a",
            lag_bytes=None if i == 0 else 1024 * i,
            lag_seconds=None if i == 0 else 0.5 * i,
            up=True,
        )
        for i in range(n)
    ]
    return DatabaseStatus(
        name="orders",
        engine="postgres",
        state=state,
        primary="orders-0",
        members=members,
        members_desired=3,
        members_ready=n,
        writable=state in (DatabaseState.HEALTHY, DatabaseState.DEGRADED),
        observed_at=1_700_000_000.0,
    )


def test_every_contract_metric_is_exposed() -> None:
    m = OperatorMetrics()
    m.publish(orders())
    m.record_failover("orders", "postgres")
    m.record_reseed("orders", "postgres", "orders-1")
    m.observe_reconcile("orders", "postgres", 0.02)
    m.record_reconcile_error("orders", "postgres")
    names = {n for n, _, _ in samples(m)}
    for name in CONTRACT:
        if name == "shoal_reconcile_duration_seconds":
            assert {f"{name}_bucket", f"{name}_sum", f"{name}_count"} <= names
        else:
            assert name in names, name
    assert set(CONTRACT) <= m.metric_names()
    assert CONTENT_TYPE.startswith("text/plain")
    assert m.content_type == CONTENT_TYPE


def test_database_gauges_from_status() -> None:
    m = OperatorMetrics()
    m.publish(orders())
    db = {"database": "orders", "engine": "postgres"}
    assert value(m, "shoal_database_members_desired", **db) == 3
    assert value(m, "shoal_database_members_ready", **db) == 3
    assert value(m, "shoal_database_writable", **db) == 1
    states = {lab["state"]: v for n, lab, v in samples(m) if n == "shoal_database_state"}
    assert states == {s.value: (1.0 if s is DatabaseState.HEALTHY else 0.0) for s in DatabaseState}


def test_state_changes_move_the_one() -> None:
    m = OperatorMetrics()
    m.publish(orders())
    m.publish(orders(DatabaseState.UNAVAILABLE))
    ones = [lab["state"] for n, lab, v in samples(m) if n == "shoal_database_state" and v == 1]
    assert ones == ["Unavailable"]
    assert value(m, "shoal_database_writable", database="orders", engine="postgres") == 0


def test_member_series() -> None:
    m = OperatorMetrics()
    m.publish(orders())
    lab = {"database": "orders", "engine": "postgres", "member": "orders-1"}
    assert value(m, "shoal_member_up", **lab) == 1
    assert value(m, "shoal_member_replication_lag_bytes", **lab) == 1024
    assert value(m, "shoal_member_replication_lag_seconds", **lab) == 0.5
    roles = {
        x["role"]: v
        for n, x, v in samples(m)
        if n == "shoal_member_role" and x["member"] == "orders-1"
    }
    assert roles["replica"] == 1 and roles["primary"] == 0
    assert sum(roles.values()) == 1
    # unknown lag (the primary) is no series, not a misleading 0
    assert series(m, "shoal_member_replication_lag_bytes", member="orders-0") == []


def test_lag_disappears_when_unknown() -> None:
    m = OperatorMetrics()
    m.publish(orders())
    s = orders()
    s.members[1].lag_bytes = None
    m.publish(s)
    assert series(m, "shoal_member_replication_lag_bytes", member="orders-1") == []
    assert series(m, "shoal_member_replication_lag_bytes", member="orders-2") != []


def test_counters_start_at_zero_and_are_monotonic() -> None:
    m = OperatorMetrics()
    m.publish(orders())
    db = {"database": "orders", "engine": "postgres"}
    assert value(m, "shoal_failovers_total", **db) == 0
    assert value(m, "shoal_reconcile_errors_total", **db) == 0
    assert value(m, "shoal_member_reseeds_total", member="orders-2", **db) == 0
    m.record_failover("orders", "postgres")
    m.record_failover("orders", "postgres")
    m.record_reseed("orders", "postgres", "orders-2")
    m.record_reconcile_error("orders", "postgres")
    m.publish(orders())  # publishing again never resets a counter
    assert value(m, "shoal_failovers_total", **db) == 2
    assert value(m, "shoal_member_reseeds_total", member="orders-2", **db) == 1
    assert value(m, "shoal_reconcile_errors_total", **db) == 1


def test_reconcile_histogram_buckets() -> None:
    m = OperatorMetrics()
    for secs in (0.004, 0.2, 12.0, 45.0):
        m.observe_reconcile("orders", "postgres", secs)
    buckets = {
        lab["le"]: v for n, lab, v in samples(m) if n == "shoal_reconcile_duration_seconds_bucket"
    }
    assert buckets["0.005"] == 1
    assert buckets["0.25"] == 2
    assert buckets["30.0"] == 3
    assert buckets["+Inf"] == 4
    assert (
        value(m, "shoal_reconcile_duration_seconds_count", database="orders", engine="postgres")
        == 4
    )


def test_leader() -> None:
    m = OperatorMetrics()
    assert value(m, "shoal_operator_leader") == 0
    m.set_leader(True)
    assert value(m, "shoal_operator_leader") == 1
    m.set_leader(False)
    assert value(m, "shoal_operator_leader") == 0


def test_member_removed_from_status_loses_its_gauges() -> None:
    m = OperatorMetrics()
    m.publish(orders(n=3))
    m.record_reseed("orders", "postgres", "orders-2")
    m.publish(orders(n=2))
    assert series(m, "shoal_member_up", member="orders-2") == []
    assert series(m, "shoal_member_role", member="orders-2") == []
    assert series(m, "shoal_member_replication_lag_bytes", member="orders-2") == []
    # the counter stays until the database is forgotten
    assert series(m, "shoal_member_reseeds_total", member="orders-2") != []
    assert series(m, "shoal_member_up", member="orders-1") != []


def test_forget_removes_every_series_of_the_database() -> None:
    m = OperatorMetrics()
    m.publish(orders())
    other = orders().model_copy(update={"name": "users", "engine": "mongodb"})
    m.publish(other)
    m.record_failover("orders", "postgres")
    m.record_reseed("orders", "postgres", "orders-1")
    m.observe_reconcile("orders", "postgres", 0.1)
    m.record_reconcile_error("orders", "postgres")
    m.forget("orders")
    left = [(n, lab) for n, lab, _ in samples(m) if lab.get("database") == "orders"]
    assert left == []
    assert series(m, "shoal_database_writable", database="users") != []
    assert m.databases() == ["users"]
    # forgetting twice or an unknown database is harmless
    m.forget("orders")
    m.forget("nope")


def test_sync_forgets_absent_databases() -> None:
    m = OperatorMetrics()
    other = orders().model_copy(update={"name": "users"})
    m.sync([orders(), other])
    assert m.databases() == ["orders", "users"]
    m.sync([other])
    assert m.databases() == ["users"]
    assert series(m, "shoal_database_state", database="orders") == []


def test_engine_change_replaces_series() -> None:
    m = OperatorMetrics()
    m.publish(orders())
    m.publish(orders().model_copy(update={"engine": "mongodb"}))
    assert series(m, "shoal_database_writable", engine="postgres") == []
    assert series(m, "shoal_database_writable", engine="mongodb") != []


def test_registries_are_independent() -> None:
    a, b = OperatorMetrics(), OperatorMetrics()
    a.publish(orders())
    assert series(b, "shoal_database_writable") == []
