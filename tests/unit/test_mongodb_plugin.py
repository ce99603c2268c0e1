"""The MongoDB plugin's operator side that runs without a mongod: its registration, its
connection URI and write concern, its member image recipe (never built by default), the
commands it sends, and what a MongoDB database says while no member image exists.
Nothing here talks to a mongod: none exists on the machines this was written on."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from bson import ObjectId
from typer.testing import CliRunner

from shoal import names
from shoal.chaos.engines import Definite, Endpoint, Indefinite, session_class
from shoal.cli import images as images_cli
from shoal.credentials import DatabaseCredentials
from shoal.declaration import load_declaration
from shoal.operator.context import OperatorContext
from shoal.operator.metrics import OperatorMetrics
from shoal.operator.worker import DatabaseWorker
from shoal.platform import images, server_binary
from shoal.plugins.mongodb import clients
from shoal.plugins.mongodb.chaos import MongoSession, classify, client_options
from shoal.plugins.mongodb.model import ReplicaSetConfig
from shoal.plugins.mongodb.plugin import SERVER, MongoPlugin
from shoal.plugins.postgres.plugin import PostgresPlugin
from shoal.plugins.registry import engine_plugins, image_env, image_recipes
from shoal.swarm.client import NETWORKS, SECRETS, SERVICES
from shoal.swarm.lease import Lease, LeaseSettings
from shoal.swarm.store import DatabaseStore
from tests.conftest import FakeSwarm

pytestmark = pytest.mark.unit


def database(durability: str = "sync", members: int = 3) -> Any:
    return load_declaration(
        "apiVersion: shoal/v1\nkind: Database\nmetadata:\n  name: events\n"
        f"spec:\n  engine: mongodb\n  members: {members}\n  durability: {durability}\n"
    )


def query(uri: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(uri).query)


# --- registration ----------------------------------------------------------------------
def test_both_engines_are_installed_and_postgres_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(image_env("mongodb"), raising=False)
    plugins = engine_plugins()
    assert set(plugins) >= {"postgres", "mongodb"}
    assert isinstance(plugins["mongodb"], MongoPlugin)
    assert isinstance(plugins["postgres"], PostgresPlugin)
    assert plugins["mongodb"].proxy_backend is None  # drivers find the primary
    assert session_class("mongodb") is MongoSession
    recipes = image_recipes()
    assert recipes["postgres"].server is None
    assert recipes["mongodb"].server is SERVER
    # the base image every engine shares gains nothing for MongoDB
    assert images.base_packages(recipes.values()) == ("postgresql-15",)


# --- the connection URI ----------------------------------------------------------------
def test_the_uri_names_every_member_the_replica_set_and_majority_concerns() -> None:
    uri = MongoPlugin().connection(database(), password="p@ss/w", ca_file="/tmp/ca.pem")
    parts = urlsplit(uri)
    assert parts.scheme == "mongodb"
    assert parts.username == names.APP_USER and parts.password == "p%40ss%2Fw"
    assert parts.netloc.endswith("@events-0:27017,events-1:27017,events-2:27017")
    assert parts.path == f"/{names.APP_DATABASE}"  # also where the user authenticates
    assert query(uri) == {
        "replicaSet": ["events"],
        "tls": ["true"],
        "tlsCAFile": ["/tmp/ca.pem"],
        "w": ["majority"],
        "journal": ["true"],
        "readConcernLevel": ["majority"],
        "retryWrites": ["true"],
    }


def test_async_durability_is_w_1() -> None:
    uri = MongoPlugin().connection(database("async"))
    assert query(uri)["w"] == ["1"]
    assert query(uri)["readConcernLevel"] == ["majority"]
    assert "tlsCAFile" not in query(uri)


# --- the member image ------------------------------------------------------------------
def test_the_member_image_is_not_built_without_a_mongod() -> None:
    resolved = images.resolve_images(servers={})
    assert "mongodb" not in resolved.members
    assert "postgres" in resolved.members
    why = resolved.unavailable["mongodb"]
    assert "--mongodb-from IMAGE" in why and "--mongodb-tarball PATH" in why
    built = images.resolve_images(servers={"mongodb": "sha256:abc"})
    assert built.members["mongodb"].startswith("shoal/mongodb:7.0-")
    assert built.unavailable == {}


def test_images_build_for_mongodb_without_a_mongod_is_refused_before_docker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_binary, "image_id", lambda tag: None)  # no server image kept

    def no_docker(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Docker was started: the refusal must come first")

    monkeypatch.setattr("shoal.platform.engine.ensure_engine", no_docker)
    monkeypatch.setattr(images, "build_all", no_docker)
    result = CliRunner().invoke(images_cli.app, ["build", "--engine", "mongodb"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "--mongodb-from IMAGE" in message and "--mongodb-tarball PATH" in message
    missing = CliRunner().invoke(images_cli.app, ["build", "--mongodb-tarball", "/nonexistent"])
    assert missing.exit_code == 2 and "no such file" in missing.output
    unknown = CliRunner().invoke(images_cli.app, ["build", "--cassandra-from", "x"])
    assert unknown.exit_code == 2 and "no such option" in unknown.output


def test_an_operator_without_a_mongodb_image_says_how_to_build_one() -> None:
    assert MongoPlugin("shoal/mongodb:7.0-0.1.0-abc").image_problem() is None
    problem = MongoPlugin().image_problem()
    assert problem is not None
    assert "--mongodb-from IMAGE" in problem and "--mongodb-tarball PATH" in problem
    assert "shoal operator deploy" in problem
    assert PostgresPlugin().image_problem() is None


# --- what the operator sends mongod ----------------------------------------------------
CONFIG = ReplicaSetConfig.model_validate(
    {
        "_id": "events",
        "version": 4,
        "term": 2,
        "members": [
            {"_id": 0, "host": "events-0:27017"},
            {"_id": 1, "host": "events-1:27017", "priority": 0, "votes": 0},
        ],
        "settings": {"replicaSetId": {"$oid": "65a1b2c3d4e5f60718293a4b"}},
    }
)


def test_a_reconfig_sends_the_config_with_bson_types_and_force_only_when_asked() -> None:
    command = clients.reconfig_command(CONFIG, force=False)
    assert list(command) == ["replSetReconfig"]
    sent = command["replSetReconfig"]
    assert sent["settings"]["replicaSetId"] == ObjectId("65a1b2c3d4e5f60718293a4b")
    assert "term" not in sent  # the primary sets it
    assert sent["version"] == 4
    assert clients.reconfig_command(CONFIG, force=True)["force"] is True


def test_a_step_down_names_its_periods() -> None:
    assert clients.step_down_command(60, 10, False) == {
        "replSetStepDown": 60,
        "secondaryCatchUpPeriodSecs": 10,
        "force": False,
    }


def test_the_operator_logs_in_as_its_administrator_over_verified_tls(tmp_path: Path) -> None:
    creds = DatabaseCredentials.derive(b"k" * 32, "uid")
    path = clients.ca_file(creds.ca.cert_pem, tmp_path / "ca")
    assert Path(path).read_text() == creds.ca.cert_pem
    assert clients.ca_file(creds.ca.cert_pem, tmp_path / "ca") == path
    options = clients.client_options(creds, path)
    assert options["directConnection"] is True and options["tls"] is True
    assert options["tlsCAFile"] == path
    assert "tlsAllowInvalidHostnames" not in options and "tlsInsecure" not in options
    assert (options["username"], options["authSource"]) == ("shoal-admin", "admin")
    assert options["password"] == creds.by_purpose["superuser"]


# --- the chaos client ------------------------------------------------------------------
def test_the_chaos_client_writes_with_majority_and_retries() -> None:
    ep = Endpoint(("events-0", "events-1"), 27017, "app", "pw", "app", 2, "/tmp/ca.pem")
    options = client_options(ep, None)
    assert options["w"] == "majority" and options["retryWrites"] is True
    assert options["readConcernLevel"] == "majority"
    assert options["tlsCAFile"] == "/tmp/ca.pem" and "directConnection" not in options
    assert client_options(ep, "events-1")["directConnection"] is True


def test_chaos_errors_are_definite_only_when_the_write_surely_did_not_happen() -> None:
    from pymongo.errors import (
        AutoReconnect,
        DuplicateKeyError,
        NotPrimaryError,
        OperationFailure,
        WriteConcernError,
    )

    assert isinstance(classify(DuplicateKeyError("dup", 11000), writing=True), Definite)
    assert isinstance(classify(NotPrimaryError("not primary"), writing=True), Indefinite)
    assert isinstance(classify(WriteConcernError("wtimeout", 64), writing=True), Indefinite)
    assert isinstance(classify(AutoReconnect("closed"), writing=True), Indefinite)
    assert isinstance(classify(AutoReconnect("closed"), writing=False), Definite)
    unknown = OperationFailure("commit", 91, {"errorLabels": ["UnknownTransactionCommitResult"]})
    assert isinstance(classify(unknown, writing=True), Indefinite)
    aborted = OperationFailure("conflict", 112, {"errorLabels": ["TransientTransactionError"]})
    assert isinstance(classify(aborted, writing=True), Definite)


# --- a MongoDB database while no member image exists -----------------------------------
async def test_a_database_without_a_member_image_says_so_and_creates_nothing() -> None:
    swarm = FakeSwarm()
    lease = Lease(swarm, "operator-test", LeaseSettings(duration=600.0))  # type: ignore[arg-type]
    assert await lease.step()
    ctx = OperatorContext(
        swarm=swarm,  # type: ignore[arg-type]
        store=DatabaseStore(swarm),  # type: ignore[arg-type]
        http=cast(aiohttp.ClientSession, None),
        key=b"k" * 32,
        lease=lease,
        metrics=OperatorMetrics(),
        plugins={"mongodb": MongoPlugin()},  # as an operator deployed without SHOAL_MONGODB_IMAGE
    )
    await ctx.store.apply(database())
    swarm.log.clear()
    worker = DatabaseWorker(ctx, "events")
    for _ in range(3):  # every cycle: the same status, no action, a long wait
        delay, engine = await worker.cycle()
        assert (delay, engine) == (30.0, "mongodb")
    assert not swarm.names(SERVICES) - {names.anchor_service("events"), names.LEASE_SERVICE}
    assert not swarm.names(NETWORKS) and not swarm.names(SECRETS)
    stored = await ctx.store.get("events")
    assert stored is not None
    message = stored.status.message or ""
    assert "--mongodb-from IMAGE" in message and "--mongodb-tarball PATH" in message
