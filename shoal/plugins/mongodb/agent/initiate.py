"""The checks of a `POST /initiate` body: `{"token": N, "config": {...}}`, where `config`
is the replica set configuration document `replSetInitiate` takes (MongoDB manual,
"Replica Set Configuration"). Pure: the agent applies what this returns, nothing else.

Only the fields Shoal sets are accepted, so a mistaken or forged request cannot give the
set arbiters, delayed members or a different name. A 400 names the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_MEMBERS = 50  # a replica set's limit (7 of them voting)
MAX_VOTING = 7
HOST_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}:([0-9]{1,5})$")
CONFIG_FIELDS = frozenset({"_id", "version", "members", "protocolVersion", "settings"})
MEMBER_FIELDS = frozenset({"_id", "host", "priority", "votes", "hidden"})
SETTINGS_FIELDS = frozenset({"electionTimeoutMillis", "heartbeatIntervalMillis"})


class BadRequest(Exception):
    """The request is malformed; the message names the field (HTTP 400)."""


@dataclass(frozen=True)
class InitiateRequest:
    token: int
    config: dict[str, Any]  # validated; sent to mongod as it is

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(str(m["host"]) for m in self.config["members"])


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"field {where!r} must be an integer from {low} to {high}")
    return value


def _member(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequest(f"field {where!r} must be an object")
    unknown = sorted(set(raw) - MEMBER_FIELDS)
    if unknown:
        raise BadRequest(f"field {where}.{unknown[0]!r} is not accepted")
    if "_id" not in raw or "host" not in raw:
        raise BadRequest(f"field {where!r} needs '_id' and 'host'")
    out: dict[str, Any] = {"_id": _int(raw["_id"], f"{where}._id", 0, 255)}
    host = raw["host"]
    match = HOST_RE.fullmatch(host) if isinstance(host, str) else None
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise BadRequest(f"field {where}.host must be NAME:PORT, got {host!r}")
    out["host"] = host
    if "priority" in raw:
        p = raw["priority"]
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1000:
            raise BadRequest(f"field {where}.priority must be a number from 0 to 1000")
        out["priority"] = p
    if "votes" in raw:
        out["votes"] = _int(raw["votes"], f"{where}.votes", 0, 1)
    if "hidden" in raw:
        if not isinstance(raw["hidden"], bool):
            raise BadRequest(f"field {where}.hidden must be true or false")
        out["hidden"] = raw["hidden"]
    if out.get("votes", 1) == 0 and out.get("priority", 1) != 0:
        raise BadRequest(f"field {where}: a member without a vote must have priority 0")
    return out


def check_config(raw: Any, replica_set: str, member_host: str) -> dict[str, Any]:
    """The replica set config to initiate: named `replica_set`, and listing `member_host`
    (the member the agent runs in: mongod refuses a config without itself)."""
    if not isinstance(raw, dict):
        raise BadRequest("field 'config' must be an object")
    unknown = sorted(set(raw) - CONFIG_FIELDS)
    if unknown:
        raise BadRequest(f"field config.{unknown[0]!r} is not accepted")
    if raw.get("_id") != replica_set:
        raise BadRequest(f"field config._id must be this member's replica set {replica_set!r}")
    out: dict[str, Any] = {"_id": replica_set}
    out["version"] = _int(raw.get("version", 1), "config.version", 1, 1 << 31)
    if raw.get("protocolVersion", 1) != 1 or isinstance(raw.get("protocolVersion"), bool):
        raise BadRequest("field config.protocolVersion must be 1")
    if "protocolVersion" in raw:
        out["protocolVersion"] = 1
    members = raw.get("members")
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        raise BadRequest(f"field config.members must be a list of 1 to {MAX_MEMBERS} members")
    out["members"] = [_member(m, f"config.members[{i}]") for i, m in enumerate(members)]
    ids = [m["_id"] for m in out["members"]]
    hosts = [m["host"] for m in out["members"]]
    if len(set(ids)) != len(ids):
        raise BadRequest("field config.members: every _id must be unique")
    if len(set(hosts)) != len(hosts):
        raise BadRequest("field config.members: every host must be unique")
    if sum(m.get("votes", 1) for m in out["members"]) > MAX_VOTING:
        raise BadRequest(f"field config.members: at most {MAX_VOTING} may vote")
    if member_host not in hosts:
        raise BadRequest(f"field config.members must include this member ({member_host})")
    if "settings" in raw:
        settings = raw["settings"]
        if not isinstance(settings, dict):
            raise BadRequest("field config.settings must be an object")
        unknown = sorted(set(settings) - SETTINGS_FIELDS)
        if unknown:
            raise BadRequest(f"field config.settings.{unknown[0]!r} is not accepted")
        out["settings"] = {
            k: _int(v, f"config.settings.{k}", 1, 3_600_000) for k, v in settings.items()
        }
    return out


def check_request(body: Any, replica_set: str, member_host: str) -> InitiateRequest:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    token = body.get("token")
    if isinstance(token, bool) or not isinstance(token, int) or not 0 < token < 1 << 53:
        raise BadRequest("field 'token' must be the operator's fencing token (a positive integer)")
    if "config" not in body:
        raise BadRequest("missing field 'config'")
    return InitiateRequest(token, check_config(body["config"], replica_set, member_host))
