"""`shoal chaos run` (the smoke suite) against a real 3-member MongoDB replica set: its set
workload through the MongoDB chaos client (`w: majority`, retryable writes), the checker
unchanged.

NEVER RUN YET: no mongod exists on the machines this was written on. It runs only when
SHOAL_MONGODB_IMAGE names a local member image, and is otherwise reported as not run.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.conftest import healthy_database
from tests.integration.support import SHOAL
from tests.integration.test_mongodb import IMAGE, NOT_RUN, _image_present, mongo_operator

__all__ = ["mongo_operator"]

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not _image_present(IMAGE), reason=NOT_RUN),
]


@pytest.fixture
def mongo_db(mongo_operator: object, unique_name: str, tmp_path: Path) -> Iterator[str]:
    with healthy_database("mongodb", unique_name[:20], tmp_path) as name:
        yield name


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
