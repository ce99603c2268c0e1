"""`shoal chaos run` against a real 3-member PostgreSQL database (needs the operator)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shoal import names
from tests.integration.support import SHOAL, status

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1200)]


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True).stdout


def _primary_container(db: str) -> str:
    primary = str(status(db)["primary"])
    out = _docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={primary}")
    return out.split()[0]


def _chaos_run(db: str, report: Path, *options: str) -> subprocess.Popen[str]:
    """`shoal chaos run --db DB OPTIONS --report REPORT`, its output (stderr too) on a pipe."""
    return subprocess.Popen(
        [*SHOAL, "chaos", "run", "--db", db, *options, "--report", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _left_behind(label: str, db: str) -> str:
    """The containers, running or not, labelled `label` and with the database `db`."""
    database = f"label={names.LABEL_DATABASE}={db}"
    return _docker("ps", "-aq", "--filter", f"label={label}", "--filter", database).strip()


# A new user's shell: the venv's `shoal` called by its path, no venv on PATH (issue: the
# runner once looked its own CLI up on PATH and failed outside an activated venv).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VENV_SHOAL = Path(sys.executable).with_name("shoal")


def test_smoke_suite_passes_from_the_venv_script_with_no_venv_on_path(
    pg_db: str, tmp_path: Path
) -> None:
    assert VENV_SHOAL.is_file(), f"{VENV_SHOAL} missing: install with `make venv`"
    assert shutil.which("shoal", path=SYSTEM_PATH) is None, "a shoal on the system PATH"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = SYSTEM_PATH
    proc = subprocess.run(
        [
            str(VENV_SHOAL),
            "chaos",
            "run",
            "--db",
            pg_db,
            "--suite",
            "smoke",
            "--report",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["lost"] == 0 and report["diverged"] == 0
    assert report["acknowledged"] > 100
    assert [f["type"] for f in report["faults"]] == [
        "kill-replica",
        "kill-primary",
        "partition-replica+kill-primary",
    ]
    assert all(f["recovery_seconds"] is not None for f in report["faults"])
    assert (tmp_path / "index.html").exists() and (tmp_path / "timeline.png").exists()


def test_row_deleted_behind_the_database_is_lost(pg_db: str, tmp_path: Path) -> None:
    """Delete acknowledged rows directly on the primary (replicated to every member):
    the checker must report them lost and the run must exit 1."""
    run = _chaos_run(pg_db, tmp_path, "--faults", "kill-replica", "--duration", "40")

    def delete_later() -> None:
        time.sleep(25)
        _docker(
            "exec",
            _primary_container(pg_db),
            "psql",
            "-U",
            "postgres",
            "-d",
            names.APP_DATABASE,
            "-c",
            "DELETE FROM chaos_set WHERE id IN (SELECT id FROM chaos_set ORDER BY id LIMIT 3)",
        )

    t = threading.Thread(target=delete_later)
    t.start()
    out, _ = run.communicate(timeout=900)
    t.join()
    report = json.loads((tmp_path / "report.json").read_text())
    assert run.returncode == 1, out
    assert report["lost"] == 3 and len(report["lost_ids"]) == 3


def test_sigint_leaves_no_fault_behind(pg_db: str, tmp_path: Path) -> None:
    run = _chaos_run(
        pg_db, tmp_path, "--faults", "pause-primary,partition-replica", "--duration", "300",
        "--fault-duration", "60", "--settle", "1",
    )  # fmt: skip
    assert run.stdout is not None
    seen = ""
    deadline = time.time() + 240
    while "injected" not in seen and time.time() < deadline:
        seen += run.stdout.readline()
    assert "injected" in seen, seen
    time.sleep(3)
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=120)
    assert run.returncode != 0
    assert _left_behind(f"{names.LABEL_ROLE}=chaos-helper", pg_db) == ""
    assert _left_behind("shoal.chaos.run", pg_db) == ""
    net = names.database_network(pg_db)
    for i in range(3):
        for cid in _docker(
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.swarm.service.name={names.member_service(pg_db, i)}",
        ).split():
            state = json.loads(_docker("inspect", cid))[0]
            assert state["State"]["Paused"] is False
            assert net in state["NetworkSettings"]["Networks"]
            rules = _docker(
                "run",
                "--rm",
                "--network",
                f"container:{cid}",
                "--cap-add",
                "NET_ADMIN",
                names.IMAGE_BASE,
                "iptables",
                "-S",
            )
            assert "DROP" not in rules
