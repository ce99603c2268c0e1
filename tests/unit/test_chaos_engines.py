"""The chaos client finds an engine's session through the plugin registry; PostgreSQL's
session (shoal/plugins/postgres/chaos.py): its URI and which errors may have taken effect."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pgerr

from shoal.chaos import engines
from shoal.chaos.client import engine_of
from shoal.chaos.engines import Definite, Endpoint, Indefinite
from shoal.chaos.runner import RunOptions, client_config
from shoal.chaos.suite import load_suite
from shoal.plugins.postgres import naming
from shoal.plugins.postgres.chaos import PostgresSession, classify, pg_uri
from shoal.plugins.registry import engine_plugin

pytestmark = pytest.mark.unit

ENDPOINT = Endpoint(("db-0", "db-1", "db-2"), 5432, "app", "p@ss/w", "app")


def test_pg_uri() -> None:
    assert pg_uri(ENDPOINT) == (
        "postgresql://app:p%40ss%2Fw@db-0:5432,db-1:5432,db-2:5432/app"
        "?target_session_attrs=read-write&connect_timeout=2"
    )
    assert "target_session_attrs" not in pg_uri(ENDPOINT, "db-1")


def test_a_server_refusal_is_definite_a_lost_commit_is_not() -> None:
    assert isinstance(classify(pgerr.UniqueViolation("dup"), committing=True), Definite)
    assert isinstance(classify(pgerr.ReadOnlySqlTransaction("ro"), committing=True), Definite)
    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    assert isinstance(classify(lost, committing=True), Indefinite)
    assert isinstance(classify(lost, committing=False), Definite)
    assert isinstance(classify(pgerr.AdminShutdown("bye"), committing=True), Indefinite)
    assert isinstance(classify(TimeoutError(), committing=True), Indefinite)


def test_the_session_of_an_engine_comes_from_its_plugin() -> None:
    assert engines.session_class("postgres") is PostgresSession
    assert engine_plugin("postgres").chaos_session() is PostgresSession
    assert PostgresSession.port == naming.PORT
    assert engines.session_class("cassandra") is None


async def test_an_engine_without_a_chaos_client_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(Definite, match="'cassandra' has no chaos client"):
        await engines.connect("cassandra", ENDPOINT)


def test_the_client_config_carries_the_sessions_port_and_names_the_engine() -> None:
    opts = RunOptions(db="orders", suite=load_suite("smoke"), report_dir=Path("/tmp/r"))
    cfg = client_config(opts, "someengine", 27017, ["orders-0"], "pw", "run1")
    assert cfg["engine"] == "someengine" and cfg["endpoint"]["port"] == 27017
    assert engine_of(cfg) == "someengine"
    with pytest.raises(ValueError, match="engine"):
        engine_of({"mode": "workload"})


def test_the_chaos_suite_names_no_engine() -> None:
    """Engine code lives in `shoal/plugins/<engine>/` (the engine boundary)."""
    chaos = Path(engines.__file__).parent
    pattern = re.compile(r"postgres|psycopg|psql|libpq|\bpg_", re.IGNORECASE)
    named = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(chaos.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert named == []
