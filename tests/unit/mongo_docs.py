"""Probe documents of MongoDB members for the unit tests, WRITTEN BY HAND following the
MongoDB manual's pages "hello", "replSetGetStatus", "replSetGetConfig" and "Replica Set
Configuration" (field names and shapes as documented), in the relaxed Extended JSON that
`bson.json_util` writes. Nothing here was recorded from a real mongod: none exists on the
machines this was written on."""

from __future__ import annotations

import copy
from typing import Any

from shoal.plugins.mongodb import naming

SET_ID = "65a1b2c3d4e5f60718293a4b"  # settings.replicaSetId of "our" replica set
OTHER_SET_ID = "65a1b2c3d4e5f60718290000"
BASE_SECONDS = 1_700_000_000


def oid(hex_: str) -> dict[str, str]:
    return {"$oid": hex_}


def election_id(term: int) -> dict[str, str]:
    """Protocol version 1's electionId: 0x7fffffff then the term, 8 bytes."""
    return oid(f"7fffffff{term:016x}")


def optime(seconds: int, term: int) -> dict[str, Any]:
    return {"ts": {"$timestamp": {"t": seconds, "i": 1}}, "t": term}


def date(seconds: float) -> dict[str, Any]:
    from datetime import UTC, datetime

    text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return {"$date": text.replace("+00:00", "Z")}


def config_doc(
    name: str,
    members: list[tuple[str, int, float]],  # (member, votes, priority)
    *,
    version: int = 1,
    term: int = 1,
    set_id: str = SET_ID,
) -> dict[str, Any]:
    return {
        "_id": name,
        "version": version,
        "term": term,
        "protocolVersion": 1,
        "writeConcernMajorityJournalDefault": True,
        "members": [
            {
                "_id": i,
                "host": naming.host(m),
                "arbiterOnly": False,
                "buildIndexes": True,
                "hidden": False,
                "priority": priority,
                "tags": {},
                "secondaryDelaySecs": 0,
                "votes": votes,
            }
            for i, (m, votes, priority) in enumerate(members)
        ],
        "settings": {
            "chainingAllowed": True,
            "heartbeatIntervalMillis": 2000,
            "heartbeatTimeoutSecs": 10,
            "electionTimeoutMillis": 10000,
            "catchUpTimeoutMillis": -1,
            "replicaSetId": oid(set_id),
        },
    }


STATE_STR = {0: "STARTUP", 1: "PRIMARY", 2: "SECONDARY", 3: "RECOVERING", 5: "STARTUP2"}
STATE_STR |= {6: "UNKNOWN", 8: "DOWN", 10: "REMOVED"}


def empty(task: str | None = None) -> dict[str, Any]:
    """A mongod started with --replSet that was never initiated (or restarted empty)."""
    return {
        "hello": {
            "isWritablePrimary": False,
            "secondary": False,
            "isreplicaset": True,
            "topologyVersion": {"processId": oid("65a1b2c3d4e5f60718291111"), "counter": 0},
            "maxBsonObjectSize": 16777216,
            "localTime": date(BASE_SECONDS),
            "ok": 1,
        },
        "status": {
            "ok": 0,
            "errmsg": "no replset config has been received",
            "code": 94,
            "codeName": "NotYetInitialized",
        },
        "config": {
            "ok": 0,
            "errmsg": "no replset config has been received",
            "code": 94,
            "codeName": "NotYetInitialized",
        },
        "task": task,
    }


def member(
    me: str,
    states: dict[str, int],  # every member of the set's config -> its state, as `me` sees it
    config: dict[str, Any],
    *,
    term: int = 1,
    seconds: dict[str, int] | None = None,  # a member's last optime (seconds); default BASE
    task: str | None = None,
    my_state: int | None = None,
) -> dict[str, Any]:
    """A member of an initiated replica set: hello, replSetGetStatus and its config."""
    seconds = seconds or {}
    name = config["_id"]
    mine = states[me] if my_state is None else my_state
    primary = next((m for m, s in states.items() if s == 1), None)
    at = {m: seconds.get(m, BASE_SECONDS) for m in states}
    hello: dict[str, Any] = {
        "isWritablePrimary": mine == 1,
        "secondary": mine == 2,
        "setName": name,
        "setVersion": config["version"],
        "me": naming.host(me),
        "hosts": [c["host"] for c in config["members"] if c["votes"] or c["priority"]],
        "passives": [c["host"] for c in config["members"] if not c["priority"]],
        "lastWrite": {
            "opTime": optime(at[me], term),
            "lastWriteDate": date(at[me]),
            "majorityOpTime": optime(at[me], term),
            "majorityWriteDate": date(at[me]),
        },
        "ok": 1,
    }
    if primary is not None:
        hello["primary"] = naming.host(primary)
    if mine == 1:
        hello["electionId"] = election_id(term)
    status = {
        "set": name,
        "date": date(BASE_SECONDS + 1),
        "myState": mine,
        "term": term,
        "heartbeatIntervalMillis": 2000,
        "members": [
            {
                "_id": c["_id"],
                "name": c["host"],
                "health": 0 if states.get(_member(c["host"]), 8) == 8 else 1,
                "state": states.get(_member(c["host"]), 8),
                "stateStr": STATE_STR.get(states.get(_member(c["host"]), 8), "UNKNOWN"),
                "uptime": 100,
                "optime": optime(at.get(_member(c["host"]), BASE_SECONDS), term),
                "optimeDate": date(at.get(_member(c["host"]), BASE_SECONDS)),
                "syncSourceHost": "" if primary is None else naming.host(primary),
                **({"self": True} if c["host"] == naming.host(me) else {}),
            }
            for c in config["members"]
        ],
        "ok": 1,
    }
    return {"hello": hello, "status": status, "config": copy.deepcopy(config), "task": task}


def _member(host: str) -> str:
    return naming.member_of(host)
