"""The declaration model: pydantic classes with every field rule (README.md, "Declaring a
database")."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shoal.plugins.postgres.agent.parameters import refusal as parameter_refusal

NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
MAX_NAME_LENGTH = 30
MEMORY_RE = re.compile(r"^[1-9][0-9]{0,12}[KMG]$")
MIN_MEMORY_BYTES = 64 * 1024**2
MAX_MEMORY_BYTES = 1024**4
MAX_MEMBERS = 7
MAX_CPUS = 64
OPERATOR_METRICS_PORT = 9650  # shoal.names.OPERATOR_PORT, published on the ingress
POSTGRES_VERSIONS = ("15",)
DEFAULT_VERSION = {"postgres": "15", "mongodb": "7.0"}
# Names a database may not take: `shoal-control` is the shared control network.
RESERVED_NAMES = frozenset({"control"})
# Limits of the loader: a declaration is a small hand-written file. These bound the work
# (and memory) spent on hostile input: no YAML aliases, so no "billion laughs".
MAX_DOCUMENT_CHARS = 64 * 1024
MAX_NESTING = 32
MAX_LINE_CHARS = 300
MAX_PROBLEMS = 50
PG_PARAMETER_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")
MAX_PG_VALUE_CHARS = 1024
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


def _show(value: object) -> str:
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


def _between(low: int, high: int) -> Callable[[int], int]:
    def check(v: int) -> int:
        if not low <= v <= high:
            raise ValueError(f"must be between {low} and {high}, got {_show(v)}")
        return v

    return check


MemberCount = Annotated[int, Strict(), AfterValidator(_between(1, MAX_MEMBERS))]
Seconds = Annotated[int, Strict(), AfterValidator(_between(1, 3600))]
ShardCount = Annotated[int, Strict(), AfterValidator(_between(0, 16))]
ConfigServerCount = Annotated[int, Strict(), AfterValidator(_between(1, 7))]
RouterCount = Annotated[int, Strict(), AfterValidator(_between(1, 16))]


def _port(v: int) -> int:
    _between(1024, 65535)(v)
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


class _Strict(BaseModel):
    # populate_by_name lets Python code build models by field name; documents are validated
    # by alias only (see `validate_document`), so `unreachable_seconds:` in YAML is unknown.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def memory_bytes(v: str) -> int:
    return int(v[:-1]) * {"K": 1024, "M": 1024**2, "G": 1024**3}[v[-1]]


def _memory_type(v: object) -> object:
    if isinstance(v, int | float) and not isinstance(v, bool):
        raise ValueError(f"must be a size with a unit, like 512M or 2G, got {_show(v)}")
    return v


def _memory(v: str) -> str:
    if not MEMORY_RE.match(v):
        raise ValueError(f"must be a size like 512M, 2G or 65536K, got {_show(v)}")
    if memory_bytes(v) < MIN_MEMORY_BYTES:
        raise ValueError(f"must be at least 64M, got {_show(v)}")
    if memory_bytes(v) > MAX_MEMORY_BYTES:
        raise ValueError(f"must be at most 1024G, got {_show(v)}")
    return v


def _cpus(v: float) -> float:
    if not 0 < v <= MAX_CPUS:
        raise ValueError(f"must be more than 0 and at most {MAX_CPUS}, got {_show(v)}")
    return v


class Resources(_Strict):
    memory: Annotated[str, BeforeValidator(_memory_type), AfterValidator(_memory)] = "512M"
    cpus: Annotated[float, Strict(), Field(allow_inf_nan=False), AfterValidator(_cpus)] = 1.0

    @property
    def memory_bytes(self) -> int:
        return memory_bytes(self.memory)


def _swarm_attribute(v: str) -> str:
    if not SWARM_ATTRIBUTE_RE.match(v):
        raise ValueError(f"must be one of {SWARM_ATTRIBUTES}, got {_show(v)}")
    return v


def _constraint(v: str) -> str:
    m = CONSTRAINT_RE.match(v)
    if not m:
        raise ValueError(f"must be a Swarm constraint like 'node.role==worker', got {_show(v)}")
    if not SWARM_ATTRIBUTE_RE.match(m.group(1)):
        raise ValueError(f"{_show(m.group(1))} is not a Swarm node attribute ({SWARM_ATTRIBUTES})")
    return v


class Placement(_Strict):
    spread: Annotated[str, AfterValidator(_swarm_attribute)] | None = "node.id"
    constraints: list[Annotated[str, AfterValidator(_constraint)]] = Field(default_factory=list)


class Failover(_Strict):
    unreachable_seconds: Seconds = Field(default=10, alias="unreachableSeconds")


def _pg_parameter_name(v: str) -> str:
    if not PG_PARAMETER_RE.match(v):
        raise ValueError(
            "is not a PostgreSQL parameter name (lowercase letters, digits and '_', "
            "optionally prefixed by 'extension.')"
        )
    why = parameter_refusal(v)
    if why is not None:
        raise ValueError(why)
    return v


def _pg_parameter_value(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"must be a finite number, got {_show(v)}")
    if isinstance(v, str):
        if len(v) > MAX_PG_VALUE_CHARS:
            raise ValueError(f"must be at most {MAX_PG_VALUE_CHARS} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise ValueError(f"must not contain control characters or newlines, got {_show(v)}")
        return v
    if isinstance(v, bool | int | float):
        return v
    raise ValueError(f"must be a string, number or boolean, got {_show(v)}")


PgParameterValue = Annotated[str | int | float | bool, BeforeValidator(_pg_parameter_value)]


class PostgresSection(_Strict):
    parameters: dict[Annotated[str, AfterValidator(_pg_parameter_name)], PgParameterValue] = Field(
        default_factory=dict
    )


class MongoSection(_Strict):
    shards: ShardCount = 0
    config_servers: ConfigServerCount = Field(default=3, alias="configServers")
    routers: RouterCount = 2


class Expose(_Strict):
    port: Port | None = None


class Spec(_Strict):
    engine: Engine
    version: str = DEFAULT_VERSION["postgres"]
    members: MemberCount = 3
    durability: Durability = Field(default=Durability.SYNC, validate_default=True)
    resources: Resources = Field(default_factory=Resources)
    placement: Placement = Field(default_factory=Placement)
    failover: Failover = Field(default_factory=Failover)
    postgres: PostgresSection = Field(default_factory=PostgresSection)
    mongodb: MongoSection = Field(default_factory=MongoSection)
    expose: Expose = Field(default_factory=Expose)

    # Cross-field rules are field validators reading the fields validated before them
    # (`info.data`), so that they are reported together with every other problem; a rule
    # whose other field is itself invalid is skipped (that field has its own line).

    @model_validator(mode="before")
    @classmethod
    def _engine_default_version(cls, data: Any) -> Any:
        if isinstance(data, dict) and "version" not in data:
            engine = data.get("engine")
            for name, version in DEFAULT_VERSION.items():
                if engine == name:
                    return {**data, "version": version}
        return data

    @field_validator("version", mode="before")
    @classmethod
    def _version_type(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1000:
            return str(v)  # `version: 15` means "15"
        if isinstance(v, float):
            raise ValueError(f'must be a quoted string like "15" or "7.0", got {_show(v)}')
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str, info: ValidationInfo) -> str:
        engine = info.data.get("engine")
        if engine is Engine.POSTGRES and v not in POSTGRES_VERSIONS:
            raise ValueError(f"only PostgreSQL 15 is available, got {_show(v)}")
        if engine is Engine.MONGODB and not re.fullmatch(r"[1-9][0-9]?\.[0-9]{1,2}", v):
            raise ValueError(f'must be a MongoDB release like "7.0", got {_show(v)}')
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

    @field_validator("postgres")
    @classmethod
    def _postgres_only(cls, v: PostgresSection, info: ValidationInfo) -> PostgresSection:
        engine = info.data.get("engine")
        if engine is not None and engine is not Engine.POSTGRES and v != PostgresSection():
            raise ValueError(f"only applies to engine postgres, this database is {engine.value}")
        return v

    @field_validator("mongodb")
    @classmethod
    def _mongodb_only(cls, v: MongoSection, info: ValidationInfo) -> MongoSection:
        engine = info.data.get("engine")
        if engine is not None and engine is not Engine.MONGODB and v != MongoSection():
            raise ValueError(f"only applies to engine mongodb, this database is {engine.value}")
        return v


def _name(v: str) -> str:
    if not v:
        raise ValueError("must not be empty")
    if len(v) > MAX_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters, got {len(v)} ({_show(v)})")
    if not NAME_RE.match(v) or v.endswith("-"):
        raise ValueError(
            "must be a DNS label: a lowercase letter, then lowercase letters, digits "
            f"or '-', not ending in '-', got {_show(v)}"
        )
    if v in RESERVED_NAMES:
        raise ValueError(f"{_show(v)} is reserved by shoal, choose another name")
    return v


class Metadata(_Strict):
    name: Annotated[str, AfterValidator(_name)]


class Database(_Strict):
    api_version: Literal["shoal/v1"] = Field(alias="apiVersion")
    kind: Literal["Database"]
    metadata: Metadata
    spec: Spec

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
