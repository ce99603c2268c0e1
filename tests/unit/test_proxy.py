"""The read-write proxy (`spec.expose.port`): HAProxy configuration, service spec and the
plan, on recorded real observations (see test_pg_planner.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shoal.operator.proxy import (
    CONFIG_PATH,
    config_name,
    plan_proxy,
    proxy_service_spec,
    render_config,
)
from shoal.plugins.base import (
    EnsureProxy,
    Observation,
    ProxyObservation,
    PruneProxyConfigs,
    RemoveProxy,
)
from shoal.plugins.postgres.model import PgProbe
from shoal.plugins.postgres.planner import plan
from shoal.plugins.postgres.plugin import PostgresPlugin
from shoal.status import DatabaseState
from tests.unit.test_pg_planner import observe, recording, steady

BACKEND = PostgresPlugin.proxy_backend
assert BACKEND is not None

pytestmark = pytest.mark.unit
MEMBERS = ("orders-0", "orders-1", "orders-2")


def exposed(expose: int | None = 15432, **proxy: Any) -> Observation[PgProbe]:
    """The recorded healthy cluster with `expose.port` = `expose` and the proxy as given."""
    doc = steady(recording("healthy"))
    doc["declaration"]["spec"]["expose"] = {"port": expose}
    obs = observe(doc)
    return dataclasses.replace(obs, proxy=ProxyObservation(**proxy))


def current(port: int = 15432, members: tuple[str, ...] = MEMBERS) -> dict[str, Any]:
    name = config_name("orders", BACKEND, members)
    return {"exists": True, "port": port, "config": name, "configs": (name,)}


# --- haproxy.cfg ------------------------------------------------------------------------
def test_config_checks_every_member_for_the_primary() -> None:
    cfg = render_config(BACKEND, MEMBERS)
    lines = [line.strip() for line in cfg.splitlines()]
    assert "mode tcp" in lines
    assert "bind :5432" in lines
    assert "option httpchk GET /primary" in lines
    assert "http-check expect status 200" in lines
    assert "nameserver dns 127.0.0.11:53" in lines
    default = next(line for line in lines if line.startswith("default-server"))
    for part in (
        "inter 1s",
        "fall 2",
        "rise 1",
        "on-marked-down shutdown-sessions",
        "resolvers docker",
        "init-addr none",
    ):
        assert part in default
    servers = [line for line in lines if line.startswith("server ")]
    assert servers == [f"server {m} {m}:5432 check port 8009" for m in MEMBERS]


def test_config_name_is_a_content_hash() -> None:
    a = config_name("orders", BACKEND, MEMBERS)
    assert a == config_name("orders", BACKEND, MEMBERS)
    assert a.startswith("shoal-orders-proxy-") and len(a) <= 64
    assert a != config_name("orders", BACKEND, MEMBERS[:2])
    assert config_name("x" * 30, BACKEND, MEMBERS).__len__() <= 64


def test_service_spec() -> None:
    obs = exposed()
    spec = proxy_service_spec(
        obs.database, BACKEND, "shoal/postgres:15-x", "net1", 15432, "cid", "cname"
    )
    assert spec["Name"] == "orders-rw"
    assert spec["Labels"] == {
        "shoal.managed": "true",
        "shoal.database": "orders",
        "shoal.role": "proxy",
    }
    task = spec["TaskTemplate"]
    c = task["ContainerSpec"]
    assert c["Image"] == "shoal/postgres:15-x"
    assert c["Command"] == ["haproxy", "-W", "-db", "-f", CONFIG_PATH]
    assert c["Mounts"] == []
    assert c["Configs"][0]["ConfigID"] == "cid" and c["Configs"][0]["File"]["Name"] == CONFIG_PATH
    assert task["Networks"] == [{"Target": "net1", "Aliases": ["orders-rw"]}]
    assert task["RestartPolicy"]["Delay"] == 0
    assert spec["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 5432, "PublishedPort": 15432, "PublishMode": "host"}
    ]


# --- the plan --------------------------------------------------------------------------
def test_not_exposed_nothing_to_do() -> None:
    assert plan_proxy(exposed(None), BACKEND) == []
    assert plan(exposed(None)).actions == []


def test_exposed_creates_the_proxy_without_changing_the_state() -> None:
    """The operator adds the proxy's actions beside the engine's plan (worker.py): the
    engine plans nothing for it and its state stays Healthy."""
    assert plan_proxy(exposed(), BACKEND) == [EnsureProxy(15432, MEMBERS)]
    p = plan(exposed())
    assert p.actions == []
    assert p.status.state == DatabaseState.HEALTHY


def test_proxy_in_place_nothing_to_do() -> None:
    assert plan_proxy(exposed(**current()), BACKEND) == []


def test_port_change_updates() -> None:
    assert plan_proxy(exposed(16000, **current(15432)), BACKEND) == [EnsureProxy(16000, MEMBERS)]


def test_new_image_updates() -> None:
    assert plan_proxy(exposed(**current(), image_current=False), BACKEND) == [
        EnsureProxy(15432, MEMBERS)
    ]


def test_member_list_change_is_a_new_config_then_the_old_one_is_pruned() -> None:
    old = current(members=MEMBERS[:2])
    assert plan_proxy(exposed(**old), BACKEND) == [EnsureProxy(15432, MEMBERS)]
    # the service now uses the new config; the old one is left over
    now = {**current(), "configs": tuple(sorted({old["config"], current()["config"]}))}
    assert plan_proxy(exposed(**now), BACKEND) == [PruneProxyConfigs((old["config"],))]


def test_scale_down_keeps_checking_the_extra_members_while_they_exist() -> None:
    doc = steady(recording("healthy"))
    doc["declaration"]["spec"]["expose"] = {"port": 15432}
    obs = observe(doc, members=2)
    assert plan_proxy(obs, BACKEND) == [EnsureProxy(15432, MEMBERS)]


def test_unexposed_removes_service_and_configs() -> None:
    assert plan_proxy(exposed(None, **current()), BACKEND) == [RemoveProxy()]
    assert plan_proxy(exposed(None, configs=("shoal-orders-proxy-abc",)), BACKEND) == [
        RemoveProxy()
    ]


def test_nothing_before_the_network_exists() -> None:
    obs = dataclasses.replace(exposed(), infrastructure_ready=False)
    assert plan_proxy(obs, BACKEND) == []


def test_an_engine_without_a_proxy_backend_gets_no_proxy() -> None:
    """An engine whose clients find the primary themselves declares no backend: exposing
    it plans no proxy, and one left from before is removed."""
    assert plan_proxy(exposed(), None) == []
    assert plan_proxy(exposed(**current()), None) == [RemoveProxy()]
