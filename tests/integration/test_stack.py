"""deploy/stack.yml on the real swarm (docs/operations.md, "The operator as a stack"): the
documented prerequisite (`shoal operator prepare`) and `docker stack deploy` give a service
equal to the one `shoal operator deploy` makes in every field shoal relies on; with the
variables unset the stack is refused and nothing is made; `shoal operator deploy` refuses to
add a second operator next to it; the stack's operator is found by shoal (credentials
through `docker exec`), takes the lease and reconciles a database to Healthy.

The session's operator (`shoal-operator`, the `operator` fixture) publishes the same host
port 9650 and would hold the lease: it is scaled to 0 while the stack's operator runs, under
a stack name of this test's own, and restored in a `finally` (as test_operator_lease.py
does)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shoal import names
from shoal.platform.deploy import STACK_OPERATOR_IMAGE, operator_service_spec
from shoal.platform.images import BuiltImages
from shoal.plugins.registry import image_env
from tests.integration.support import (
    ROOT,
    apply,
    declaration,
    docker,
    ensure_operator,
    service_logs,
    shoal,
    wait_for,
    wait_state,
)
from tests.integration.test_operator_lease import holder_container, lease

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

STACK_FILE = ROOT / "deploy" / "stack.yml"


def stack_deploy(stack: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`docker stack deploy` as the docs say, with exactly `env`'s shoal variables set.
    --resolve-image never: the images are local (a single node) or pinned by digest."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    return subprocess.run(
        ["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(STACK_FILE), stack],
        capture_output=True, text=True, timeout=120, env={**clean, **env}, cwd=ROOT,
    )  # fmt: skip


def running_containers(service: str) -> list[str]:
    return docker(
        "ps", "-q", "--no-trunc", "-f", f"label=com.docker.swarm.service.name={service}"
    ).split()  # fmt: skip


def containers_of(service: str) -> list[str]:
    return docker("ps", "-aq", "-f", f"label=com.docker.swarm.service.name={service}").split()


def inspect(kind: str, name: str) -> Any:
    return json.loads(docker(kind, "inspect", name))[0]


def exports(text: str) -> dict[str, str]:
    """The `export NAME=VALUE` lines `shoal operator prepare` prints, as a shell reads them."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        assert words[0] == "export" and len(words) == 2, line
        key, _, value = words[1].partition("=")
        found[key] = value
    return found


