"""The declaration/status store (shoal/swarm/store.py) against the in-memory CAS fake:
anchor labels round-trip, apply outcomes and generations, and a status write from a deposed
operator (lower fencing token) is refused."""

from __future__ import annotations

import json

import pytest

from shoal import names
from shoal.declaration import Database, DeclarationError, load_declaration
from shoal.request import (
    FailoverRequest,
    ReinitRequest,
    SwitchoverRequest,
    dump_request,
)
from shoal.status import STATUS_FORMAT, DatabaseState, DatabaseStatus
from shoal.swarm.store import (
    LABEL_DELETING,
    LABEL_UID,
    ApplyOutcome,
    DatabaseStore,
    StaleFencingToken,
    anchor_spec,
    parse_anchor,
)
from tests.conftest import FakeSwarm

pytestmark = pytest.mark.unit


def decl(name: str = "orders", members: int = 3, engine: str = "postgres") -> str:
    return (
        f"apiVersion: shoal/v1\nkind: Database\nmetadata: {{name: {name}}}\n"
        f"spec: {{engine: {engine}, members: {members}}}\n"
    )


def store_with_fake() -> tuple[DatabaseStore, FakeSwarm]:
    swarm = FakeSwarm()
    return DatabaseStore(swarm), swarm


def anchor_labels(db: Database, **extra: str) -> dict[str, str]:
    """The labels `shoal apply` writes on an anchor, plus `extra`."""
    return {
        names.LABEL_MANAGED: "true",
        names.LABEL_ROLE: "anchor",
        names.LABEL_DATABASE: db.name,
        LABEL_UID: "0123456789abcdef",
        names.LABEL_SPEC: json.dumps(db.to_document(), sort_keys=True),
        **extra,
    }


def test_anchor_spec_and_parse_anchor_round_trip() -> None:
    db = load_declaration(decl(members=5))
    status = DatabaseStatus(name="orders", engine="postgres", state=DatabaseState.HEALTHY)
    status.primary = "orders-1"
    status.fence_token = 4
    labels = anchor_labels(
        db,
        **{
            names.LABEL_GENERATION: "3",
            names.LABEL_STATUS: status.model_dump_json(),
            names.LABEL_REQUEST: json.dumps({"kind": "switchover", "to": None, "id": "r1"}),
        },
    )
    spec = anchor_spec("orders", labels)
    assert spec["Name"] == names.anchor_service("orders") == "shoal-db-orders"
    assert spec["Mode"] == {"Replicated": {"Replicas": 0}}
    assert "Mounts" not in spec["TaskTemplate"]["ContainerSpec"]
    stored = parse_anchor({"ID": "abc", "Version": {"Index": 17}, "Spec": spec})
    assert stored.name == "orders"
    assert stored.uid == "0123456789abcdef"
    assert stored.declaration == db
    assert stored.declaration.spec.members == 5
    assert stored.generation == 3
    assert stored.status == status
    assert stored.request == SwitchoverRequest(id="r1", to=None)
    assert stored.deleting is False
    assert (stored.service_id, stored.version) == ("abc", 17)
    assert stored.labels == labels
    # and back: the labels parse_anchor kept rebuild the very same spec
    assert anchor_spec(stored.name, stored.labels) == spec


def test_parse_anchor_tolerates_a_missing_or_bad_status_and_request() -> None:
    db = load_declaration(decl())
    labels = {
        names.LABEL_DATABASE: "orders",
        names.LABEL_SPEC: json.dumps(db.to_document()),
        names.LABEL_STATUS: "{not json",
        names.LABEL_REQUEST: "[1, 2]",
        LABEL_DELETING: "true",
    }
    stored = parse_anchor(
        {"ID": "x", "Version": {"Index": 1}, "Spec": anchor_spec("orders", labels)}
    )
    assert stored.status.name == "orders" and stored.status.engine == "postgres"
    assert stored.status.state == DatabaseState.CREATING
    assert stored.request is None
    assert stored.deleting is True
    assert stored.generation == 1


def test_parse_anchor_refuses_an_unreadable_declaration() -> None:
    labels = {names.LABEL_DATABASE: "orders", names.LABEL_SPEC: '{"kind": "Database"}'}
    with pytest.raises(RuntimeError, match="unreadable declaration"):
        parse_anchor({"ID": "x", "Version": {"Index": 1}, "Spec": anchor_spec("orders", labels)})


