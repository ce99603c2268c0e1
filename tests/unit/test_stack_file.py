"""deploy/stack.yml against the spec `shoal operator deploy` builds
(shoal/platform/deploy.py, `operator_service_spec`): the stack file, read the way
`docker stack deploy` reads the parts it uses, must give the same service but for what a
stack cannot choose (the service's name, `STACK_operator`) and what only Swarm knows (the
secret's id). A field added to one and not the other fails here.
tests/integration/test_stack.py checks the service Docker really makes from the file."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shoal import names
from shoal.platform.deploy import (
    STACK_NAMESPACE_LABEL,
    STACK_OPERATOR_IMAGE,
    operator_service_spec,
    stack_operator_problem,
    stack_operators,
    stack_variables,
)
from shoal.platform.images import BuiltImages
from shoal.plugins.registry import image_env, plugin_classes
from tests.conftest import FakeSwarm

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "stack.yml"
APP_STACK = ROOT / "examples" / "app-stack.yml"
# `${NAME}`, `${NAME:?message}`, `${NAME:-default}`: what the docker CLI interpolates.
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[?-])?(?P<arg>[^}]*)\}")
DURATION = re.compile(r"^(?P<n>\d+)(?P<unit>ms|s|m|h)$")
UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def interpolate(text: str, env: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        if name in env and (env[name] or op not in (":?", ":-")):
            return env[name]
        if op in ("?", ":?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op in ("-", ":-") else ""

    return VARIABLE.sub(one, text)


def ns(duration: str) -> int:
    m = DURATION.match(duration)
    assert m, f"duration {duration!r}: not one this test reads"
    return int(m["n"]) * UNIT_NS[m["unit"]]


def service_spec(compose: dict[str, Any], service: str, stack: str) -> dict[str, Any]:
    """The Swarm service spec of one service of a stack file, for the keys the operator's
    stack uses (docker/cli's cli/compose/convert); an unknown key fails the test."""
    svc = compose["services"][service]
    known = {
        "image", "command", "environment", "labels", "volumes", "secrets", "networks", "ports",
        "stop_grace_period", "deploy",
    }  # fmt: skip
    assert set(svc) <= known, f"keys this test does not convert: {set(svc) - known}"
    deploy = svc["deploy"]
    assert set(deploy) <= {"mode", "replicas", "labels", "placement", "restart_policy"}
    restart = deploy["restart_policy"]
    external_secrets = compose["secrets"]
    external_networks = compose["networks"]
    for what in (*external_secrets.values(), *external_networks.values()):
        assert what.get("external") is True, "the operator's secrets and networks are external"
    secrets = []
    for s in svc["secrets"]:
        secret = external_secrets[s["source"]]
        secrets.append(
            {
                "SecretName": secret.get("name", s["source"]),
                "File": {
                    "Name": s.get("target", s["source"]),
                    "UID": s["uid"],
                    "GID": s["gid"],
                    "Mode": s["mode"],
                },
            }
        )
    return {
        "Name": f"{stack}_{service}",
        "Labels": deploy["labels"],
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": svc["image"],
                "Args": svc["command"],
                "Env": sorted(f"{k}={v}" for k, v in svc["environment"].items()),
                "Labels": svc["labels"],
                "Mounts": [
                    {"Type": v["type"], "Source": v["source"], "Target": v["target"]}
                    for v in svc["volumes"]
                ],
                "Secrets": secrets,
                "StopGracePeriod": ns(svc["stop_grace_period"]),
            },
            "RestartPolicy": {
                "Condition": restart["condition"],
                "Delay": ns(restart["delay"]),
                "MaxAttempts": restart["max_attempts"],
            },
            "Placement": {"Constraints": deploy["placement"]["constraints"]},
            "Networks": [{"Target": external_networks[n].get("name", n)} for n in svc["networks"]],
        },
        "Mode": {"Replicated": {"Replicas": deploy["replicas"]}}
        if deploy.get("mode", "replicated") == "replicated"
        else {deploy["mode"].capitalize(): {}},
        "EndpointSpec": {
            "Ports": [
                {
                    "Protocol": p["protocol"],
                    "TargetPort": p["target"],
                    "PublishedPort": p["published"],
                    "PublishMode": p["mode"],
                }
                for p in svc["ports"]
            ]
        },
    }


def images() -> BuiltImages:
    return BuiltImages(
        base="b",
        operator="reg:5000/shoal/operator:1@sha256:" + "a" * 64,
        members={engine: f"{engine}-image:1" for engine in plugin_classes()},
    )


def load(path: Path, env: dict[str, str]) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(interpolate(path.read_text(), env))
    return doc


def test_the_stack_gives_the_service_shoal_operator_deploy_makes() -> None:
    built = images()
    compose = load(STACK, stack_variables(built))
    assert list(compose["services"]) == ["operator"]
    got = service_spec(compose, "operator", "shoal")
    want = operator_service_spec(
        built.operator, built.members, "KEY-ID", names.CONTROL_NETWORK, replicas=1
    )
    # What the stack cannot choose (Docker names it STACK_SERVICE) or know (the secret's id).
    assert got.pop("Name") == "shoal_operator"
    want.pop("Name")
    for mount in want["TaskTemplate"]["ContainerSpec"]["Secrets"]:
        assert mount.pop("SecretID") == "KEY-ID"
    assert got == want


