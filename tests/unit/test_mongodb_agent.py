"""Pure helpers of the MongoDB member agent: no Docker, no mongod (none exists on the
machines this was written on; docs/operations.md says what was verified where)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bson import Int64, Timestamp
from pymongo.errors import OperationFailure

from shoal import names
from shoal.credentials import DatabaseCredentials
from shoal.operator.members import tls_bundle
from shoal.plugins.mongodb import agent_client
from shoal.plugins.mongodb.agent import api, initiate, keyfile, local, mongod, tls, users
from shoal.plugins.mongodb.model import MongoProbe, ReplicaSetConfig
from tests.unit.agent_imports import outside_imports

pytestmark = pytest.mark.unit

CREDENTIALS = DatabaseCredentials.derive(b"k" * 32, "uid-1")


# --- keyFile ---------------------------------------------------------------------------
def test_the_keyfile_is_base64_of_the_allowed_length_and_the_same_for_every_member() -> None:
    content = keyfile.keyfile_content("Zx-_pw")
    assert content == keyfile.keyfile_content("Zx-_pw")
    assert 6 <= len(content) <= 1024
    assert set(content) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    assert len(base64.b64decode(content)) == 64
    assert "Zx-_pw" not in content
    assert content != keyfile.keyfile_content("another")


def test_an_empty_replication_password_gives_no_keyfile() -> None:
    with pytest.raises(keyfile.KeyfileError):
        keyfile.keyfile_content("")


def test_the_keyfile_is_written_readable_by_its_owner_only(tmp_path: Path) -> None:
    (tmp_path / "replication-password").write_text("secret-pw\n")
    target = tmp_path / "state" / "keyfile"
    target.parent.mkdir()
    keyfile.install(tmp_path, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o400
    assert target.stat().st_uid == os.getuid()
    assert target.read_text() == keyfile.keyfile_content("secret-pw") + "\n"
    keyfile.install(tmp_path, target)  # a second start replaces a 0400 file
    assert stat.S_IMODE(target.stat().st_mode) == 0o400


# --- TLS -------------------------------------------------------------------------------
def bundle() -> str:
    return tls_bundle(CREDENTIALS, "orders", 0, datetime(2026, 12, 1, tzinfo=UTC))


def test_the_bundle_splits_into_key_with_certificate_and_the_ca(tmp_path: Path) -> None:
    (tmp_path / "tls.pem").write_text(bundle())
    files = tls.install(tmp_path, tmp_path / "tls")
    pem = files.key_and_certificate.read_text()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----") or "PRIVATE KEY" in pem.split("\n")[0]
    assert pem.count("-----BEGIN CERTIFICATE-----") == 1
    assert files.ca.read_text() == CREDENTIALS.ca.cert_pem
    assert stat.S_IMODE(files.key_and_certificate.stat().st_mode) == 0o600


def test_the_agent_api_serves_the_members_certificate(tmp_path: Path) -> None:
    """What the operator checks: a certificate the database's CA issued for the member."""
    (tmp_path / "tls.pem").write_text(bundle())
    files = tls.install(tmp_path, tmp_path / "tls")
    server = api.BoundedServer(("127.0.0.1", 0), api.Handler, tls.api_context(files))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ssl.create_default_context(cadata=CREDENTIALS.ca.cert_pem)
        port = int(server.server_address[1])
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=client, timeout=10)
        with pytest.raises(ssl.SSLCertVerificationError):  # not the member's name
            conn.request("GET", "/health")
        conn.close()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname="orders-0") as wrapped,
        ):
            assert wrapped.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "text",
    ["", "not pem", CREDENTIALS.ca.cert_pem, CREDENTIALS.ca.cert_pem * 2],
)
def test_a_bundle_without_one_key_and_two_certificates_is_refused(text: str) -> None:
    with pytest.raises(tls.TlsError, match="expected one private key"):
        tls.split_bundle(text)


