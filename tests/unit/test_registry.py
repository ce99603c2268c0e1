"""Engine plugins are found through the installed package's `shoal.engines` entry points."""

from __future__ import annotations

import pytest

from shoal.plugins.postgres.plugin import PostgresPlugin
from shoal.plugins.registry import engine_plugin, engine_plugins, image_env, image_recipes

pytestmark = pytest.mark.unit


def test_the_installed_engines_are_found_with_their_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(image_env("postgres"), raising=False)
    plugins = engine_plugins()
    assert "postgres" in plugins
    assert plugins["postgres"].engine.value == "postgres"
    assert plugins["postgres"].member_image() == PostgresPlugin.image_recipe.alias
    assert engine_plugins({"postgres": "x/pg:1"})["postgres"].member_image() == "x/pg:1"
    monkeypatch.setenv(image_env("postgres"), "y/pg:2")
    assert engine_plugin("postgres").member_image() == "y/pg:2"


def test_each_engine_declares_its_member_image_recipe_without_an_image_tag() -> None:
    recipes = image_recipes()
    assert recipes["postgres"] is PostgresPlugin.image_recipe
    assert recipes["postgres"].package == "shoal.plugins.postgres"
    # the member agent and the toolkit every agent shares, into the image
    assert recipes["postgres"].sources == ("agent", "shoal/agentkit")
    assert "postgresql-15" in recipes["postgres"].base_packages


def test_an_engine_without_a_plugin_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="no plugin for engine 'cassandra'"):
        engine_plugin("cassandra")
