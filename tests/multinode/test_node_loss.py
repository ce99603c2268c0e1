"""Losing a host loses nothing: on a lab of four real Swarm nodes (three managers), the
members of one database run on distinct nodes; killing the primary's node fails over with
every acknowledged write kept, the lost member is re-created on the spare node and
re-seeded, and the operator (wherever it ran) keeps acting."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from shoal import names
from shoal.lab.model import SOCKET_ROOT
from shoal.platform.images import BuiltImages
from tests.integration.support import (
    Writer,
    apply,
    credentials,
    declaration,
    shoal,
    status,
    wait_for,
)

pytestmark = pytest.mark.integration


def node_host(hostname: str) -> str:
    return f"unix://{SOCKET_ROOT / hostname / 'docker.sock'}"


def on_node(hostname: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": node_host(hostname)}
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def lab_nodes() -> list[dict[str, Any]]:
    import json

    proc = shoal("lab", "ls", "--json")
    assert proc.returncode == 0, proc.stderr
    nodes: list[dict[str, Any]] = json.loads(proc.stdout)
    return nodes


def member_nodes(st: dict[str, Any]) -> dict[str, str | None]:
    return {m["name"]: m.get("node") for m in st.get("members", [])}


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


def test_killing_the_primarys_node_fails_over_and_loses_no_acknowledged_write(
    lab: BuiltImages, unique_name: str, tmp_path: Any
) -> None:
    name = unique_name
    apply(declaration(name, members=3, unreachable=5), tmp_path)
    try:
        st = healthy_spread(name, 3)
        old = st["primary"]
        victim = member_nodes(st)[old]
        assert victim is not None
        nodes = lab_nodes()
        # The client and this test's CLI talk to a manager that survives the fault.
        client_host = next(
            n["name"] for n in nodes if n["role"] == "manager" and n["name"] != victim
        )
        os.environ["DOCKER_HOST"] = node_host(client_host)
        writer = Writer(name, lab.operator, credentials(name)["uri"], "acked", 600)
        try:
            wait_for(lambda: len(writer.so_far()) >= 30, 120, f"writes; {writer.errors[-3:]}")
            before = max(writer.so_far())
            killed = shoal("lab", "fault", "kill", victim)
            assert killed.returncode == 0, killed.stderr
            st = wait_for(
                lambda: (s := status(name)).get("primary") not in (None, old) and s,
                300,
                "a standby on another node to be promoted",
                every=1,
            )
            new = st["primary"]
            assert member_nodes(st)[new] != victim
            wait_for(
                lambda: len([i for i in writer.so_far() if i > before]) >= 30,
                180,
                f"writes to resume on the new primary; errors {writer.errors[-3:]}",
            )
            # The lost member comes back on the spare node, empty, and is re-seeded.
            st = healthy_spread(name, 3, avoid=victim)
        finally:
            writer.kill()
            acked = writer.acknowledged(timeout=60)
        assert {i for i in acked if i > before}, "nothing acknowledged after the node died"
        assert st["primary"] == new
        assert st["failovers"] >= 1
        assert member_nodes(st)[old] not in (None, victim)

        def converged() -> bool:
            now = status(name)
            sets = [ids_on(now, m, "acked") for m in member_nodes(now)]
            return all(s is not None and acked <= s for s in sets)

        wait_for(converged, 180, "every member to hold every acknowledged write", every=2)
        missing = acked - (ids_on(status(name), new, "acked") or set())
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
    finally:
        healed = shoal("lab", "heal", victim) if "victim" in locals() else None
        if healed is not None and healed.returncode != 0:
            print(healed.stderr)
        shoal("delete", name, "--wait", timeout=300)


def test_too_few_nodes_for_the_members_is_degraded_never_silently_stacked(
    lab: BuiltImages, unique_name: str, tmp_path: Any
) -> None:
    name = unique_name
    wait_for(
        lambda: all(n["state"] == "running" for n in lab_nodes()), 120, "every lab node to run"
    )
    apply(declaration(name, members=5), tmp_path)  # five members, four nodes
    try:

        def degraded_over_all_nodes() -> dict[str, Any] | None:
            st = status(name)
            hosts = {m.get("node") for m in st.get("members", [])}
            ok = (
                st.get("state") == "Degraded"
                and st.get("members_ready") == 5
                and "4 eligible nodes for 5 members" in st.get("message", "")
                and len(hosts - {None}) == 4
            )
            return st if ok else None

        # Five members run; two share a node, and the status says so.
        wait_for(degraded_over_all_nodes, 600, f"Degraded on 4 nodes; now {status(name)}", every=2)
    finally:
        shoal("delete", name, "--wait", timeout=300)
