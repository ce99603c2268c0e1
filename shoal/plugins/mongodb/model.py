"""What the MongoDB plugin observes of a member and the engine actions it can plan.

The probe document
------------------
The member agent answers with ONE document::

    {"format": 1,                 # optional; absent means 1
     "hello":  <the hello command's reply>,
     "status": <replSetGetStatus's reply, its error reply, or null>,
     "config": <replSetGetConfig's "config" field, its error reply, or null>,
     "task":   <the Swarm task id of the answering container, or null>}

`hello` is required: a member whose mongod does not answer `hello` gave no usable answer.
`status` and `config` are null, or the command's error reply (`{"ok": 0, "code": 94,
"codeName": "NotYetInitialized", ...}`), where the command failed: on a mongod started with
`--replSet` that was never initiated both fail with NotYetInitialized.

Field names are the MongoDB manual's ("hello", "replSetGetStatus", "replSetGetConfig",
"Replica Set Configuration"). Values may arrive as relaxed or canonical Extended JSON, as
`bson.json_util` writes them (and reads them back: `bson.json_util` decodes the document), or
as plain values: an ObjectId (`electionId`, `settings.replicaSetId`) becomes its lowercase hex
string, a Timestamp (`optime.ts`) a `Timestamp`, a date an aware `datetime`.

`MongoProbe.parse` turns the document into a typed, frozen `MongoProbe`, or raises
`UnusableAnswer` saying why it cannot be used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from bson import Int64, ObjectId, json_util
from bson import Timestamp as BsonTimestamp
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from shoal.plugins.base import Action, UnusableAnswer, answer_document

# The newest probe document format this parser knows.
PROBE_FORMAT = 1

# Replies shoal reads are a few levels deep; this bounds hostile input.
MAX_DEPTH = 64
OID_RE = re.compile(r"^[0-9a-fA-F]{24}$")
# Extended JSON is read with dates as timezone-aware UTC datetimes.
_EJSON_OPTIONS = json_util.JSONOptions(tz_aware=True, tzinfo=UTC)

MemberStateName = Literal[
    "startup", "primary", "secondary", "recovering", "startup2", "removed", "other"
]

# replSetGetStatus `myState` / `members[n].state` ("Replica Set Member States").
STARTUP, PRIMARY, SECONDARY, RECOVERING, STARTUP2, UNKNOWN, ARBITER, DOWN, ROLLBACK, REMOVED = (
    0, 1, 2, 3, 5, 6, 7, 8, 9, 10,
)  # fmt: skip
_STATE_NAMES: dict[int, MemberStateName] = {
    STARTUP: "startup",
    PRIMARY: "primary",
    SECONDARY: "secondary",
    RECOVERING: "recovering",
    STARTUP2: "startup2",
    REMOVED: "removed",
}


def state_name(code: int) -> MemberStateName:
    """The planner's name of a replica set member state code; "other" for UNKNOWN, ARBITER,
    DOWN, ROLLBACK and any code this shoal does not know."""
    return _STATE_NAMES.get(code, "other")


def _object_id(v: Any) -> Any:
    """An ObjectId: `{"$oid": hex}` or the hex itself, as lowercase hex."""
    if isinstance(v, dict) and set(v) == {"$oid"}:
        v = v["$oid"]
    if isinstance(v, str):
        if not OID_RE.match(v):
            raise ValueError("an ObjectId is 24 hex digits")
        return v.lower()
    return v


ObjectIdHex = Annotated[str, BeforeValidator(_object_id)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Timestamp(_Model):
    """A BSON Timestamp: seconds since the epoch and an ordinal within that second."""

    t: int = Field(ge=0, lt=2**32)
    i: int = Field(ge=0, lt=2**32)

    @field_validator("t", "i", mode="before")
    @classmethod
    def _no_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("a Timestamp's parts are integers")
        return v

    @classmethod
    def _from_pair(cls, v: Any) -> Any:
        if isinstance(v, list | tuple) and len(v) == 2:
            return {"t": v[0], "i": v[1]}
        return v

    @property
    def key(self) -> tuple[int, int]:
        return (self.t, self.i)


class OpTime(_Model):
    """An oplog position, `{ts: Timestamp, t: term}`. Ordered by term, then timestamp, as
    MongoDB orders optimes (protocol version 1)."""

    ts: Timestamp
    t: int = -1  # the term; -1 for an optime of no term (nothing written yet)

    @field_validator("ts", mode="before")
    @classmethod
    def _pair(cls, v: Any) -> Any:
        return Timestamp._from_pair(v)

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.t, self.ts.t, self.ts.i)


class LastWrite(_Model):
    """hello's `lastWrite`."""

    op_time: OpTime | None = Field(default=None, alias="opTime")
    last_write_date: datetime | None = Field(default=None, alias="lastWriteDate")
    majority_op_time: OpTime | None = Field(default=None, alias="majorityOpTime")
    majority_write_date: datetime | None = Field(default=None, alias="majorityWriteDate")


