"""Node faults in a lab: kill, pause, cut off (from every other node, or from the managers
only), and heal. Each acts on the node's container on the local engine or on its network
namespace; nothing inside the swarm is told."""

from __future__ import annotations

from enum import StrEnum

from shoal.lab.lifecycle import RunningNode, docker, lab_containers, wait_for_node
from shoal.lab.model import (
    LabError,
    NodeRole,
    heal_commands,
    nested_freezer,
    partition_commands,
)

# `iptables -D` removes one hook per call: a node partitioned twice has two.
MAX_HOOKS = 8


class NodeFault(StrEnum):
    KILL = "kill"
    PAUSE = "pause"
    PARTITION = "partition"  # from every other node
    PARTITION_MANAGERS = "partition-managers"  # from the manager nodes only


def find_node(name: str, nodes: list[RunningNode] | None = None) -> RunningNode:
    nodes = lab_containers() if nodes is None else nodes
    for running in nodes:
        if name in (running.node.name, str(running.node.index)):
            return running
    known = ", ".join(n.node.name for n in nodes) or "none (no lab is running)"
    raise LabError(f"no lab node {name!r}; nodes: {known}")


def _exec(node: RunningNode, command: list[str], check: bool = True) -> bool:
    result = docker("exec", node.node.name, *command, check=False, timeout=30)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(command)} on {node.node.name} failed: {result.stderr.strip()}")
    return result.returncode == 0


def inject(fault: NodeFault, name: str) -> RunningNode:
    nodes = lab_containers()
    target = find_node(name, nodes)
    match fault:
        case NodeFault.KILL:
            docker("kill", target.node.name)
            # Done when the node is down: a node with nested containers takes seconds to
            # exit, and a `heal` that found it still "running" would start nothing.
            docker("wait", target.node.name, timeout=120)
        case NodeFault.PAUSE:
            # The whole host stops: its containers first (their cgroup is not the node's),
            # then its engine.
            freeze_containers(target, frozen=True)
            docker("pause", target.node.name)
        case NodeFault.PARTITION | NodeFault.PARTITION_MANAGERS:
            peers = [
                n.address
                for n in nodes
                if n.node.index != target.node.index
                and n.address
                and (fault == NodeFault.PARTITION or n.node.role == NodeRole.MANAGER)
            ]
            if not peers:
                raise LabError(f"{target.node.name} has no peers to be cut off from")
            heal_network(target)
            for command in partition_commands(peers):
                _exec(target, command)
    return target


def freeze_containers(target: RunningNode, frozen: bool) -> None:
    """Freeze (or thaw) every container the node's engine runs, through the host's cgroup
    file system. Thawing a node with no such cgroup (none started yet) is a no-op."""
    path, on, off = nested_freezer(target.node.name)
    try:
        with open(path, "w") as f:
            f.write(on if frozen else off)
    except OSError as e:
        if frozen:
            raise LabError(f"cannot freeze the containers of {target.node.name}: {e}") from e


def heal_network(target: RunningNode) -> None:
    commands = heal_commands()
    for command in commands[:2]:  # unhook from INPUT and OUTPUT, as often as it was hooked
        for _ in range(MAX_HOOKS):
            if not _exec(target, command, check=False):
                break
    for command in commands[2:]:
        _exec(target, command, check=False)


def heal(name: str) -> RunningNode:
    """Undo any fault on the node: restart a killed one, unpause, remove the partition."""
    target = find_node(name)
    if target.state == "paused":
        docker("unpause", target.node.name)
    elif target.state != "running":
        docker("start", target.node.name)
        # A restart that does not bring the engine back is a failed heal, not a healed node.
        wait_for_node(target.node)
    freeze_containers(target, frozen=False)
    heal_network(find_node(name))
    return find_node(name)
