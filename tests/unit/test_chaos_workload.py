"""Workloads against a fake engine session; suites; fault names; the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.chaos.checker import MemberRead, check
from shoal.chaos.engines import Definite, Endpoint, EngineSession, Indefinite
from shoal.chaos.fault_names import NODE_FAULTS, FaultSpec, all_fault_names, parse_fault
from shoal.chaos.history import Op
from shoal.chaos.report import build_report, per_second, write_report
from shoal.chaos.suite import load_suite, schedule
from shoal.chaos.workload import WorkloadConfig, run_workload

pytestmark = pytest.mark.unit


class FakeSession(EngineSession):
    """Applies every 5th insert but then loses the connection (unknown); refuses every 7th."""

    def __init__(self, rows: set[int], bank: dict[int, int]) -> None:
        self.rows, self.bank, self.host = rows, bank, "db-0"

    @classmethod
    async def connect(cls, ep: Endpoint, only_host: str | None = None) -> FakeSession:
        return cls(set(), {})

    async def close(self) -> None:
        pass

    async def setup_set(self) -> None:
        self.rows.clear()

    calls = 0  # shared by every session: a new connection does not reset the pattern

    async def insert(self, key: int, value: str) -> None:
        FakeSession.calls += 1
        n = FakeSession.calls
        if n % 7 == 0:
            raise Definite("read-only")
        self.rows.add(key)
        if n % 5 == 0:
            raise Indefinite("connection lost")

    async def read_set(self) -> list[int]:
        return sorted(self.rows)

    async def setup_bank(self, accounts: int, balance: int) -> None:
        self.bank.clear()
        self.bank.update({i: balance for i in range(accounts)})

    async def transfer(self, src: int, dst: int, amount: int) -> None:
        self.bank[src] -= amount
        self.bank[dst] += amount

    async def read_balances(self) -> dict[int, int]:
        return dict(self.bank)


async def test_set_workload_history_checks_clean() -> None:
    rows: set[int] = set()
    ops: list[Op] = []

    async def connector() -> EngineSession:
        return FakeSession(rows, {})

    cfg = WorkloadConfig(workload="set", duration=0.5, concurrency=3, rate=200)
    counters = await run_workload(cfg, connector, ops.append)
    assert counters.ok > 10 and counters.fail > 0 and counters.unknown > 0
    assert len({o.key for o in ops}) == len(ops)  # unique ids
    reads = {m: MemberRead(ids=frozenset(rows), balances={}) for m in ("a", "b")}
    res = check(ops, reads, primary="a")
    assert res.valid and res.lost == [] and res.phantom == []


async def test_bank_workload_keeps_total() -> None:
    bank: dict[int, int] = {}
    ops: list[Op] = []

    async def connector() -> EngineSession:
        return FakeSession(set(), bank)

    cfg = WorkloadConfig(workload="bank", duration=0.3, concurrency=2, rate=200, accounts=4)
    await run_workload(cfg, connector, ops.append)
    assert any(o.op == "read" for o in ops) and any(o.op == "transfer" for o in ops)
    reads = {"a": MemberRead(ids=frozenset(), balances=dict(bank))}
    res = check(ops, reads, workload="bank", primary="a", bank_total=400)
    assert res.valid


def test_fault_names() -> None:
    assert parse_fault("kill-operator").selector == "operator"
    assert parse_fault("partition-primary").action == "partition"
    for name in all_fault_names():
        assert parse_fault(name).name == name
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("explode-primary")
    assert parse_fault("partition-node-managers") == FaultSpec("partition-managers", "node")
    assert {parse_fault(n).selector for n in NODE_FAULTS} == {"node"}
    with pytest.raises(ValueError, match="kill-node"):
        parse_fault("kill-nodes")


def test_builtin_suites() -> None:
    smoke, full = load_suite("smoke"), load_suite("full")
    assert smoke.duration + smoke.converge_timeout < 240
    assert [n for _, n in schedule(smoke)] == [
        "kill-replica",
        "kill-primary",
        "partition-replica+kill-primary",
    ]
    plan = schedule(full)
    assert full.duration >= 1800 and len(plan) >= 50
    assert {n for _, n in plan} == set(full.faults) and "kill-operator" in full.faults
    safety = load_suite("safety")
    counts = [n for _, n in schedule(safety)]
    assert {counts.count(f) for f in safety.faults} == {15}, "15 injections of every type"
    assert all(("primary" in f) for f in safety.faults)
    nodes = load_suite("nodes")
    counts = [n for _, n in schedule(nodes)]
    assert set(nodes.faults) == set(NODE_FAULTS)
    assert {counts.count(f) for f in nodes.faults} == {20}, "20 injections of every node fault"


def test_report_files(tmp_path: Path) -> None:
    ops = [Op(0, "insert", i, "v", 100.0 + i / 10, 100.05 + i / 10, "ok") for i in range(30)]
    reads = {"a": MemberRead(ids=frozenset(range(30)), balances={})}
    res = check(ops, reads, primary="a")
    rep = build_report(res, ops, {"db": "x"}, converged=True)
    write_report(tmp_path, rep, ops, [])
    doc = json.loads((tmp_path / "report.json").read_text())
    for key in ("acknowledged", "lost", "phantom", "diverged", "max_outage_seconds", "faults"):
        assert key in doc
    assert doc["acknowledged"] == 30 and doc["valid"] is True
    assert (tmp_path / "index.html").read_text().count(">PASS<") == 1
    assert (tmp_path / "timeline.png").stat().st_size > 1000
    assert sum(r["ok"] for r in per_second(ops)) == 30


def test_compound_faults_parse_in_order_and_bad_ones_are_named() -> None:
    from shoal.chaos.fault_names import parse_faults

    specs = parse_faults("pause-replica+kill-primary")
    assert [s.name for s in specs] == ["pause-replica", "kill-primary"]
    assert [s.name for s in parse_faults("kill-primary+kill-operator")] == [
        "kill-primary",
        "kill-operator",
    ]
    assert parse_faults("switchover-primary")[0].action == "switchover"
    for bad, why in [
        ("kill-primary+kill-primary", "twice"),
        ("a-b+kill-primary", "unknown fault"),
        ("kill-primary+kill-replica+pause-replica+stop-random", "at most"),
        ("switchover-replica", "primary only"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_faults(bad)
