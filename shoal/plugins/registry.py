"""The engine plugins of this installation, found by name through the `shoal.engines` entry
point group (pyproject.toml), so that nothing outside `shoal/plugins/<engine>/` has to name
an engine: adding one is a new package and one line of packaging metadata."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from shoal.plugins.base import EnginePlugin, ImageRecipe

GROUP = "shoal.engines"


def image_env(engine: str) -> str:
    """The operator's environment variable that carries an engine's member image tag."""
    return f"SHOAL_{engine.upper()}_IMAGE"


def plugin_classes() -> dict[str, type[EnginePlugin[Any]]]:
    """Every installed engine's plugin class, by engine name, in entry point order."""
    found: dict[str, type[EnginePlugin[Any]]] = {}
    for ep in entry_points(group=GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, EnginePlugin)):
            raise TypeError(f"entry point {GROUP}:{ep.name} is not an EnginePlugin")
        found[ep.name] = cls
    return found


def engine_plugins(images: Mapping[str, str] | None = None) -> dict[str, EnginePlugin[Any]]:
    """Every installed engine's plugin, by engine name; each with its member image from
    `images`, else from its `SHOAL_<ENGINE>_IMAGE` variable, else the plugin's default."""
    found: dict[str, EnginePlugin[Any]] = {}
    for engine, cls in plugin_classes().items():
        image = (images or {}).get(engine) or os.environ.get(image_env(engine))
        found[engine] = cls(image) if image else cls()
    return found


def image_recipes() -> dict[str, ImageRecipe]:
    """How each installed engine's member image is built, by engine name (sorted); no
    plugin is built and no image tag needed."""
    return {engine: cls.image_recipe for engine, cls in sorted(plugin_classes().items())}


def engine_plugin(engine: str) -> EnginePlugin[Any]:
    plugins = engine_plugins()
    if engine not in plugins:
        raise LookupError(f"no plugin for engine {engine!r} on this installation")
    return plugins[engine]
