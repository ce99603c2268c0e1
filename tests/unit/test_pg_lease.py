"""The primary's lease (agent/lease.py): the renewal header and when the lease runs out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.plugins.base import LeaseGrant
from shoal.plugins.postgres.agent.lease import (
    PEER_REPLY_LIMIT,
    BadLease,
    Lease,
    Renewal,
    parse_header,
)
from shoal.plugins.postgres.plugin import renewal_header

pytestmark = pytest.mark.unit


def test_the_operators_header_parses_back() -> None:
    grant = LeaseGrant(ttl=10, token=7, peers=("orders-0", "orders-2"))
    assert parse_header(renewal_header(grant)) == Renewal(10.0, 7, ("orders_0", "orders_2"))
    assert parse_header(renewal_header(LeaseGrant(5, 1, ()))).peers == ()


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ("", "must be"),
        ("ttl=10;token=1", "must be"),
        ("ttl=0.5;token=1;peers=", "outside"),
        ("ttl=99999;token=1;peers=", "outside"),
        ("ttl=10;token=0;peers=", "positive"),
        ("ttl=10;token=1;peers=" + ",".join(f"m{i}" for i in range(65)), "at most"),
        ("ttl=10;token=1;peers=a-b", "must be"),
        ("ttl=10;token=-1;peers=", "must be"),
    ],
)
def test_a_malformed_header_is_refused_naming_the_problem(raw: str, names: str) -> None:
    with pytest.raises(BadLease, match=names):
        parse_header(raw)


@given(st.text(max_size=200))
def test_no_header_value_crashes_the_parser(raw: str) -> None:
    try:
        r = parse_header(raw)
    except BadLease:
        return
    assert 1.0 <= r.ttl <= 3600 and r.token > 0


def test_a_lease_never_granted_never_runs_out() -> None:
    assert not Lease().expired(1e9)


def test_the_operators_renewal_holds_for_its_ttl() -> None:
    lease = Lease()
    lease.renew(Renewal(10.0, 1, ()), now=100.0)
    assert not lease.expired(109.9)
    lease.note_peers(109.9, {})
    assert lease.expired(110.0)


def test_every_peer_streaming_holds_the_lease_without_the_operator() -> None:
    lease = Lease()
    lease.renew(Renewal(10.0, 1, ("orders_0", "orders_2")), now=100.0)
    lease.note_peers(200.0, {"orders_0": 0.4, "orders_2": 1.0})  # joint reply at 199.0
    assert not lease.expired(200.0)
    # One peer that stopped replying is enough for the lease to end (Patroni's failsafe
    # needs every member), once PEER_REPLY_LIMIT passed since the last joint reply.
    lease.note_peers(200.5, {"orders_0": 0.3, "orders_2": 1.5})  # still 199.0
    lease.note_peers(201.0, {"orders_0": 0.1})
    assert not lease.expired(199.0 + PEER_REPLY_LIMIT - 0.01)
    assert lease.expired(199.0 + PEER_REPLY_LIMIT + 0.01)


def test_a_missing_or_late_peer_does_not_hold_the_lease() -> None:
    lease = Lease()
    lease.renew(Renewal(5.0, 1, ("orders_0", "orders_2")), now=0.0)
    lease.note_peers(5.5, {"orders_0": 0.1})
    lease.note_peers(5.8, {"orders_0": 0.1, "orders_2": PEER_REPLY_LIMIT})
    assert lease.expired(6.0)


def test_no_named_peers_means_only_the_operator_holds_it() -> None:
    lease = Lease()
    lease.renew(Renewal(5.0, 1, ()), now=0.0)
    lease.note_peers(4.9, {"orders_0": 0.1})
    assert lease.expired(5.0)


def test_when_postgres_cannot_be_asked_the_last_joint_reply_counts() -> None:
    lease = Lease()
    lease.renew(Renewal(5.0, 1, ("orders_0",)), now=0.0)
    lease.note_peers(10.0, {"orders_0": 0.5})  # held until 9.5 + limit
    lease.note_peers(11.0, None)
    assert not lease.expired(9.5 + PEER_REPLY_LIMIT - 0.01)
    assert lease.expired(9.5 + PEER_REPLY_LIMIT)


def test_replies_seen_before_the_renewal_ran_out_hold_it_after() -> None:
    # The watcher asks ahead of the renewal's end: the check that fences needs no query.
    lease = Lease()
    lease.renew(Renewal(5.0, 1, ("orders_0",)), now=0.0)
    lease.note_peers(4.5, {"orders_0": 0.2})  # a reply at 4.3
    assert not lease.expired(5.0)
    assert lease.expired(4.3 + PEER_REPLY_LIMIT)


def test_replies_of_other_peers_do_not_hold_a_lease_naming_new_ones() -> None:
    lease = Lease()
    lease.renew(Renewal(5.0, 1, ("orders_0",)), now=0.0)
    lease.note_peers(4.5, {"orders_0": 0.2})
    lease.renew(Renewal(5.0, 1, ("orders_0", "orders_2")), now=4.6)
    assert lease.expired(9.6)


def test_a_renewal_after_expiry_restores_the_lease() -> None:
    lease = Lease()
    lease.renew(Renewal(5.0, 1, ()), now=0.0)
    assert lease.expired(6.0)
    lease.renew(Renewal(5.0, 2, ()), now=6.0)
    assert not lease.expired(6.1)


def test_a_hung_peers_query_does_not_delay_the_fence(monkeypatch: pytest.MonkeyPatch) -> None:
    # The thread that fences never waits on PostgreSQL: with the peers' query hung, the
    # primary is fenced once the renewal runs out, as if no peer had replied.
    import threading
    import time

    from shoal.plugins.postgres.agent import lease as lease_mod

    release = threading.Event()

    def hung() -> dict[str, float]:
        release.wait(30)
        return {"orders_0": 0.0}

    monkeypatch.setattr(lease_mod, "_reply_ages", hung)
    lease = Lease()
    fenced = threading.Event()
    stop = threading.Event()
    lease.renew(Renewal(1.0, 1, ("orders_0",)), now=time.monotonic())
    threads = [
        threading.Thread(target=lease_mod.watch_peers, args=(lease, lambda: True, stop)),
        threading.Thread(
            target=lease_mod.run, args=(lease, lambda: True, fenced.set, stop, lambda _m: None)
        ),
    ]
    for t in threads:
        t.start()
    try:
        # 1 s of lease, then REACTION; the hung query would answer only after 30 s.
        assert fenced.wait(10)
    finally:
        stop.set()
        release.set()
        for t in threads:
            t.join()
