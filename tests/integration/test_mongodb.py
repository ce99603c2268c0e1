"""MongoDB replica sets on the real swarm, run by the operator: the same failures as
tests/integration/test_postgres_failures.py, each asserting on the DATA (every
majority-acknowledged id present on every member), not only on states.

NEVER RUN YET. No mongod exists on the machines these tests were written on (it is not in
Debian or on PyPI, and no registry answers), so they have never passed or failed anywhere:
they are written to be straightforward to debug where a member image exists. They run only
when SHOAL_MONGODB_IMAGE names a local member image (`shoal images build --mongodb-from
IMAGE` or `--mongodb-tarball PATH`, then `shoal images show` prints its tag); otherwise every
test is skipped with a reason the test summary (`pytest -ra`, as `make test` runs it) shows
as not run, never as passed.

A member is read from inside its own container with Debian's python3-pymongo (the agent's
client): over loopback TLS as the operator's administrator, straight to that member
(`directConnection`), so a secondary answers from its own copy.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal import names
from shoal.platform.deploy import deploy_operator
from shoal.platform.images import BuiltImages
from shoal.swarm.client import SwarmClient
from tests.integration.support import (
    apply,
    container_of,
    credentials,
    docker,
    service_logs,
    shoal,
    status,
    wait_for,
)

IMAGE = os.environ.get("SHOAL_MONGODB_IMAGE", "")
NOT_RUN = (
    "no MongoDB member image (set SHOAL_MONGODB_IMAGE after shoal images build "
    "--mongodb-from IMAGE); not run"
)


def _image_present(tag: str) -> bool:
    if not tag:
        return False
    try:
        r = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not _image_present(IMAGE), reason=NOT_RUN),
]

PORT = 27017


# --------------------------------------------------------------------------- helpers


def declaration(name: str, members: int = 3, durability: str = "sync") -> str:
    return (
        "apiVersion: shoal/v1\nkind: Database\n"
        f"metadata:\n  name: {name}\n"
        'spec:\n  engine: mongodb\n  version: "7.0"\n'
        f"  members: {members}\n  durability: {durability}\n"
        "  resources: {memory: 512M, cpus: 0.5}\n"
        "  failover: {unreachableSeconds: 5}\n"
    )


# Runs inside a member container (python3-pymongo 3.11): prints the sorted _ids of a
# collection of the app database on that member alone, as JSON.
READ_IDS = textwrap.dedent(
    """
    import json, sys
    from pymongo import MongoClient
    pw = open("/run/secrets/superuser-password").read().strip()
    c = MongoClient("127.0.0.1", 27017, directConnection=True, tls=True,
                    tlsCAFile="/var/lib/shoal/mongodb/tls/ca.pem", tlsAllowInvalidHostnames=True,
                    username="shoal-admin", password=pw, authSource="admin",
                    serverSelectionTimeoutMS=5000)
    docs = c["app"][sys.argv[1]].find({}, {"_id": 1})
    print(json.dumps(sorted(d["_id"] for d in docs)))
    """
)

# Runs in a container of the operator image (pymongo 4) on the database's network: inserts
# ids 1, 2, ... with the URI's write concern (w: majority) and prints each one acknowledged.
WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pymongo import MongoClient
    open("/tmp/ca.pem", "w").write(os.environ["CA"])
    client = MongoClient(os.environ["URI"], tlsCAFile="/tmp/ca.pem",
                         serverSelectionTimeoutMS=2000)
    coll = client["app"][os.environ["COLLECTION"]]
    i, deadline = 0, time.time() + float(os.environ["SECONDS"])
    while time.time() < deadline:
        i += 1
        try:
            coll.insert_one({"_id": i})
            print(i, flush=True)
        except Exception as e:
            print("error", type(e).__name__, str(e)[:200], file=sys.stderr, flush=True)
            time.sleep(0.2)
    """
)


def ids_on(member: str, collection: str) -> set[int]:
    cid = container_of(member)
    assert cid, f"no running container for {member}"
    proc = subprocess.run(
        ["docker", "exec", cid, "python3", "-c", READ_IDS, collection],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, f"reading {collection} on {member}: {proc.stderr[-500:]}"
    return set(json.loads(proc.stdout))


def try_ids(member: str, collection: str) -> set[int] | None:
    try:
        return ids_on(member, collection)
    except (AssertionError, subprocess.TimeoutExpired, ValueError):
        return None


class Writer:
    """A client container writing unique ids through the replica set URI."""

    def __init__(self, db: str, image: str, collection: str, seconds: float = 600) -> None:
        creds = credentials(db)
        self.name = f"mwriter-{db}-{time.monotonic_ns() % 10**8}"
        docker(
            "run", "-d", "--name", self.name, "--network", names.database_network(db),
            "-e", f"URI={creds['uri']}", "-e", f"CA={creds['ca']}",
            "-e", f"COLLECTION={collection}", "-e", f"SECONDS={seconds}",
            "--entrypoint", "/opt/shoal/venv/bin/python", image, "-c", WRITER,
        )  # fmt: skip

    def so_far(self) -> list[int]:
        out = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return [int(x) for x in out.stdout.split() if x.isdigit()]

    def stop(self) -> set[int]:
        acked = set(self.so_far())
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)
        return acked


