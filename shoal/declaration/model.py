"""The declaration model: pydantic classes with every field rule (README.md, "Declaring a
database"). Each engine's section of `spec` and its version rule come from the engine's
package (`shoal/plugins/<engine>/spec.py`; docs/architecture.md, "Engine plugins")."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shoal.declaration.backup import BackupSpec, RestoreSpec
from shoal.fields import EngineSection, StrictModel, between, show
from shoal.plugins.mongodb.spec import SECTION as MONGODB_SECTION
from shoal.plugins.mongodb.spec import MongoSection
from shoal.plugins.postgres.spec import SECTION as POSTGRES_SECTION
from shoal.plugins.postgres.spec import PostgresSection

NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
MAX_NAME_LENGTH = 30
MEMORY_RE = re.compile(r"^[1-9][0-9]{0,12}[KMG]$")
MIN_MEMORY_BYTES = 64 * 1024**2
MAX_MEMORY_BYTES = 1024**4
MAX_MEMBERS = 7
MAX_CPUS = 64
OPERATOR_METRICS_PORT = 9650  # shoal.names.OPERATOR_PORT, published on the ingress
# Names a database may not take: `shoal-control` is the shared control network.
RESERVED_NAMES = frozenset({"control"})
# Limits of the loader: a declaration is a small hand-written file. These bound the work
# (and memory) spent on hostile input: no YAML aliases, so no "billion laughs".
MAX_DOCUMENT_CHARS = 64 * 1024
MAX_NESTING = 32
MAX_LINE_CHARS = 300
MAX_PROBLEMS = 50
# Swarm node attributes usable in constraints and as the spread key.
SWARM_ATTRIBUTE_RE = re.compile(
    r"^(node\.(id|hostname|role|platform\.os|platform\.arch)"
    r"|(node|engine)\.labels\.[A-Za-z0-9_.\-]+)$"
)
SWARM_ATTRIBUTES = (
    "node.id, node.hostname, node.role, node.platform.os, node.platform.arch, "
    "node.labels.NAME or engine.labels.NAME"
)
CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(==|!=)\s*([^\s=!][^\s]*)\s*$")


MemberCount = Annotated[int, Strict(), AfterValidator(between(1, MAX_MEMBERS))]
Seconds = Annotated[int, Strict(), AfterValidator(between(1, 3600))]


def _port(v: int) -> int:
    between(1024, 65535)(v)
    if v == OPERATOR_METRICS_PORT:
        raise ValueError(f"{v} is published by the shoal operator, choose another port")
    return v


Port = Annotated[int, Strict(), AfterValidator(_port)]


class Engine(StrEnum):
    POSTGRES = "postgres"
    MONGODB = "mongodb"


class Durability(StrEnum):
    SYNC = "sync"
    ASYNC = "async"


# Each engine's section of `spec` (a field named after the engine), its default version and
# its version rule belong to the engine's package (`shoal/plugins/<engine>/spec.py`); the
# rules below that concern sections and versions read this table and name no engine.
SECTIONS: dict[Engine, EngineSection] = {
    Engine(section.engine): section for section in (POSTGRES_SECTION, MONGODB_SECTION)
}


def memory_bytes(v: str) -> int:
    return int(v[:-1]) * {"K": 1024, "M": 1024**2, "G": 1024**3}[v[-1]]


def _memory_type(v: object) -> object:
    if isinstance(v, int | float) and not isinstance(v, bool):
        raise ValueError(f"must be a size with a unit, like 512M or 2G, got {show(v)}")
    return v


def _memory(v: str) -> str:
    if not MEMORY_RE.match(v):
        raise ValueError(f"must be a size like 512M, 2G or 65536K, got {show(v)}")
    if memory_bytes(v) < MIN_MEMORY_BYTES:
        raise ValueError(f"must be at least 64M, got {show(v)}")
    if memory_bytes(v) > MAX_MEMORY_BYTES:
        raise ValueError(f"must be at most 1024G, got {show(v)}")
    return v


def _cpus(v: float) -> float:
    if not 0 < v <= MAX_CPUS:
        raise ValueError(f"must be more than 0 and at most {MAX_CPUS}, got {show(v)}")
    return v


class Resources(StrictModel):
    memory: Annotated[str, BeforeValidator(_memory_type), AfterValidator(_memory)] = "512M"
    cpus: Annotated[float, Strict(), Field(allow_inf_nan=False), AfterValidator(_cpus)] = 1.0

    @property
    def memory_bytes(self) -> int:
        return memory_bytes(self.memory)


def _swarm_attribute(v: str) -> str:
    if not SWARM_ATTRIBUTE_RE.match(v):
        raise ValueError(f"must be one of {SWARM_ATTRIBUTES}, got {show(v)}")
    return v


def _constraint(v: str) -> str:
    m = CONSTRAINT_RE.match(v)
    if not m:
        raise ValueError(f"must be a Swarm constraint like 'node.role==worker', got {show(v)}")
    if not SWARM_ATTRIBUTE_RE.match(m.group(1)):
        raise ValueError(f"{show(m.group(1))} is not a Swarm node attribute ({SWARM_ATTRIBUTES})")
    return v


class Placement(StrictModel):
    spread: Annotated[str, AfterValidator(_swarm_attribute)] | None = "node.id"
    constraints: list[Annotated[str, AfterValidator(_constraint)]] = Field(default_factory=list)


class Failover(StrictModel):
    unreachable_seconds: Seconds = Field(default=10, alias="unreachableSeconds")


class Expose(StrictModel):
    port: Port | None = None


class Spec(StrictModel):
    engine: Engine
    # Filled from the engine's section when a declaration names no version (above); a
    # declaration without a valid engine is refused, so it never keeps this.
    version: str = ""
    members: MemberCount = 3
    durability: Durability = Field(default=Durability.SYNC, validate_default=True)
    resources: Resources = Field(default_factory=Resources)
    placement: Placement = Field(default_factory=Placement)
    failover: Failover = Field(default_factory=Failover)
    postgres: PostgresSection = Field(default_factory=PostgresSection)
    mongodb: MongoSection = Field(default_factory=MongoSection)
    expose: Expose = Field(default_factory=Expose)
    backup: BackupSpec | None = None
    restore: RestoreSpec | None = None

    # Cross-field rules are field validators reading the fields validated before them
    # (`info.data`), so that they are reported together with every other problem; a rule
    # whose other field is itself invalid is skipped (that field has its own line).

    @model_validator(mode="before")
    @classmethod
    def _engine_default_version(cls, data: Any) -> Any:
        if isinstance(data, dict) and "version" not in data:
            for engine, section in SECTIONS.items():
                if data.get("engine") == engine:
                    return {**data, "version": section.default_version}
        return data

    @field_validator("version", mode="before")
    @classmethod
    def _version_type(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1000:
            return str(v)  # `version: 15` means "15"
        if isinstance(v, float):
            examples = " or ".join(f'"{s.default_version}"' for s in SECTIONS.values())
            raise ValueError(f"must be a quoted string like {examples}, got {show(v)}")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str, info: ValidationInfo) -> str:
        engine = info.data.get("engine")
        if engine in SECTIONS:
            problem = SECTIONS[engine].version_problem(v)
            if problem is not None:
                raise ValueError(problem)
        return v

    @field_validator("durability")
    @classmethod
    def _durability(cls, v: Durability, info: ValidationInfo) -> Durability:
        members = info.data.get("members")
        if v is Durability.SYNC and isinstance(members, int) and members < 2:
            raise ValueError(
                f"sync needs at least 2 members (a write must reach 2), got members: {members}"
            )
        return v

    @field_validator("backup")
    @classmethod
    def _backup(cls, v: BackupSpec | None, info: ValidationInfo) -> BackupSpec | None:
        engine = info.data.get("engine")
        if v is not None and engine in SECTIONS and not SECTIONS[engine].backups:
            raise ValueError(f"backups of engine {engine.value} are not supported yet")
        return v

    @field_validator("restore")
    @classmethod
    def _restore(cls, v: RestoreSpec | None, info: ValidationInfo) -> RestoreSpec | None:
        if v is not None and info.data.get("backup", False) is None:
            raise ValueError(
                "needs spec.backup: the archive to restore from (its bucket and path) and "
                "where this database archives"
            )
        return v

    @field_validator(*(engine.value for engine in SECTIONS))
    @classmethod
    def _section_of_its_engine(cls, v: StrictModel, info: ValidationInfo) -> StrictModel:
        engine = info.data.get("engine")
        if engine is not None and engine.value != info.field_name and v != type(v)():
            raise ValueError(
                f"only applies to engine {info.field_name}, this database is {engine.value}"
            )
        return v


def _name(v: str) -> str:
    if not v:
        raise ValueError("must not be empty")
    if len(v) > MAX_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters, got {len(v)} ({show(v)})")
    if not NAME_RE.match(v) or v.endswith("-"):
        raise ValueError(
            "must be a DNS label: a lowercase letter, then lowercase letters, digits "
            f"or '-', not ending in '-', got {show(v)}"
        )
    if v in RESERVED_NAMES:
        raise ValueError(f"{show(v)} is reserved by shoal, choose another name")
    return v


class Metadata(StrictModel):
    name: Annotated[str, AfterValidator(_name)]


class Database(StrictModel):
    api_version: Literal["shoal/v1"] = Field(alias="apiVersion")
    kind: Literal["Database"]
    metadata: Metadata
    spec: Spec

    @field_validator("spec")
    @classmethod
    def _restore_from_another(cls, v: Spec, info: ValidationInfo) -> Spec:
        metadata = info.data.get("metadata")
        if v.restore is not None and metadata is not None and v.restore.source == metadata.name:
            raise ValueError(
                f"restore.from must name another database, got {metadata.name!r} (a database "
                "is restored into a new one; the archive it restores from stays untouched)"
            )
        return v

    @property
    def name(self) -> str:
        return self.metadata.name

    def to_document(self) -> dict[str, Any]:
        """The declaration as a user would write it (aliases, enums as strings)."""
        return self.model_dump(mode="json", by_alias=True)


class DeclarationError(ValueError):
    """A declaration that cannot be accepted; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
