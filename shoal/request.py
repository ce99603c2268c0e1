"""What a user asked of a database, pending until the operator has acted on it: the JSON of
the anchor's `shoal.request` label (names.LABEL_REQUEST), written by `shoal switchover`,
`shoal failover`, `shoal recover` and `shoal reinit`, cleared by the operator
(`ClearRequest`) once acted on or refused.

One typed model per kind, told apart by `kind`. A label that does not parse as one of them
(malformed, or written by a newer shoal with a kind or field this one does not know) makes
the database's stored state unreadable: the operator acts on nothing rather than guess
(swarm/store.py, docs/failure-modes.md property 8).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(max_length=64)  # a random id: only the request it names is cleared


class SwitchoverRequest(_Request):
    """A planned primary change, to `to` or to the best caught-up standby."""

    kind: Literal["switchover"] = "switchover"
    to: str | None = None


class FailoverRequest(_Request):
    """A promotion the safety rules refuse, forced by a person who accepts losing data."""

    kind: Literal["failover"] = "failover"
    to: str
    accept_data_loss: bool


class RecoverRequest(_Request):
    """Re-form the database from the members that still answer, when too few are left for
    the engine to do it by itself (`shoal recover NAME`; MongoDB: a forced reconfig). The
    person accepts that writes only the missing members held are lost; an engine that has
    no such step refuses it."""

    kind: Literal["recover"] = "recover"
    accept_data_loss: bool


class ReinitRequest(_Request):
    """Initialise a database that lost every copy of its data, empty."""

    kind: Literal["reinit"] = "reinit"


Request = Annotated[
    SwitchoverRequest | FailoverRequest | RecoverRequest | ReinitRequest,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[Request] = TypeAdapter(Request)


class UnreadableRequest(ValueError):
    """The request label is not a request this version of shoal knows."""


def parse_request(raw: str) -> Request:
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "request"
        raise UnreadableRequest(f"{where}: {first['msg']}") from None


def dump_request(request: Request) -> str:
    return request.model_dump_json()