# --- mongod's command line -------------------------------------------------------------
SETTINGS = mongod.MongodSettings(
    replica_set="orders",
    dbpath=Path("/var/lib/shoal/mongodb/db"),
    keyfile=Path("/var/lib/shoal/mongodb/keyfile"),
    tls=tls.TlsFiles.under(Path("/var/lib/shoal/mongodb/tls")),
    cache_gb=0.25,
)


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_mongod_runs_the_replica_set_with_keyfile_and_required_tls() -> None:
    args = mongod.command(SETTINGS)
    assert args[0] == "/usr/bin/mongod"
    assert option(args, "--replSet") == "orders"
    assert option(args, "--port") == "27017"
    assert "--bind_ip_all" in args
    assert option(args, "--dbpath") == "/var/lib/shoal/mongodb/db"
    assert option(args, "--keyFile") == "/var/lib/shoal/mongodb/keyfile"
    assert option(args, "--tlsMode") == "requireTLS"
    assert option(args, "--tlsCertificateKeyFile") == "/var/lib/shoal/mongodb/tls/member.pem"
    assert option(args, "--tlsCAFile") == "/var/lib/shoal/mongodb/tls/ca.pem"
    # clients authenticate with SCRAM, not certificates
    assert "--tlsAllowConnectionsWithoutCertificates" in args
    assert option(args, "--wiredTigerCacheSizeGB") == "0.25"
    assert not any(a.startswith("--noauth") or a == "--tlsMode=disabled" for a in args)


def test_without_a_memory_limit_mongod_sizes_its_own_cache() -> None:
    args = mongod.command(
        mongod.MongodSettings("orders", Path("/d"), Path("/k"), SETTINGS.tls, cache_gb=None)
    )
    assert "--wiredTigerCacheSizeGB" not in args


@pytest.mark.parametrize(
    ("limit", "cache"),
    [
        (None, None),
        (0, None),
        (1 << 62, None),
        (512 * mongod.MIB, 0.25),  # the default declaration: WiredTiger's minimum
        (4 * mongod.GIB, 1.85),  # (4096 - 256) MiB / 2, down to a 0.05 GB step
    ],
)
def test_the_cache_is_half_of_the_memory_left_beside_mongod(
    limit: int | None, cache: float | None
) -> None:
    assert mongod.cache_size_gb(limit) == cache


def test_the_memory_limit_comes_from_the_cgroup(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "limit_in_bytes"
    assert mongod.memory_limit((v2, v1)) is None
    v1.write_text("536870912\n")
    assert mongod.memory_limit((v2, v1)) == 512 * mongod.MIB
    v2.write_text("max\n")
    assert mongod.memory_limit((v2, v1)) is None


# --- POST /initiate's body -------------------------------------------------------------
def config(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": "orders",
        "version": 1,
        "members": [{"_id": 0, "host": "orders-0:27017", "priority": 1, "votes": 1}],
    }
    doc.update(changes)
    return doc


def test_a_valid_initiation_is_taken_as_it_is() -> None:
    request = initiate.check_request({"token": 3, "config": config()}, "orders", "orders-0:27017")
    assert request.token == 3
    assert request.config == config()
    assert request.hosts == ("orders-0:27017",)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": config()}, "'token'"),
        ({"token": True, "config": config()}, "'token'"),
        ({"token": 0, "config": config()}, "'token'"),
        ({"token": 1}, "'config'"),
        ({"token": 1, "config": []}, "'config'"),
        ({"token": 1, "config": config(_id="other")}, "config._id"),
        ({"token": 1, "config": config(members=[])}, "config.members"),
        ({"token": 1, "config": config(protocolVersion=0)}, "protocolVersion"),
        ({"token": 1, "config": config(writeConcernMajorityJournalDefault=False)}, "'write"),
        (
            {"token": 1, "config": config(members=[{"_id": 0, "host": "orders-1:27017"}])},
            "include this member",
        ),
        (
            {"token": 1, "config": config(members=[{"_id": 0, "host": "orders-0"}])},
            "NAME:PORT",
        ),
        (
            {
                "token": 1,
                "config": config(
                    members=[{"_id": 0, "host": "orders-0:27017", "arbiterOnly": True}]
                ),
            },
            "arbiterOnly",
        ),
        (
            {
                "token": 1,
                "config": config(
                    members=[
                        {"_id": 0, "host": "orders-0:27017"},
                        {"_id": 0, "host": "orders-1:27017"},
                    ]
                ),
            },
            "_id must be unique",
        ),
        (
            {
                "token": 1,
                "config": config(
                    members=[{"_id": i, "host": f"orders-{i}:27017"} for i in range(8)]
                ),
            },
            "at most 7 may vote",
        ),
        (
            {
                "token": 1,
                "config": config(
                    members=[{"_id": 0, "host": "orders-0:27017", "votes": 0, "priority": 1}]
                ),
            },
            "priority 0",
        ),
        ({"token": 1, "config": config(settings={"chainingAllowed": False})}, "chaining"),
    ],
)
def test_a_bad_initiation_is_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(initiate.BadRequest, match=field):
        initiate.check_request(body, "orders", "orders-0:27017")


