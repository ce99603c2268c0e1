"""The primary's lease: a primary that hears from neither the operator nor all of its
standbys for the lease's length stops accepting writes by itself.

Why. When a node drops off the network, Swarm marks it down and the operator promotes a
standby elsewhere, but nothing can stop the old primary's container on the cut-off side:
clients beside it keep writing to it. Under `durability: sync` its commits wait for standbys
that no longer follow it (and `syncguard.py` ends those waits), but under `async` it
acknowledges every write, all of which the promoted standby lacks, and it serves stale reads
to whoever can still reach it. The lease bounds that: the old primary fences itself within a
known time, and the operator's failover waits that time before promoting
(`failover.py`, docs/failure-modes.md "Node loss").

What we follow.
- Patroni: the leader key in the DCS has a TTL; a leader that cannot update it demotes
  itself. With `failsafe_mode`, a leader that cannot reach the DCS keeps running only while
  it can reach *every* member of the cluster (each acknowledges it over the REST API).
  Here the operator plays the DCS: every `GET /state` it sends carries a renewal
  (`X-Shoal-Lease`). The failsafe rule is the same: the lease holds without the operator
  only while every peer the operator named is streaming from this primary and replied within
  `PEER_REPLY_LIMIT` (`pg_stat_replication.reply_time`; standbys reply at least every
  `wal_receiver_status_interval` = 1 s, pg.py). A member being re-seeded therefore
  makes an operator outage longer than the lease stop the primary, as in Patroni.
- CloudNativePG's primary isolation check: a primary that can reach neither the API server
  nor the other instances shuts itself down after a timeout.

Fencing itself means: PostgreSQL is stopped at once (SIGQUIT: every backend ends without
acknowledging anything in flight) and started again as a standby that follows nothing, as
after a container restart (`Agent.recover_on_start`). Its data stays: if no other member was
promoted meanwhile, the operator promotes it again, as the standby holding every write.

Timing, by this container's monotonic clock: the lease ends `ttl` after the request that last
renewed it, or `PEER_REPLY_LIMIT` after the last moment every named peer had replied,
whichever is later; PostgreSQL has stopped `REACTION` after that at most (the check period
and the immediate stop). The peers' replies are asked for by a thread of their own
(`watch_peers`) from `WATCH_AHEAD` before the operator's renewal runs out, so the check that
fences never waits for a query: a slow or hung PostgreSQL makes the lease end sooner, never
later. The operator counts from *sending* the renewal and adds its probe timeout and a guard
(operator/observe.py).
A primary whose whole host is frozen (a paused VM or node container) notices only when it
runs again, and its backends may run first: that is the limit every lease has.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import pg

HEADER = "X-Shoal-Lease"
CHECK_EVERY = 0.25
PEER_REPLY_LIMIT = 3.0  # seconds since a standby's last reply for it to count as reached
PEERS_QUERY_TIMEOUT = 1.0
# The peers' replies are asked for from this long before the operator's renewal runs out
# (a query, and a check period to spare), and every CHECK_EVERY after it has.
WATCH_AHEAD = PEERS_QUERY_TIMEOUT + 2 * CHECK_EVERY
# From the moment the lease runs out until PostgreSQL has stopped, at most: the check period
# and the immediate stop (the peers' replies were asked for beforehand, by `watch_peers`).
REACTION = CHECK_EVERY + 0.5
# Agents of member images before `watch_peers` asked for the peers' replies at the moment
# the renewal ran out: the operator counts this for members still running such an image.
REACTION_OF_EARLIER_AGENTS = CHECK_EVERY + PEERS_QUERY_TIMEOUT + 0.5
MIN_TTL, MAX_TTL = 1.0, 3600.0
MAX_PEERS = 64

# ttl=<seconds>;token=<int>;peers=<slot>,<slot>   (peers may be empty)
_HEADER_RE = re.compile(
    r"ttl=(?P<ttl>[0-9]{1,6}(?:\.[0-9]{1,3})?);token=(?P<token>[0-9]{1,16});"
    r"peers=(?P<peers>[a-z0-9_,]{0,4200})"
)

PEERS_SQL = """SELECT coalesce(json_object_agg(application_name,
  extract(epoch FROM now() - reply_time)::float8), '{}')
