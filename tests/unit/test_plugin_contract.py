"""What every engine plugin must do, whatever its engine: the operator (worker.py) relies on
these and nothing else. Each installed plugin (the `shoal.engines` entry points) runs the
same cases on observations built from Swarm's side only (tasks, services), so a new engine
gets them for free. The engine's own behaviour is in its own tests (test_pg_planner.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shoal import names
from shoal.declaration import load_declaration
from shoal.plugins.base import (
    Action,
    EnginePlugin,
    EnsureInfrastructure,
    MemberObservation,
    Observation,
    ReplaceMember,
)
from shoal.plugins.registry import engine_plugins
from shoal.status import DatabaseState, DatabaseStatus
from shoal.swarm.tasks import TaskInfo

PLUGINS = engine_plugins()


def database(engine: str, members: int = 3) -> Any:
    return load_declaration(
        "apiVersion: shoal/v1\nkind: Database\n"
        f"metadata:\n  name: orders\nspec:\n  engine: {engine}\n  members: {members}\n"
    )


def observe(
    engine: str,
    *,
    services: bool = True,
    infrastructure: bool = True,
    status: DatabaseStatus | None = None,
    members: int = 3,
) -> Observation[Any]:
    """No member answers: what Swarm alone says (every task running, or no services)."""
    db = database(engine, members)
    obs_members: list[MemberObservation[Any]] = []
    for i in range(members):
        name = names.member_service("orders", i)
        task = TaskInfo(f"task-{i}", "running", "n1", "vm", f"c{i}") if services else None
        obs_members.append(MemberObservation(i, name, services, task, None, unreachable_for=60.0))
    return Observation(
        database=db,
        uid="u1",
        generation=1,
        status=status or DatabaseStatus(name="orders", engine=engine),
        members=obs_members,
        request=None,
        infrastructure_ready=infrastructure,
        now=1_000_000.0,
        token=3,
        monotonic=100.0,
    )


def named_members(action: Action) -> list[str]:
    value = getattr(action, "member", None)
    return [value] if isinstance(value, str) else []


ENGINES = sorted(PLUGINS)


def test_at_least_one_engine_is_installed() -> None:
    assert "postgres" in PLUGINS


@pytest.mark.parametrize("engine", ENGINES)
def test_a_plan_is_pure_and_repeatable(engine: str) -> None:
    plugin = PLUGINS[engine]
    obs = observe(engine)
    before = copy.deepcopy(obs.status.model_dump(mode="json"))
    first, second = plugin.plan(obs), plugin.plan(obs)
    assert first.actions == second.actions
    assert first.status.model_dump(mode="json") == second.status.model_dump(mode="json")
    assert obs.status.model_dump(mode="json") == before, "the plan changed its observation"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_new_database_gets_its_infrastructure_first(engine: str) -> None:
    plan = PLUGINS[engine].plan(observe(engine, services=False, infrastructure=False))
    assert plan.actions and isinstance(plan.actions[0], EnsureInfrastructure)


@pytest.mark.parametrize("engine", ENGINES)
def test_members_that_do_not_answer_are_never_replaced_or_written_to(engine: str) -> None:
    """Heard from nobody, a plan knows nothing about the data: it destroys nothing
    (a replacement starts empty) and sends no member an engine action."""
    plugin = PLUGINS[engine]
    for status in (None, _known_cluster(engine)):
        plan = plugin.plan(observe(engine, status=status))
        assert not any(isinstance(a, ReplaceMember) for a in plan.actions), plan.actions
        assert not any(named_members(a) for a in plan.actions), plan.actions
        assert plan.status.state != DatabaseState.HEALTHY


@pytest.mark.parametrize("engine", ENGINES)
def test_the_status_reports_every_declared_member_once(engine: str) -> None:
    plan = PLUGINS[engine].plan(observe(engine, status=_known_cluster(engine)))
    reported = [m.name for m in plan.status.members]
    assert sorted(reported) == [names.member_service("orders", i) for i in range(3)]


@pytest.mark.parametrize("engine", ENGINES)
def test_actions_name_only_members_of_the_observation(engine: str) -> None:
    obs = observe(engine, services=False, infrastructure=False)
    known = {m.name for m in obs.members}
    for action in PLUGINS[engine].plan(obs).actions:
        assert set(named_members(action)) <= known, action


@pytest.mark.parametrize("engine", ENGINES)
def test_connection_names_every_member_and_no_secret(engine: str) -> None:
    plugin = PLUGINS[engine]
    uri = plugin.connection(database(engine))
    for i in range(3):
        assert names.member_service("orders", i) in uri
    # The password only where it is asked for, as the URI's userinfo (RFC 3986, 3.2.1).
    with_password = plugin.connection(database(engine), password="s3cret")
    assert with_password.count("s3cret") == 1
    assert with_password.replace(":s3cret@", "@") == uri


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("unreachable", [1, 3, 5, 10, 60])
def test_a_lease_is_over_when_the_operator_gives_up_on_its_primary(
    engine: str, unreachable: int
) -> None:
    """Where `unreachableSeconds` leaves room for the margin, the lease of a primary cut off
    from the operator is over (ttl + margin, counted from the renewal it did not answer)
    when the operator gives up on it: a failover then has no lease to wait for. A shorter
    `unreachableSeconds` gets the shortest lease renewals can keep."""
    plugin: EnginePlugin[Any] = PLUGINS[engine]
    db = load_declaration(
        "apiVersion: shoal/v1\nkind: Database\nmetadata:\n  name: orders\nspec:\n"
        f"  engine: {engine}\n  failover:\n    unreachableSeconds: {unreachable}\n"
    )
    ttl = plugin.lease_ttl(db)
    if ttl is None:
        return
    assert ttl >= 2.0
    assert ttl + plugin.lease_margin <= unreachable or ttl == 2.0


def _known_cluster(engine: str) -> DatabaseStatus:
    """A database that was Healthy once: an identity and a primary on record."""
    return DatabaseStatus(
        name="orders",
        engine=engine,
        state=DatabaseState.HEALTHY,
        identity="7000000000000000001",
        primary=names.member_service("orders", 1),
        timeline=1,
    )
