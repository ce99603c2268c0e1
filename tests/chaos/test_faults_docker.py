"""faults.py against real throwaway Swarm services (base image running `sleep`), with a fake
database status on a fake anchor service. Needs a Docker engine in swarm mode only."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from shoal import names
from shoal.chaos import dockerapi
from shoal.chaos.fault_names import parse_fault
from shoal.chaos.faults import FaultRegistry
from shoal.swarm.client import SwarmClient

pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,
]


@dataclass
class FakeDb:
    name: str
    members: list[str]


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def fake_db() -> object:
    db = "chaost" + uuid.uuid4().hex[:6]
    labels = ["--label", f"{names.LABEL_DATABASE}={db}", "--label", "shoal.chaos.test=1"]
    net = names.database_network(db)
    _docker("network", "create", "-d", "overlay", "--attachable", *labels, net)
    members = [names.member_service(db, i) for i in range(2)]
    status = {
        "name": db,
        "engine": "postgres",
        "state": "Healthy",
        "primary": members[0],
        "network": net,
        "members": [
            {"name": members[0], "role": "primary", "state": "running"},
            {"name": members[1], "role": "replica", "state": "running"},
        ],
    }
    try:
        _docker(
            "service",
            "create",
            "-d",
            "--name",
            names.anchor_service(db),
            "--replicas",
            "0",
            *labels,
            "--label",
            f"{names.LABEL_STATUS}={json.dumps(status)}",
            names.IMAGE_BASE,
            "sleep",
            "infinity",
        )
        for m in members:
            _docker(
                "service",
                "create",
                "-d",
                "--name",
                m,
                "--network",
                net,
                *labels,
                "--restart-delay",
                "0s",
                names.IMAGE_BASE,
                "sleep",
                "infinity",
            )
        yield FakeDb(db, members)
    finally:
        for s in [names.anchor_service(db), *members]:
            subprocess.run(["docker", "service", "rm", s], capture_output=True)
        for _ in range(30):
            rm = subprocess.run(["docker", "network", "rm", net], capture_output=True)
            if rm.returncode == 0:
                break
            time.sleep(1)


@pytest.fixture
async def swarm() -> AsyncIterator[SwarmClient]:
    async with SwarmClient() as client:
        yield client


async def _wait_for(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 60) -> None:
    """Poll `check` until it holds; fail naming `what` when it never did."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {seconds:.0f}s")
        await asyncio.sleep(0.25)


async def _running(swarm: SwarmClient, service: str) -> str:
    found: list[str] = []

    async def runs() -> bool:
        cid = await dockerapi.running_container(swarm, service)
        found[:] = [cid] if cid else []
        return bool(cid)

    await _wait_for(runs, f"{service} has a running container")
    return found[0]


async def _state(swarm: SwarmClient, cid: str) -> dict[str, object]:
    info = await swarm.container(cid)
    assert info is not None, f"no container {cid}"
    state: dict[str, object] = info["State"]
    return state


async def _task_state(swarm: SwarmClient, service: str, cid: str) -> str | None:
    """Swarm's state of the task whose container is `cid` (None: no such task)."""
    tasks = await swarm.tasks(service=service)
    for t in tasks:
        status = t.get("Status", {})
        if status.get("ContainerStatus", {}).get("ContainerID") == cid:
            return str(status.get("State"))
    return None


async def _rules(swarm: SwarmClient, cid: str) -> str:
    _, out = await dockerapi.run_once(
        swarm,
        name=f"shoal-chaos-test-{uuid.uuid4().hex[:6]}",
        image=names.IMAGE_BASE,
        cmd=["iptables", "-S"],
        labels={"shoal.chaos.test": "1"},
        network_mode=f"container:{cid}",
        cap_add=["NET_ADMIN"],
    )
    return out


async def _ping(swarm: SwarmClient, db: FakeDb, member: str) -> int:
    """ping's exit code for the member's task, from a client container on the database's
    network: 0 answered, 1 no answer at all (anything else: the check itself failed)."""
    code, out = await dockerapi.run_once(
        swarm,
        name=f"shoal-chaos-test-{uuid.uuid4().hex[:6]}",
        image=names.IMAGE_BASE,
        cmd=["ping", "-c", "3", "-i", "0.3", "-W", "1", f"tasks.{member}"],
        labels={"shoal.chaos.test": "1"},
        network_mode=names.database_network(db.name),
    )
    assert code in (0, 1), f"ping {member} from the network failed to run: {out[-300:]}"
    return code