class Hello(_Model):
    """The `hello` reply (the manual's "hello" page); `ismaster` of the legacy isMaster
    reply is read as `isWritablePrimary`."""

    ok: float = 1.0
    is_writable_primary: bool = Field(
        default=False, validation_alias=AliasChoices("isWritablePrimary", "ismaster")
    )
    secondary: bool = False
    set_name: str | None = Field(default=None, alias="setName")
    set_version: int | None = Field(default=None, alias="setVersion")
    me: str | None = None
    primary: str | None = None
    hosts: tuple[str, ...] = ()
    passives: tuple[str, ...] = ()
    arbiters: tuple[str, ...] = ()
    election_id: ObjectIdHex | None = Field(default=None, alias="electionId")
    last_write: LastWrite | None = Field(default=None, alias="lastWrite")
    # true on a mongod started with --replSet that holds no valid configuration
    isreplicaset: bool = False
    arbiter_only: bool = Field(default=False, alias="arbiterOnly")
    hidden: bool = False


class StatusMember(_Model):
    """One of replSetGetStatus's `members`: this member's view of a member of its set."""

    id: int = Field(alias="_id")
    name: str  # host:port
    health: float = 0.0  # 1: up, 0: down (as seen from the answering member)
    state: int
    state_str: str = Field(default="", alias="stateStr")
    optime: OpTime | None = None
    optime_date: datetime | None = Field(default=None, alias="optimeDate")
    sync_source_host: str = Field(default="", alias="syncSourceHost")
    is_self: bool = Field(default=False, alias="self")

    @property
    def state_name(self) -> MemberStateName:
        return state_name(self.state)

    @property
    def up(self) -> bool:
        return self.health >= 1


class ReplSetStatus(_Model):
    """The replSetGetStatus reply."""

    set_name: str = Field(alias="set")
    my_state: int = Field(alias="myState")
    term: int | None = None
    members: tuple[StatusMember, ...] = ()

    def member(self, host: str) -> StatusMember | None:
        return next((m for m in self.members if m.name == host), None)

    @property
    def me(self) -> StatusMember | None:
        return next((m for m in self.members if m.is_self), None)

    @property
    def primary(self) -> StatusMember | None:
        return next((m for m in self.members if m.state == PRIMARY), None)


class ConfigMember(_Model):
    """One of the configuration's `members` ("Replica Set Configuration")."""

    id: int = Field(alias="_id", ge=0)
    host: str
    votes: int = Field(default=1, ge=0, le=1)
    priority: float = Field(default=1.0, ge=0, le=1000)
    arbiter_only: bool = Field(default=False, alias="arbiterOnly")
    hidden: bool = False

    @property
    def voting(self) -> bool:
        return self.votes > 0

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "_id": self.id,
            "host": self.host,
            "votes": self.votes,
            "priority": self.priority,
        }
        if self.arbiter_only:
            doc["arbiterOnly"] = True
        if self.hidden:
            doc["hidden"] = True
        return doc


class ConfigSettings(_Model):
    replica_set_id: ObjectIdHex | None = Field(default=None, alias="replicaSetId")


