"""`MongoProbe.parse` on probe documents WRITTEN BY HAND following the MongoDB manual
("hello", "replSetGetStatus", "replSetGetConfig"; see tests/unit/mongo_docs.py), in relaxed
and canonical Extended JSON and in plain values. Nothing here was recorded from a mongod."""

from __future__ import annotations

import contextlib
import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.plugins.base import UnusableAnswer
from shoal.plugins.mongodb.model import MongoProbe, ReplicaSetConfig
from tests.unit import mongo_docs as docs

pytestmark = pytest.mark.unit

M = ["orders-0", "orders-1", "orders-2"]
CFG = docs.config_doc("orders", [(m, 1, 1.0) for m in M], version=3, term=2)


def primary_doc() -> dict[str, Any]:
    return docs.member(
        "orders-0",
        {"orders-0": 1, "orders-1": 2, "orders-2": 2},
        CFG,
        term=2,
        seconds={"orders-1": docs.BASE_SECONDS - 7},
        task="task-a",
    )


def test_primary_in_relaxed_extended_json() -> None:
    p = MongoProbe.parse(primary_doc())
    assert p.state == "primary" and p.is_primary and p.initiated
    assert p.set_name == "orders"
    assert p.replica_set_id == docs.SET_ID
    assert (p.config_version, p.config_term, p.term) == (3, 2, 2)
    assert p.election_id == "7fffffff0000000000000002"
    assert p.optime is not None and p.optime.key == (2, docs.BASE_SECONDS, 1)
    assert p.task == "task-a"
    assert p.lags() == {"orders-0:27017": 0.0, "orders-1:27017": 7.0, "orders-2:27017": 0.0}


def test_canonical_extended_json_reads_the_same() -> None:
    doc = primary_doc()
    canonical = copy.deepcopy(doc)
    canonical["status"]["term"] = {"$numberLong": "2"}
    canonical["config"]["version"] = {"$numberInt": "3"}
    canonical["status"]["members"][0]["health"] = {"$numberDouble": "1.0"}
    canonical["status"]["members"][0]["optimeDate"] = {
        "$date": {"$numberLong": str(docs.BASE_SECONDS * 1000)}
    }
    assert MongoProbe.parse(canonical) == MongoProbe.parse(doc)


def test_plain_values_read_the_same() -> None:
    """A document already made of plain values (hex ObjectIds, {t, i} timestamps, ISO
    dates) is read as the Extended JSON one is."""
    doc = primary_doc()
    plain = copy.deepcopy(doc)
    plain["config"]["settings"]["replicaSetId"] = docs.SET_ID
    plain["hello"]["electionId"] = "7FFFFFFF0000000000000002"
    for m in plain["status"]["members"]:
        m["optime"]["ts"] = m["optime"]["ts"]["$timestamp"]
        m["optimeDate"] = m["optimeDate"]["$date"]
    ours, theirs = MongoProbe.parse(plain), MongoProbe.parse(doc)
    assert ours.replica_set_id == theirs.replica_set_id
    assert ours.lags() == theirs.lags()
    assert ours.status == theirs.status
    assert ours.election_id == "7fffffff0000000000000002"


def test_uninitiated_member() -> None:
    p = MongoProbe.parse(docs.empty(task="t"))
    assert p.state == "startup" and not p.initiated
    assert p.status is None and p.status_error == "NotYetInitialized"
    assert p.config is None and p.config_error == "NotYetInitialized"
    assert p.replica_set_id is None and not p.is_primary
    assert p.lags() == {}


def test_null_status_and_config_are_uninitiated() -> None:
    doc = docs.empty()
    doc["status"] = doc["config"] = None
    assert MongoProbe.parse(doc).state == "startup"


@pytest.mark.parametrize(
    ("code", "name"),
    [
        *[(0, "startup"), (1, "primary"), (2, "secondary"), (3, "recovering"), (5, "startup2")],
        *[(6, "other"), (7, "other"), (8, "other"), (9, "other"), (10, "removed"), (42, "other")],
    ],
)
def test_member_states(code: int, name: str) -> None:
    doc = docs.member("orders-1", {"orders-0": 1, "orders-1": 2, "orders-2": 2}, CFG)
    doc["status"]["myState"] = code
    assert MongoProbe.parse(doc).state == name


