"""The synchronous standby list each member must have in force (docs/failure-modes.md, property 2).

`ANY 1 (...)` is quorum commit: a commit waits for any one listed standby to flush it
(https://www.postgresql.org/docs/15/runtime-config-replication.html#GUC-SYNCHRONOUS-STANDBY-NAMES).
The list names every other declared member, streaming or not, so it never shrinks to nothing
under `durability: sync`: with no standby connected a commit waits rather than being
acknowledged by one copy.

Every member keeps *its own* list (the other declared members) in force all the time, the
standbys included, where it has no effect until they are promoted; `Promote` carries it
again and the agent checks it before `pg_promote`. So a promoted member's first write already
waits for a standby: there is no moment where a writable member runs asynchronously.
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.declaration import Durability
from shoal.plugins.postgres import naming

SYNC_QUORUM = 1  # k of `ANY k (...)`: a commit is on the primary and k standbys


def sync_standby_names(standbys: Iterable[str], durability: Durability) -> str:
    listed = sorted(standbys)
    if durability is Durability.ASYNC or not listed:
        return ""
    quoted = ", ".join(f'"{naming.slot_name(s)}"' for s in listed)
    return f"ANY {SYNC_QUORUM} ({quoted})"


def list_for(member: str, declared: Iterable[str], durability: Durability) -> str:
    """The list `member` must have in force as a primary: every other declared member."""
    return sync_standby_names((m for m in declared if m != member), durability)
