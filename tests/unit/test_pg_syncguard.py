"""The sync-wait guard's bookkeeping: which commits have waited past the limit."""

from __future__ import annotations

from shoal.plugins.postgres.agent.syncguard import SyncWaitTracker, terminate_sql


def test_a_wait_is_overdue_only_after_the_limit_by_the_trackers_own_clock() -> None:
    t = SyncWaitTracker(limit=1.0)
    assert t.overdue([(10, "a")], now=100.0) == []
    assert t.overdue([(10, "a"), (11, "b")], now=100.6) == []
    assert t.overdue([(10, "a"), (11, "b")], now=101.0) == [10]
    assert t.overdue([(10, "a"), (11, "b")], now=101.7) == [10, 11]


def test_a_new_commit_on_the_same_connection_is_a_new_wait() -> None:
    t = SyncWaitTracker(limit=1.0)
    t.overdue([(10, "a")], now=0.0)
    assert t.overdue([(10, "b")], now=5.0) == []  # query_start changed: it just began
    assert t.overdue([(10, "b")], now=6.0) == [10]


def test_a_wait_that_ended_is_forgotten() -> None:
    t = SyncWaitTracker(limit=1.0)
    t.overdue([(10, "a")], now=0.0)
    assert t.overdue([], now=0.5) == []
    assert t.overdue([(10, "a")], now=1.2) == []  # seen again: counted from now


def test_only_waiting_backends_of_the_listed_pids_are_terminated() -> None:
    sql = terminate_sql([3, 17])
    assert "pid IN (3, 17)" in sql
    assert "wait_event = 'SyncRep'" in sql
