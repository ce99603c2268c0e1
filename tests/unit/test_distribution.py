"""Image distribution's pure parts: `--registry` validation, references, push records."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal import names
from shoal.platform.distribution import (
    DistributionError,
    image_cache_spec,
    pinned,
    push_digest,
    pushed_name,
    registry_problems,
    registry_service_spec,
    stored_push_auth,
)

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "value",
    [
        "registry.example.com",
        "registry.example.com:5000/team/shoal",
        "localhost:5000",
        "localhost",
        "192.168.231.2:5000",
        "[fd00::1]:5000/x",
        "myhost:443/a_b/c-d",
    ],
)
def test_registry_locations_docker_accepts_are_accepted(value: str) -> None:
    assert registry_problems(value) == []


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("", "empty"),
        ("https://registry.example.com", "scheme"),
        ("team/shoal", "HOST"),  # no dot, no port: Docker would read this as a Hub path
        ("registry.example.com/Team", "lowercase"),
        ("registry.example.com/a//b", "HOST"),
        ("registry.example.com:99999", "out of range"),
        ("registry.example.com/", "HOST"),
        ("reg istry.example.com", "HOST"),
    ],
)
def test_bad_registry_locations_are_refused_with_the_reason(value: str, named: str) -> None:
    problems = registry_problems(value)
    assert len(problems) == 1
    assert named in problems[0]


@given(st.text(max_size=60))
def test_any_text_gets_an_answer_not_an_exception(value: str) -> None:
    problems = registry_problems(value)
    assert all(p.startswith("--registry") for p in problems)


def test_images_keep_their_repository_and_tag_under_the_prefix() -> None:
    name = pushed_name("reg.example.com:5000/team/", "shoal/postgres:15-0.1.0-abc")
    assert name == "reg.example.com:5000/team/shoal/postgres:15-0.1.0-abc"
    assert pinned(name, DIGEST) == f"{name}@{DIGEST}"
    with pytest.raises(DistributionError):
        pinned(name, "sha256:short")


def test_the_digest_comes_from_the_push_streams_aux_record() -> None:
    records = [
        {"status": "The push refers to repository [192.168.231.2:5000/shoal/postgres]"},
        {"status": "Pushed", "id": "f00"},
        {"status": "15-0.1.0-abc: digest: ... size: 1784"},
        {"progressDetail": {}, "aux": {"Tag": "15-0.1.0-abc", "Digest": DIGEST, "Size": 1784}},
    ]
    assert push_digest(records) == DIGEST
    with pytest.raises(DistributionError, match="without the registry naming a digest"):
        push_digest(records[:-1])
    with pytest.raises(DistributionError, match="server gave HTTP response to HTTPS client"):
        push_digest([{"error": "http: server gave HTTP response to HTTPS client"}])


def test_the_builtin_registry_is_pinned_to_one_node_with_its_blobs_in_a_volume() -> None:
    spec = registry_service_spec("shoal/registry:2.8-x", "node-abc")
    task = spec["TaskTemplate"]
    assert task["Placement"]["Constraints"] == ["node.id==node-abc"]
    assert task["ContainerSpec"]["Mounts"][0]["Type"] == "volume"
    assert task["ContainerSpec"]["Mounts"][0]["Source"] == names.REGISTRY_VOLUME
    (port,) = spec["EndpointSpec"]["Ports"]
    assert (port["PublishedPort"], port["PublishMode"]) == (names.REGISTRY_PORT, "host")
    assert spec["Labels"][names.LABEL_MANAGED] == "true"  # `shoal down` removes it


def test_push_credentials_come_from_the_docker_login_entry(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    auth = base64.b64encode(b"ci:s3cret:with-colon").decode()
    config.write_text(json.dumps({"auths": {"reg.example.com": {"auth": auth}}}))
    assert stored_push_auth("reg.example.com/team", config) == {
        "username": "ci",
        "password": "s3cret:with-colon",
        "serveraddress": "reg.example.com",
    }
    assert stored_push_auth("other.example.com", config) is None
    config.write_text("not json")
    assert stored_push_auth("reg.example.com", config) is None


def test_a_swarm_electing_its_leader_is_told_from_a_real_failure() -> None:
    from aiodocker.exceptions import DockerError

    from shoal.swarm.client import SwarmError, raft_busy

    no_leader = "rpc error: code = Unknown desc = The swarm does not have a leader."
    assert raft_busy(DockerError(500, {"message": no_leader}))
    assert raft_busy(SwarmError("Docker API error 500: rpc error: code = DeadlineExceeded"))
    lost = "raft: failed to process the request: node lost leader status"
    assert raft_busy(SwarmError(f"Docker API error 500: {lost}"))
    assert not raft_busy(DockerError(404, {"message": "service x not found"}))
    assert not raft_busy(SwarmError("Docker API error 400: invalid spec"))
    assert not raft_busy(ValueError(no_leader))


def test_a_command_rides_out_an_election_and_reports_a_real_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What CI saw: `shoal apply` right after a healed manager failed with "node lost leader
    status". The CLI runs the command again (it re-reads the anchor) until the swarm answers."""
    import typer

    from shoal.cli.common import run
    from shoal.swarm.client import SwarmError
    from shoal.swarm.store import DatabaseStore

    calls: list[int] = []

    async def elected_on_second_try(store: DatabaseStore) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise SwarmError(
                "Docker API error 500: raft: failed to process the request: node lost leader status"
            )
        return "done"

    assert run(elected_on_second_try) == "done"
    assert len(calls) == 2
    assert "electing a leader" in capsys.readouterr().err

    async def refused(store: DatabaseStore) -> str:
        calls.append(1)
        raise SwarmError("Docker API error 400: invalid spec")

    calls.clear()
    with pytest.raises(typer.Exit) as exit_info:
        run(refused)
    assert exit_info.value.exit_code == 1
    assert len(calls) == 1


def test_the_image_cache_is_a_global_job_that_only_pulls() -> None:
    image = "10.0.0.2:5000/shoal/postgres:15-x@sha256:" + "a" * 64
    spec = image_cache_spec("postgres", image)
    assert spec["Name"] == "shoal-images-postgres"
    assert spec["Mode"] == {"GlobalJob": {}}  # every node, and every node that joins later
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == image
    assert container["Command"] == ["true"]  # the image's entrypoint never runs
    assert spec["Labels"]["shoal.managed"] == "true"  # `shoal down` removes it
    assert "Mounts" not in container and "Networks" not in spec["TaskTemplate"]
