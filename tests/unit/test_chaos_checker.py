"""The chaos checker catches lost writes, phantoms, divergence and a broken bank total."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.chaos.checker import MemberRead, check, outages
from shoal.chaos.history import FaultRecord, Op, dump_ops, parse_lines

pytestmark = pytest.mark.unit
MEMBERS = ("db-0", "db-1", "db-2")


def ins(key: int, outcome: str = "ok", t: float | None = None) -> Op:
    start = float(key) if t is None else t
    return Op(0, "insert", key, f"v{key}", start, start + 0.01, outcome)  # type: ignore[arg-type]


def same(ids: set[int]) -> dict[str, MemberRead]:
    return {m: MemberRead(ids=frozenset(ids), balances={}) for m in MEMBERS}


def test_clean_history_passes() -> None:
    ops = [ins(1), ins(2), ins(3, "fail"), ins(4, "unknown"), ins(5, "unknown")]
    res = check(ops, same({1, 2, 4}), primary="db-0")
    assert res.valid
    assert res.acknowledged == 2 and res.failed == 1 and res.unknown == 2
    assert res.lost == [] and res.phantom == [] and res.diverged == []
    assert res.unknown_present == 1 and res.unknown_absent == 1


def test_lost_write_on_primary_is_caught() -> None:
    ops = [ins(1), ins(2), ins(3)]
    res = check(ops, same({1, 3}), primary="db-0")
    assert res.lost == [2]
    assert not res.valid


def test_lost_write_on_one_member_is_caught_and_diverges() -> None:
    ops = [ins(1), ins(2)]
    reads = same({1, 2})
    reads["db-2"] = MemberRead(ids=frozenset({1}), balances={})
    res = check(ops, reads, primary="db-0")
    assert res.lost == [2]
    assert res.lost_by_member == {"db-2": [2]}
    assert res.diverged == ["db-2"]


def test_phantom_never_attempted() -> None:
    res = check([ins(1)], same({1, 99}), primary="db-0")
    assert res.phantom == [99]
    assert res.lost == []


def test_phantom_failed_for_sure_but_present() -> None:
    res = check([ins(1), ins(2, "fail")], same({1, 2}), primary="db-0")
    assert res.phantom == [2]


def test_divergence_is_caught() -> None:
    ops = [ins(1), ins(2, "unknown")]
    reads = same({1})
    reads["db-1"] = MemberRead(ids=frozenset({1, 2}), balances={})
    res = check(ops, reads, primary="db-0")
    assert res.lost == []
    assert res.diverged == ["db-1"]
    assert not res.valid


def test_unreadable_member_counts_as_diverged() -> None:
    reads = same({1})
    reads["db-2"] = MemberRead(error="timeout")
    res = check([ins(1)], reads, primary="db-0")
    assert res.diverged == ["db-2"]


def test_reference_is_majority_without_primary() -> None:
    reads = same({1})
    reads["db-0"] = MemberRead(ids=frozenset({1, 7}), balances={})
    res = check([ins(1)], reads, primary=None)
    assert res.reference_member == "db-1"
    assert res.diverged == ["db-0"]


def _bank(total_read: int, final: dict[int, int]) -> tuple[list[Op], dict[str, MemberRead]]:
    ops = [
        Op(0, "transfer", [0, 1], 5, 1.0, 1.1, "ok"),
        Op(1, "read", "total", total_read, 1.2, 1.3, "ok"),
        Op(1, "read", "total", None, 1.4, 1.5, "fail"),
    ]
    return ops, {m: MemberRead(ids=frozenset(), balances=final) for m in MEMBERS}


def test_bank_constant_total_passes() -> None:
    ops, reads = _bank(200, {0: 95, 1: 105})
    res = check(ops, reads, workload="bank", primary="db-0", bank_total=200)
    assert res.valid and not res.bank_broken
    assert res.acknowledged == 1


def test_bank_broken_read_is_caught() -> None:
    ops, reads = _bank(195, {0: 95, 1: 105})
    res = check(ops, reads, workload="bank", primary="db-0", bank_total=200)
    assert res.bank_bad_reads == 1 and res.bank_broken and not res.valid


def test_bank_broken_final_total_is_caught() -> None:
    ops, reads = _bank(200, {0: 95, 1: 100})
    res = check(ops, reads, workload="bank", primary="db-0", bank_total=200)
    assert res.bank_bad_members == {m: 195 for m in MEMBERS}
    assert not res.valid


def test_outage_and_recovery() -> None:
    ops = [ins(i, t=float(i)) for i in range(5)] + [ins(100, t=20.0), ins(101, "fail", t=12.0)]
    fault = FaultRecord("kill-primary", "db-0", start=4.5, end=6.0)
    res = check(ops, same({0, 1, 2, 3, 4, 100}), primary="db-0", faults=[fault])
    assert res.max_outage_seconds == pytest.approx(16.0)
    assert res.faults[0].recovery_seconds == pytest.approx(20.01 - 4.5)
    assert res.faults[0].recovery_after_end_seconds == pytest.approx(20.01 - 6.0)


def test_fault_without_recovery() -> None:
    ops = [ins(1, t=1.0), ins(2, "unknown", t=9.0)]
    fault = FaultRecord("pause-primary", "db-0", start=2.0, end=None)
    res = check(ops, same({1}), primary="db-0", faults=[fault])
    assert res.faults[0].recovery_seconds is None
    assert res.max_outage_seconds == pytest.approx(9.01 - 2.0)


def test_outages_empty_history() -> None:
    assert outages([]) == []


def test_jsonl_round_trip() -> None:
    ops = [ins(1), Op(2, "transfer", [1, 2], 3, 1.0, 2.0, "unknown", "timeout", "db-1")]
    buf = io.StringIO()
    dump_ops(ops, buf)
    text = "some log line\n\n" + buf.getvalue()
    assert list(parse_lines(text.splitlines())) == ops


def _subset(items: set[int]) -> st.SearchStrategy[set[int]]:
    return st.sets(st.sampled_from(sorted(items))) if items else st.just(set())


@settings(max_examples=200, deadline=None)
@given(
    outcomes=st.lists(st.sampled_from(["ok", "fail", "unknown"]), min_size=1, max_size=60),
    data=st.data(),
)
def test_property_checker_agrees_with_model(outcomes: list[str], data: st.DataObject) -> None:
    """Present rows = acks minus dropped + some unknowns + extra rows; the checker reports
    exactly the dropped acks as lost and exactly the failed/never-attempted extras as phantoms."""
    ops = [ins(i, o) for i, o in enumerate(outcomes)]
    acked = {i for i, o in enumerate(outcomes) if o == "ok"}
    failed = {i for i, o in enumerate(outcomes) if o == "fail"}
    unknown = {i for i, o in enumerate(outcomes) if o == "unknown"}
    dropped = data.draw(st.sets(st.sampled_from(sorted(acked))) if acked else st.just(set()))
    kept_unknown = data.draw(
        st.sets(st.sampled_from(sorted(unknown))) if unknown else st.just(set())
    )
    resurrected = data.draw(st.sets(st.sampled_from(sorted(failed))) if failed else st.just(set()))
    invented = data.draw(st.sets(st.integers(1000, 2000), max_size=3))
    present = (acked - dropped) | kept_unknown | resurrected | invented
    res = check(ops, same(present), primary="db-0")
    assert res.lost == sorted(dropped)
    assert res.phantom == sorted(resurrected | invented)
    assert res.diverged == []
    assert res.unknown_present == len(kept_unknown)
    assert res.valid == (not dropped)


def test_write_that_slipped_in_while_the_fault_took_hold_is_not_recovery() -> None:
    """A pause takes a moment to freeze the target: an insert that started after the Docker
    call was made but before it returned can still succeed; recovery is the first acknowledged
    write that started once the fault was certainly in effect."""
    ops = [ins(1, t=1.0), ins(2, t=2.02), ins(3, t=9.0)]
    fault = FaultRecord("pause-primary", "db-0", start=2.0, end=8.0, detail={"in_effect": 2.05})
    res = check(ops, same({1, 2, 3}), primary="db-0", faults=[fault])
    assert res.faults[0].recovery_seconds == pytest.approx(9.01 - 2.0)
