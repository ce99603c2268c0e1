"""The member service spec (shoal/operator/members.py): no mounts ever, an explicit restart
delay of 0, credentials only as secret files, dnsrr endpoints, both networks, and the
declaration's placement and resources passed through."""

from __future__ import annotations

import json

import pytest

from shoal import names
from shoal.credentials import SHARED_FILES
from shoal.declaration import load_declaration
from shoal.operator.members import (
    RESTART_POLICY,
    Infrastructure,
    member_service_spec,
    secret_names,
)
from shoal.swarm.client import JSON

pytestmark = pytest.mark.unit

DECL = """\
apiVersion: shoal/v1
kind: Database
metadata: {name: orders}
spec:
  engine: postgres
  members: 3
  resources: {memory: 256M, cpus: 0.5}
  placement:
    spread: node.id
    constraints: ["node.role==manager", "node.labels.disk!=slow"]
"""

INFRA = Infrastructure(
    network_id="net-db",
    control_network_id="net-control",
    secrets={
        purpose: (f"id-{purpose}", f"shoal-orders-0123abcd-{purpose}") for purpose in SHARED_FILES
    },
    agent_tokens={i: (f"id-token-{i}", f"shoal-orders-0123abcd-agent-token-{i}") for i in range(3)},
    tls={i: (f"id-tls-{i}", f"shoal-orders-0123abcd-tls-{i}") for i in range(3)},
    control_subnets=("10.200.0.0/20",),
)


@pytest.fixture
def spec() -> JSON:
    return member_service_spec(load_declaration(DECL), 1, "shoal/postgres:test", INFRA)


def test_name_labels_and_one_replica(spec: JSON) -> None:
    assert spec["Name"] == "orders-1"
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    for labels in (spec["Labels"], spec["TaskTemplate"]["ContainerSpec"]["Labels"]):
        assert labels[names.LABEL_MANAGED] == "true"
        assert labels[names.LABEL_DATABASE] == "orders"
        assert labels[names.LABEL_ROLE] == "member"
        assert labels[names.LABEL_MEMBER] == "1"
    cs = spec["TaskTemplate"]["ContainerSpec"]
    assert cs["Image"] == "shoal/postgres:test"
    assert cs["Hostname"] == "orders-1"


def test_no_mounts_at_all(spec: JSON) -> None:
    cs = spec["TaskTemplate"]["ContainerSpec"]
    assert not cs.get("Mounts")
    assert "Volumes" not in json.dumps(spec)
    assert "bind" not in json.dumps(spec).lower()
    assert "docker.sock" not in json.dumps(spec)


def test_restart_policy_delay_zero_explicitly(spec: JSON) -> None:
    policy = spec["TaskTemplate"]["RestartPolicy"]
    assert policy == RESTART_POLICY
    assert "Delay" in policy and policy["Delay"] == 0
    assert policy["Condition"] == "any"


def test_credentials_only_as_secret_files(spec: JSON) -> None:
    cs = spec["TaskTemplate"]["ContainerSpec"]
    secrets = cs["Secrets"]
    # the shared credentials, and this member's own agent token and TLS key (no other
    # member's)
    assert {s["SecretID"] for s in secrets} == {f"id-{p}" for p in SHARED_FILES} | {
        "id-token-1",
        "id-tls-1",
    }
    assert {s["File"]["Name"] for s in secrets} == {
        *SHARED_FILES.values(),
        "agent-token",
        "tls.pem",
    }
    for s in secrets:
        assert s["SecretName"].startswith("shoal-orders-")
        assert set(s["File"]) >= {"Name", "UID", "GID", "Mode"}
    # the environment names the member, nothing secret
    env = dict(e.split("=", 1) for e in cs["Env"])
    assert env == {
        "SHOAL_DATABASE": "orders",
        "SHOAL_MEMBER": "orders-1",
        "SHOAL_TASK_ID": "{{.Task.ID}}",  # a Swarm template: no secret in it
        "SHOAL_CONTROL_SUBNETS": "10.200.0.0/20",  # no application logins from there
    }
    assert not any("PASSWORD" in k.upper() or "TOKEN" in k.upper() for k in env)


def test_dnsrr_endpoint_and_both_networks(spec: JSON) -> None:
    assert spec["EndpointSpec"] == {"Mode": "dnsrr"}
    nets = spec["TaskTemplate"]["Networks"]
    assert [n["Target"] for n in nets] == ["net-db", "net-control"]
    for n in nets:
        assert n["Aliases"] == ["orders-1"]


def test_placement_and_resources_passed_through(spec: JSON) -> None:
    placement = spec["TaskTemplate"]["Placement"]
    assert placement["Constraints"] == ["node.role==manager", "node.labels.disk!=slow"]
    # Swarm's spread preference acts within one service: members are pinned instead.
    assert "Preferences" not in placement
    limits = spec["TaskTemplate"]["Resources"]["Limits"]
    assert limits == {"MemoryBytes": 256 * 1024**2, "NanoCPUs": 500_000_000}


def test_a_pin_is_added_after_the_declarations_constraints() -> None:
    spec = member_service_spec(load_declaration(DECL), 0, "img", INFRA, pin="n2")
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == [
        "node.role==manager",
        "node.labels.disk!=slow",
        "node.id==n2",
    ]


def test_no_spread_means_no_pin() -> None:
    db = load_declaration(DECL.replace("spread: node.id", "spread: null"))
    spec = member_service_spec(db, 0, "img", INFRA, pin="n2")
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == [
        "node.role==manager",
        "node.labels.disk!=slow",
    ]


def test_force_update_is_passed_for_replacement() -> None:
    spec = member_service_spec(load_declaration(DECL), 2, "img", INFRA, force_update=3)
    assert spec["TaskTemplate"]["ForceUpdate"] == 3
    assert spec["Name"] == "orders-2"


def test_control_network_subnet_avoids_every_subnet_in_use() -> None:
    from shoal.operator.members import free_subnet

    assert free_subnet([]) == "10.200.0.0/20"
    assert free_subnet(["10.0.0.0/24", "10.200.4.0/24", "fd00::/64"]) == "10.201.0.0/20"
    assert free_subnet(["10.0.0.0/8"]) is None


def test_every_member_gets_an_agent_token_of_its_own() -> None:
    from shoal.credentials import DatabaseCredentials

    creds = DatabaseCredentials.derive(b"k" * 32, "uid-1")
    tokens = {creds.agent_token_for(f"orders-{i}") for i in range(5)}
    assert len(tokens) == 5
    assert creds.agent_token not in tokens  # the root is never handed out
    assert all(len(t) == 32 for t in tokens)
    again = DatabaseCredentials.derive(b"k" * 32, "uid-1")
    assert again.agent_token_for("orders-0") == creds.agent_token_for("orders-0")
    other = DatabaseCredentials.derive(b"k" * 32, "uid-2")
    assert other.agent_token_for("orders-0") != creds.agent_token_for("orders-0")


def test_secret_names_keep_their_form() -> None:
    """Existing databases' secrets carry these names: they must never change."""
    wanted = secret_names("orders", "0123abcd-rest-of-the-uid", 2)
    assert wanted.all() == [
        "shoal-orders-0123abcd-superuser",
        "shoal-orders-0123abcd-replication",
        "shoal-orders-0123abcd-app",
        "shoal-orders-0123abcd-agent-token-0",
        "shoal-orders-0123abcd-agent-token-1",
        "shoal-orders-0123abcd-tls-0",
        "shoal-orders-0123abcd-tls-1",
    ]
