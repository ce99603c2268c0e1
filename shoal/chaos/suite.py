"""Chaos suites: a YAML file naming the faults and their schedule (`suites/*.yaml` are built
in; `--suite FILE` loads any other). `schedule` turns a suite into injection times."""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shoal.chaos.fault_names import parse_faults

BUILTIN = ("smoke", "full", "safety", "nodes")


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    duration: float = Field(default=120, gt=0)
    warmup: float = Field(default=10, ge=0)
    fault_duration: float = Field(default=10, ge=0)
    settle: float = Field(default=20, ge=0)
    faults: list[str] = Field(default_factory=lambda: ["kill-replica", "kill-primary"])
    order: Literal["cycle", "random"] = "cycle"
    max_injections: int | None = Field(default=None, ge=1)
    seed: int | None = None
    workload: Literal["set", "bank"] = "set"
    concurrency: int = Field(default=4, ge=1, le=64)
    rate: float = Field(default=20, ge=0)
    op_timeout: float = Field(default=5, gt=0)
    accounts: int = Field(default=5, ge=2)
    initial_balance: int = Field(default=100, ge=1)
    converge_timeout: float = Field(default=120, gt=0)

    @field_validator("faults")
    @classmethod
    def _faults(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one fault is needed")
        for f in v:
            parse_faults(f)
        return v


class SuiteError(ValueError):
    pass


def load_suite(ref: str) -> Suite:
    """A built-in suite's name (BUILTIN) or a path to a YAML file."""
    if ref in BUILTIN:
        text = (resources.files("shoal.chaos") / "suites" / f"{ref}.yaml").read_text("utf-8")
    else:
        path = Path(ref)
        if not path.is_file():
            raise SuiteError(f"--suite: {ref!r} is neither {' nor '.join(BUILTIN)} nor a file")
        text = path.read_text(encoding="utf-8")
    try:
        doc = yaml.safe_load(text) or {}
        return Suite.model_validate(doc)
    except (yaml.YAMLError, ValidationError) as e:
        raise SuiteError(f"--suite {ref}: {e}") from None


def schedule(suite: Suite) -> list[tuple[float, str]]:
    """(seconds after the workload starts, fault name) for every injection; each injection
    is held `fault_duration`, then `settle` passes before the next, and the last one ends
    `settle` seconds before the workload does."""
    rng = random.Random(suite.seed)
    out: list[tuple[float, str]] = []
    t = suite.warmup
    i = 0
    while t + suite.fault_duration + suite.settle <= suite.duration:
        if suite.max_injections is not None and len(out) >= suite.max_injections:
            break
        name = (
            suite.faults[i % len(suite.faults)]
            if suite.order == "cycle"
            else rng.choice(suite.faults)
        )
        out.append((t, name))
        i += 1
        t += suite.fault_duration + suite.settle
    return out
