"""The worker writes a status that changed at once, an unchanged one (only `observed_at`
moved) at most every STATUS_HEARTBEAT_SECONDS: each write is a Raft update in Swarm."""

from __future__ import annotations

from typing import Any, cast

import pytest

from shoal.operator import worker
from shoal.status import DatabaseState, DatabaseStatus

pytestmark = pytest.mark.unit


def test_only_changed_statuses_are_written_between_heartbeats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = {"now": 100.0}
    monkeypatch.setattr(worker.time, "monotonic", lambda: clock["now"])
    w = worker.DatabaseWorker(cast(Any, None), "orders")
    stored = DatabaseStatus(name="orders", engine="postgres", state=DatabaseState.HEALTHY)
    same = stored.model_copy(update={"observed_at": 5.0})
    assert w._must_write(stored, same, acted=False)  # nothing written yet by this worker
    w._written_at = clock["now"]
    clock["now"] += 5
    assert not w._must_write(stored, same, acted=False)
    assert w._must_write(stored, same, acted=True)
    degraded = same.model_copy(update={"state": DatabaseState.DEGRADED})
    assert w._must_write(stored, degraded, acted=False)
    clock["now"] += worker.STATUS_HEARTBEAT_SECONDS
    assert w._must_write(stored, same, acted=False)
