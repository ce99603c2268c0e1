"""The waits on Swarm (swarm/client.py: `retrying_for`, `while_raft_busy`, `poll`) and the
removals built on them (swarm/cleanup.py), against a fake Swarm."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shoal import names
from shoal.swarm.cleanup import purge_database, purge_everything
from shoal.swarm.client import Kind, NotFound, SwarmError, poll, retrying_for, while_raft_busy

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


class FakeSwarm:
    """Services, secrets and networks by id; a secret is `busy` for a number of removals."""

    def __init__(self, db: str, busy: int = 0) -> None:
        self.db = db
        self.services = {
            "anchor": {"ID": "anchor", "Spec": {"Labels": {names.LABEL_ROLE: "anchor"}}},
            "m0": {"ID": "m0", "Spec": {"Labels": {names.LABEL_ROLE: "member"}}},
        }
        self.secrets = {"sec": busy}
        self.networks = {"net"}
        self.removed: list[str] = []
        self.running: dict[str, int] = {}

    async def services_of(self, db: str) -> list[dict[str, Any]]:
        assert db == self.db
        return list(self.services.values())

    async def services_with_label(self, key: str, value: str) -> list[dict[str, Any]]:
        if key == names.LABEL_ROLE:
            return [s for s in self.services.values() if s["Spec"]["Labels"].get(key) == value]
        return []

    async def remove_service(self, name_or_id: str) -> bool:
        key = "anchor" if name_or_id == names.anchor_service(self.db) else name_or_id
        self.removed.append(f"service {key}")
        return self.services.pop(key, None) is not None

    async def secrets_with_label(self, key: str, value: str) -> list[dict[str, Any]]:
        return [{"ID": s} for s in self.secrets] if value == self.db else []

    async def remove_secret(self, ident: str) -> bool:
        if self.secrets[ident] > 0:
            self.secrets[ident] -= 1
            raise SwarmError(f"secret {ident} is in use by service m0")
        del self.secrets[ident]
        self.removed.append(f"secret {ident}")
        return True

    async def configs_with_label(self, key: str, value: str) -> list[dict[str, Any]]:
        return []

    async def networks_with_label(self, key: str, value: str) -> list[dict[str, Any]]:
        return [{"Id": n} for n in self.networks] if value == self.db else []

    async def remove_network(self, ident: str) -> bool:
        self.networks.discard(ident)
        self.removed.append(f"network {ident}")
        return True

    async def with_label(self, kind: Kind, key: str, value: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await getattr(self, f"{kind.path}_with_label")(key, value)
        return found

    async def remove(self, kind: Kind, ident: str) -> bool:
        removed: bool = await getattr(self, f"remove_{kind.noun}")(ident)
        return removed

    async def containers(self, label: str) -> list[dict[str, Any]]:
        service = label.rpartition("=")[2]
        left = self.running.get(service, 0)
        if left:
            self.running[service] = left - 1
            return [{"Id": "c"}]
        return []


async def test_purge_database_retries_what_is_in_use_and_removes_the_anchor_last() -> None:
    swarm = FakeSwarm("orders", busy=2)
    await purge_database(swarm, "orders", timeout=10)  # type: ignore[arg-type]
    assert swarm.removed[0] == "service m0"
    assert swarm.removed[-1] == "service anchor"
    assert "secret sec" in swarm.removed and "network net" in swarm.removed
    assert not swarm.services and not swarm.secrets and not swarm.networks


async def test_purge_database_gives_up_naming_what_is_left() -> None:
    swarm = FakeSwarm("orders", busy=10**6)
    with pytest.raises(SwarmError, match="could not remove everything of orders: secret sec"):
        await purge_database(swarm, "orders", timeout=0.2)  # type: ignore[arg-type]
    assert "anchor" in swarm.services


async def test_purge_database_does_not_retry_another_error() -> None:
    swarm = FakeSwarm("orders")
    calls = 0

    async def services_of(db: str) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        raise NotFound("gone")

    swarm.services_of = services_of  # type: ignore[method-assign]
    with pytest.raises(NotFound):
        await purge_database(swarm, "orders", timeout=10)  # type: ignore[arg-type]
    assert calls == 1


async def test_purge_everything_waits_for_the_operator_to_stop_first() -> None:
    swarm = FakeSwarm("orders")
    swarm.services["op"] = {"ID": "op", "Spec": {"Labels": {names.LABEL_ROLE: "operator"}}}
    swarm.running["op"] = 2
    await purge_everything(swarm, timeout=10)  # type: ignore[arg-type]
    assert swarm.removed[0] == "service op"
    assert swarm.running["op"] == 0