def healthy(name: str, members: int = 3, timeout: float = 300) -> dict[str, Any]:
    seen: list[dict[str, Any]] = [{}]

    def check() -> dict[str, Any] | None:
        s = seen[0] = status(name)
        ms = s.get("members", [])
        ok = (
            s.get("state") == "Healthy"
            and s.get("primary")
            and len(ms) == members
            and sorted(m["role"] for m in ms) == ["primary"] + ["replica"] * (members - 1)
        )
        return s if ok else None

    try:
        return wait_for(check, timeout, f"{name} Healthy with {members} members", every=1.0)  # type: ignore[no-any-return]
    except AssertionError as e:
        last = {k: seen[0].get(k) for k in ("state", "primary", "message", "members", "events")}
        print(service_logs([m["name"] for m in last["members"] or []] + [names.OPERATOR_SERVICE]))
        raise AssertionError(f"{e}; status {json.dumps(last)}") from None


def converged(
    members: list[str], collection: str, expected: set[int], timeout: float = 180
) -> None:
    """Every member holds every expected id, and all hold the same ids."""
    last: dict[str, Any] = {}

    def check() -> bool:
        for m in members:
            last[m] = try_ids(m, collection)
        copies = [last[m] for m in members]
        return all(c is not None and expected <= c for c in copies) and all(
            c == copies[0] for c in copies
        )

    try:
        wait_for(check, timeout, f"{collection} to converge on {members}", every=2.0)
    except AssertionError:
        missing = {m: len(expected - (ids or set())) for m, ids in last.items()}
        raise AssertionError(
            f"{collection}: acknowledged ids missing per member: {missing}"
        ) from None


def write_some(db: str, image: str, collection: str, count: int) -> set[int]:
    """Run a writer until `count` ids are acknowledged."""
    w = Writer(db, image, collection)
    try:
        wait_for(lambda: len(w.so_far()) >= count, 180, f"{count} acknowledged writes")
    finally:
        acked = w.stop()
    return acked


def _iptables(container: str, script: str) -> None:
    """Rules in the member's own network namespace (its container is local here)."""
    subprocess.run(
        ["docker", "run", "--rm", "--network", f"container:{container}", "--cap-add",
         "NET_ADMIN", names.IMAGE_BASE, "sh", "-c", script],
        check=False, capture_output=True, timeout=60,
    )  # fmt: skip


