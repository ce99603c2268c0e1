"""PostgreSQL's part of the declaration: `spec.postgres` and the versions `spec.version` may
name (README.md, "Declaring a database"). Parameters are accepted by allowlist, the same rule
the member agent applies (`agent/parameters.py`, docs/security.md, "Parameters by
allowlist")."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from shoal.fields import EngineSection, StrictModel, show
from shoal.plugins.postgres.agent.parameters import refusal

VERSIONS = ("15",)
PARAMETER_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")
MAX_VALUE_CHARS = 1024


def _parameter_name(v: str) -> str:
    if not PARAMETER_RE.match(v):
        raise ValueError(
            "is not a PostgreSQL parameter name (lowercase letters, digits and '_', "
            "optionally prefixed by 'extension.')"
        )
    why = refusal(v)
    if why is not None:
        raise ValueError(why)
    return v


def _parameter_value(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"must be a finite number, got {show(v)}")
    if isinstance(v, str):
        if len(v) > MAX_VALUE_CHARS:
            raise ValueError(f"must be at most {MAX_VALUE_CHARS} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise ValueError(f"must not contain control characters or newlines, got {show(v)}")
        return v
    if isinstance(v, bool | int | float):
        return v
    raise ValueError(f"must be a string, number or boolean, got {show(v)}")


ParameterName = Annotated[str, AfterValidator(_parameter_name)]
ParameterValue = Annotated[str | int | float | bool, BeforeValidator(_parameter_value)]


class PostgresSection(StrictModel):
    parameters: dict[ParameterName, ParameterValue] = Field(default_factory=dict)


def _version_problem(v: str) -> str | None:
    if v not in VERSIONS:
        return f"only PostgreSQL 15 is available, got {show(v)}"
    return None


SECTION = EngineSection(
    engine="postgres",
    model=PostgresSection,
    default_version="15",
    version_problem=_version_problem,
    backups=True,
)