class ReplicaSetConfig(_Model):
    """A replica set configuration: read from replSetGetConfig's `config`, and built by the
    planner for replSetInitiate / replSetReconfig.

    Only what shoal manages is kept: a configuration shoal sends carries the members and the
    replica set id; other `settings` return to MongoDB's defaults (shoal never sets any)."""

    id: str = Field(alias="_id", min_length=1)
    version: int = Field(ge=1)
    # Set by the primary itself on replSetReconfig (MongoDB 4.4+); never sent by shoal.
    term: int | None = None
    protocol_version: int = Field(default=1, alias="protocolVersion")
    members: tuple[ConfigMember, ...] = ()
    settings: ConfigSettings | None = None

    @property
    def replica_set_id(self) -> str | None:
        return self.settings.replica_set_id if self.settings else None

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(m.host for m in self.members)

    def member(self, host: str) -> ConfigMember | None:
        return next((m for m in self.members if m.host == host), None)

    @property
    def voters(self) -> tuple[ConfigMember, ...]:
        return tuple(m for m in self.members if m.voting)

    @property
    def majority(self) -> int:
        """Votes an election (and a `w: majority` write) needs: a strict majority of the
        voting members ("Replica Set Elections")."""
        return len(self.voters) // 2 + 1

    def to_document(self) -> dict[str, Any]:
        """The document replSetInitiate / replSetReconfig takes, in relaxed Extended JSON:
        `settings.replicaSetId` is `{"$oid": ...}`. The runtime turns it into BSON types with
        `bson.json_util.loads(json.dumps(doc))`. `term` is left out: the primary sets it."""
        doc: dict[str, Any] = {
            "_id": self.id,
            "version": self.version,
            "protocolVersion": self.protocol_version,
            "members": [m.to_document() for m in self.members],
        }
        if self.replica_set_id is not None:
            doc["settings"] = {"replicaSetId": {"$oid": self.replica_set_id}}
        return doc


OptimeKey = tuple[int, int, int]