# Both directions of every mongod connection of the member: replication, heartbeats, clients.
CUT = (
    f"iptables -w -I OUTPUT -p tcp --dport {PORT} -j DROP && "
    f"iptables -w -I INPUT -p tcp --dport {PORT} -j DROP"
)
HEAL = (
    f"iptables -w -D OUTPUT -p tcp --dport {PORT} -j DROP; "
    f"iptables -w -D INPUT -p tcp --dport {PORT} -j DROP; true"
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mongo_operator(operator: BuiltImages) -> Iterator[BuiltImages]:
    """The operator of this tree, deployed with SHOAL_MONGODB_IMAGE as its MongoDB image;
    deployed back as it was afterwards."""

    async def deploy(members: dict[str, str]) -> None:
        async with SwarmClient() as swarm:
            await deploy_operator(swarm, operator.operator, members, 1)

    asyncio.run(deploy({**operator.members, "mongodb": IMAGE}))
    try:
        yield operator
    finally:
        asyncio.run(deploy(operator.members))


class Db:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.tmp = tmp
        self.paused: set[str] = set()
        self.cut: set[str] = set()

    def member(self, i: int) -> str:
        return names.member_service(self.name, i)

    def apply(self, members: int = 3, durability: str = "sync") -> None:
        apply(declaration(self.name, members, durability), self.tmp)


@pytest.fixture
def db(mongo_operator: BuiltImages, unique_name: str, tmp_path: Path) -> Iterator[Db]:
    d = Db(unique_name, tmp_path)
    try:
        yield d
    finally:
        for c in d.paused:
            subprocess.run(["docker", "unpause", c], capture_output=True)
        for c in d.cut:
            _iptables(c, HEAL)
        proc = shoal("delete", d.name, "--wait", timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- tests


def test_a_new_replica_set_acknowledges_majority_writes_every_member_holds(
    db: Db, mongo_operator: BuiltImages
) -> None:
    db.apply()
    st = healthy(db.name)
    assert st["engine"] == "mongodb"
    assert st["identity"], "the replica set id is recorded once a primary shows it"
    uri = credentials(db.name)["uri"]
    assert "replicaSet=" in uri and "w=majority" in uri
    acked = write_some(db.name, mongo_operator.operator, "c1", 200)
    converged([db.member(i) for i in range(3)], "c1", acked)


def test_killed_primary_is_replaced_by_an_elected_one_without_losing_writes(
    db: Db, mongo_operator: BuiltImages
) -> None:
    db.apply()
    old = healthy(db.name)["primary"]
    old_cid = container_of(old)
    assert old_cid
    w = Writer(db.name, mongo_operator.operator, "c2")
    try:
        wait_for(lambda: len(w.so_far()) >= 50, 120, "writes before the kill")
        before = max(w.so_far())
        subprocess.run(["docker", "kill", old_cid], check=True, capture_output=True)
        wait_for(lambda: status(db.name).get("primary") not in (None, old), 120, "an election")
        wait_for(lambda: max(w.so_far()) > before + 30, 120, "writes to resume")
    finally:
        acked = w.stop()
    healthy(db.name)  # the killed member is back, re-synced
    converged([db.member(i) for i in range(3)], "c2", acked)


def test_killed_secondary_comes_back_empty_and_resyncs_every_write(
    db: Db, mongo_operator: BuiltImages
) -> None:
    db.apply()
    st = healthy(db.name)
    acked = write_some(db.name, mongo_operator.operator, "c3", 300)
    secondary = next(m["name"] for m in st["members"] if m["role"] == "replica")
    old_cid = container_of(secondary)
    assert old_cid
    subprocess.run(["docker", "kill", old_cid], check=True, capture_output=True)
    wait_for(lambda: container_of(secondary) not in (None, old_cid), 120, "a new container")
    st = healthy(db.name)
    assert st["primary"] != secondary
    # the new, empty container holds every write again: an initial sync from its peers
    converged([db.member(i) for i in range(3)], "c3", acked)


def test_paused_primary_is_replaced_and_acknowledges_nothing_that_is_lost(
    db: Db, mongo_operator: BuiltImages
) -> None:
    db.apply()
    old = healthy(db.name)["primary"]
    old_cid = container_of(old)
    assert old_cid
    w = Writer(db.name, mongo_operator.operator, "c4")
    try:
        wait_for(lambda: len(w.so_far()) >= 50, 120, "writes before the pause")
        before = max(w.so_far())
        db.paused.add(old_cid)
        subprocess.run(["docker", "pause", old_cid], check=True, capture_output=True)
        wait_for(lambda: status(db.name).get("primary") not in (None, old), 180, "an election")
        wait_for(lambda: max(w.so_far()) > before + 30, 120, "writes to resume")
    finally:
        acked = w.stop()
        subprocess.run(["docker", "unpause", old_cid], capture_output=True)
        db.paused.discard(old_cid)
    healthy(db.name)
    converged([db.member(i) for i in range(3)], "c4", acked)


def test_partitioned_primary_steps_down_and_loses_no_acknowledged_write(
    db: Db, mongo_operator: BuiltImages
) -> None:
    db.apply()
    old = healthy(db.name)["primary"]
    old_cid = container_of(old)
    assert old_cid
    w = Writer(db.name, mongo_operator.operator, "c5")
    try:
        wait_for(lambda: len(w.so_far()) >= 50, 120, "writes before the partition")
        before = max(w.so_far())
        db.cut.add(old_cid)
        _iptables(old_cid, CUT)
        wait_for(lambda: status(db.name).get("primary") not in (None, old), 180, "an election")
        wait_for(lambda: max(w.so_far()) > before + 30, 120, "writes to resume")
    finally:
        acked = w.stop()
        _iptables(old_cid, HEAL)
        db.cut.discard(old_cid)
    healthy(db.name)
    converged([db.member(i) for i in range(3)], "c5", acked)


def test_scale_from_three_to_five_and_back_keeps_every_write(
    db: Db, mongo_operator: BuiltImages
) -> None:
    db.apply(members=3)
    healthy(db.name)
    acked = write_some(db.name, mongo_operator.operator, "c6", 200)
    db.apply(members=5)
    healthy(db.name, members=5)
    converged([db.member(i) for i in range(5)], "c6", acked)
    db.apply(members=3)
    st = healthy(db.name, members=3)
    assert st["primary"] in [db.member(i) for i in range(3)]
    for extra in (db.member(3), db.member(4)):
        wait_for(
            lambda e=extra: (
                subprocess.run(  # type: ignore[misc]
                    ["docker", "service", "inspect", e], capture_output=True
                ).returncode
                != 0
            ),
            120,
            f"{extra} removed",
        )
    converged([db.member(i) for i in range(3)], "c6", acked)


def test_every_member_killed_is_lost_and_never_a_fresh_empty_set(
    db: Db, mongo_operator: BuiltImages
) -> None:
    db.apply()
    healthy(db.name)
    write_some(db.name, mongo_operator.operator, "c7", 50)
    cids = [container_of(db.member(i)) for i in range(3)]
    assert all(cids)
    subprocess.run(["docker", "kill", *[c for c in cids if c]], check=True, capture_output=True)
    wait_for(lambda: status(db.name).get("state") == "Lost", 180, f"{db.name} Lost")
    for _ in range(8):  # it stays Lost: no member is initiated as a new, empty set
        st = status(db.name)
        assert st["state"] == "Lost", st
        assert st["primary"] is None
        time.sleep(2)
