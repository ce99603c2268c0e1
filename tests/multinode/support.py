"""Helpers of the multi-node tests: commands on one lab node, where members run."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shoal import names
from shoal.lab.model import node_docker_host as node_host
from tests.integration.support import Writer, credentials, shoal, status, wait_for

__all__ = [
    "healthy_spread",
    "ids_on",
    "lab_nodes",
    "manager_but",
    "member_nodes",
    "new_primary",
    "node_host",
    "node_ready",
    "on_node",
    "primary_and_node",
    "swarm_answers",
    "writer_of",
    "writers_on_both_sides",
    "writes_after",
    "writing",
]


def on_node(hostname: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": node_host(hostname)}
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def lab_nodes() -> list[dict[str, Any]]:
    proc = shoal("lab", "ls", "--json")
    assert proc.returncode == 0, proc.stderr
    nodes: list[dict[str, Any]] = json.loads(proc.stdout)
    return nodes


def manager_but(node: str) -> str:
    """A manager of the lab other than `node`."""
    return str(next(n["name"] for n in lab_nodes() if n["role"] == "manager" and n["name"] != node))


def member_nodes(st: dict[str, Any]) -> dict[str, str | None]:
    return {m["name"]: m.get("node") for m in st.get("members", [])}


def primary_and_node(st: dict[str, Any]) -> tuple[str, str]:
    """The primary in the status `st` and the node it runs on."""
    primary = st["primary"]
    node = member_nodes(st)[primary]
    assert node is not None, f"{primary} runs on no node: {st}"
    return primary, node


def ids_on(st: dict[str, Any], member: str, table: str) -> set[int] | None:
    """The ids in `table` on `member`, read in its container on its own node."""
    host = member_nodes(st).get(member)
    if not host:
        return None
    cid = on_node(host, "ps", "-q", "-f", f"label=com.docker.swarm.service.name={member}")
    if cid.returncode != 0 or not cid.stdout.split():
        return None
    proc = on_node(
        host, "exec", "-u", "postgres", cid.stdout.split()[0], "psql", "-h",
        "/var/run/postgresql", "-d", names.APP_DATABASE, "-Atqc", f"SELECT id FROM {table}",
    )  # fmt: skip
    if proc.returncode != 0:
        return None
    return {int(x) for x in proc.stdout.split()}


def node_ready(hostname: str) -> bool:
    """Swarm reports the lab node `hostname` Ready (and its engine answers)."""
    proc = subprocess.run(
        ["docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc.returncode == 0 and f"{hostname} Ready" in proc.stdout.splitlines()


def swarm_answers() -> None:
    """A node healed by a test before may have started a Raft election: wait it out."""
    wait_for(lambda: shoal("get").returncode == 0, 180, "the lab's swarm to answer")


def healthy_spread(name: str, members: int, avoid: str | None = None) -> dict[str, Any]:
    """Healthy, every member running on a node of its own (and none on `avoid`)."""

    def check() -> dict[str, Any] | None:
        st = status(name)
        ms = st.get("members", [])
        hosts = [m.get("node") for m in ms]
        ok = (
            st.get("state") == "Healthy"
            and len(ms) == members
            and all(m.get("up") for m in ms)
            and None not in hosts
            and len(set(hosts)) == members
            and avoid not in hosts
        )
        return st if ok else None

    return wait_for(  # type: ignore[no-any-return]
        check, 600, f"{name} Healthy on {members} distinct nodes; now {status(name)}", every=2
    )


def new_primary(name: str, old: str, what: str, timeout: float = 300, every: float = 1) -> Any:
    """The status of `name` once a member other than `old` is its primary."""
    return wait_for(
        lambda: (s := status(name)).get("primary") not in (None, old) and s,
        timeout,
        what,
        every=every,
    )


def writer_of(name: str, image: str, table: str) -> Writer:
    """A writer of `name` into `table`, started where DOCKER_HOST points now."""
    creds = credentials(name)
    return Writer(name, image, creds["uri"], table, 600, ca=creds["ca"])


def writing(writer: Writer) -> None:
    """Wait until `writer` has 30 writes acknowledged."""
    wait_for(lambda: len(writer.so_far()) >= 30, 120, f"writes; {writer.errors[-3:]}")


def writes_after(writer: Writer, before: int, timeout: float, what: str) -> None:
    """Wait until `writer` has 30 writes acknowledged with an id above `before`."""
    wait_for(
        lambda: len([i for i in writer.so_far() if i > before]) >= 30,
        timeout,
        f"{what}; errors {writer.errors[-3:]}",
    )


@contextmanager
def writers_on_both_sides(
    name: str, image: str, primary_node: str, beside_cancel_after: float | None = None
) -> Iterator[tuple[Writer, Writer]]:
    """Two writers of `name`, both writing before this yields: `beside` runs on the
    primary's node (it stays on the primary's side of a cut; table `beside`), `far` on a
    manager elsewhere (table `far`). Both are killed on the way out; DOCKER_HOST ends at
    that manager."""
    manager = manager_but(primary_node)
    creds = credentials(name)
    uri, ca = creds["uri"], creds["ca"]
    os.environ["DOCKER_HOST"] = node_host(primary_node)
    beside = Writer(name, image, uri, "beside", 600, cancel_after=beside_cancel_after, ca=ca)
    os.environ["DOCKER_HOST"] = node_host(manager)
    far: Writer | None = None
    try:
        far = Writer(name, image, uri, "far", 600, ca=ca)
        for w in (beside, far):
            writing(w)
        yield beside, far
    finally:
        if far is not None:
            far.kill()
        os.environ["DOCKER_HOST"] = node_host(primary_node)
        beside.kill()
        os.environ["DOCKER_HOST"] = node_host(manager)
