"""A MongoDB database declared where no MongoDB member image exists (every machine without a
mongod, CI included): the operator acts on nothing for it, and its status says that the image
is missing and how to build one. Runs wherever the operator was deployed without a MongoDB
member image; skipped where one exists (tests/integration/test_mongodb.py runs there)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from tests.integration.support import apply, shoal, status, wait_for
from tests.integration.test_mongodb import declaration

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_a_mongodb_database_without_a_member_image_says_how_to_build_one(
    operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    if "mongodb" in operator.members:
        pytest.skip(
            "not applicable: this operator was deployed with a MongoDB member image, so a "
            "MongoDB database is run, not refused (tests/integration/test_mongodb.py covers it)"
        )
    apply(declaration(unique_name), tmp_path)
    try:

        def told() -> dict[str, Any] | None:
            s = status(unique_name)
            return s if "--mongodb-from IMAGE" in (s.get("message") or "") else None

        st = wait_for(told, 120, f"{unique_name}'s status to say how to build the image")
        assert "--mongodb-tarball PATH" in st["message"]
        for _ in range(3):  # it stays so: no member service, no crash loop
            proc = subprocess.run(
                ["docker", "service", "inspect", names.member_service(unique_name, 0)],
                capture_output=True,
            )
            assert proc.returncode != 0, "a member service was created without an image"
            assert "--mongodb-from IMAGE" in (status(unique_name).get("message") or "")
    finally:
        proc = shoal("delete", unique_name, "--wait", timeout=240)
        assert proc.returncode == 0, proc.stdout + proc.stderr
