"""MongoDB's part of the declaration: `spec.mongodb` and the versions `spec.version` may name
(README.md, "Declaring a database").

Sharded clusters are designed, not built (docs/mongodb-sharding.md): `shards` is reserved and
anything but 0 is refused; `configServers` and `routers` are validated for when they are.
`spec.members` is bounded to 7 by the declaration itself, MongoDB's limit of voting members."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, Strict

from shoal.fields import EngineSection, StrictModel, between, show

VERSION_RE = re.compile(r"[1-9][0-9]?\.[0-9]{1,2}")

SHARDING_DOC = "docs/mongodb-sharding.md"


def _not_yet_sharded(v: int) -> int:
    if v != 0:
        raise ValueError(
            f"sharded clusters are not yet supported; see {SHARDING_DOC} (got {show(v)}, "
            "only 0, a plain replica set, is accepted)"
        )
    return v


ShardCount = Annotated[
    int, Strict(), AfterValidator(between(0, 16)), AfterValidator(_not_yet_sharded)
]
ConfigServerCount = Annotated[int, Strict(), AfterValidator(between(1, 7))]
RouterCount = Annotated[int, Strict(), AfterValidator(between(1, 16))]


class MongoSection(StrictModel):
    shards: ShardCount = 0
    config_servers: ConfigServerCount = Field(default=3, alias="configServers")
    routers: RouterCount = 2


def _version_problem(v: str) -> str | None:
    if not VERSION_RE.fullmatch(v):
        return f'must be a MongoDB release like "7.0", got {show(v)}'
    return None


SECTION = EngineSection(
    engine="mongodb",
    model=MongoSection,
    default_version="7.0",
    version_problem=_version_problem,
)
