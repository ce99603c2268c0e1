"""The lab's shape: which nodes, how each is started, how a partition is cut and healed."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from shoal.lab.model import (
    LAB_SUBNET,
    PARTITION_CHAIN,
    LabError,
    LabNode,
    NodeRole,
    heal_commands,
    lab_nodes,
    node_run_args,
    partition_commands,
    validate_shape,
)


def test_the_first_nodes_are_the_managers() -> None:
    nodes = lab_nodes(5, 3)
    assert [n.role for n in nodes] == [NodeRole.MANAGER] * 3 + [NodeRole.WORKER] * 2
    assert [n.name for n in nodes] == [f"shoal-lab-{i}" for i in range(1, 6)]


@pytest.mark.parametrize(
    ("nodes", "managers", "words"),
    [
        (0, 1, ["--nodes"]),
        (10, 3, ["--nodes"]),
        (4, 2, ["--managers", "odd"]),
        (3, 5, ["--managers", "between"]),
        (3, 0, ["--managers"]),
        (0, 0, ["--nodes", "--managers"]),
    ],
)
def test_a_bad_shape_is_refused_with_every_problem_named(
    nodes: int, managers: int, words: list[str]
) -> None:
    problems = validate_shape(nodes, managers)
    text = " ".join(problems)
    for word in words:
        assert word in text
    with pytest.raises(LabError):
        lab_nodes(nodes, managers)


@pytest.mark.parametrize(("nodes", "managers"), [(1, 1), (3, 1), (4, 3), (9, 9), (9, 5)])
def test_good_shapes_are_accepted(nodes: int, managers: int) -> None:
    assert validate_shape(nodes, managers) == []
    assert len(lab_nodes(nodes, managers)) == nodes


def test_a_node_runs_unprivileged_with_its_own_engine_state_and_socket() -> None:
    node = LabNode(2, NodeRole.WORKER)
    args = node_run_args(node, "shoal/lab-node:abc")
    assert "--privileged" not in args
    assert args[-1] == "shoal/lab-node:abc"
    pairs = set(itertools.pairwise(args))
    assert ("--volume", "shoal-lab-2-docker:/var/lib/docker") in pairs
    assert ("--volume", "/run/shoal-lab/shoal-lab-2:/run/shoal-lab") in pairs
    assert ("--cgroupns", "host") in pairs
    assert ("--env", "SHOAL_LAB_NODE=shoal-lab-2") in pairs
    assert ("--env", f"SHOAL_LAB_INSECURE={LAB_SUBNET}") in pairs
    assert ("--label", "shoal.lab.role=worker") in pairs
    assert node.docker_host == "unix:///run/shoal-lab/shoal-lab-2/docker.sock"


def test_a_partition_drops_both_directions_for_every_peer_and_heals_in_its_own_chain() -> None:
    commands = partition_commands(["192.168.231.3", "192.168.231.2"])
    drops = [c for c in commands if "-A" in c]
    assert len(drops) == 4
    for peer in ("192.168.231.2", "192.168.231.3"):
        assert ["iptables", "-w", "-A", PARTITION_CHAIN, "-s", peer, "-j", "DROP"] in drops
        assert ["iptables", "-w", "-A", PARTITION_CHAIN, "-d", peer, "-j", "DROP"] in drops
    hooks = [c for c in commands if "-I" in c]
    assert {c[3] for c in hooks} == {"INPUT", "OUTPUT"}
    # The chain is emptied before it is filled: a second partition does not stack rules.
    assert commands.index(["iptables", "-w", "-F", PARTITION_CHAIN]) < commands.index(drops[0])
    healing = heal_commands()
    assert {tuple(c[2:4]) for c in healing[:2]} == {("-D", "INPUT"), ("-D", "OUTPUT")}
    assert healing[-1] == ["iptables", "-w", "-X", PARTITION_CHAIN]


def test_a_paused_node_freezes_the_cgroup_of_its_containers(tmp_path: Path) -> None:
    """The inner engine's containers live under a cgroup named after the node, outside the
    node container's own: pausing the node must freeze that one too (cgroup v1 or v2)."""
    from shoal.lab.model import nested_freezer

    assert nested_freezer("shoal-lab-2", str(tmp_path)) == (
        f"{tmp_path}/shoal-lab-2/cgroup.freeze",
        "1",
        "0",
    )
    (tmp_path / "freezer").mkdir()
    assert nested_freezer("shoal-lab-2", str(tmp_path)) == (
        f"{tmp_path}/freezer/shoal-lab-2/freezer.state",
        "FROZEN",
        "THAWED",
    )