def test_the_stack_reads_one_variable_per_image_and_each_one_is_required() -> None:
    """Required, except a member image built from a server binary the user provides
    (`ImageRecipe.server`): without it the stack still deploys, and that engine's databases
    say in their status that its image is missing."""
    text = STACK.read_text()
    used = {m["name"]: m["op"] for m in VARIABLE.finditer(text)}
    assert set(used) == set(stack_variables(images()))
    assert set(used) == {STACK_OPERATOR_IMAGE, *(image_env(e) for e in plugin_classes())}
    optional = {image_env(e) for e, cls in plugin_classes().items() if cls.image_recipe.server}
    # unset or empty: a clear refusal
    assert all(op == ":?" for name, op in used.items() if name not in optional), used
    assert all(used[name] == ":-" for name in optional), used
    assert_messages_survive_docker(text)
    with pytest.raises(KeyError, match="shoal operator prepare"):
        load(STACK, {})


def assert_messages_survive_docker(text: str) -> None:
    """The docker CLI (28.2) reads a '-' in a `${NAME:?message}` as the `${NAME-default}`
    operator: the variable is then never required and its value is the message's tail."""
    for m in VARIABLE.finditer(text):
        if m["op"] == ":?":
            assert "-" not in m["arg"], f"${{{m['name']}:?...}}: no '-' in the message"


def test_the_stack_and_the_operator_lookup_agree_on_the_label() -> None:
    from shoal.swarm.operator_exec import OPERATOR_ROLE

    compose = load(STACK, stack_variables(images()))
    svc = compose["services"]["operator"]
    key, value = OPERATOR_ROLE.split("=")
    assert svc["deploy"]["labels"][key] == value  # the service: its tasks, the lease
    assert svc["labels"][key] == value  # the container: `shoal credentials` execs into it


def test_the_example_application_stack_uses_only_external_database_objects() -> None:
    env = {"SHOAL_DB_NETWORK": "shoal-orders", "SHOAL_APP_SECRET": "orders-app",
           "SHOAL_APP_IMAGE": "shoal/operator:0.1.0"}  # fmt: skip
    compose = load(APP_STACK, env)
    assert all(n.get("external") is True for n in compose["networks"].values())
    assert {s["name"] for s in compose["secrets"].values()} == {"orders-app", "orders-app-ca"}
    assert all(s.get("external") is True for s in compose["secrets"].values())
    app = compose["services"]["app"]
    # The URI names its CA as /run/secrets/SECRET-ca (cli/credentials_secret.py).
    targets = {s["target"] for s in app["secrets"]}
    assert targets == {"orders-app", "orders-app-ca"}
    for config in compose.get("configs", {}).values():
        assert (APP_STACK.parent / config["file"]).is_file()
    used = {m["name"] for m in VARIABLE.finditer(APP_STACK.read_text())}
    assert used == set(env)
    assert_messages_survive_docker(APP_STACK.read_text())
    for name in env:
        with pytest.raises(KeyError):
            load(APP_STACK, {k: v for k, v in env.items() if k != name})


# --- how shoal finds an operator however it was deployed (on the unit tests' fake swarm) --


def stack_operator(stack: str) -> dict[str, Any]:
    """The service `docker stack deploy -c deploy/stack.yml STACK` makes, on the fake."""
    spec = operator_service_spec(
        "op", {"postgres": "pg"}, "key-id", "net", 1, name=f"{stack}_operator"
    )
    spec["Labels"] = {**spec["Labels"], STACK_NAMESPACE_LABEL: stack}
    return spec


async def test_a_stack_operator_is_found_by_its_labels(fake_swarm: FakeSwarm) -> None:
    from shoal.chaos.faults import resolve_target
    from shoal.swarm.operator_exec import operator_services, running_operator_containers

    await fake_swarm.create_service(stack_operator("shop"))
    assert await operator_services(fake_swarm) == ["shop_operator"]
    running = await running_operator_containers(fake_swarm)
    assert len(running) == 1
    target = await resolve_target(fake_swarm, "orders", "operator", random.Random(0))
    assert (target.name, target.container_id) == ("shop_operator", running[0]["Id"])
    assert await stack_operators(fake_swarm) == {"shop_operator": "shop"}
    problem = stack_operator_problem(await stack_operators(fake_swarm))
    assert problem is not None and "'shop'" in problem and "docker stack rm shop" in problem


async def test_shoal_operator_deploys_own_service_stays_the_chaos_target(
    fake_swarm: FakeSwarm,
) -> None:
    from shoal.chaos.faults import resolve_target

    spec = operator_service_spec("op", {"postgres": "pg"}, "key-id", "net", 1)
    await fake_swarm.create_service(spec)
    await fake_swarm.create_service(
        operator_service_spec("op", {"postgres": "pg"}, "key-id", "net", 1, name="b-standby")
    )
    target = await resolve_target(fake_swarm, "orders", "operator", random.Random(0))
    assert target.name == names.OPERATOR_SERVICE
    assert await stack_operators(fake_swarm) == {}
    assert stack_operator_problem({}) is None


def test_an_engine_without_a_member_image_gets_the_same_empty_variable_both_ways() -> None:
    """A member image built from a server binary the user provides may not exist (no
    `--<engine>-from` ever given): `shoal operator deploy` and the stack then both give the
    operator that engine's variable empty, so neither differs from the other."""
    optional = [e for e, cls in plugin_classes().items() if cls.image_recipe.server]
    built = images()
    built = BuiltImages(
        base=built.base,
        operator=built.operator,
        members={e: t for e, t in built.members.items() if e not in optional},
    )
    compose = load(STACK, stack_variables(built))
    got = service_spec(compose, "operator", "shoal")["TaskTemplate"]["ContainerSpec"]["Env"]
    want = operator_service_spec(
        built.operator, built.members, "KEY-ID", names.CONTROL_NETWORK, replicas=1
    )
    assert sorted(got) == sorted(want["TaskTemplate"]["ContainerSpec"]["Env"])
    for engine in optional:
        assert f"{image_env(engine)}=" in got