async def test_apply_creates_then_configures_then_is_unchanged() -> None:
    store, swarm = store_with_fake()
    assert await store.apply(load_declaration(decl())) == (ApplyOutcome.CREATED, 1)
    stored = await store.get("orders")
    assert stored is not None
    assert stored.declaration.spec.members == 3 and stored.generation == 1
    assert len(stored.uid) == 16
    assert stored.status.members_desired == 3
    assert stored.status.network == names.database_network("orders")
    labels = swarm.labels("shoal-db-orders")
    assert labels[names.LABEL_MANAGED] == "true" and labels[names.LABEL_ROLE] == "anchor"
    assert await store.apply(load_declaration(decl())) == (ApplyOutcome.UNCHANGED, 1)
    assert await store.apply(load_declaration(decl(members=5))) == (ApplyOutcome.CONFIGURED, 2)
    again = await store.get("orders")
    assert again is not None
    assert again.declaration.spec.members == 5 and again.uid == stored.uid


async def test_apply_retries_a_lost_compare_and_swap() -> None:
    store, swarm = store_with_fake()
    await store.apply(load_declaration(decl()))
    swarm.conflicts_to_inject = 3
    assert await store.apply(load_declaration(decl(members=4))) == (ApplyOutcome.CONFIGURED, 2)


async def test_apply_refuses_an_engine_change_and_a_database_being_deleted() -> None:
    store, _ = store_with_fake()
    await store.apply(load_declaration(decl()))
    with pytest.raises(DeclarationError) as e:
        await store.apply(load_declaration(decl(engine="mongodb")))
    assert e.value.problems[0].startswith("spec.engine:")
    assert await store.mark_deleting("orders")
    with pytest.raises(DeclarationError) as e:
        await store.apply(load_declaration(decl(members=4)))
    assert e.value.problems[0].startswith("metadata.name:")


async def test_write_status_refuses_a_lower_fencing_token() -> None:
    store, swarm = store_with_fake()
    await store.apply(load_declaration(decl()))
    new = DatabaseStatus(name="orders", engine="postgres", state=DatabaseState.HEALTHY)
    new.fence_token = 5
    assert await store.write_status("orders", new)
    stale = DatabaseStatus(name="orders", engine="postgres", state=DatabaseState.UNAVAILABLE)
    stale.fence_token = 4
    before = swarm.labels("shoal-db-orders")
    with pytest.raises(StaleFencingToken):
        await store.write_status("orders", stale)
    assert swarm.labels("shoal-db-orders") == before
    stored = await store.get("orders")
    assert stored is not None and stored.status.state == DatabaseState.HEALTHY
    # the same token and a newer one are accepted
    same = new.model_copy(update={"message": "same holder"})
    assert await store.write_status("orders", same)
    newer = new.model_copy(update={"fence_token": 6, "state": DatabaseState.DEGRADED})
    assert await store.write_status("orders", newer)
    stored = await store.get("orders")
    assert stored is not None and stored.status.fence_token == 6


async def test_write_status_keeps_the_declaration_and_survives_conflicts() -> None:
    store, swarm = store_with_fake()
    await store.apply(load_declaration(decl()))
    swarm.conflicts_to_inject = 2
    st = DatabaseStatus(name="orders", engine="postgres", fence_token=1, primary="orders-0")
    assert await store.write_status("orders", st)
    stored = await store.get("orders")
    assert stored is not None
    assert stored.status.primary == "orders-0"
    assert stored.declaration.spec.members == 3 and stored.generation == 1


async def test_write_status_of_a_missing_database_is_false() -> None:
    store, _ = store_with_fake()
    assert not await store.write_status("ghost", DatabaseStatus(name="ghost", engine="postgres"))


async def test_requests_set_and_clear_by_id() -> None:
    store, _ = store_with_fake()
    await store.apply(load_declaration(decl()))
    assert await store.set_request("orders", SwitchoverRequest(id="r1"))
    await store.clear_request("orders", "other-id")
    stored = await store.get("orders")
    assert stored is not None and stored.request == SwitchoverRequest(id="r1")
    await store.clear_request("orders", "r1")
    stored = await store.get("orders")
    assert stored is not None and stored.request is None


async def test_list_skips_unreadable_anchors() -> None:
    store, swarm = store_with_fake()
    await store.apply(load_declaration(decl("alpha")))
    await store.apply(load_declaration(decl("beta")))
    broken = {names.LABEL_ROLE: "anchor", names.LABEL_DATABASE: "broken", names.LABEL_SPEC: "{"}
    await swarm.create_service(anchor_spec("broken", broken))
    assert [d.name for d in await store.list()] == ["alpha", "beta"]