# --- users -----------------------------------------------------------------------------
def test_the_application_user_is_the_one_every_engine_uses() -> None:
    app = users.app_user("pw")
    assert (app.name, app.database) == (names.APP_USER, names.APP_DATABASE)
    assert app.create_command() == {
        "pwd": "pw",
        "roles": [{"role": "readWrite", "db": names.APP_DATABASE}],
    }


def test_the_operators_administrator_is_root_in_admin() -> None:
    admin = users.admin_user("su")
    assert admin.database == "admin"
    assert admin.create_command()["roles"] == [{"role": "root", "db": "admin"}]


# --- the probe document ----------------------------------------------------------------
def test_the_probe_document_is_relaxed_extended_json() -> None:
    text = local.relaxed_json({"optime": Timestamp(1700000000, 3), "term": Int64(7)})
    assert json.loads(text) == {"optime": {"$timestamp": {"t": 1700000000, "i": 3}}, "term": 7}


def test_the_agents_error_replies_are_what_the_probe_parser_reads() -> None:
    """An uninitiated mongod: hello without setName, both commands NotYetInitialized."""
    failure = OperationFailure(
        "no replset config has been received",
        code=94,
        details={"ok": 0, "code": 94, "codeName": "NotYetInitialized", "errmsg": "no config"},
    )
    reply = local.error_reply(failure)
    document = {
        "format": 1,
        "hello": {"isWritablePrimary": False, "isreplicaset": True, "ok": 1.0},
        "status": reply,
        "config": reply,
        "task": "task-1",
    }
    probe = MongoProbe.parse(json.loads(local.relaxed_json(document)))
    assert (probe.initiated, probe.state, probe.task) == (False, "startup", "task-1")
    assert probe.status_error == "NotYetInitialized"


def test_a_mongod_that_does_not_answer_gives_an_empty_probe(tmp_path: Path) -> None:
    files = tls.TlsFiles.under(tmp_path)
    files.ca.write_text(CREDENTIALS.ca.cert_pem)
    mongo = local.LocalMongo(
        files, users.admin_user("a"), users.app_user("b"), tmp_path / "m", port=_closed_port()
    )
    try:
        assert mongo.state("task-1") == {
            "format": 1,
            "hello": None,
            "status": None,
            "config": None,
            "task": "task-1",
        }
    finally:
        mongo.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the HTTP API, up to where it would reach mongod -----------------------------------
