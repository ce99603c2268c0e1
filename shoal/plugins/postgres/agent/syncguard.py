"""The sync-wait guard: on a primary, a commit that has waited for its synchronous standbys
longer than `SYNC_WAIT_LIMIT` is ended by terminating its backend.

Why. PostgreSQL lets a *cancel request* end a commit's wait for synchronous replication
(a driver's query timeout, `pg_cancel_backend`, Ctrl-C), and then reports the commit to the
client as successful, with only a WARNING: "canceling wait for synchronous replication due
to user request ... The transaction has already committed locally, but might not have been
replicated to the standby" (src/backend/replication/syncrep.c, SyncRepWaitForLSN). A
primary cut off from its standbys (a network partition Swarm cannot fence) would thus
acknowledge commits that no standby has, and that are gone once a standby is promoted.
Seen on a lab swarm: a client with a 3 s query timeout beside a cut-off primary got
`INSERT 0 1` for rows the promoted standby never had
(tests/multinode/test_node_loss.py, the cut-off test).

A *terminated* backend sends the client no success: on ProcDiePending the wait ends with
"terminating connection due to administrator command" and the output to the client is
suppressed (same function). The client then sees a broken connection, an outcome it must
treat as unknown, never as acknowledged. `statement_timeout` does not end the wait (it is
disabled before the commit, postgres.c finish_xact_command), so only cancels need beating.

The guard narrows the window to `SYNC_WAIT_LIMIT`; a client that cancels sooner than that
can still be told "success" for a commit on a cut-off primary (docs/failure-modes.md).
A commit waits that long only when its standbys are not answering: during a failover, a
partition, or both standbys lost, when the wait's outcome is uncertain anyway.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from . import pg

SYNC_WAIT_LIMIT = 1.0  # seconds a commit may wait for its synchronous standbys
CHECK_EVERY = 0.25

# Client backends waiting for synchronous replication now, keyed by (pid, query_start) so a
# new commit on the same connection is a new wait.
WAITERS_SQL = """SELECT coalesce(json_agg(json_build_array(pid, query_start::text)), '[]')
FROM pg_stat_activity
WHERE wait_event = 'SyncRep' AND backend_type = 'client backend'"""


def terminate_sql(pids: list[int]) -> str:
    listed = ", ".join(str(int(p)) for p in pids)
    return (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE wait_event = 'SyncRep' AND pid IN ({listed})"
    )


class SyncWaitTracker:
    """Pure bookkeeping: which waits have lasted past the limit, by this process's clock."""

    def __init__(self, limit: float = SYNC_WAIT_LIMIT) -> None:
        self.limit = limit
        self._since: dict[tuple[int, str], float] = {}

    def overdue(self, waiting: list[tuple[int, str]], now: float) -> list[int]:
        current = set(waiting)
        self._since = {k: v for k, v in self._since.items() if k in current}
        for key in current:
            self._since.setdefault(key, now)
        return sorted(pid for (pid, _), since in self._since.items() if now - since >= self.limit)


def _waiters() -> list[tuple[int, str]]:
    rows: Any = pg.psql_json(WAITERS_SQL, timeout=2, statement_timeout_ms=1000)
    return [(int(pid), str(started)) for pid, started in rows or []]


def run(is_primary: Any, stop: threading.Event, log: Any) -> None:
    """Until `stop`: while `is_primary()`, end commits waiting past the limit."""
    tracker = SyncWaitTracker()
    while not stop.wait(CHECK_EVERY):
        if not is_primary():
            tracker = SyncWaitTracker()
            continue
        try:
            overdue = tracker.overdue(_waiters(), time.monotonic())
            if overdue:
                ended = pg.psql(terminate_sql(overdue), timeout=2, statement_timeout_ms=1000)
                log(
                    f"ended {ended} commit(s) waiting over {SYNC_WAIT_LIMIT:g}s for the "
                    "synchronous standbys: a cancelled wait would report them committed"
                )
        except pg.PgError:
            continue  # PostgreSQL restarting or busy: try again next round
