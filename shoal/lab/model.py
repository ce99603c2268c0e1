"""The lab's shape, as pure data: its nodes, the `docker run` of each, the partition rules.

A lab is N Docker-in-Docker containers on the local engine, joined into one swarm. The
settings that work without `--privileged` on these machines (surveyed first) are: all
capabilities but SYS_RESOURCE, no seccomp/AppArmor confinement, the host's cgroup namespace
with /sys/fs/cgroup mounted, and a cgroup parent of its own per inner engine. Each node's
/var/lib/docker is a named volume (lab infrastructure, not database data): inside a
container without one the storage driver falls back to `vfs`, a full copy per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

LAB_LABEL = "shoal.lab"
LAB_NODE_LABEL = "shoal.lab.node"
LAB_NETWORK = "shoal-lab"
# Inside a node, Docker's own bridges take 172.17/16 and 172.18/16 and overlays 10.0.0.0/8:
# the lab network stays clear of all of them.
LAB_SUBNET = "192.168.231.0/24"
NODE_PREFIX = "shoal-lab-"
SOCKET_ROOT = Path("/run/shoal-lab")
MAX_NODES = 9


class NodeRole(StrEnum):
    MANAGER = "manager"
    WORKER = "worker"


class LabError(RuntimeError):
    """A lab operation failed; the message says which and why."""


@dataclass(frozen=True)
class LabNode:
    index: int  # 1-based
    role: NodeRole

    @property
    def name(self) -> str:
        return f"{NODE_PREFIX}{self.index}"

    @property
    def volume(self) -> str:
        return f"{self.name}-docker"

    @property
    def socket_dir(self) -> Path:
        return SOCKET_ROOT / self.name

    @property
    def docker_host(self) -> str:
        return node_docker_host(self.name)


def node_docker_host(hostname: str) -> str:
    """The DOCKER_HOST of a lab node, by its name (which is also its Swarm hostname)."""
    return f"unix://{SOCKET_ROOT / hostname / 'docker.sock'}"


def lab_nodes(nodes: int, managers: int) -> list[LabNode]:
    """Nodes 1..managers are managers, the rest workers. Raft wants an odd manager count."""
    problems = validate_shape(nodes, managers)
    if problems:
        raise LabError("; ".join(problems))
    return [
        LabNode(i, NodeRole.MANAGER if i <= managers else NodeRole.WORKER)
        for i in range(1, nodes + 1)
    ]


def validate_shape(nodes: int, managers: int) -> list[str]:
    problems: list[str] = []
    if not 1 <= nodes <= MAX_NODES:
        problems.append(f"--nodes: must be between 1 and {MAX_NODES}, got {nodes}")
    if not 1 <= managers <= max(nodes, 1):
        problems.append(f"--managers: must be between 1 and --nodes ({nodes}), got {managers}")
    elif managers % 2 == 0:
        problems.append(
            f"--managers: must be odd (Raft needs a majority of managers), got {managers}"
        )
    return problems


def node_run_args(node: LabNode, image: str) -> list[str]:
    """`docker run` arguments (after `docker`) that start one lab node."""
    return [
        "run",
        "--detach",
        "--name",
        node.name,
        "--hostname",
        node.name,
        "--network",
        LAB_NETWORK,
        "--label",
        f"{LAB_LABEL}=true",
        "--label",
        f"{LAB_NODE_LABEL}={node.index}",
        "--label",
        f"{LAB_LABEL}.role={node.role.value}",
        "--cap-add=ALL",
        "--cap-drop=SYS_RESOURCE",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "--security-opt",
        "systempaths=unconfined",
        "--cgroupns",
        "host",
        "--volume",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--volume",
        f"{node.volume}:/var/lib/docker",
        "--volume",
        f"{node.socket_dir}:/run/shoal-lab",
        "--env",
        f"SHOAL_LAB_NODE={node.name}",
        "--env",
        f"SHOAL_LAB_INSECURE={LAB_SUBNET}",
        image,
    ]


def nested_freezer(node_name: str, root: str = "/sys/fs/cgroup") -> tuple[str, str, str]:
    """(file, frozen value, thawed value) of the cgroup that holds every container a node's
    inner engine runs (its cgroup parent is the node's name, outside the node container's
    own cgroup): `docker pause` of the node alone freezes its dockerd, not its containers.
    cgroup v1 has a freezer hierarchy; v2 a `cgroup.freeze` file per group."""
    v1 = f"{root}/freezer/{node_name}/freezer.state"
    return (
        (v1, "FROZEN", "THAWED")
        if root_has_v1(root)
        else (f"{root}/{node_name}/cgroup.freeze", "1", "0")
    )


def root_has_v1(root: str) -> bool:
    import os

    return os.path.isdir(f"{root}/freezer")


PARTITION_CHAIN = "SHOAL-LAB-PARTITION"


def partition_commands(peers: list[str]) -> list[list[str]]:
    """iptables commands, run inside a node, that drop everything to and from `peers`
    (addresses on the lab network): Swarm's gossip and Raft, overlay (VXLAN) traffic, all of
    it. Its own chain, hooked first into INPUT and OUTPUT, so healing is one flush."""
    commands = [
        ["iptables", "-w", "-N", PARTITION_CHAIN],
        ["iptables", "-w", "-F", PARTITION_CHAIN],
    ]
    for peer in sorted(peers):
        commands.append(["iptables", "-w", "-A", PARTITION_CHAIN, "-s", peer, "-j", "DROP"])
        commands.append(["iptables", "-w", "-A", PARTITION_CHAIN, "-d", peer, "-j", "DROP"])
    for hook in ("INPUT", "OUTPUT"):
        commands.append(["iptables", "-w", "-I", hook, "1", "-j", PARTITION_CHAIN])
    return commands


def heal_commands() -> list[list[str]]:
    """Undo `partition_commands` (each may fail harmlessly when nothing was cut)."""
    return [
        ["iptables", "-w", "-D", "INPUT", "-j", PARTITION_CHAIN],
        ["iptables", "-w", "-D", "OUTPUT", "-j", PARTITION_CHAIN],
        ["iptables", "-w", "-F", PARTITION_CHAIN],
        ["iptables", "-w", "-X", PARTITION_CHAIN],
    ]
