"""The operator's Prometheus metrics (docs/operations.md, "Metrics": the names are a contract).

`OperatorMetrics` owns its own `CollectorRegistry` so that tests and several instances in
one process never collide with the global registry.

Gauges are *set* from a `DatabaseStatus` by `publish()`; counters only ever go up and are
incremented by the operator when the thing happens (`record_failover`, `record_reseed`,
`record_reconcile_error`). Every series carries `database` and `engine`, the per-member
series also `member`. `forget()` drops every series of a deleted database, and `publish()`
drops the gauges of members that left the status.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from shoal.status import DatabaseState, DatabaseStatus, MemberRole, MemberState

CONTENT_TYPE = CONTENT_TYPE_LATEST

# 5 ms .. 30 s: a reconcile pass is a few Docker API calls and engine probes normally,
# several seconds while it waits for a promotion or a seed.
RECONCILE_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
)

DB_LABELS = ("database", "engine")
BACKUP_GAUGES = (
    "backup_last_success",
    "backup_interval",
    "archive_pending",
    "archive_lag",
    "archive_failures",
)
MEMBER_LABELS = ("database", "engine", "member")

_Labels = tuple[str, ...]


class OperatorMetrics:
    """Every metric the operator exposes on `/metrics`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        # -- database gauges
        self.members_desired = Gauge(
            "shoal_database_members_desired",
            "Data-bearing members declared for the database",
            DB_LABELS,
            registry=r,
        )
        self.members_ready = Gauge(
            "shoal_database_members_ready",
            "Members running and replicating (or primary)",
            DB_LABELS,
            registry=r,
        )
        self.writable = Gauge(
            "shoal_database_writable",
            "1 if the database has a writable primary, else 0",
            DB_LABELS,
            registry=r,
        )
        self.state = Gauge(
            "shoal_database_state",
            "1 for the database's current state, 0 for every other state",
            (*DB_LABELS, "state"),
            registry=r,
        )
        # -- member gauges
        self.member_up = Gauge(
            "shoal_member_up",
            "1 if the member's engine answers probes, else 0",
            MEMBER_LABELS,
            registry=r,
        )
        self.member_role = Gauge(
            "shoal_member_role",
            "1 for the member's current role, 0 for every other role",
            (*MEMBER_LABELS, "role"),
            registry=r,
        )
        self.member_lag_bytes = Gauge(
            "shoal_member_replication_lag_bytes",
            "Bytes of replication stream the member is behind its primary",
            MEMBER_LABELS,
            registry=r,
        )
        self.member_lag_seconds = Gauge(
            "shoal_member_replication_lag_seconds",
            "Seconds the member's replayed data is behind its primary",
            MEMBER_LABELS,
            registry=r,
        )
        # -- counters
        self.failovers = Counter(
            "shoal_failovers",
            "Automatic failovers (new primary after losing the old one)",
            DB_LABELS,
            registry=r,
        )
        self.reseeds = Counter(
            "shoal_member_reseeds",
            "Times a member was re-seeded from a peer",
            MEMBER_LABELS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            "shoal_reconcile_errors",
            "Reconcile passes that ended in an error",
            DB_LABELS,
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "shoal_reconcile_duration_seconds",
            "Duration of one reconcile pass of a database",
            DB_LABELS,
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        # -- operator
        self.leader = Gauge(
            "shoal_operator_leader",
            "1 if this operator holds the lease and acts, else 0",
            registry=r,
        )
        # -- extras (not part of the contract, free to change)
        self.member_state = Gauge(
            "shoal_member_state",
            "1 for the member's current state, 0 for every other state",
            (*MEMBER_LABELS, "state"),
            registry=r,
        )
        self.observed = Gauge(
            "shoal_database_observed_timestamp_seconds",
            "Unix time the database status was last computed",
            DB_LABELS,
            registry=r,
        )
        self.status_unreadable = Gauge(
            "shoal_database_status_unreadable",
            "1 while the database's stored status cannot be read: the operator does not act",
            DB_LABELS,
            registry=r,
        )
        # -- backups (docs/backup.md): only for databases that declare spec.backup
        self.backup_last_success = Gauge(
            "shoal_backup_last_success_timestamp_seconds",
            "Unix time the newest successful base backup ended",
            DB_LABELS,
            registry=r,
        )
        self.backup_interval = Gauge(
            "shoal_backup_interval_seconds",
            "How often a base backup is due (spec.backup.baseBackups.every)",
            DB_LABELS,
            registry=r,
        )
        self.archive_pending = Gauge(
            "shoal_wal_archive_pending_segments",
            "WAL segments the primary finished but has not archived yet",
            DB_LABELS,
            registry=r,
        )
        self.archive_lag = Gauge(
            "shoal_wal_archive_lag_seconds",
            "How long the oldest WAL segment not yet archived has waited (0: none waits)",
            DB_LABELS,
            registry=r,
        )
        self.archive_failures = Gauge(
            "shoal_wal_archive_failed_attempts",
            "Failed archive attempts of the primary since its PostgreSQL started",
            DB_LABELS,
            registry=r,
        )
        self.leader.set(0)
        # database -> the label sets of every series published for it, per metric
        self._series: dict[str, dict[str, set[_Labels]]] = {}
        # database -> (engine, member names) of the last publish()
        self._members: dict[str, tuple[str, set[str]]] = {}

    # ------------------------------------------------------------------ bookkeeping
    def _metric(self, attr: str) -> Gauge | Counter | Histogram:
        metric: Gauge | Counter | Histogram = getattr(self, attr)
        return metric

    def _track(self, attr: str, labels: _Labels) -> None:
        self._series.setdefault(labels[0], {}).setdefault(attr, set()).add(labels)

    def _drop(self, database: str, keep: Iterable[str] = (), member: str | None = None) -> None:
        """Remove the series of `database` (only those of `member` if given), except the
        metrics named in `keep`."""
        tracked = self._series.get(database, {})
        keep_set = set(keep)
        for attr, label_sets in tracked.items():
            if attr in keep_set:
                continue
            for labels in list(label_sets):
                if member is not None and (len(labels) < 3 or labels[2] != member):
                    continue
                with contextlib.suppress(KeyError):
                    self._metric(attr).remove(*labels)
                label_sets.discard(labels)

    # ------------------------------------------------------------------ publishing
    def publish(self, status: DatabaseStatus) -> None:
        """Set every gauge of one database from its status."""
        db, engine = status.name, status.engine
        previous = self._members.get(db)
        if previous is not None and previous[0] != engine:
            # engine label changed (database re-created under another engine)
            self.forget(db)
            previous = None
        base = (db, engine)
        self._set(self.members_desired, "members_desired", base, status.members_desired)
        self._set(self.members_ready, "members_ready", base, status.members_ready)
        self._set(self.writable, "writable", base, 1 if status.writable else 0)
        self._set(self.observed, "observed", base, status.observed_at)
        for state in DatabaseState:
            self._set(self.state, "state", (*base, state.value), 1 if status.state == state else 0)
        # counters exist from the first publish, at 0, so that increase() sees the first one
        self._touch(self.failovers, "failovers", base)
        self._touch(self.reconcile_errors, "reconcile_errors", base)
        self._publish_backup(status, base)

        names: set[str] = set()
        for m in status.members:
            names.add(m.name)
            labels = (db, engine, m.name)
            self._set(self.member_up, "member_up", labels, 1 if m.up else 0)
            for role in MemberRole:
                self._set(
                    self.member_role,
                    "member_role",
                    (*labels, role.value),
                    1 if m.role == role else 0,
                )
            for mstate in MemberState:
                self._set(
                    self.member_state,
                    "member_state",
                    (*labels, mstate.value),
                    1 if m.state == mstate else 0,
                )
            self._set_optional(self.member_lag_bytes, "member_lag_bytes", labels, m.lag_bytes)
            self._set_optional(self.member_lag_seconds, "member_lag_seconds", labels, m.lag_seconds)
            self._touch(self.reseeds, "reseeds", labels)
        if previous is not None:
            for gone in previous[1] - names:
                # the member left the declaration: its gauges go; its re-seed counter stays
                # until the database is forgotten (a counter that disappears and comes back
                # would look like a reset to increase()).
                self._drop(db, keep=("reseeds",), member=gone)
        self._members[db] = (engine, names)

    def _publish_backup(self, status: DatabaseStatus, base: _Labels) -> None:
        b = status.backup
        if b is None:
            for attr in BACKUP_GAUGES:
                with contextlib.suppress(KeyError):
                    self._metric(attr).remove(*base)
            return
        self._set_optional(
            self.backup_last_success, "backup_last_success", base, b.last_base_backup_at
        )
        self._set(self.backup_interval, "backup_interval", base, b.interval_seconds)
        self._set(self.archive_pending, "archive_pending", base, b.pending_segments)
        self._set(self.archive_lag, "archive_lag", base, b.pending_seconds)
        self._set(self.archive_failures, "archive_failures", base, b.archive_failures)

    def sync(self, statuses: Iterable[DatabaseStatus]) -> None:
        """Publish every status and forget the databases that are not among them."""
        seen: set[str] = set()
        for status in statuses:
            self.publish(status)
            seen.add(status.name)
        for db in set(self._members) - seen:
            self.forget(db)

    def forget(self, database: str) -> None:
        """Remove every series of a deleted database."""
        self._drop(database)
        self._series.pop(database, None)
        self._members.pop(database, None)

    def databases(self) -> list[str]:
        """The databases that currently have series."""
        return sorted(self._series)

    def set_status_unreadable(self, database: str, engine: str, unreadable: bool) -> None:
        labels = (database, engine)
        self.status_unreadable.labels(*labels).set(1 if unreadable else 0)
        self._track("status_unreadable", labels)

    # ------------------------------------------------------------------ events
    def record_failover(self, database: str, engine: str) -> None:
        labels = (database, engine)
        self.failovers.labels(*labels).inc()
        self._track("failovers", labels)

    def record_reseed(self, database: str, engine: str, member: str) -> None:
        labels = (database, engine, member)
        self.reseeds.labels(*labels).inc()
        self._track("reseeds", labels)

    def observe_reconcile(self, database: str, engine: str, seconds: float) -> None:
        labels = (database, engine)
        self.reconcile_duration.labels(*labels).observe(max(0.0, seconds))
        self._track("reconcile_duration", labels)

    def record_reconcile_error(self, database: str, engine: str) -> None:
        labels = (database, engine)
        self.reconcile_errors.labels(*labels).inc()
        self._track("reconcile_errors", labels)

    def set_leader(self, leader: bool) -> None:
        self.leader.set(1 if leader else 0)

    # ------------------------------------------------------------------ exposition
    def render(self) -> bytes:
        """The text exposition format of every series."""
        data: bytes = generate_latest(self.registry)
        return data

    @property
    def content_type(self) -> str:
        return CONTENT_TYPE

    def metric_names(self) -> set[str]:
        """Every sample name this registry can expose (counters with `_total`, histograms
        with `_bucket`/`_sum`/`_count`), for cross-checks of dashboards and alerts."""
        names: set[str] = set()
        for family in self.registry.collect():
            names.add(family.name)
            if family.type == "counter":
                names.update({f"{family.name}_total", f"{family.name}_created"})
            elif family.type == "histogram":
                names.update(
                    f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count", "_created")
                )
        return names

    # ------------------------------------------------------------------ helpers
    def _set(self, gauge: Gauge, attr: str, labels: _Labels, value: float) -> None:
        gauge.labels(*labels).set(value)
        self._track(attr, labels)

    def _set_optional(self, gauge: Gauge, attr: str, labels: _Labels, value: float | None) -> None:
        """A value the engine could not report is no series at all (not a misleading 0)."""
        if value is None:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
            self._series.get(labels[0], {}).get(attr, set()).discard(labels)
        else:
            self._set(gauge, attr, labels, value)

    def _touch(self, counter: Counter, attr: str, labels: _Labels) -> None:
        counter.labels(*labels)
        self._track(attr, labels)
