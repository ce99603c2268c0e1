"""The monitoring service spec and image recipe (no Docker needed)."""

from __future__ import annotations

import re

import pytest

from shoal.names import CONTROL_NETWORK
from shoal.platform.monitoring import (
    DOCKERFILE,
    PROMETHEUS_SERVICE,
    prometheus_config_dir,
    prometheus_spec,
)

pytestmark = pytest.mark.unit


def test_spec() -> None:
    spec = prometheus_spec(image="shoal/prometheus:test", port=19090)
    assert spec["Name"] == PROMETHEUS_SERVICE
    assert spec["Labels"] == {"shoal.managed": "true", "shoal.role": "monitoring"}
    task = spec["TaskTemplate"]
    assert task["ContainerSpec"]["Image"] == "shoal/prometheus:test"
    assert task["Networks"][0]["Target"] == CONTROL_NETWORK
    assert "Mounts" not in task["ContainerSpec"]
    port = spec["EndpointSpec"]["Ports"][0]
    assert (port["TargetPort"], port["PublishedPort"]) == (9090, 19090)


def test_dockerfile_copies_the_deployed_config() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE=shoal/base:bookworm-1$", text, re.M)
    assert "FROM ${BASE}" in text
    config = prometheus_config_dir()
    for name in ("prometheus.yml", "alerts.yml"):
        assert f"deploy/prometheus/{name}" in text
        assert (config / name).is_file()
