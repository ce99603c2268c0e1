"""`SwarmClient`'s list reads on the real engine: an answer Docker sends again byte for byte
is not decoded again (swarm/client.py: `_list_read`), and a changed one always is: a task
that starts, then dies, shows in the very next read."""

from __future__ import annotations

import secrets

import pytest

from shoal import names
from shoal.swarm.client import SwarmClient, poll

pytestmark = pytest.mark.integration


async def test_task_reads_follow_every_change() -> None:
    name = f"shoal-test-reads-{secrets.token_hex(3)}"
    spec = {
        "Name": name,
        "Labels": {"shoal.test": "swarm-client"},
        "TaskTemplate": {
            "ContainerSpec": {"Image": names.IMAGE_BASE, "Command": ["sleep", "600"]},
            "RestartPolicy": {"Condition": "none"},
        },
        "Mode": {"Replicated": {"Replicas": 1}},
    }
    async with SwarmClient() as swarm:
        service_id = await swarm.create_service(spec)
        try:

            async def running() -> bool:
                tasks = await swarm.tasks(service=name)
                return any(t["Status"]["State"] == "running" for t in tasks)

            assert await poll(running, 60, every=0.2)
            first = await swarm.tasks(service=name)
            again = await swarm.tasks(service=name)
            assert again == first and again is not first
            (task,) = first
            container = task["Status"]["ContainerStatus"]["ContainerID"]
            await swarm.kill_container(container)

            async def dead() -> bool:
                (t,) = await swarm.tasks(service=name)
                return bool(t["Status"]["State"] != "running")

            # The first read after the death already decodes the new answer: poll() would
            # time out if a stale decoding were returned for the changed bytes.
            assert await poll(dead, 30, every=0.1)
            assert (await swarm.tasks(service=name))[0]["ID"] == task["ID"]
        finally:
            await swarm.remove_service(service_id)
