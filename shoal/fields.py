"""Building blocks of the declaration's models, shared by the generic model
(`shoal/declaration/model.py`) and each engine's section of it (`shoal/plugins/<engine>/spec.py`).

A leaf module: the declaration imports the engines' sections, so what those sections need
must not import the declaration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


def show(value: object) -> str:
    """A short, single-line rendering of a value a user gave, for `got ...`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if -(10**30) < value < 10**30:
            return str(value)
        return "a number with more than 30 digits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if len(value) > 40:
            return repr(value[:40]) + "..."
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


def between(low: int, high: int) -> Callable[[int], int]:
    def check(v: int) -> int:
        if not low <= v <= high:
            raise ValueError(f"must be between {low} and {high}, got {show(v)}")
        return v

    return check


class StrictModel(BaseModel):
    # populate_by_name lets Python code build models by field name; documents are validated
    # by alias only (`shoal.declaration.validate_document`), so `unreachable_seconds:` in
    # YAML is unknown.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


@dataclass(frozen=True)
class EngineSection:
    """What an engine contributes to the declaration: its section of `spec` (the field named
    after the engine, e.g. `spec.postgres`), the version a declaration gets when it names
    none, and the rule for `spec.version`."""

    engine: str
    model: type[StrictModel]
    default_version: str
    # The problem with a `spec.version` of this engine (a full message, ending in
    # `got ...`), or None when the version is accepted.
    version_problem: Callable[[str], str | None]
    # Whether the engine's members archive and back up to `spec.backup` (docs/backup.md).
    backups: bool = False
