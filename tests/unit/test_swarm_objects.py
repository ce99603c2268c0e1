"""Networks, secrets and configs are found, created once and removed by one code path,
parameterised by the object's `Kind` (shoal/swarm/client.py `ByKind`), here over the shared
fake Swarm (tests/conftest.py)."""

from __future__ import annotations

import pytest

from shoal import names
from shoal.swarm.cleanup import leftovers
from shoal.swarm.client import CONFIGS, JSON, NETWORKS, SECRETS, Kind, SwarmError
from tests.conftest import FakeSwarm

pytestmark = pytest.mark.unit

LABELS = {names.LABEL_MANAGED: "true", names.LABEL_DATABASE: "orders"}


async def test_every_kind_is_created_once_and_found_by_name_and_label() -> None:
    swarm = FakeSwarm()
    net = await swarm.ensure_overlay("shoal-orders", LABELS, subnet="10.200.0.0/20")
    sec = await swarm.ensure_secret("s1", "c2VjcmV0", LABELS)
    cfg = await swarm.ensure_config("c1", "Y29uZmln", LABELS)
    # again: the existing ones are kept (even with other data), nothing new is created
    assert await swarm.ensure_overlay("shoal-orders", {}) == net
    assert await swarm.ensure_secret("s1", "b3RoZXI=", {}) == sec
    assert await swarm.ensure_config("c1", "b3RoZXI=", {}) == cfg
    assert [line for line in swarm.log if line.startswith("create")] == [
        "create network shoal-orders",
        "create secret s1",
        "create config c1",
    ]
    assert "10.200.0.0/20" in await swarm.subnets_in_use()
    found = await swarm.network("shoal-orders")
    assert found is not None and found["Id"] == net
    assert [s["ID"] for s in await swarm.secrets_with_label(names.LABEL_DATABASE, "orders")] == [
        sec
    ]
    assert await swarm.configs_with_label(names.LABEL_DATABASE, "other") == []
    assert sorted(await leftovers(swarm, "orders")) == [
        "config c1",
        "network shoal-orders",
        "secret s1",
    ]
    assert await swarm.remove_secret(sec) and not await swarm.remove_secret(sec)
    assert await swarm.remove_network("shoal-orders") and await swarm.remove_config(cfg)
    assert await leftovers(swarm, "orders") == []


@pytest.mark.parametrize("kind", [NETWORKS, SECRETS, CONFIGS], ids=lambda k: k.path)
async def test_ensure_takes_an_object_created_concurrently(kind: Kind) -> None:
    """Two operators (or an operator and `shoal apply`) create the same object: the loser's
    create is refused, and it takes the winner's."""
    swarm = FakeSwarm()
    winner = await swarm.create(kind, {"Name": "x", "Labels": {}})
    real_find = swarm.find
    calls = 0

    async def find_missing_first(k: Kind, name: str) -> JSON | None:
        nonlocal calls
        calls += 1
        return None if calls == 1 else await real_find(k, name)

    swarm.find = find_missing_first  # type: ignore[method-assign]
    assert await swarm.ensure(kind, {"Name": "x", "Labels": {}}) == winner
    assert calls == 2


async def test_ensure_raises_what_swarm_refused_when_nothing_was_created() -> None:
    swarm = FakeSwarm()

    async def refuse(kind: Kind, spec: JSON) -> str:
        raise SwarmError("Docker API error 400: invalid name", 400)

    swarm.create = refuse  # type: ignore[method-assign]
    with pytest.raises(SwarmError, match="invalid name"):
        await swarm.ensure_secret("bad name", "", {})