class MongoProbe(_Model):
    """A member's probe document, typed (the module docstring says its shape)."""

    format: int = 1
    hello: Hello
    status: ReplSetStatus | None = None
    # The codeName (or errmsg) of a failed replSetGetStatus / replSetGetConfig.
    status_error: str | None = None
    config: ReplicaSetConfig | None = None
    config_error: str | None = None
    task: str | None = None  # the Swarm task of the container that answered

    @staticmethod
    def parse(doc: object) -> MongoProbe:
        """The probe document, typed; `UnusableAnswer` says why it cannot be used."""
        doc = answer_document(doc, PROBE_FORMAT)
        if not isinstance(doc.get("hello"), dict):
            raise UnusableAnswer("the answer holds no hello reply")
        try:
            decoded = json_util.loads(json.dumps(doc), json_options=_EJSON_OPTIONS)
        except Exception as e:  # any failure to decode the agent's answer makes it unusable
            raise UnusableAnswer(f"the answer's Extended JSON is malformed: {e!s:.200}") from None
        raw = _plain(decoded)
        if not isinstance(raw, dict):
            raise UnusableAnswer(f"the answer is not an object but {type(raw).__name__}")
        raw["status"], raw["status_error"] = _reply(raw.get("status"))
        raw["config"], raw["config_error"] = _reply(raw.get("config"))
        try:
            return MongoProbe.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise UnusableAnswer(
                f"the answer is malformed ({e.error_count()} problem(s); {where}: {err['msg']})"
            ) from None

    @field_validator("task", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return v or None

    # -- what the planner asks ------------------------------------------------------------
    @property
    def initiated(self) -> bool:
        """This mongod holds a replica set configuration (it was initiated, or received one
        from a member of its set): it is no longer an empty, uninitiated member."""
        return self.config is not None or self.status is not None or self.hello.set_name is not None

    @property
    def state(self) -> MemberStateName:
        """This member's replica set state ("Replica Set Member States"): replSetGetStatus's
        `myState` where it answered, else what hello says. "startup" is also an uninitiated
        mongod (replSetGetStatus: NotYetInitialized)."""
        if self.status is not None:
            return state_name(self.status.my_state)
        if not self.initiated:
            return "startup"
        if self.hello.is_writable_primary:
            return "primary"
        if self.hello.secondary:
            return "secondary"
        if self.status_error == "InvalidReplicaSetConfig":
            return "removed"  # holds a configuration that does not list it
        return "other"

    @property
    def set_name(self) -> str | None:
        if self.config is not None:
            return self.config.id
        if self.status is not None:
            return self.status.set_name
        return self.hello.set_name

    @property
    def replica_set_id(self) -> str | None:
        """`settings.replicaSetId` of the configuration it holds: the replica set's identity,
        generated by replSetInitiate and never changed."""
        return self.config.replica_set_id if self.config is not None else None

    @property
    def config_version(self) -> int | None:
        return self.config.version if self.config is not None else None

    @property
    def config_term(self) -> int | None:
        return self.config.term if self.config is not None else None

    @property
    def is_primary(self) -> bool:
        """It claims to be primary (PRIMARY state, or hello says it takes writes)."""
        return self.state == "primary" or self.hello.is_writable_primary

    @property
    def term(self) -> int | None:
        """The term this member last saw: replSetGetStatus's `term`, else its last optime's."""
        if self.status is not None and self.status.term is not None:
            return self.status.term
        op = self.optime
        return op.t if op is not None and op.t >= 0 else None

    @property
    def election_id(self) -> str | None:
        """A primary's electionId (hex): in protocol version 1 it encodes the term of the
        election that made it primary, so a higher one is a newer election."""
        return self.hello.election_id

    @property
    def optime(self) -> OpTime | None:
        """This member's last applied oplog position."""
        if self.status is not None and self.status.me is not None and self.status.me.optime:
            return self.status.me.optime
        lw = self.hello.last_write
        return lw.op_time if lw is not None else None

    def lags(self) -> dict[str, float]:
        """Seconds each member of this member's view (replSetGetStatus `members`, by host)
        is behind the primary's last optime; empty when it sees no primary. Uses
        `optimeDate` (milliseconds) where both have it, else the optimes' seconds."""
        if self.status is None or self.status.primary is None:
            return {}
        lead = self.status.primary
        out: dict[str, float] = {}
        for m in self.status.members:
            if m.state_name not in ("primary", "secondary", "recovering"):
                continue
            if lead.optime_date is not None and m.optime_date is not None:
                out[m.name] = max(0.0, (lead.optime_date - m.optime_date).total_seconds())
            elif lead.optime is not None and m.optime is not None:
                out[m.name] = float(max(0, lead.optime.ts.t - m.optime.ts.t))
        return out


@dataclass(frozen=True)
class _OtherBson:
    """A BSON value of a type the typed model never reads (Binary, Regex, MinKey, ...):
    kept so that fields shoal ignores may hold it, and refused where a value is wanted."""

    type_name: str


_PLAIN_TYPES = (str, int, float, bool, type(None), datetime)


def _plain(v: Any, depth: int = 0) -> Any:
    """A value decoded by `bson.json_util` as the typed model reads it: an ObjectId becomes
    its lowercase hex string, a Timestamp the pair (t, i), an Int64 an int; a date stays an
    aware datetime."""
    if depth > MAX_DEPTH:
        raise UnusableAnswer(f"the answer is nested more than {MAX_DEPTH} levels")
    if isinstance(v, dict):
        return {k: _plain(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x, depth + 1) for x in v]
    if isinstance(v, ObjectId):
        return str(v)
    if isinstance(v, BsonTimestamp):
        return (v.time, v.inc)
    if isinstance(v, Int64):
        return int(v)
    if type(v) in _PLAIN_TYPES:
        return v
    return _OtherBson(type(v).__name__)


def _reply(v: Any) -> tuple[Any, str | None]:
    """A command's reply, or (None, why) for its error reply (`ok: 0`)."""
    if isinstance(v, dict) and "ok" in v and not v["ok"]:
        why = v.get("codeName") or v.get("errmsg") or "failed"
        return None, str(why)[:200]
    return v, None


# --- engine actions ----------------------------------------------------------------------
@dataclass(frozen=True)
class InitiateReplicaSet(Action):
    """replSetInitiate with `config` on `member`, then the agent creates shoal's users
    (over the localhost exception) with `w: majority`. Planned only while no member holds a
    configuration and the status records no identity: done once, ever, per database."""

    member: str
    config: ReplicaSetConfig


@dataclass(frozen=True)
class Reconfigure(Action):
    """replSetReconfig on the primary `via` with the complete configuration `config`
    (its version is the current one + 1). At most one voting member differs from the
    current configuration ("replSetReconfig": a reconfig may add or remove at most one
    voting member)."""

    via: str
    config: ReplicaSetConfig


@dataclass(frozen=True)
class StepDown(Action):
    """replSetStepDown on `member`: it stays a secondary, ineligible to be elected, for
    `seconds`. Without `force` it waits up to `catch_up_seconds` for an electable secondary
    to catch up (a switchover loses no majority-acknowledged write); with `force` it steps
    down at once (fencing a deposed primary, whose secondaries follow another)."""

    member: str
    seconds: int = 60
    catch_up_seconds: int = 10
    force: bool = False


@dataclass(frozen=True)
class ForceReconfigure(Action):
    """replSetReconfig with `force: true` on `via`: only ever planned for an explicit
    recover request with data loss accepted (`shoal recover NAME --force-reconfig`); never
    on the planner's own. Writes only the members left out held are lost."""

    via: str
    config: ReplicaSetConfig
