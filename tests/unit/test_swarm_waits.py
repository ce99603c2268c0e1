"""The waits on Swarm (swarm/client.py: `retrying_for`, `while_raft_busy`, `poll`) and the
removals built on them (swarm/cleanup.py), against the shared fake Swarm (tests/conftest.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shoal import names
from shoal.swarm.cleanup import purge_database, purge_everything
from shoal.swarm.client import SERVICES, NotFound, SwarmError, poll, retrying_for, while_raft_busy
from tests.conftest import FakeSwarm

pytestmark = pytest.mark.unit


async def test_poll_answers_true_once_the_check_does() -> None:
    answers = iter([False, False, True])

    async def check() -> bool:
        return next(answers)

    assert await poll(check, timeout=5, every=0.01) is True


async def test_poll_answers_false_when_the_time_is_up() -> None:
    calls = 0

    async def check() -> bool:
        nonlocal calls
        calls += 1
        return False

    started = time.monotonic()
    assert await poll(check, timeout=0.1, every=0.02) is False
    assert 0.1 <= time.monotonic() - started < 2
    assert calls >= 2


async def test_poll_awaits_a_lambda_that_returns_a_coroutine() -> None:
    """As `shoal delete --wait` calls it: `poll(lambda: _purged(store, name), ...)`. The
    coroutine itself must never count as the answer (it did: the delete returned at once
    while the database's network was still there)."""
    answers = iter([False, False, True])

    async def purged(name: str) -> bool:
        assert name == "orders"
        return next(answers)

    assert await poll(lambda: purged("orders"), timeout=5, every=0.01) is True
    assert next(answers, None) is None  # asked until it said yes, not once
    never = await poll(lambda: purged_never(), timeout=0.1, every=0.02)
    assert never is False


async def purged_never() -> bool:
    return False


async def test_poll_raises_what_the_check_raises() -> None:
    async def check() -> bool:
        raise SwarmError("boom")

    with pytest.raises(SwarmError, match="boom"):
        await poll(check, timeout=5, every=0.01)


async def test_retrying_for_retries_only_what_it_is_told() -> None:
    failures = [SwarmError("busy"), SwarmError("busy")]
    attempts = 0
    async for attempt in retrying_for(5, every=0.01, on=SwarmError):
        with attempt:
            attempts += 1
            if failures:
                raise failures.pop()
    assert attempts == 3

    attempts = 0
    with pytest.raises(ValueError):
        async for attempt in retrying_for(5, every=0.01, on=SwarmError):
            with attempt:
                attempts += 1
                raise ValueError("not a swarm error")
    assert attempts == 1


async def test_retrying_for_raises_the_last_error_when_the_time_is_up() -> None:
    attempts = 0
    with pytest.raises(SwarmError) as info:
        async for attempt in retrying_for(0.05, every=0.02, on=lambda e: "still" in str(e)):
            with attempt:
                attempts += 1
                raise SwarmError(f"still {attempts}")
    assert attempts >= 2
    assert str(info.value) == f"still {attempts}"


async def test_while_raft_busy_waits_only_for_an_election() -> None:
    with pytest.raises(SwarmError, match="no such service"):
        async for attempt in while_raft_busy(60):
            with attempt:
                raise SwarmError("no such service")


def database(db: str = "orders", busy: int = 0) -> FakeSwarm:
    """A database's anchor, one member, a secret busy for `busy` removals, a network."""
    swarm = FakeSwarm()
    labels = {names.LABEL_MANAGED: "true", names.LABEL_DATABASE: db}
    for name, role, replicas in ((names.anchor_service(db), "anchor", 0), (f"{db}-0", "member", 1)):
        swarm.objects["services"][name] = {
            "ID": name,
            "Version": {"Index": 1},
            "Spec": {
                "Name": name,
                "Labels": {**labels, names.LABEL_ROLE: role},
                "Mode": {"Replicated": {"Replicas": replicas}},
            },
        }
    swarm.objects["secrets"]["sec"] = {"ID": "sec", "Spec": {"Name": "sec", "Labels": labels}}
    swarm.objects["networks"]["net"] = {"Id": "net", "Name": "net", "Labels": labels}
    swarm.busy["sec"] = busy
    return swarm


def removed(swarm: FakeSwarm) -> list[str]:
    return [line.removeprefix("remove ") for line in swarm.log if line.startswith("remove ")]


async def test_purge_database_retries_what_is_in_use_and_removes_the_anchor_last() -> None:
    swarm = database("orders", busy=2)
    await purge_database(swarm, "orders", timeout=10)
    assert removed(swarm)[0] == "service orders-0"
    assert removed(swarm)[-1] == "service shoal-db-orders"
    assert "secret sec" in removed(swarm) and "network net" in removed(swarm)
    assert not any(swarm.objects.values())


async def test_purge_database_gives_up_naming_what_is_left() -> None:
    swarm = database("orders", busy=10**6)
    with pytest.raises(SwarmError, match=r"could not remove everything of orders: .*secret sec"):
        await purge_database(swarm, "orders", timeout=0.2)
    assert "shoal-db-orders" in swarm.names(SERVICES)


async def test_purge_database_does_not_retry_another_error() -> None:
    swarm = database("orders")
    calls = 0

    async def services_of(db: str) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        raise NotFound("gone")

    swarm.services_of = services_of  # type: ignore[method-assign]
    with pytest.raises(NotFound):
        await purge_database(swarm, "orders", timeout=10)
    assert calls == 1


async def test_purge_everything_waits_for_the_operator_to_stop_first() -> None:
    swarm = database("orders")
    swarm.objects["services"]["op"] = {
        "ID": "op",
        "Version": {"Index": 1},
        "Spec": {"Name": "shoal-operator", "Labels": {names.LABEL_ROLE: "operator"}},
    }
    swarm.lingering["op"] = 2  # its container outlives the service for two polls
    await purge_everything(swarm, timeout=10)
    assert removed(swarm)[0] == "service shoal-operator"
    assert swarm.lingering["op"] == 0
    assert not any(swarm.objects.values())
