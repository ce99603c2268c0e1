"""`shoal lab up / down / env`: a multi-node swarm of Docker-in-Docker nodes on this machine.

Everything here talks to the *local* engine (the lab's host) with the `docker` command and
to each node through its own socket. DOCKER_HOST may point at the lab itself, so the `shoal
lab` commands drop it before calling in here (`shoal/cli/lab.py`); `host_env` drops it again
for every `docker` this module runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tenacity import retry, retry_if_exception_message, stop_after_delay, wait_fixed

from shoal.lab.model import (
    LAB_LABEL,
    LAB_NETWORK,
    LAB_NODE_LABEL,
    LAB_SUBNET,
    SOCKET_ROOT,
    LabError,
    LabNode,
    NodeRole,
    lab_nodes,
    node_run_args,
)
from shoal.platform.docker_cli import Context, docker_build, image_exists

Progress = Callable[[str], None]

NODE_START_TIMEOUT = 90.0
# How long `lab up` waits for the lab's managers to elect a Raft leader (a node just healed).
LEADER_WAIT = 90.0
IMAGE_DIR = Path(__file__).resolve().parent / "image"


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def host_env() -> dict[str, str]:
    """The environment for `docker` against the local engine, whatever DOCKER_HOST says."""
    env = dict(os.environ)
    env.pop("DOCKER_HOST", None)
    env.pop("DOCKER_CONTEXT", None)
    return env


def docker(
    *args: str,
    host: str | None = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `docker ARGS` against the local engine, or against a node when `host` is given."""
    env = host_env()
    if host is not None:
        env["DOCKER_HOST"] = host
    try:
        result = subprocess.run(
            ["docker", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`docker {' '.join(args[:3])}` did not finish in {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        raise LabError(f"`docker {' '.join(args[:3])}` failed: {result.stderr.strip()}")
    return result


def node_image_tag(base: str) -> str:
    context = node_context(base)
    return f"shoal/lab-node:{context.digest()}"


def node_context(base: str) -> Context:
    files = {p.name: p for p in sorted(IMAGE_DIR.iterdir()) if p.is_file()}
    return Context(files, {}, {"BASE": base})


def build_node_image(base: str, progress: Progress | None = None) -> str:
    tag = node_image_tag(base)
    if not image_exists(tag):
        _say(progress, f"building {tag}")
        docker_build(node_context(base), [tag], no_cache=False, output=None)
    return tag


@dataclass(frozen=True)
class RunningNode:
    node: LabNode
    address: str  # on the lab network
    state: str  # the container's state: running, paused, exited, ...

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.node.name,
            "role": self.node.role.value,
            "address": self.address,
            "state": self.state,
            "docker_host": self.node.docker_host,
        }


def lab_containers() -> list[RunningNode]:
    """The lab's nodes as the local engine sees them, by index."""
    ids = docker("ps", "-aq", "--filter", f"label={LAB_LABEL}=true").stdout.split()
    if not ids:
        return []
    found: list[RunningNode] = []
    for item in json.loads(docker("inspect", *ids).stdout):
        labels = item["Config"]["Labels"] or {}
        index = int(labels.get(LAB_NODE_LABEL, "0"))
        role = NodeRole(labels.get(f"{LAB_LABEL}.role", NodeRole.WORKER.value))
        networks = item["NetworkSettings"]["Networks"] or {}
        address = str((networks.get(LAB_NETWORK) or {}).get("IPAddress", ""))
        state = str(item["State"]["Status"])
        found.append(RunningNode(LabNode(index, role), address, state))
    return sorted(found, key=lambda n: n.node.index)


def _ensure_network() -> None:
    if docker("network", "inspect", LAB_NETWORK, check=False).returncode == 0:
        return
    docker(
        "network", "create", "--driver", "bridge", "--subnet", LAB_SUBNET,
        "--label", f"{LAB_LABEL}=true", LAB_NETWORK,
    )  # fmt: skip


def wait_for_node(node: LabNode, timeout: float = NODE_START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = docker("version", "--format", "{{.Server.Version}}", host=node.docker_host,
                        check=False, timeout=10)  # fmt: skip
        if result.returncode == 0:
            return
        time.sleep(0.5)
    logs = docker("logs", "--tail", "20", node.name, check=False).stderr
    raise LabError(f"{node.name}'s Docker engine did not answer in {timeout:.0f} s:\n{logs}")


def load_images(nodes: list[LabNode], images: list[str], progress: Progress | None = None) -> None:
    """Copy into each node the images it lacks or has in another version: the lab has no
    registry to pull from, and Swarm uses a node's local image when none answers. Compared
    by image id, not by tag: an alias tag (the operator's `shoal/operator:0.1.0`, each
    member image's) moves to each new build, and a node keeping the old one would run the
    code before.

    The images are saved once per distinct set a node lacks (`docker save` of the ~700 MB
    is most of the cost) and loaded into the nodes that lack it at the same time."""
    local = {i: image_id(i) for i in set(images)}
    missing = sorted(i for i, found in local.items() if found is None)
    if missing:
        raise LabError(f"images missing on the local engine: {', '.join(missing)}")
    wanted: dict[tuple[str, ...], list[LabNode]] = {}
    for node in nodes:
        lacking = tuple(i for i in images if image_id(i, node.docker_host) != local[i])
        if lacking:
            wanted.setdefault(lacking, []).append(node)
    for lacking, into in wanted.items():
        _say(progress, f"loading {len(lacking)} image(s) into {', '.join(n.name for n in into)}")
        with tempfile.TemporaryDirectory(prefix="shoal-lab-images-", dir="/var/tmp") as tmp:
            archive = Path(tmp) / "images.tar"
            docker("save", "-o", str(archive), *lacking, timeout=900)
            with ThreadPoolExecutor(max_workers=len(into)) as pool:
                results = list(pool.map(_load_archive, into, [archive] * len(into)))
        failed = [f"{n.name}: {why}" for n, why in zip(into, results, strict=True) if why]
        if failed:
            raise LabError(f"loading images failed: {'; '.join(failed)}")


def _load_archive(node: LabNode, archive: Path) -> str | None:
    """`docker load` of `archive` into `node`; None on success, else Docker's message."""
    result = docker("load", "--quiet", "-i", str(archive), host=node.docker_host,
                    check=False, timeout=900)  # fmt: skip
    return None if result.returncode == 0 else result.stderr.strip() or "docker load failed"


def image_id(tag: str, host: str | None = None) -> str | None:
    """The id of the image `tag` names on the local engine (or on `host`); None if none."""
    found = docker("image", "inspect", "--format", "{{.Id}}", tag, host=host, check=False)
    return found.stdout.strip() or None if found.returncode == 0 else None


@retry(
    retry=retry_if_exception_message(match=r".*does not have a leader.*"),
    stop=stop_after_delay(LEADER_WAIT),
    wait=wait_fixed(2),
    reraise=True,
)
def _join_tokens(first: RunningNode) -> dict[NodeRole, str]:
    """The join tokens; waits out a Raft election (a manager just healed or restarted)."""
    return {
        role: docker(
            "swarm", "join-token", "-q", role.value, host=first.node.docker_host
        ).stdout.strip()
        for role in NodeRole
    }


def _swarm_join(nodes: list[RunningNode], progress: Progress | None) -> None:
    first = nodes[0]
    info = json.loads(
        docker("info", "--format", "{{json .Swarm}}", host=first.node.docker_host).stdout
    )
    if info.get("LocalNodeState") != "active":
        _say(progress, f"initialising the swarm on {first.node.name} ({first.address})")
        docker("swarm", "init", "--advertise-addr", first.address, host=first.node.docker_host)
    tokens: dict[NodeRole, str] = {}
    for other in nodes[1:]:
        state = json.loads(
            docker("info", "--format", "{{json .Swarm}}", host=other.node.docker_host).stdout
        ).get("LocalNodeState")
        if state == "active":
            continue
        tokens = tokens or _join_tokens(first)
        _say(progress, f"joining {other.node.name} as a {other.node.role.value}")
        docker(
            "swarm", "join", "--token", tokens[other.node.role],
            "--advertise-addr", other.address, f"{first.address}:2377",
            host=other.node.docker_host, timeout=120,
        )  # fmt: skip


def lab_up(
    nodes: int,
    managers: int,
    images: list[str],
    base: str,
    progress: Progress | None = None,
) -> list[RunningNode]:
    """Create (or complete) a lab of `nodes` nodes, `managers` of them managers, with
    `images` loaded into every node. Idempotent: running nodes are kept."""
    wanted = lab_nodes(nodes, managers)
    existing = {n.node.index: n for n in lab_containers()}
    extra = sorted(set(existing) - {n.index for n in wanted})
    if extra:
        raise LabError(
            f"a lab with more nodes ({max(existing)}) exists: `shoal lab down` first to shrink it"
        )
    for node in wanted:
        have = existing.get(node.index)
        if have is not None and have.node.role != node.role:
            raise LabError(
                f"{node.name} exists as a {have.node.role.value}, wanted a {node.role.value}: "
                "`shoal lab down` first to change the shape"
            )
    tag = build_node_image(base, progress)
    _ensure_network()
    fresh: list[LabNode] = []
    for node in wanted:
        have = existing.get(node.index)
        if have is None:
            node.socket_dir.mkdir(parents=True, exist_ok=True)
            _say(progress, f"starting {node.name} ({node.role.value})")
            docker(*node_run_args(node, tag))
            fresh.append(node)
        elif have.state == "paused":
            docker("unpause", node.name)
        elif have.state != "running":
            docker("start", node.name)
    for node in wanted:
        wait_for_node(node)
    load_images(wanted, images, progress)
    running = [n for n in lab_containers() if n.node.index <= nodes]
    _swarm_join(running, progress)
    return running


def lab_down(progress: Progress | None = None) -> int:
    """Remove every lab node, its engine's volume, the lab network and the sockets."""
    nodes = lab_containers()

    def remove(running: RunningNode) -> None:
        _say(progress, f"removing {running.node.name}")
        docker("rm", "--force", "--volumes", running.node.name, timeout=120)
        docker("volume", "rm", "--force", running.node.volume, check=False)

    if nodes:  # each node's engine stops on its own time: remove them side by side
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            list(pool.map(remove, nodes))
    docker("network", "rm", LAB_NETWORK, check=False)
    if SOCKET_ROOT.is_dir():
        shutil.rmtree(SOCKET_ROOT, ignore_errors=True)
    return len(nodes)


def lab_env() -> str:
    """The shell line that points `docker` and `shoal` at the lab's first manager."""
    managers = [
        n for n in lab_containers() if n.node.role == NodeRole.MANAGER and n.state == "running"
    ]
    if not managers:
        raise LabError("no lab is running: `shoal lab up --nodes N` creates one")
    return f"export DOCKER_HOST={managers[0].node.docker_host}"
