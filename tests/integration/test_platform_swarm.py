"""What `shoal apply` makes of a declaration, checked on the real Docker objects: one
service per member on the database's overlay network and `shoal-control`, no mounts, an
explicit restart delay of 0, credentials only as secret files, placement passed through;
members 3 -> 5 -> 3 followed; `shoal delete --wait` leaves nothing behind.

The tests share one database and run in file order (create, scale, delete)."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from tests.integration.support import (
    apply,
    container_of,
    credentials,
    declaration,
    docker,
    shoal,
    status,
    wait_for,
    wait_state,
)

pytestmark = pytest.mark.integration

CONSTRAINT = "node.role==manager"


def inspect(kind: str, *objects: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(docker(kind, "inspect", *objects))
    return result


def listed(kind: str, *filters: str) -> list[str]:
    args = [a for f in filters for a in ("--filter", f)]
    return docker(kind, "ls", *args, "--format", "{{.Name}}").split()


def member_services(db: str) -> list[str]:
    return sorted(
        n
        for n in listed("service", f"label={names.LABEL_DATABASE}={db}")
        if names.member_index(db, n) is not None
    )


def member_names(db: str, count: int) -> list[str]:
    return sorted(names.member_service(db, i) for i in range(count))


@pytest.fixture(scope="module")
def db(operator: BuiltImages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = "tp" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    tmp = tmp_path_factory.mktemp(name)
    text = declaration(name, members=3, durability="async", unreachable=10)
    text += f"  placement: {{spread: node.id, constraints: [{json.dumps(CONSTRAINT)}]}}\n"
    apply(text, tmp)
    try:
        wait_state(name, "Healthy", timeout=240)
        yield name
    finally:
        label = f"label={names.LABEL_DATABASE}={name}"
        if any(listed(kind, label) for kind in ("service", "network", "secret")):
            shoal("delete", name, "--wait", timeout=180)


def test_apply_creates_one_member_service_per_member(db: str) -> None:
    assert member_services(db) == member_names(db, 3)
    db_net = inspect("network", names.database_network(db))[0]
    control = inspect("network", names.CONTROL_NETWORK)[0]
    assert db_net["Driver"] == "overlay" and db_net["Labels"][names.LABEL_DATABASE] == db
    secret_ids = {
        s["ID"]: s["Spec"]["Name"]
        for s in inspect("secret", *listed("secret", f"label={names.LABEL_DATABASE}={db}"))
    }
    # three shared credentials, and one agent token and one TLS bundle per member
    assert len(secret_ids) == 3 + 3 + 3
    for svc in inspect("service", *member_services(db)):
        spec = svc["Spec"]
        template = spec["TaskTemplate"]
        cs = template["ContainerSpec"]
        assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
        assert spec["Labels"][names.LABEL_ROLE] == "member"
        # networks: the database's overlay and the shared control network
        assert {n["Target"] for n in template["Networks"]} == {db_net["Id"], control["Id"]}
        assert spec["EndpointSpec"]["Mode"] == "dnsrr"
        # no mounts of any kind
        assert not cs.get("Mounts"), cs.get("Mounts")
        # the restart policy is explicit, with no delay
        assert template["RestartPolicy"]["Delay"] == 0
        assert template["RestartPolicy"]["Condition"] == "any"
        # placement passed through; a single-node swarm pins nothing (operator/placement.py)
        assert template["Placement"]["Constraints"] == [CONSTRAINT]
        # credentials as secret files, and only this database's secrets
        files = {s["File"]["Name"] for s in cs["Secrets"]}
        assert files == {
            "superuser-password",
            "replication-password",
            "app-password",
            "agent-token",
            "tls.pem",
        }
        mounted = {s["SecretID"] for s in cs["Secrets"]}
        index = spec["Labels"][names.LABEL_MEMBER]
        own = {
            i
            for i, n in secret_ids.items()
            if n.endswith((f"-agent-token-{index}", f"-tls-{index}"))
        }
        shared = {i for i, n in secret_ids.items() if "-agent-token-" not in n and "-tls-" not in n}
        assert len(own) == 2 and mounted == shared | own
        # and the running container really is like that
        cid = container_of(spec["Name"])
        assert cid, f"no running container for {spec['Name']}"
        container = inspect("container", cid)[0]
        assert container["Mounts"] == [], container["Mounts"]
        assert not container["HostConfig"].get("Binds")
        # not root, nothing added: every process in it runs as the postgres user
        assert container["Config"]["User"] == "postgres"
        assert container["HostConfig"]["Privileged"] is False
        assert not container["HostConfig"].get("CapAdd")
        top = docker("top", cid, "-eo", "uid,pid,comm").split("\n")[1:]
        processes = [line.split() for line in top if line.strip()]
        assert processes and all(p[0] != "0" for p in processes), processes
        assert set(container["NetworkSettings"]["Networks"]) == {
            names.database_network(db),
            names.CONTROL_NETWORK,
        }
        listing = docker("exec", cid, "ls", "/run/secrets").split()
        assert sorted(listing) == sorted(files)


def test_no_password_in_env_or_labels(db: str) -> None:
    creds = credentials(db)
    password = creds["password"]
    assert len(password) >= 16
    anchor = inspect("service", names.anchor_service(db))[0]
    places: dict[str, str] = {}
    for k, v in (anchor["Spec"].get("Labels") or {}).items():
        places[f"anchor label {k}"] = f"{k}={v}"
    for svc in inspect("service", *member_services(db)):
        n = svc["Spec"]["Name"]
        cs = svc["Spec"]["TaskTemplate"]["ContainerSpec"]
        for k, v in (svc["Spec"].get("Labels") or {}).items():
            places[f"{n} service label {k}"] = f"{k}={v}"
        for k, v in (cs.get("Labels") or {}).items():
            places[f"{n} container-spec label {k}"] = f"{k}={v}"
        for e in cs.get("Env") or []:
            places[f"{n} service env {e.split('=')[0]}"] = e
        cid = container_of(n)
        assert cid
        container = inspect("container", cid)[0]
        for e in container["Config"].get("Env") or []:
            places[f"{n} container env {e.split('=')[0]}"] = e
        for k, v in (container["Config"].get("Labels") or {}).items():
            places[f"{n} container label {k}"] = f"{k}={v}"
        places[f"{n} command"] = json.dumps([container["Path"], *container["Args"]])
    assert len(places) > 20
    leaks = [where for where, text in places.items() if password in text]
    assert leaks == []
    # the secret file is how the password reaches the members
    cid = container_of(names.member_service(db, 0))
    assert cid
    inside = docker("exec", cid, "cat", "/run/secrets/app-password")
    assert inside == password


def _scaled(db: str, count: int) -> dict[str, Any] | None:
    s = status(db)
    ok = (
        member_services(db) == member_names(db, count)
        and s.get("members_desired") == count
        and s.get("members_ready") == count
        and s.get("state") == "Healthy"
        and len(s.get("members", [])) == count
    )
    return s if ok else None


def test_members_3_to_5_to_3(db: str, tmp_path: Path) -> None:
    base = declaration(db, members=5, durability="async", unreachable=10)
    place = f"  placement: {{spread: node.id, constraints: [{json.dumps(CONSTRAINT)}]}}\n"
    apply(base + place, tmp_path)
    s = wait_for(lambda: _scaled(db, 5), 240, f"{db} Healthy with 5 members")
    assert {m["name"] for m in s["members"]} == set(member_names(db, 5))
    assert [m["role"] for m in s["members"]].count("primary") == 1
    apply(declaration(db, members=3, durability="async", unreachable=10) + place, tmp_path)
    s = wait_for(lambda: _scaled(db, 3), 180, f"{db} Healthy with 3 members")
    assert {m["name"] for m in s["members"]} == set(member_names(db, 3))
    # the removed members' containers are gone too
    for gone in (names.member_service(db, 3), names.member_service(db, 4)):
        wait_for(lambda g=gone: container_of(g) is None, 60, f"{gone}'s container to stop")


def test_delete_wait_leaves_nothing(db: str) -> None:
    proc = shoal("delete", db, "--wait", timeout=180)
    assert proc.returncode == 0, proc.stderr
    label = f"label={names.LABEL_DATABASE}={db}"
    assert listed("service", label) == []
    assert listed("network", label) == []
    assert listed("secret", label) == []
    assert [
        n for n in listed("service") if n == names.anchor_service(db) or n.startswith(f"{db}-")
    ] == []
    assert names.database_network(db) not in listed("network")
    assert [n for n in listed("secret") if n.startswith(f"shoal-{db}-")] == []
    assert status(db) == {}
    # the members' containers stop shortly after their services are removed
    wait_for(
        lambda: docker("ps", "-aq", "--filter", label) == "",
        60,
        f"{db}'s containers to be removed",
    )
    # the shared control network stays: other databases and the operator use it
    assert names.CONTROL_NETWORK in listed("network")


def test_an_interrupted_delete_is_finished_by_the_operator(
    operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    """`shoal delete` marks the database Deleting, then removes its objects; when it stops
    in between (Ctrl-C, a timeout while a node is cut off), the operator finishes it."""
    import asyncio

    from shoal.swarm.client import SwarmClient
    from shoal.swarm.store import DatabaseStore

    db = unique_name
    apply(declaration(db, members=1, durability="async"), tmp_path)
    wait_for(lambda: container_of(names.member_service(db, 0)), 180, f"{db}-0 to run")

    async def mark_only() -> bool:
        async with SwarmClient() as client:
            return await DatabaseStore(client).mark_deleting(db)

    assert asyncio.run(mark_only())  # what `shoal delete` does first, and nothing more
    label = f"label={names.LABEL_DATABASE}={db}"
    wait_for(
        lambda: (
            listed("service", label) == [] and names.anchor_service(db) not in listed("service")
        ),
        120,
        f"the operator to remove {db}'s services and anchor",
    )
    wait_for(lambda: listed("network", label) == [], 120, f"{db}'s network to go")
    assert listed("secret", label) == []
