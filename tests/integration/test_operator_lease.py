"""The operator lease on the real swarm: a `docker kill`ed operator is replaced by Swarm and
the new process takes the lease with a higher fencing token and carries out what was
declared meanwhile; with two operators only the lease holder acts, and the standby takes over
when the holder dies.

These tests stop everybody's operator for a few seconds: they are short, and every one
restores the operator service (replicas 1) in a `finally`."""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal import names
from shoal.platform.deploy import deploy_operator
from shoal.platform.images import BuiltImages
from shoal.swarm.client import SwarmClient
from shoal.swarm.lease import LeaseRecord
from tests.integration.support import (
    apply,
    container_of,
    declaration,
    docker,
    ensure_operator,
    shoal,
    status,
    wait_for,
    wait_state,
)

pytestmark = pytest.mark.integration
PYTHON = "/opt/shoal/venv/bin/python"
PROBE = (
    "import sys, urllib.request; "
    f"print(urllib.request.urlopen('http://127.0.0.1:{names.OPERATOR_PORT}' + sys.argv[1], "
    "timeout=3).read().decode())"
)


def _suffix() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))


def lease() -> LeaseRecord:
    raw = docker("service", "inspect", names.LEASE_SERVICE, "--format", "{{json .Spec.Labels}}")
    return LeaseRecord.from_label(json.loads(raw).get(names.LABEL_LEASE))


def holder_container(record: LeaseRecord) -> str:
    """Operator identities start with the container's hostname: its 12-character id."""
    return record.holder.split("-", 1)[0]


def operator_api(container: str, path: str) -> Any:
    """Ask one operator process about itself, from inside its own container."""
    proc = subprocess.run(
        ["docker", "exec", container, PYTHON, "-c", PROBE, path],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        return None
    text = proc.stdout.strip()
    return json.loads(text) if path.startswith("/api") else text


def leader_metric(container: str) -> float | None:
    text = operator_api(container, "/metrics")
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("shoal_operator_leader "):
            return float(line.split()[1])
    return None


def scale(service: str, replicas: int) -> None:
    docker("service", "update", "--detach", "--replicas", str(replicas), service)


@pytest.fixture(scope="module")
def db(operator: BuiltImages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = "tl" + _suffix()
    tmp = tmp_path_factory.mktemp(name)
    apply(declaration(name, members=2, durability="async"), tmp)
    try:
        wait_state(name, "Healthy", timeout=240)
        yield name
    finally:
        ensure_operator(operator)
        shoal("delete", name, "--wait", timeout=180)


def _carried_out(db: str, members: int, token_above: int) -> dict[str, Any] | None:
    s = status(db)
    present = sorted(
        n
        for n in docker(
            "service",
            "ls",
            "--filter",
            f"label={names.LABEL_DATABASE}={db}",
            "--format",
            "{{.Name}}",
        ).split()
        if names.member_index(db, n) is not None
    )
    ok = (
        present == sorted(names.member_service(db, i) for i in range(members))
        and s.get("members_desired") == members
        and s.get("members_ready") == members
        and s.get("state") == "Healthy"
        and s.get("fence_token", 0) > token_above
    )
    return s if ok else None


def test_killed_operator_is_replaced_and_resumes(
    db: str, operator: BuiltImages, tmp_path: Path
) -> None:
    before = lease()
    old = container_of(names.OPERATOR_SERVICE)
    assert old and holder_container(before) == old[:12], (before, old)
    token_before = status(db)["fence_token"]
    assert 0 < token_before <= before.token  # statuses carry the writer's lease token
    try:
        docker("kill", old)
        killed_at = time.monotonic()
        # declared while no operator runs: the CLI writes to Swarm, not to the operator
        apply(declaration(db, members=3, durability="async"), tmp_path)
        new = wait_for(
            lambda: (c := container_of(names.OPERATOR_SERVICE)) and c != old and c,
            60,
            "Swarm to replace the killed operator",
        )
        after = wait_for(
            lambda: (r := lease()).token > before.token and r.holder and r,
            60,
            "a new lease holder",
        )
        assert holder_container(after) == new[:12]
        took_over = time.monotonic() - killed_at
        s = wait_for(lambda: _carried_out(db, 3, token_before), 240, f"{db} at 3 members")
        assert s["fence_token"] == after.token
        assert leader_metric(new) == 1.0
        print(f"lease taken over {took_over:.1f}s after the kill, token {after.token}")
    finally:
        ensure_operator(operator)


def test_two_operators_only_the_holder_acts(db: str, operator: BuiltImages, tmp_path: Path) -> None:
    standby_service = f"tl{_suffix()}-opb"
    main = wait_for(lambda: container_of(names.OPERATOR_SERVICE), 60, "the operator")
    wait_for(lambda: lease().holder.startswith(main[:12]) and lease(), 60, "main holds lease")
    members = status(db)["members_desired"]
    target = 2 if members > 2 else 3
    try:
        asyncio.run(_deploy_standby(operator, standby_service))
        standby = wait_for(lambda: container_of(standby_service), 120, "the standby to run")
        info = wait_for(lambda: operator_api(standby, "/api/v1/operator"), 60, "standby API")
        # observe both for a while: exactly one holder, the main one; the standby idles
        for _ in range(5):
            record = lease()
            assert record.holder.startswith(main[:12]), record
            assert operator_api(standby, "/api/v1/operator")["leader"] is False
            assert leader_metric(standby) == 0.0
            assert operator_api(main, "/api/v1/operator")["leader"] is True
            # the standby has never completed a reconcile cycle: it has no status to show
            assert operator_api(standby, "/api/v1/databases") == []
            time.sleep(1.0)
        assert info["leader"] is False
        before = lease()
        token_before = status(db)["fence_token"]
        # the holder dies and its service is scaled to 0: the standby must take over
        docker("kill", main)
        scale(names.OPERATOR_SERVICE, 0)
        after = wait_for(
            lambda: (r := lease()).holder.startswith(standby[:12]) and r,
            60,
            "the standby to take the lease",
        )
        assert after.token > before.token
        wait_for(lambda: leader_metric(standby) == 1.0, 30, "standby leader metric 1")
        apply(declaration(db, members=target, durability="async"), tmp_path)
        s = wait_for(
            lambda: _carried_out(db, target, token_before), 240, f"{db} at {target} members"
        )
        assert s["fence_token"] == after.token
        assert lease().holder.startswith(standby[:12])
    finally:
        ensure_operator(operator)
        subprocess.run(["docker", "service", "rm", standby_service], capture_output=True)
    # the main service leads again (whichever container it runs now: other sessions may
    # redeploy the operator concurrently)
    wait_for(
        lambda: (c := container_of(names.OPERATOR_SERVICE)) and lease().holder.startswith(c[:12]),
        90,
        "the main operator to lead again",
    )


async def _deploy_standby(images: BuiltImages, service: str) -> None:
    """A second, unpublished operator service (host-mode 9650 allows one per node)."""
    async with SwarmClient() as swarm:
        await deploy_operator(swarm, images.operator, images.members, name=service, publish=False)