async def test_declared_names_every_anchor_and_which_are_being_deleted() -> None:
    """The operator's supervisor reads only this: a worker is started even for an anchor
    whose declaration cannot be read (the worker then reports the error every cycle)."""
    store, swarm = store_with_fake()
    await store.apply(load_declaration(decl("alpha")))
    await store.apply(load_declaration(decl("beta")))
    broken = {names.LABEL_ROLE: "anchor", names.LABEL_DATABASE: "broken", names.LABEL_SPEC: "{"}
    await swarm.create_service(anchor_spec("broken", broken))
    assert await store.mark_deleting("beta")
    assert await store.declared() == {"alpha": False, "beta": True, "broken": False}


def _anchor_with(status_label: str | None, request_label: str | None = None) -> dict[str, object]:
    labels = anchor_labels(load_declaration(decl()))
    if status_label is not None:
        labels[names.LABEL_STATUS] = status_label
    if request_label is not None:
        labels[names.LABEL_REQUEST] = request_label
    return {"ID": "abc", "Version": {"Index": 1}, "Spec": anchor_spec("orders", labels)}


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ("{not json", "unreadable"),
        ('["a list"]', "unreadable"),
        ('{"name": "orders", "engine": "postgres", "state": "Exploded"}', "unreadable"),
        (
            json.dumps(
                {
                    "format": STATUS_FORMAT + 1,
                    "name": "orders",
                    "engine": "postgres",
                    "identity": "7",
                }
            ),
            "newer",
        ),
    ],
)
def test_unreadable_status_fails_closed(label: str, why: str) -> None:
    """Property 8: a status that cannot be read is reported, never taken for a new database
    (whose identity None would let the planner bootstrap over the real one)."""
    stored = parse_anchor(_anchor_with(label))
    assert stored.status_error is not None and why in stored.status_error


@pytest.mark.parametrize(
    "label",
    [
        "{broken",
        "[1, 2]",
        '{"kind": "promote-everyone", "id": "x"}',  # a kind from a newer shoal
        '{"kind": "switchover", "id": "x", "to": "orders-1", "wait": 5}',  # a newer field
        '{"kind": "failover", "id": "x", "to": "orders-1"}',  # no accept_data_loss
        '{"kind": "switchover"}',  # no id: it could never be cleared
    ],
)
def test_unreadable_request_fails_closed(label: str) -> None:
    """A request this shoal cannot read is not guessed at: the database's stored state is
    unreadable and the operator acts on nothing until a person repairs the label."""
    good = DatabaseStatus(name="orders", engine="postgres", identity="7").model_dump_json()
    stored = parse_anchor(_anchor_with(good, request_label=label))
    assert stored.request is None and stored.status_error is not None
    assert "request" in stored.status_error


def test_every_kind_of_request_round_trips_through_its_label() -> None:
    for request in (
        SwitchoverRequest(id="s1"),
        SwitchoverRequest(id="s2", to="orders-2"),
        FailoverRequest(id="f1", to="orders-1", accept_data_loss=True),
        ReinitRequest(id="r1"),
    ):
        good = DatabaseStatus(name="orders", engine="postgres", identity="7").model_dump_json()
        stored = parse_anchor(_anchor_with(good, request_label=dump_request(request)))
        assert stored.request == request and stored.status_error is None


def test_readable_and_absent_status_are_trusted() -> None:
    good = DatabaseStatus(name="orders", engine="postgres", identity="7").model_dump_json()
    assert parse_anchor(_anchor_with(good)).status_error is None
    assert parse_anchor(_anchor_with(good)).status.identity == "7"
    assert parse_anchor(_anchor_with(None)).status_error is None


async def test_an_unreadable_status_is_never_overwritten() -> None:
    from shoal.swarm.store import UnreadableStatus

    store, _ = store_with_fake()
    await store.apply(load_declaration(decl()))
    stored = await store.get("orders")
    assert stored is not None
    await store._write_labels(stored, {names.LABEL_STATUS: "{hand edited"})
    with pytest.raises(UnreadableStatus):
        await store.write_status("orders", DatabaseStatus(name="orders", engine="postgres"))
    after = await store.get("orders")
    assert after is not None and after.labels[names.LABEL_STATUS] == "{hand edited"
