"""`shoal chaos report merge`: runs add up, and bad input is a clear exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shoal.chaos.merge import ReportError, load_reports, merge_reports
from shoal.cli import chaos

pytestmark = pytest.mark.unit


def report(run: str, lost: int, recoveries: dict[str, list[float | None]]) -> dict[str, Any]:
    faults = [
        {"type": t, "target": "db-0", "start": 1.0, "end": 2.0, "recovery_seconds": r}
        for t, rs in recoveries.items()
        for r in rs
    ]
    return {
        "run_id": run, "db": "db", "suite": "safety", "started": 0.0, "valid": lost == 0,
        "attempted": 100, "acknowledged": 90, "failed": 5, "unknown": 5, "lost": lost,
        "lost_ids": list(range(lost)), "phantom": 0, "diverged": 0,
        "max_outage_seconds": 3.0 + lost, "faults": faults,
    }  # fmt: skip


def write(tmp: Path, name: str, doc: dict[str, Any]) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "report.json").write_text(json.dumps(doc))
    return d


def test_runs_add_up_and_recoveries_are_tabled_per_type() -> None:
    a = report("a", 0, {"kill-primary": [1.0, 3.0], "pause-replica+kill-primary": [6.0]})
    b = report("b", 0, {"kill-primary": [2.0, None]})
    m = merge_reports([a, b])
    assert m["acknowledged"] == 180 and m["lost"] == 0 and m["valid"] is True
    assert len(m["faults"]) == 5 and {f["run_id"] for f in m["faults"]} == {"a", "b"}
    kill = next(r for r in m["recovery"] if r["type"] == "kill-primary")
    assert kill["injections"] == 4 and kill["recovered"] == 3
    assert kill["median_recovery_seconds"] == 2.0 and kill["max_recovery_seconds"] == 3.0


def test_one_bad_run_makes_the_merge_invalid() -> None:
    m = merge_reports([report("a", 0, {}), report("b", 2, {})])
    assert m["valid"] is False and m["lost"] == 2 and m["lost_ids"] == {"b": [0, 1]}
    assert m["max_outage_seconds"] == 5.0


def test_missing_or_foreign_reports_are_named(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="nowhere"):
        load_reports([tmp_path / "nowhere"])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "report.json").write_text('{"hello": 1}')
    with pytest.raises(ReportError, match="not a chaos report"):
        load_reports([tmp_path / "x"])


def test_cli_exit_codes(tmp_path: Path) -> None:
    good = write(tmp_path, "good", report("a", 0, {"kill-primary": [1.0]}))
    bad = write(tmp_path, "bad", report("b", 1, {}))
    runner = CliRunner()
    ok = runner.invoke(chaos.app, ["report", "merge", str(good), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["acknowledged"] == 90
    lost = runner.invoke(chaos.app, ["report", "merge", str(good), str(bad)])
    assert lost.exit_code == 1
    missing = runner.invoke(chaos.app, ["report", "merge", str(tmp_path / "none")])
    assert missing.exit_code == 2
