"""Images reach every node with no manual step: on the lab, `shoal operator deploy` (run by
the `lab` fixture) pushed the operator and member images to the `shoal-registry` service
and every service names them by registry and digest. A node without the member image pulls
it when a member lands there, and a restarted registry task still serves it (its blobs are
in a volume on its node)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from shoal.plugins.registry import image_env
from tests.integration.support import apply, declaration, shoal, wait_for
from tests.multinode.support import healthy_spread, lab_nodes, member_nodes, on_node

pytestmark = pytest.mark.integration


def service_image(service: str) -> str:
    proc = shoal_docker("service", "inspect", service)
    spec = json.loads(proc)[0]["Spec"]
    return str(spec["TaskTemplate"]["ContainerSpec"]["Image"])


def shoal_docker(*args: str) -> str:
    """`docker ARGS` against the lab's manager (DOCKER_HOST, set by the `lab` fixture)."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def registry_node() -> str:
    lines = shoal_docker(
        "service", "ps", names.REGISTRY_SERVICE, "--filter", "desired-state=running",
        "--format", "{{.Node}}",
    ).split()  # fmt: skip
    assert lines, "the registry has no running task"
    return lines[0]


REGISTRY = names.REGISTRY_SERVICE


def running_registry_task() -> str | None:
    """The id of the registry's task that is running now (None while none is)."""
    lines = shoal_docker(
        "service", "ps", REGISTRY, "--filter", "desired-state=running",
        "--format", "{{.ID}} {{.CurrentState}}",
    ).splitlines()  # fmt: skip
    running = [ln.split()[0] for ln in lines if " Running " in f"{ln} "]
    return running[0] if running else None


def forget_image(node: str, reference: str, local_tag: str) -> None:
    """Remove every name of the image from `node`, so only a pull can bring it back."""
    found = on_node(node, "image", "inspect", "--format", "{{.Id}}", reference)
    ids = {found.stdout.strip()} if found.returncode == 0 else set()
    found = on_node(node, "image", "inspect", "--format", "{{.Id}}", local_tag)
    ids |= {found.stdout.strip()} if found.returncode == 0 else set()
    for image_id in ids:
        removed = on_node(node, "image", "rm", "--force", image_id)
        assert removed.returncode == 0, removed.stderr
    assert on_node(node, "image", "inspect", reference).returncode != 0


def pinned_member_image() -> str:
    """The member image as the operator names it in member services (registry@digest)."""
    env = shoal_docker(
        "service", "inspect", "--format",
        "{{range .Spec.TaskTemplate.ContainerSpec.Env}}{{println .}}{{end}}",
        names.OPERATOR_SERVICE,
    )  # fmt: skip
    variable = image_env("postgres") + "="
    return next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith(variable))


def registry_replicas(n: int) -> None:
    shoal_docker("service", "update", "--detach", "--replicas", str(n), REGISTRY)


def test_every_node_holds_the_images_so_a_lost_registry_blocks_no_new_task(
    lab: BuiltImages, unique_name: str
) -> None:
    """The built-in registry lives on one manager. Seen on the lab: the primary's node was
    that manager, and the member re-created on the spare node was rejected ("No such
    image") until the node came back. Every node now pulls the images ahead of need, so a
    new task of the member image starts on a node with no member while no registry runs."""
    member_image = pinned_member_image()
    operator_image = service_image(names.OPERATOR_SERVICE)
    nodes = [n["name"] for n in lab_nodes()]
    for node in nodes:
        wait_for(
            lambda node=node: all(
                on_node(node, "image", "inspect", ref).returncode == 0
                for ref in (member_image, operator_image)
            ),
            300,
            f"{node} to hold {member_image} and {operator_image}",
            every=3,
        )
    home = registry_node()
    target = next(n for n in nodes if n != home)
    probe = f"{unique_name}-pull"
    registry_replicas(0)
    try:
        wait_for(lambda: running_registry_task() is None, 120, "the registry to stop")
        shoal_docker(
            "service", "create", "--detach", "--no-resolve-image", "--name", probe,
            "--constraint", f"node.hostname=={target}", "--restart-condition", "none",
            "--entrypoint", "sleep", member_image, "300",
        )  # fmt: skip

        def state() -> str:
            return shoal_docker("service", "ps", probe, "--format", "{{.CurrentState}} {{.Error}}")

        wait_for(
            lambda: state().startswith("Running"),
            120,
            f"a task of {member_image} to start on {target} without a registry: {state()!r}",
            every=2,
        )
    finally:
        subprocess.run(["docker", "service", "rm", probe], capture_output=True, timeout=60)
        # `service rm` returns before the task's container stops: a later test that
        # removes the image from this node would find it in use.
        wait_for(
            lambda: (
                not on_node(
                    target, "ps", "-q", "-f", f"label=com.docker.swarm.service.name={probe}"
                ).stdout.split()
            ),
            120,
            f"the container of {probe} to stop on {target}",
            every=2,
        )
        registry_replicas(1)
        wait_for(lambda: running_registry_task() is not None, 180, "the registry to run again")


def test_members_on_nodes_without_the_image_pull_it_from_the_swarms_registry(
    lab: BuiltImages, unique_name: str, tmp_path: Any
) -> None:
    operator = service_image(names.OPERATOR_SERVICE)
    registry = operator.split("/", 1)[0]
    assert operator.startswith(f"{registry}/{lab.operator}@sha256:"), operator
    env = shoal_docker(
        "service", "inspect", "--format",
        "{{range .Spec.TaskTemplate.ContainerSpec.Env}}{{println .}}{{end}}",
        names.OPERATOR_SERVICE,
    )  # fmt: skip
    variable = image_env("postgres") + "="
    member_image = next(
        line.split("=", 1)[1] for line in env.splitlines() if line.startswith(variable)
    )
    assert member_image.startswith(f"{registry}/{lab.members['postgres']}@sha256:"), member_image

    # Nodes other than the registry's lose the member image: only a pull brings it back.
    home = registry_node()
    bare = [n["name"] for n in lab_nodes() if n["name"] != home]
    for node in bare:
        forget_image(node, member_image, lab.members["postgres"])

    name = unique_name
    apply(declaration(name, members=3), tmp_path)
    try:
        st = healthy_spread(name, 3)
        pulled = [host for host in member_nodes(st).values() if host in bare]
        assert len(pulled) >= 2, f"members on {member_nodes(st)}; bare nodes {bare}"
        for host in pulled:
            assert host is not None
            assert on_node(host, "image", "inspect", member_image).returncode == 0

        # The registry task restarts (its container killed): what was pushed is still there.
        before = running_registry_task()
        cid = on_node(home, "ps", "-q", "-f", f"label=com.docker.swarm.service.name={REGISTRY}")
        assert cid.stdout.split(), cid.stderr
        assert on_node(home, "kill", cid.stdout.split()[0]).returncode == 0
        wait_for(lambda: running_registry_task() not in (None, before), 120, "a new registry task")
        spare = next(n["name"] for n in lab_nodes() if n["name"] not in member_nodes(st).values())
        forget_image(spare, member_image, lab.members["postgres"])
        wait_for(
            lambda: on_node(spare, "pull", member_image, timeout=300).returncode == 0,
            120,
            f"{spare} to pull {member_image} from the restarted registry",
            every=3,
        )
    finally:
        shoal("delete", name, "--wait", timeout=300)
