"""Fixtures for chaos tests against a real database run by the operator (docs/chaos.md).

`platform` and `unique_name` come from tests/integration/conftest.py; `pg_db` applies a
3-member PostgreSQL database through the CLI and waits until `shoal status NAME --json`
says Healthy."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import operator, platform, unique_name
from tests.integration.support import shoal, status

__all__ = ["operator", "platform", "unique_name"]


@contextlib.contextmanager
def healthy_database(engine: str, name: str, tmp_path: Path) -> Iterator[str]:
    """A 3-member `durability: sync` database of `engine`, Healthy; deleted afterwards."""
    decl = tmp_path / "db.yaml"
    decl.write_text(
        "apiVersion: shoal/v1\nkind: Database\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{engine: {engine}, members: 3, durability: sync}}\n"
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


@pytest.fixture
def pg_db(operator: object, unique_name: str, tmp_path: Path) -> Iterator[str]:
    with healthy_database("postgres", unique_name[:20], tmp_path) as name:
        yield name