async def test_pause_and_undo(fake_db: FakeDb, swarm: SwarmClient) -> None:
    cid = await _running(swarm, fake_db.members[0])
    reg = FaultRegistry(swarm, fake_db.name, "t" + uuid.uuid4().hex[:6])
    fault = await reg.inject(parse_fault("pause-primary"), random.Random(1))
    assert fault.target.name == fake_db.members[0] and fault.target.container_id == cid
    assert (await _state(swarm, cid))["Paused"] is True
    assert await reg.undo_all() == []
    assert (await _state(swarm, cid))["Paused"] is False
    assert reg.active == []


async def test_partition_and_loss_rules_are_removed(fake_db: FakeDb, swarm: SwarmClient) -> None:
    member = fake_db.members[1]
    cid = await _running(swarm, member)

    async def answers() -> bool:
        return await _ping(swarm, fake_db, member) == 0

    await _wait_for(answers, f"{member} answers a client on the network before the partition")
    reg = FaultRegistry(swarm, fake_db.name, "t" + uuid.uuid4().hex[:6])
    fault = await reg.inject(parse_fault("partition-replica"), random.Random(1))
    assert fault.target.container_id == cid
    await reg.inject(parse_fault("loss-replica"), random.Random(1))
    rules = await _rules(swarm, cid)
    assert "-A INPUT ! -i lo -j DROP" in rules and "statistic" in rules
    assert await _ping(swarm, fake_db, member) == 1, f"{member} still answers, partitioned"
    assert await reg.undo_all() == []
    assert "DROP" not in await _rules(swarm, cid)
    assert await dockerapi.list_run_containers(swarm, reg.run_id) == []
    await _wait_for(answers, f"{member} answers again once the partition is undone")


async def test_kill_replica_is_replaced(fake_db: FakeDb, swarm: SwarmClient) -> None:
    member = fake_db.members[1]
    cid = await _running(swarm, member)
    reg = FaultRegistry(swarm, fake_db.name, "t" + uuid.uuid4().hex[:6])
    fault = await reg.inject(parse_fault("kill-replica"), random.Random(1))
    assert fault.target.container_id == cid

    async def killed() -> bool:  # SIGKILL: exit code 128 + 9
        state = await _state(swarm, cid)
        return state["Running"] is False and state["ExitCode"] == 137

    async def task_dead() -> bool:
        return await _task_state(swarm, member, cid) not in (None, "running")

    async def replaced() -> bool:
        return await dockerapi.running_container(swarm, member) not in (None, cid)

    await _wait_for(killed, f"the killed container {cid[:12]} exited by SIGKILL")
    await _wait_for(task_dead, f"Swarm reports the task of {cid[:12]} dead")
    assert await reg.undo_all() == []
    await _wait_for(replaced, f"Swarm runs a new container for {member}")


async def test_cancelled_run_is_undone(fake_db: FakeDb, swarm: SwarmClient) -> None:
    """A run cancelled (Ctrl-C) while a fault is active leaves nothing behind."""
    cid = await _running(swarm, fake_db.members[0])
    reg = FaultRegistry(swarm, fake_db.name, "t" + uuid.uuid4().hex[:6])

    async def run() -> None:
        await reg.inject(parse_fault("pause-primary"), random.Random(1))
        await reg.inject(parse_fault("partition-primary"), random.Random(1))
        await asyncio.sleep(60)

    task = asyncio.create_task(run())
    for _ in range(100):  # both faults in effect, as Docker reports them
        if (
            len(reg.active) == 2
            and (await _state(swarm, cid))["Paused"] is True
            and "-A INPUT ! -i lo -j DROP" in await _rules(swarm, cid)
        ):
            break
        await asyncio.sleep(0.2)
    else:
        task.cancel()
        raise AssertionError("the two faults were never both in effect")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await reg.undo_all() == []
    assert (await _state(swarm, cid))["Paused"] is False
    assert "DROP" not in await _rules(swarm, cid)
    assert await dockerapi.list_run_containers(swarm, reg.run_id) == []


async def test_unknown_target_fails_cleanly(swarm: SwarmClient) -> None:
    reg = FaultRegistry(swarm, "nosuchdb" + uuid.uuid4().hex[:4], "t1")
    with pytest.raises(dockerapi.ChaosDockerError):
        await reg.inject(parse_fault("kill-primary"), random.Random(1))
    assert reg.active == []
