"""The PostgreSQL planner's stored progress (plugins/postgres/progress.py): typed, versioned,
the flat map of earlier operators still read, anything newer or malformed refused."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.plugins.base import UnreadablePlanState
from shoal.plugins.postgres.progress import PROGRESS_FORMAT, FenceRecord, PgProgress

pytestmark = pytest.mark.unit

FLAT = {
    "task:orders-0": "t0",
    "task:orders-1": "t1",
    "fence:orders-1": "t1@4:12.500",
    "ever_healthy": "1",
    "promoting": "orders-0",
    "promoting_kind": "switchover",
    "failover_from": "orders-1",
    "switchover_from": "orders-1",
    "switchover_to": "orders-0",
    "switchover_started": "4:10.000",
}


def test_the_flat_map_of_earlier_operators_is_read() -> None:
    """An operator upgraded in the middle of a failover or switchover resumes it."""
    p = PgProgress.from_status(FLAT)
    assert p.data_tasks == {"orders-0": "t0", "orders-1": "t1"}
    assert p.fences == {"orders-1": FenceRecord(task_id="t1", stamped="4:12.500")}
    assert p.ever_healthy and p.promoting == "orders-0" and p.promoting_kind == "switchover"
    assert p.failover_from == "orders-1"
    assert p.switchover is not None
    assert (p.switchover.from_member, p.switchover.to_member) == ("orders-1", "orders-0")
    assert p.switchover.started == "4:10.000"


def test_round_trip_through_the_status() -> None:
    p = PgProgress.from_status(FLAT)
    stored = p.to_status()
    assert stored["format"] == PROGRESS_FORMAT
    assert PgProgress.from_status(stored) == p


def test_empty_is_a_new_database() -> None:
    assert PgProgress.from_status({}) == PgProgress()


@pytest.mark.parametrize(
    "raw",
    [
        {"format": PROGRESS_FORMAT + 1},
        {"format": "2"},
        {"format": PROGRESS_FORMAT, "data_tasks": ["orders-0"]},
        {"format": PROGRESS_FORMAT, "unknown_field": 1},
        {"format": PROGRESS_FORMAT, "promoting_kind": "election"},
        {"task:orders-0": 7},
    ],
)
def test_newer_or_malformed_progress_is_refused(raw: dict[str, Any]) -> None:
    """Never guess: the worker treats this as an unreadable status and acts on nothing."""
    with pytest.raises(UnreadablePlanState):
        PgProgress.from_status(raw)
