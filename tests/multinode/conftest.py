"""Multi-node fixtures: a lab of Docker-in-Docker Swarm nodes on this machine (`shoal lab`),
the operator deployed on it, and every `shoal`/`docker` command of the tests pointed at it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from shoal.platform.images import BuiltImages
from tests.integration.conftest import platform, unique_name  # noqa: F401  (fixtures)
from tests.integration.support import shoal, wait_for

LAB_NODES = 4  # three members on distinct nodes, and one node to re-create a lost one on
LAB_MANAGERS = 3  # the operator survives losing its node (Raft keeps a majority of 3)


def _say(message: str) -> None:
    print(f"[lab] {message}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def lab(platform: BuiltImages) -> Iterator[BuiltImages]:  # noqa: F811
    """`shoal lab up` (kept from an earlier run when its shape fits), the operator on it,
    DOCKER_HOST pointing at it; `shoal lab down` at the end."""
    saved = os.environ.pop("DOCKER_HOST", None)
    up = shoal("lab", "up", "--nodes", str(LAB_NODES), "--managers", str(LAB_MANAGERS),
               timeout=1800)  # fmt: skip
    _say(up.stderr[-2000:])
    assert up.returncode == 0, up.stderr
    env = shoal("lab", "env")
    assert env.returncode == 0, env.stderr
    os.environ["DOCKER_HOST"] = env.stdout.strip().removeprefix("export DOCKER_HOST=")
    try:
        # A node healed by an earlier run may have started a Raft election: wait it out.
        wait_for(lambda: shoal("get").returncode == 0, 180, "the lab's swarm to answer shoal get")
        deployed = shoal("operator", "deploy", timeout=900)
        assert deployed.returncode == 0, deployed.stderr
        yield platform
    finally:
        os.environ.pop("DOCKER_HOST", None)
        if saved is not None:
            os.environ["DOCKER_HOST"] = saved
        if os.environ.get("SHOAL_LAB_KEEP") != "1":  # keep it for the next run when asked
            down = shoal("lab", "down", timeout=600)
            _say(down.stdout + down.stderr)
