"""Engine plugins are found through the installed package's `shoal.engines` entry points."""

from __future__ import annotations

import pytest

from shoal import names
from shoal.plugins.registry import engine_plugin, engine_plugins, image_env

pytestmark = pytest.mark.unit


def test_the_installed_engines_are_found_with_their_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(image_env("postgres"), raising=False)
    plugins = engine_plugins()
    assert "postgres" in plugins
    assert plugins["postgres"].engine.value == "postgres"
    assert plugins["postgres"].member_image() == names.IMAGE_POSTGRES
    assert engine_plugins({"postgres": "x/pg:1"})["postgres"].member_image() == "x/pg:1"
    monkeypatch.setenv(image_env("postgres"), "y/pg:2")
    assert engine_plugin("postgres").member_image() == "y/pg:2"


def test_an_engine_without_a_plugin_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="no plugin for engine 'cassandra'"):
        engine_plugin("cassandra")
