"""The `Database` declaration (DESIGN.md §1): a pydantic model and a loader that reports
every problem at once, one line per field, and never raises anything but `DeclarationError`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
MEMORY_RE = re.compile(r"^[1-9][0-9]*[KMG]$")
MAX_MEMBERS = 7
# PostgreSQL parameters the member entrypoint owns: setting them would break replication
# or the safety rules, so a declaration may not override them.
RESERVED_PG_PARAMETERS = frozenset(
    {
        "synchronous_standby_names",
        "synchronous_commit",
        "primary_conninfo",
        "primary_slot_name",
        "hba_file",
        "data_directory",
        "listen_addresses",
        "port",
        "wal_level",
        "hot_standby",
        "archive_mode",
        "restore_command",
        "recovery_target_timeline",
        "password_encryption",
        "ssl",
    }
)


class Engine(StrEnum):
    POSTGRES = "postgres"
    MONGODB = "mongodb"


class Durability(StrEnum):
    SYNC = "sync"
    ASYNC = "async"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Resources(_Strict):
    memory: str = "512M"
    cpus: float = Field(default=1.0, gt=0, le=64)

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        if not MEMORY_RE.match(v):
            raise ValueError(f"must look like 512M, 2G or 65536K, got {v!r}")
        if memory_bytes(v) < 64 * 1024 * 1024:
            raise ValueError(f"must be at least 64M, got {v!r}")
        return v

    @property
    def memory_bytes(self) -> int:
        return memory_bytes(self.memory)


def memory_bytes(v: str) -> int:
    return int(v[:-1]) * {"K": 1024, "M": 1024**2, "G": 1024**3}[v[-1]]


class Placement(_Strict):
    spread: str | None = "node.id"
    constraints: list[str] = Field(default_factory=list)

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: list[str]) -> list[str]:
        for c in v:
            if not re.match(r"^\s*[A-Za-z0-9_.\-]+\s*(==|!=)\s*\S.*$", c):
                raise ValueError(f"{c!r} is not a Swarm constraint like 'node.role==worker'")
        return v


class Failover(_Strict):
    unreachable_seconds: int = Field(default=10, ge=1, le=3600, alias="unreachableSeconds")


class PostgresSection(_Strict):
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("parameters")
    @classmethod
    def _parameters(
        cls, v: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        bad = sorted(k for k in v if k in RESERVED_PG_PARAMETERS)
        if bad:
            raise ValueError(f"managed by shoal and cannot be set: {', '.join(bad)}")
        for k in v:
            if not re.match(r"^[a-z][a-z0-9_.]*$", k):
                raise ValueError(f"{k!r} is not a PostgreSQL parameter name")
        return v


class MongoSection(_Strict):
    shards: int = Field(default=0, ge=0, le=16)
    config_servers: int = Field(default=3, ge=1, le=7, alias="configServers")
    routers: int = Field(default=2, ge=1, le=16)


class Expose(_Strict):
    port: int | None = Field(default=None, ge=1024, le=65535)


class Spec(_Strict):
    engine: Engine
    version: str = "15"
    members: int = 3
    durability: Durability = Durability.SYNC
    resources: Resources = Field(default_factory=Resources)
    placement: Placement = Field(default_factory=Placement)
    failover: Failover = Field(default_factory=Failover)
    postgres: PostgresSection = Field(default_factory=PostgresSection)
    mongodb: MongoSection = Field(default_factory=MongoSection)
    expose: Expose = Field(default_factory=Expose)

    @field_validator("members")
    @classmethod
    def _members(cls, v: int) -> int:
        if not 1 <= v <= MAX_MEMBERS:
            raise ValueError(f"must be between 1 and {MAX_MEMBERS}, got {v}")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> Spec:
        if self.engine is Engine.POSTGRES and self.version != "15":
            raise ValueError("spec.version: only PostgreSQL 15 is available, got " + self.version)
        if self.durability is Durability.SYNC and self.members < 2:
            raise ValueError(
                "spec.durability: sync needs at least 2 members (a write must reach 2), "
                f"got members={self.members}"
            )
        return self


class Metadata(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=30)]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v) or v.endswith("-"):
            raise ValueError(
                f"must be a DNS label: a lowercase letter, then lowercase letters, digits "
                f"or '-', not ending in '-', got {v!r}"
            )
        return v


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


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after", "function-before")):
            continue
        else:
            out += ("." if out else "") + part
    return out


def _message(err: Any) -> str:
    loc = _loc(tuple(err["loc"]))
    msg: str = err["msg"]
    kind = err["type"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "extra_forbidden":
        msg = "unknown field"
    elif kind == "missing":
        msg = "is required"
    elif kind == "literal_error" and "input" in err:
        msg = f"{msg}, got {err['input']!r}"
    elif kind == "enum" and "input" in err:
        msg = f"{msg}, got {err['input']!r}"
    if not loc and msg.startswith("spec."):
        return msg
    return f"{loc}: {msg}" if loc else msg


def validate_document(doc: object) -> Database:
    """Validate an already-parsed document; raise `DeclarationError` listing every problem."""
    if not isinstance(doc, dict):
        raise DeclarationError([f"declaration: must be a mapping, got {type(doc).__name__}"])
    try:
        db = Database.model_validate(doc)
    except ValidationError as e:
        problems: list[str] = []
        for err in e.errors():
            line = _message(err)
            if line.startswith("spec: spec."):
                line = line[len("spec: ") :]
            if line not in problems:
                problems.append(line)
        raise DeclarationError(problems) from None
    return db


def load_declaration(text: str) -> Database:
    """Parse YAML text holding exactly one Database declaration."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise DeclarationError([f"declaration: not valid YAML{where}: {problem}"]) from None
    except (ValueError, RecursionError, TypeError, OverflowError) as e:
        raise DeclarationError([f"declaration: cannot be read: {e}"]) from None
    if len(docs) != 1:
        raise DeclarationError(
            [f"declaration: expected exactly one YAML document, found {len(docs)}"]
        )
    return validate_document(docs[0])