FROM pg_stat_replication WHERE state = 'streaming'"""


class BadLease(ValueError):
    """The renewal header is malformed (the message names what is wrong)."""


@dataclass(frozen=True)
class Renewal:
    ttl: float
    token: int
    peers: tuple[str, ...]


def parse_header(raw: str) -> Renewal:
    m = _HEADER_RE.fullmatch(raw.strip())
    if m is None:
        raise BadLease(f"header {HEADER} must be 'ttl=<seconds>;token=<int>;peers=<slot>,...'")
    ttl = float(m["ttl"])
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise BadLease(f"header {HEADER}: ttl {ttl:g} is outside {MIN_TTL:g}..{MAX_TTL:g}")
    peers = tuple(p for p in m["peers"].split(",") if p)
    if len(peers) > MAX_PEERS or any(not pg.SLOT_RE.match(p) for p in peers):
        raise BadLease(f"header {HEADER}: peers must be at most {MAX_PEERS} slot names")
    token = int(m["token"])
    if token <= 0:
        raise BadLease(f"header {HEADER}: token must be positive")
    return Renewal(ttl=ttl, token=token, peers=peers)


class Lease:
    """Pure bookkeeping, by one monotonic clock: when the operator last renewed, for how
    long, and which peers must all be streaming for the lease to hold without it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.renewed_at: float | None = None  # None: never granted, so never expires
        self.ttl = 0.0
        self.peers: tuple[str, ...] = ()
        self.peer_held_until = 0.0  # the last moment every peer was seen replying

    def renew(self, r: Renewal, now: float) -> None:
        with self._lock:
            if r.peers != self.peers:
                # Replies of another set of peers say nothing of this one's.
                self.peer_held_until = 0.0
            self.renewed_at, self.ttl, self.peers = now, r.ttl, r.peers

    def operator_left(self, now: float) -> float | None:
        """Seconds the operator's renewal still covers; None when no lease was ever granted."""
        with self._lock:
            if self.renewed_at is None:
                return None
            return self.renewed_at + self.ttl - now

    def note_peers(self, asked_at: float, reply_age: dict[str, float] | None) -> None:
        """The peers' replies as PostgreSQL reported them to a query sent at `asked_at`:
        seconds since each streaming standby's last reply (application name), or None
        when PostgreSQL could not be asked (which holds nothing)."""
        with self._lock:
            if not self.peers or reply_age is None:
                return
            ages = [reply_age.get(p) for p in self.peers]
            if all(a is not None and a < PEER_REPLY_LIMIT for a in ages):
                oldest = max(a for a in ages if a is not None)
                # The query ran after `asked_at`: counting from then puts each reply no
                # later than it was, so the hold never outlasts the real one.
                self.peer_held_until = max(self.peer_held_until, asked_at - oldest)

    def expired(self, now: float) -> bool:
        """True once neither the operator's renewal nor the peers hold the lease: every
        peer replied at `peer_held_until` or later, which holds it PEER_REPLY_LIMIT more."""
        with self._lock:
            if self.renewed_at is None or now < self.renewed_at + self.ttl:
                return False
            return now >= self.peer_held_until + PEER_REPLY_LIMIT

    def describe(self, now: float) -> dict[str, Any] | None:
        left = self.operator_left(now)
        if left is None:
            return None
        return {"ttl": self.ttl, "operator_left": round(left, 3), "peers": list(self.peers)}


def _reply_ages() -> dict[str, float] | None:
    try:
        rows: Any = pg.psql_json(PEERS_SQL, timeout=PEERS_QUERY_TIMEOUT, statement_timeout_ms=800)
    except (pg.PgError, ValueError):
        return None
    if not isinstance(rows, dict):
        return None
    return {str(k): float(v) for k, v in rows.items() if isinstance(v, (int, float))}


def watch_peers(lease: Lease, is_primary: Any, stop: threading.Event) -> None:
    """Until `stop`: while this member is a primary whose operator renewal runs out within
    WATCH_AHEAD (or has), ask PostgreSQL for its peers' replies every CHECK_EVERY."""
    while not stop.wait(CHECK_EVERY):
        left = lease.operator_left(time.monotonic())
        if left is None or left > WATCH_AHEAD or not is_primary():
            continue  # the operator's renewal holds for a while: no query needed
        asked_at = time.monotonic()
        lease.note_peers(asked_at, _reply_ages())


def run(lease: Lease, is_primary: Any, fence: Any, stop: threading.Event, log: Any) -> None:
    """Until `stop`: while this member is a primary and its lease has run out, fence it.
    Never waits on PostgreSQL: the peers' replies come from `watch_peers`."""
    while not stop.wait(CHECK_EVERY):
        now = time.monotonic()
        if not lease.expired(now) or not is_primary():
            continue
        left = lease.operator_left(now) or 0.0
        log(
            f"lease expired: no renewal from the operator for {lease.ttl - left:.1f}s "
            f"and not every peer ({', '.join(lease.peers) or 'none named'}) is streaming: "
            "fencing this primary"
        )
        fence()
