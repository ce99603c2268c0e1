"""`shoal credentials` suggests the engine plugin's own client command (EnginePlugin
.connect_hint): the CLI names no engine."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from shoal.cli.operator import connect_hint
from shoal.declaration import load_declaration
from shoal.plugins import registry
from shoal.plugins.registry import engine_plugin

pytestmark = pytest.mark.unit

URI = "postgresql://app:pw@orders-0:5432/app?sslmode=verify-full"


class FakeStore:
    def __init__(self, stored: Any) -> None:
        self.stored = stored

    async def get(self, name: str) -> Any:
        return self.stored


def stored(engine: str) -> Any:
    decl = load_declaration(
        "apiVersion: shoal/v1\nkind: Database\n"
        f"metadata:\n  name: orders\nspec:\n  engine: {engine}\n  members: 3\n"
    )
    return SimpleNamespace(declaration=decl)


def test_postgres_suggests_psql() -> None:
    assert engine_plugin("postgres").connect_hint(URI) == f"psql '{URI}'"


async def test_the_hint_is_the_databases_plugins() -> None:
    store: Any = FakeStore(stored("postgres"))
    assert await connect_hint(store, "orders", URI) == f"psql '{URI}'"


async def test_no_hint_without_the_database_or_its_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gone: Any = FakeStore(None)
    assert await connect_hint(gone, "orders", URI) is None
    monkeypatch.setattr(registry, "engine_plugins", lambda images=None: {})  # none installed
    store: Any = FakeStore(stored("postgres"))
    assert await connect_hint(store, "orders", URI) is None