def http_get(path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{names.OPERATOR_PORT}{path}", timeout=5) as r:
        return str(r.read().decode())


def leader_metric() -> float | None:
    try:
        text = http_get("/metrics")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("shoal_operator_leader "):
            return float(line.split()[1])
    return None


def assert_equivalent(spec: dict[str, Any], want: dict[str, Any]) -> None:
    """The fields shoal relies on, as Docker stored them, against `operator_service_spec`.
    Docker adds its own (stack labels, a network alias, defaults): those are not compared."""
    got_c, want_c = spec["TaskTemplate"]["ContainerSpec"], want["TaskTemplate"]["ContainerSpec"]
    assert got_c["Image"] == want_c["Image"]
    assert got_c["Args"] == want_c["Args"]
    assert "Command" not in got_c  # the image's entrypoint (tini -- shoal) is kept
    assert sorted(got_c["Env"]) == sorted(want_c["Env"])
    # How shoal finds its operator: the service's labels (its tasks: the lease's dead-holder
    # check, `shoal up`) and the container's (`shoal credentials` execs into it).
    assert {k: spec["Labels"].get(k) for k in want["Labels"]} == want["Labels"]
    assert {k: got_c["Labels"].get(k) for k in want_c["Labels"]} == want_c["Labels"]
    mounts = [{k: m.get(k) for k in ("Type", "Source", "Target")} for m in got_c["Mounts"]]
    assert mounts == want_c["Mounts"]
    assert not any(m.get("ReadOnly") for m in got_c["Mounts"])
    assert got_c["Secrets"] == want_c["Secrets"]
    assert got_c["StopGracePeriod"] == want_c["StopGracePeriod"]
    policy = spec["TaskTemplate"]["RestartPolicy"]
    want_policy = want["TaskTemplate"]["RestartPolicy"]
    assert {k: policy.get(k) for k in want_policy} == want_policy
    assert (
        spec["TaskTemplate"]["Placement"]["Constraints"]
        == (want["TaskTemplate"]["Placement"]["Constraints"])
    )
    assert [n["Target"] for n in spec["TaskTemplate"]["Networks"]] == [
        n["Target"] for n in want["TaskTemplate"]["Networks"]
    ]
    assert spec["Mode"] == want["Mode"]
    ports = [{k: p.get(k) for k in ("Protocol", "TargetPort", "PublishedPort", "PublishMode")}
             for p in spec["EndpointSpec"]["Ports"]]  # fmt: skip
    assert ports == want["EndpointSpec"]["Ports"]


def test_the_operator_as_a_stack_is_shoals_operator_and_reconciles(
    operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    stack = unique_name
    service = f"{stack}_operator"
    db = f"{unique_name}s"

    prepared = shoal("operator", "prepare", timeout=900)
    assert prepared.returncode == 0, prepared.stderr
    variables = exports(prepared.stdout)
    # One node: the images as built, nothing pushed.
    assert variables == {
        STACK_OPERATOR_IMAGE: operator.operator,
        **{image_env(engine): tag for engine, tag in operator.members.items()},
    }

    # Bad input: a variable unset is refused, naming the variable and the command that
    # sets it, and nothing is made.
    for missing in variables:
        refused = stack_deploy(stack, {k: v for k, v in variables.items() if k != missing})
        assert refused.returncode != 0
        assert missing in refused.stderr and "shoal operator prepare" in refused.stderr
    assert subprocess.run(["docker", "service", "inspect", service], capture_output=True).returncode
    assert stack not in docker("stack", "ls", "--format", "{{.Name}}").split()

    try:
        # The session's operator steps aside: it holds the port and the lease.
        docker("service", "scale", "--detach", f"{names.OPERATOR_SERVICE}=0")
        wait_for(
            lambda: not running_containers(names.OPERATOR_SERVICE),
            90,
            "shoal-operator's containers stopped",
        )
        deployed = stack_deploy(stack, variables)
        assert deployed.returncode == 0, deployed.stderr
        wait_for(lambda: running_containers(service), 120, f"{service} running")

        spec = inspect("service", service)["Spec"]
        assert spec["Name"] == service
        assert spec["Labels"]["com.docker.stack.namespace"] == stack
        key_id = inspect("secret", names.OPERATOR_KEY_SECRET)["ID"]
        control_id = inspect("network", names.CONTROL_NETWORK)["Id"]
        assert_equivalent(
            spec,
            operator_service_spec(operator.operator, operator.members, key_id, control_id, 1),
        )
        # Only the external network: no STACK_default made alongside.
        assert not docker("network", "ls", "-q", "-f", f"name={stack}_").split()

        # `shoal operator deploy` does not add a second operator next to the stack's: exit 2,
        # naming the stack, and shoal-operator is left as it was (scaled to 0).
        version = inspect("service", names.OPERATOR_SERVICE)["Version"]["Index"]
        second = shoal("operator", "deploy", timeout=600)
        assert second.returncode == 2, second.stderr
        assert f"Docker stack {stack!r}" in second.stderr, second.stderr
        assert inspect("service", names.OPERATOR_SERVICE)["Version"]["Index"] == version

        # It takes the lease (the previous holder's task is finished: at once) and says so
        # on the host-mode port.
        container = running_containers(service)[0]
        wait_for(
            lambda: container.startswith(holder_container(lease())) and leader_metric() == 1.0,
            90,
            "the stack's operator to hold the lease",
        )
        assert http_get("/healthz")

        apply(declaration(db, members=1, durability="async"), tmp_path)
        try:
            wait_state(db, "Healthy", timeout=300)
        except AssertionError:
            raise AssertionError(service_logs([service, f"{db}-0"])) from None
        assert not running_containers(names.OPERATOR_SERVICE)  # nobody else did it
        assert container.startswith(holder_container(lease()))

        # shoal finds this operator (by its labels) to derive the credentials in it.
        creds = shoal("credentials", db, "--json", timeout=60)
        assert creds.returncode == 0, creds.stderr
        assert json.loads(creds.stdout)["password"]
    finally:
        shoal("delete", db, "--wait", timeout=300)
        subprocess.run(["docker", "stack", "rm", stack], capture_output=True, timeout=60)
        wait_for(lambda: not containers_of(service), 90, f"{service}'s containers gone")
        ensure_operator(operator)
