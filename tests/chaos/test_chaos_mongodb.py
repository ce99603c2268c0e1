"""`shoal chaos run` (the smoke suite) against a real 3-member MongoDB replica set: its set
workload through the MongoDB chaos client (`w: majority`, retryable writes), the checker
unchanged.

NEVER RUN YET: no mongod exists on the machines this was written on. It runs only when
SHOAL_MONGODB_IMAGE names a local member image, and is otherwise reported as not run.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import SHOAL, shoal, status
from tests.integration.test_mongodb import IMAGE, NOT_RUN, _image_present, mongo_operator

__all__ = ["mongo_operator"]

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not _image_present(IMAGE), reason=NOT_RUN),
]


@pytest.fixture
def mongo_db(mongo_operator: object, unique_name: str, tmp_path: Path) -> Iterator[str]:
    name = unique_name[:20]
    decl = tmp_path / "db.yaml"
    decl.write_text(
        "apiVersion: shoal/v1\nkind: Database\n"
        f"metadata: {{name: {name}}}\n"
        "spec: {engine: mongodb, members: 3, durability: sync}\n"
    )
    applied = shoal("apply", "-f", str(decl))
    assert applied.returncode == 0, applied.stderr
    try:
        deadline = time.time() + 600
        while status(name).get("state") != "Healthy":
            assert time.time() < deadline, f"{name} never became Healthy: {status(name)}"
            time.sleep(2)
        yield name
    finally:
        shoal("delete", name, "--wait")


def test_the_smoke_suite_loses_no_majority_acknowledged_write(
    mongo_db: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [*SHOAL, "chaos", "run", "--db", mongo_db, "--suite", "smoke", "--report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["acknowledged"] > 0
    assert report["lost"] == 0 and report["phantom"] == 0 and report["diverged"] == 0
