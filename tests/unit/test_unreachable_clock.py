"""The clock `failover.unreachableSeconds` is compared with, and the concurrent reads of one
observation (operator/observe.py)."""

from __future__ import annotations

import asyncio

import pytest

from shoal.operator.observe import UnreachableClock, all_of


def test_silence_counts_from_when_the_first_unanswered_probe_was_sent() -> None:
    clock = UnreachableClock()
    # sent at 10.0, timed out at 11.5: silent for 1.5 s already, not 0
    assert clock.note("m0", answered=False, running=True, sent=10.0, now=11.5) == 1.5
    # later probes do not move the start
    assert clock.note("m0", answered=False, running=True, sent=12.0, now=13.5) == 3.5


def test_an_answer_or_swarms_word_that_it_stopped_resets_the_count() -> None:
    clock = UnreachableClock()
    clock.note("m0", answered=False, running=True, sent=10.0, now=11.5)
    assert clock.note("m0", answered=True, running=True, sent=12.0, now=12.1) == 0.0
    assert clock.note("m0", answered=False, running=True, sent=20.0, now=21.5) == 1.5
    # a member Swarm does not run is dead, not unreachable: the failover needs no wait
    assert clock.note("m0", answered=False, running=False, sent=22.0, now=23.5) == 0.0
    assert clock.note("m1", answered=False, running=True, sent=22.0, now=22.5) == 0.5


def test_outcomes_arriving_out_of_order_are_placed_by_their_send_times() -> None:
    """A pass's probe and a renewal overlap. Seen on a paused primary: the renewal sent at
    11.0 timed out (11.5) before the probe sent at 10.0 did (11.5 too, after its longer
    timeout), and the count started at 11.0: the failover came 1 s late."""
    clock = UnreachableClock()
    assert clock.note("m0", answered=False, running=True, sent=11.0, now=11.5) == 0.5
    assert clock.note("m0", answered=False, running=True, sent=10.0, now=11.5) == 1.5
    assert clock.since("m0") == 10.0
    # An answer to a request sent after the silence began ends it; a silence noted late
    # for a request sent before that answer does not start it again.
    assert clock.note("m0", answered=True, running=True, sent=12.0, now=12.1) == 0.0
    assert clock.note("m0", answered=False, running=True, sent=11.9, now=12.2) == 0.0
    assert clock.since("m0") is None
    # An answer to a request sent *before* a silence that began later does not end it.
    assert clock.note("m0", answered=False, running=True, sent=13.0, now=13.5) == 0.5
    assert clock.note("m0", answered=True, running=True, sent=12.9, now=13.6) == 0.0
    assert clock.since("m0") == 13.0


def test_all_of_waits_for_every_read_and_then_raises_the_first_failure() -> None:
    finished: list[str] = []

    async def slow(name: str, delay: float, fail: bool = False) -> str:
        await asyncio.sleep(delay)
        finished.append(name)
        if fail:
            raise LookupError(name)
        return name

    assert asyncio.run(all_of(slow("a", 0.02), slow("b", 0.0))) == ["a", "b"]
    finished.clear()
    with pytest.raises(LookupError, match="b"):
        asyncio.run(all_of(slow("a", 0.05), slow("b", 0.0, fail=True)))
    assert sorted(finished) == ["a", "b"]  # nothing left running behind the failure