@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    (tmp_path / "agent-token").write_text("tok\n")
    monkeypatch.setattr(api, "SECRETS_DIR", tmp_path)
    files = tls.TlsFiles.under(tmp_path)
    files.ca.write_text(CREDENTIALS.ca.cert_pem)
    mongo = local.LocalMongo(
        files, users.admin_user("a"), users.app_user("b"), tmp_path / "m", port=_closed_port()
    )
    api.Handler.member = api.Member("orders-0", "orders", mongo, "task-1")
    server = api.BoundedServer(("127.0.0.1", 0), api.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", int(server.server_address[1])
    finally:
        server.shutdown()
        mongo.close()


def call(
    where: tuple[str, int], method: str, path: str, body: Any = None, token: str | None = "tok"
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(*where, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    out = json.loads(response.read())
    conn.close()
    return response.status, out


def test_the_api_wants_the_members_bearer_token(agent: tuple[str, int]) -> None:
    assert call(agent, "GET", "/health", token=None) == (200, {"ok": True})
    assert call(agent, "GET", "/state", token=None)[0] == 401
    assert call(agent, "GET", "/state", token="wrong")[0] == 401
    assert call(agent, "POST", "/initiate", {"token": 1, "config": config()}, token=None)[0] == 401


def test_a_bad_initiation_is_a_400_before_mongod_is_asked(agent: tuple[str, int]) -> None:
    status, body = call(agent, "POST", "/initiate", {"token": 1, "config": config(_id="x")})
    assert status == 400 and "config._id" in body["error"]


def test_an_initiation_while_mongod_does_not_answer_is_a_503(agent: tuple[str, int]) -> None:
    status, body = call(agent, "POST", "/initiate", {"token": 2, "config": config()})
    assert status == 503 and "does not answer" in body["error"]
    # a deposed operator's older token is refused
    status, body = call(agent, "POST", "/initiate", {"token": 1, "config": config()})
    assert status == 409 and "stale fencing token" in body["error"]


def test_the_agent_imports_only_the_standard_library_pymongo_and_agentkit() -> None:
    """It runs with Debian's python3 and python3-pymongo in the member (image/Dockerfile),
    next to shoal.agentkit."""
    assert outside_imports(Path(api.__file__).parent, frozenset({"pymongo", "bson"})) == []


def test_the_agent_takes_the_config_the_planner_builds() -> None:
    planned = ReplicaSetConfig.model_validate(
        {"_id": "orders", "version": 1, "members": [{"_id": 0, "host": "orders-0:27017"}]}
    )
    body = agent_client.initiate_body(5, planned.to_document())
    request = initiate.check_request(json.loads(json.dumps(body)), "orders", "orders-0:27017")
    assert request.config["members"] == [
        {"_id": 0, "host": "orders-0:27017", "votes": 1, "priority": 1.0}
    ]


class GuardedMember:
    """What the users guard asks of a member, scripted per round (no mongod here)."""

    def __init__(self, rounds: list[tuple[bool, bool]]) -> None:
        self.rounds = rounds  # (admin login works, writable primary) per round
        self.round = -1
        self.created = 0

    def admin_login_works(self) -> bool:
        self.round += 1
        return self.rounds[self.round][0]

    def writable_primary(self) -> bool:
        return self.rounds[self.round][1]

    def ensure_users(self) -> list[str]:
        self.created += 1
        if self.created == 1:
            raise local.Unavailable("createUser failed: not primary any more")
        return ["shoal-admin", "app"]


def test_the_users_guard_creates_the_users_on_the_primary_until_it_has() -> None:
    said: list[str] = []
    # a secondary without users; then primary (creation fails once); then primary again
    member = GuardedMember([(False, False), (False, True), (False, True), (True, True)])
    local.users_guard(member, lambda _s: False, said.append)  # type: ignore[arg-type]
    assert member.created == 2 and member.round == 2
    assert said[-1] == "users: created shoal-admin, app"


def test_the_users_guard_ends_where_the_administrator_logs_in() -> None:
    said: list[str] = []
    member = GuardedMember([(True, False)])
    local.users_guard(member, lambda _s: False, said.append)  # type: ignore[arg-type]
    assert member.created == 0 and said == ["users: the administrator logs in here"]