def test_removed_member_without_status() -> None:
    """A member a reconfig left out keeps the configuration it had; replSetGetStatus then
    fails with InvalidReplicaSetConfig."""
    doc = docs.member("orders-2", {"orders-0": 1, "orders-1": 2, "orders-2": 2}, CFG)
    doc["hello"] = {"isWritablePrimary": False, "secondary": False, "isreplicaset": True, "ok": 1}
    doc["status"] = {"ok": 0, "code": 93, "codeName": "InvalidReplicaSetConfig"}
    p = MongoProbe.parse(doc)
    assert p.state == "removed" and p.initiated and p.replica_set_id == docs.SET_ID


def test_state_from_hello_when_status_failed() -> None:
    doc = docs.member("orders-1", {"orders-0": 1, "orders-1": 2, "orders-2": 2}, CFG)
    doc["status"] = None
    assert MongoProbe.parse(doc).state == "secondary"


def test_legacy_ismaster() -> None:
    doc = primary_doc()
    doc["hello"]["ismaster"] = doc["hello"].pop("isWritablePrimary")
    assert MongoProbe.parse(doc).hello.is_writable_primary


def test_config_round_trip() -> None:
    """to_document gives what replSetReconfig takes: members and the replica set id, no
    term (the primary sets it); read back it is the same configuration."""
    cfg = MongoProbe.parse(primary_doc()).config
    assert cfg is not None
    doc = cfg.to_document()
    assert "term" not in doc
    assert doc["settings"] == {"replicaSetId": {"$oid": docs.SET_ID}}
    assert doc["members"][1] == {"_id": 1, "host": "orders-1:27017", "votes": 1, "priority": 1.0}
    again = MongoProbe.parse({**primary_doc(), "config": doc}).config
    assert again == cfg.model_copy(update={"term": None})
    assert ReplicaSetConfig.model_validate(doc).majority == 2


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d.pop("hello"), "no hello"),
        (lambda d: d.update(hello=None), "no hello"),
        (lambda d: d.update(format=2), "newer"),
        (lambda d: d.update(format="1"), "not a format"),
        (lambda d: d["config"]["settings"].update(replicaSetId={"$oid": "xyz"}), "ObjectId"),
        (lambda d: d["status"].update(myState="PRIMARY"), "myState"),
        (lambda d: d["status"]["members"][0].update(optime={"ts": {"$timestamp": 5}}), "timestamp"),
        (lambda d: d["config"]["members"][0].update(votes=2), "votes"),
        (lambda d: d["config"].update(version=0), "version"),
        (lambda d: d["status"]["members"][0].update(optimeDate={"$date": "yesterday"}), "format"),
    ],
)
def test_malformed_documents_are_unusable(change: Any, why: str) -> None:
    doc = primary_doc()
    change(doc)
    with pytest.raises(UnusableAnswer, match=why):
        MongoProbe.parse(doc)


def test_not_an_object() -> None:
    with pytest.raises(UnusableAnswer, match="not an object"):
        MongoProbe.parse([primary_doc()])


def test_dates_are_aware() -> None:
    p = MongoProbe.parse(primary_doc())
    assert p.hello.last_write is not None
    assert p.hello.last_write.last_write_date == datetime.fromtimestamp(docs.BASE_SECONDS, UTC)


