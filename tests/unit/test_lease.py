"""The operator lease (shoal/swarm/lease.py) against the shared in-memory fake of Swarm
(tests/conftest.py), with Swarm's compare-and-swap semantics: every update names the version
it read and fails with `VersionConflict` when the service changed since. Fakes are for unit
tests only; the integration tests exercise the real swarm.

Proves: two contenders never both hold; a take-over happens only after `duration` of silence
on the candidate's own clock; fencing tokens strictly increase; a release lets a standby take
over at once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal import names
from shoal.swarm.client import JSON, SwarmError
from shoal.swarm.lease import Lease, LeaseRecord, LeaseSettings, NewerLeaseFormat, lease_spec
from tests.conftest import FakeSwarm

pytestmark = pytest.mark.unit


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


SETTINGS = LeaseSettings(duration=10.0, renew_every=2.0, safety_margin=3.0)


def record(swarm: FakeSwarm) -> LeaseRecord:
    return LeaseRecord.from_label(swarm.labels(names.LEASE_SERVICE)[names.LABEL_LEASE])


def contender(swarm: FakeSwarm, identity: str, clock: Clock) -> Lease:
    return Lease(swarm, identity, SETTINGS, clock=clock)  # type: ignore[arg-type]


# --- LeaseRecord -------------------------------------------------------------------------
def test_record_round_trips_through_its_label() -> None:
    rec = LeaseRecord(holder="op-a", token=7, beat=42)
    assert LeaseRecord.from_label(rec.to_label()) == rec
    assert json.loads(rec.to_label()) == {"format": 1, "holder": "op-a", "token": 7, "beat": 42}


def test_record_without_format_is_format_1() -> None:
    """Records written by operators from before the field."""
    raw = '{"holder": "op-a", "token": 7, "beat": 42}'
    assert LeaseRecord.from_label(raw) == LeaseRecord(holder="op-a", token=7, beat=42)


@pytest.mark.parametrize("fmt", [2, 99, '"2"', "null", "1.5", "true"])
def test_record_of_a_newer_or_unknown_format_is_refused(fmt: str | int) -> None:
    with pytest.raises(NewerLeaseFormat):
        LeaseRecord.from_label(f'{{"format": {fmt}, "holder": "x", "token": 3, "beat": 1}}')


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "not json",
        "[1, 2]",
        '"a string"',
        "42",
        '{"token": "x"}',
        '{"beat": [1]}',
        '{"format": 0, "holder": "x"}',
        '{"holder": {"a": 1}}',
    ],
)
def test_unreadable_record_is_an_empty_unheld_lease(raw: str | None) -> None:
    assert LeaseRecord.from_label(raw) == LeaseRecord(holder="", token=0, beat=0)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
_KEYS = st.sampled_from(["format", "holder", "token", "beat", "other"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.dictionaries(_KEYS, _JSON).map(json.dumps))
def test_fuzz_a_label_is_a_record_or_refused(raw: str) -> None:
    """Whatever the label holds: a record (an empty one when unreadable), or a refusal."""
    try:
        rec = LeaseRecord.from_label(raw)
    except NewerLeaseFormat:
        return
    assert LeaseRecord.from_label(rec.to_label()) == rec


def test_record_with_missing_fields_takes_defaults() -> None:
    assert LeaseRecord.from_label('{"holder": "x"}') == LeaseRecord(holder="x", token=0, beat=0)
    assert LeaseRecord.from_label('{"token": "3", "beat": 1}') == LeaseRecord(
        holder="", token=3, beat=1
    )


def test_lease_spec_is_a_zero_replica_labelled_service() -> None:
    spec = lease_spec(LeaseRecord(holder="h", token=2, beat=0))
    assert spec["Name"] == names.LEASE_SERVICE
    assert spec["Mode"] == {"Replicated": {"Replicas": 0}}
    assert spec["Labels"][names.LABEL_ROLE] == "lease"
    assert spec["Labels"][names.LABEL_MANAGED] == "true"
    assert LeaseRecord.from_label(spec["Labels"][names.LABEL_LEASE]) == LeaseRecord(
        holder="h", token=2, beat=0
    )


# --- Lease.step --------------------------------------------------------------------------
async def test_first_contender_creates_the_lease_with_token_1() -> None:
    swarm, clock = FakeSwarm(), Clock()
    a = contender(swarm, "a", clock)
    assert await a.step()
    assert a.held and a.token == 1
    assert record(swarm) == LeaseRecord(holder="a", token=1, beat=0)


async def test_holder_renews_and_keeps_its_token() -> None:
    swarm, clock = FakeSwarm(), Clock()
    a = contender(swarm, "a", clock)
    await a.step()
    for beat in range(1, 6):
        clock.advance(SETTINGS.renew_every)
        assert await a.step()
        assert record(swarm) == LeaseRecord(holder="a", token=1, beat=beat)
    assert a.held


async def test_holder_stops_acting_before_anyone_may_take_over() -> None:
    swarm, clock = FakeSwarm(), Clock()
    a = contender(swarm, "a", clock)
    await a.step()
    clock.advance(SETTINGS.duration - SETTINGS.safety_margin - 0.01)
    assert a.held
    clock.advance(0.02)
    assert not a.held  # no renewal for duration - margin: it must not act any more


async def test_standby_never_holds_while_the_holder_renews() -> None:
    swarm = FakeSwarm()
    clock = Clock()  # one shared clock: the worst case for the standby's patience
    a, b = contender(swarm, "a", clock), contender(swarm, "b", clock)
    await a.step()
    for _ in range(100):  # 200 s of a healthy holder
        clock.advance(SETTINGS.renew_every)
        assert await a.step()
        assert not await b.step()
        assert a.held and not b.held
        assert b.holder == "a"
    assert record(swarm).holder == "a" and record(swarm).token == 1


async def test_take_over_only_after_duration_of_silence_on_the_candidates_clock() -> None:
    swarm = FakeSwarm()
    clock_a, clock_b = Clock(0.0), Clock(5000.0)  # unrelated clocks on two nodes
    a, b = contender(swarm, "a", clock_a), contender(swarm, "b", clock_b)
    await a.step()
    # a dies now. b first looks much later, but the silence is counted from what b saw.
    clock_b.advance(1000.0)
    assert not await b.step()
    for _ in range(9):
        clock_b.advance(1.0)
        assert not await b.step(), f"took over after only {clock_b.now - 6000.0}s"
    clock_b.advance(0.99)
    assert not await b.step()
    clock_b.advance(0.02)
    assert await b.step()
    assert b.held and b.token == 2
    assert record(swarm) == LeaseRecord(holder="b", token=2, beat=0)


async def test_any_change_of_the_record_restarts_the_candidates_wait() -> None:
    swarm = FakeSwarm()
    clock = Clock()
    a, b = contender(swarm, "a", clock), contender(swarm, "b", clock)
    await a.step()
    assert not await b.step()
    clock.advance(9.0)
    await a.step()  # a renews late, just before b's patience runs out
    clock.advance(9.0)
    # 18 s since b's first look, but b has only just seen the renewed record: its wait
    # starts again from now (it cannot know when the renewal happened).
    assert not await b.step()
    clock.advance(SETTINGS.duration - 0.01)
    assert not await b.step()
    clock.advance(0.02)
    assert await b.step()


async def test_deposed_holder_learns_it_lost_and_cannot_renew() -> None:
    swarm = FakeSwarm()
    clock = Clock()
    a, b = contender(swarm, "a", clock), contender(swarm, "b", clock)
    await a.step()
    await b.step()
    clock.advance(SETTINGS.duration + 0.1)  # a was paused (GC, SIGSTOP, partition)
    assert not a.held
    assert await b.step()
    assert not await a.step()  # a wakes up: the record is b's now
    assert not a.held and a.token == 0
    assert record(swarm).holder == "b"


async def test_renewal_that_loses_the_cas_drops_the_lease() -> None:
    swarm, clock = FakeSwarm(), Clock()
    a = contender(swarm, "a", clock)
    await a.step()
    swarm.conflicts_to_inject = 1
    clock.advance(1.0)
    assert not await a.step()
    assert not a.held and a.token == 0


async def test_two_candidates_racing_for_an_expired_lease_never_both_win() -> None:
    for start in (True, False):  # race on creation, and race on a take-over
        swarm = FakeSwarm()
        clock = Clock()
        if not start:
            old = contender(swarm, "old", clock)
            await old.step()
        a, b = contender(swarm, "a", clock), contender(swarm, "b", clock)
        await asyncio.gather(a.step(), b.step())
        clock.advance(SETTINGS.duration + 1)
        swarm.yield_on_read = True  # both read the same version before either writes
        results = await asyncio.gather(a.step(), b.step())
        assert results.count(True) == 1, results
        assert [a.held, b.held].count(True) == 1
        winner = a if a.held else b
        assert record(swarm).holder == winner.identity


async def test_tokens_strictly_increase_over_many_take_overs() -> None:
    swarm = FakeSwarm()
    clock = Clock()
    tokens: list[int] = []
    for round_ in range(6):
        cand = contender(swarm, f"op-{round_}", clock)
        while not await cand.step():
            clock.advance(1.0)
        tokens.append(cand.token)
        assert record(swarm).token == cand.token
        # this holder then dies without releasing (every other round) or releases
        if round_ % 2:
            await cand.release()
    assert tokens == sorted(set(tokens)) and len(tokens) == 6
    assert all(b > a for a, b in itertools.pairwise(tokens))


async def test_release_lets_a_standby_take_over_at_once() -> None:
    swarm = FakeSwarm()
    clock = Clock()
    a, b = contender(swarm, "a", clock), contender(swarm, "b", clock)
    await a.step()
    assert not await b.step()
    await a.release()
    assert not a.held and a.token == 0
    assert record(swarm) == LeaseRecord(holder="", token=1, beat=1)
    assert await b.step()  # no waiting for `duration`
    assert b.token == 2 and record(swarm).holder == "b"


async def test_release_by_a_non_holder_changes_nothing() -> None:
    swarm = FakeSwarm()
    clock = Clock()
    a, b = contender(swarm, "a", clock), contender(swarm, "b", clock)
    await a.step()
    await b.step()
    before = swarm.updates
    await b.release()  # b never held it: a no-op
    assert swarm.updates == before
    b.token = 1  # even a confused b that believes it holds token 1 must not clear a's record
    await b.release()
    assert record(swarm).holder == "a"


async def test_a_restarted_holder_with_the_same_identity_waits_like_anyone() -> None:
    swarm = FakeSwarm()
    clock = Clock()
    a = contender(swarm, "a", clock)
    await a.step()
    again = contender(swarm, "a", clock)  # same identity, no token: not the holder
    assert not await again.step()
    clock.advance(SETTINGS.duration + 0.1)
    assert await again.step()
    assert again.token == 2


async def test_docker_errors_keep_the_current_belief() -> None:
    class Broken(FakeSwarm):
        fail = False

        async def service(self, name_or_id: str) -> JSON | None:
            if self.fail:
                raise SwarmError("Docker API error 500: boom")
            return await super().service(name_or_id)

    swarm, clock = Broken(), Clock()
    a = contender(swarm, "a", clock)
    await a.step()
    swarm.fail = True
    clock.advance(1.0)
    assert await a.step()  # still within its validity window
    clock.advance(SETTINGS.duration)
    assert not await a.step()  # no renewal possible: validity ran out
    assert not a.held


async def test_swarm_reporting_the_holder_dead_allows_an_immediate_take_over() -> None:
    swarm = FakeSwarm()
    clock = Clock()
    a, b = contender(swarm, "deadbeef0123-7-aa", clock), contender(swarm, "b", clock)
    await a.step()
    asked: list[str] = []

    async def alive(holder: str) -> bool:
        asked.append(holder)
        return False

    async def dead(holder: str) -> bool:
        return holder == "deadbeef0123-7-aa"

    b.holder_dead = alive
    assert not await b.step()  # Swarm says nothing certain: wait out `duration`
    assert asked == ["deadbeef0123-7-aa"]
    b.holder_dead = dead
    assert await b.step()  # certain death: no waiting
    assert b.token == 2 and record(swarm).holder == "b"


# --- property 5: tokens airtight -----------------------------------------------------------
async def test_confirm_rereads_the_record_before_a_swarm_change() -> None:
    swarm = FakeSwarm()
    clock_a, clock_b = Clock(), Clock()  # a's clock stands still: a is stalled
    a, b = contender(swarm, "a", clock_a), contender(swarm, "b", clock_b)
    await a.step()
    assert await a.confirm()
    await b.step()
    clock_b.advance(SETTINGS.duration + 0.1)
    assert await b.step()  # b took over while a was stalled
    assert a.held, "a's own clock still believes it holds"
    assert not await a.confirm(), "a stale holder must learn from the record, not its clock"
    assert not a.held


async def test_remaining_bounds_an_action_to_the_lease() -> None:
    swarm = FakeSwarm()
    clock = Clock()
    a = contender(swarm, "a", clock)
    assert a.remaining() == 0.0
    await a.step()
    assert a.remaining() == SETTINGS.duration - SETTINGS.safety_margin
    clock.advance(5.0)
    assert a.remaining() == SETTINGS.duration - SETTINGS.safety_margin - 5.0
    clock.advance(10.0)
    assert a.remaining() == 0.0


async def test_an_absurd_token_seen_on_a_member_cannot_lock_the_holder_out() -> None:
    swarm = FakeSwarm()
    clock = Clock()
    a, b = contender(swarm, "a", clock), contender(swarm, "b", clock)
    await a.step()
    absurd = 9 * 10**15
    assert await a.advance_past(absurd)
    assert a.token == absurd + 1 == record(swarm).token
    assert await a.step() and a.token == absurd + 1  # renewals keep the advanced token
    await b.step()
    assert not await b.advance_past(absurd + 5), "only the holder may advance"
    assert record(swarm).holder == "a"


# --- a record of a newer format -----------------------------------------------------------
def _write_newer(swarm: FakeSwarm, **fields: Any) -> str:
    """Rewrite the lease label as a newer operator would; returns the raw label."""
    raw = json.dumps({"format": 2, **fields})
    swarm.write_label(names.LEASE_SERVICE, names.LABEL_LEASE, raw)
    return raw


async def test_newer_format_is_never_taken_even_after_silence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swarm = FakeSwarm()
    clock = Clock()
    a = contender(swarm, "a", clock)
    await a.step()
    raw = _write_newer(swarm, holder="z", token=9, fencing={"epoch": 1})
    b = contender(swarm, "b", clock)
    for _ in range(3):
        assert not await b.step()
        clock.advance(SETTINGS.duration + 1)
    assert not b.held and b.token == 0
    assert swarm.labels(names.LEASE_SERVICE)[names.LABEL_LEASE] == raw  # never overwritten
    refusals = [r for r in caplog.records if getattr(r, "event", "") == "lease-refused"]
    assert len(refusals) == 1 and "format 2" in refusals[0].getMessage()  # logged once


async def test_holder_meeting_a_newer_format_stops_acting_and_leaves_it() -> None:
    swarm = FakeSwarm()
    clock = Clock()
    a = contender(swarm, "a", clock)
    assert await a.step()
    raw = _write_newer(swarm, holder="a", token=a.token, beat=5)
    assert not await a.confirm()
    assert not a.held
    a.token = 1  # as if it still believed it held: renewal, advance and release all refuse
    assert not await a.step()
    a.token = 1
    a._valid_until = clock() + 5
    assert not await a.advance_past(7)
    a.token = 1
    await a.release()
    assert swarm.labels(names.LEASE_SERVICE)[names.LABEL_LEASE] == raw