def test_other_bson_values_in_fields_shoal_ignores() -> None:
    """A reply's $clusterTime (a Timestamp, a Binary hash, an Int64 key id) and other BSON
    values shoal does not read do not make the answer unusable."""
    doc = primary_doc()
    doc["hello"]["$clusterTime"] = {
        "clusterTime": {"$timestamp": {"t": docs.BASE_SECONDS, "i": 3}},
        "signature": {
            "hash": {"$binary": {"base64": "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "subType": "00"}},
            "keyId": {"$numberLong": "0"},
        },
    }
    doc["hello"]["operationTime"] = {"$timestamp": {"t": docs.BASE_SECONDS, "i": 3}}
    doc["status"]["somethingNew"] = [{"$minKey": 1}, {"$numberDecimal": "1.5"}]
    assert MongoProbe.parse(doc) == MongoProbe.parse(primary_doc())


@pytest.mark.parametrize(
    "value",
    [
        {"$binary": {"base64": "b3JkZXJz", "subType": "00"}},  # b"orders"
        {"$code": "orders"},
        {"$regularExpression": {"pattern": "orders", "options": ""}},
        {"$minKey": 1},
    ],
)
def test_other_bson_values_where_a_value_is_wanted(value: Any) -> None:
    doc = primary_doc()
    doc["config"]["_id"] = value
    with pytest.raises(UnusableAnswer, match=r"config\._id"):
        MongoProbe.parse(doc)


def test_wrapped_integers_are_ints() -> None:
    doc = primary_doc()
    doc["config"]["version"] = {"$numberLong": "3"}
    p = MongoProbe.parse(doc)
    assert p.config is not None and type(p.config.version) is int


@pytest.mark.parametrize(
    "value",
    [
        {"$date": {"$numberLong": str(10**18)}},  # after year 9999
        {"$date": "2023-11-14"},
        {"$oid": "65a1b2c3d4e5f60718293a4b", "extra": 1},
        {"$timestamp": {"t": 2**32, "i": 1}},
        {"$numberLong": "twelve"},
        {"$binary": {"base64": 5, "subType": "00"}},
        {"$ref": "c", "$id": {"$oid": "xyz"}},
    ],
)
def test_malformed_extended_json_is_unusable(value: Any) -> None:
    doc = primary_doc()
    doc["status"]["members"][0]["optimeDate"] = value
    with pytest.raises(UnusableAnswer):
        MongoProbe.parse(doc)


def test_deep_nesting_is_unusable() -> None:
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    doc = primary_doc()
    doc["hello"]["hosts"] = deep
    with pytest.raises(UnusableAnswer, match="nested"):
        MongoProbe.parse(doc)
    for _ in range(5000):
        deep = [deep]
    doc["hello"]["hosts"] = deep
    with pytest.raises(UnusableAnswer):
        MongoProbe.parse(doc)


# Every key bson.json_util reads as Extended JSON, and the keys inside its wrappers.
EXTENDED_JSON_KEYS = [
    *["$oid", "$timestamp", "$date", "$numberLong", "$numberInt", "$numberDouble"],
    *["$numberDecimal", "$binary", "$type", "$uuid", "$code", "$scope", "$regex", "$options"],
    *["$regularExpression", "$dbPointer", "$ref", "$id", "$db", "$symbol", "$minKey"],
    *["$maxKey", "$undefined", "base64", "subType", "pattern", "options", "t", "i", "ok"],
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(EXTENDED_JSON_KEYS) | st.text(max_size=8),
            inner,
            max_size=4,
        )
    ),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fuzz_any_json_is_a_probe_or_unusable(value: Any) -> None:
    with contextlib.suppress(UnusableAnswer):
        MongoProbe.parse(value)


PATHS = [
    ("hello",),
    ("hello", "lastWrite"),
    ("hello", "lastWrite", "opTime"),
    ("status",),
    ("status", "members"),
    ("config",),
    ("config", "members"),
    ("config", "settings"),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATHS), st.text(max_size=12), json_values)
def test_fuzz_one_field_of_a_good_document(path: tuple[str, ...], key: str, value: Any) -> None:
    """A good document with one field anywhere replaced by any JSON: a probe or unusable,
    never another exception."""
    doc = primary_doc()
    target: Any = doc
    for part in path:
        target = target[part]
    if isinstance(target, list):
        target = target[0]
    field = key if key in target or not target else sorted(target)[len(key) % len(target)]
    target[field] = value
    with contextlib.suppress(UnusableAnswer):
        MongoProbe.parse(doc)
