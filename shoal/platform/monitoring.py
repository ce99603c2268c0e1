"""Optional monitoring: a Prometheus service on the shoal-control network that scrapes the
operator (the tasks of `shoal-operator`, port 9650) and evaluates deploy/prometheus/alerts.yml.

The image (`shoal/prometheus:VERSION`) is Debian's prometheus package on shoal's base image
with the config and rules baked in: nothing is mounted, like everything else shoal runs.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from shoal import __version__
from shoal.names import (
    CONTROL_NETWORK,
    IMAGE_BASE,
    LABEL_MANAGED,
    LABEL_ROLE,
    OPERATOR_HTTP_TOKEN_SECRET,
)
from shoal.swarm.client import SwarmClient, SwarmError

log = logging.getLogger(__name__)

PROMETHEUS_SERVICE = "shoal-prometheus"
IMAGE_PROMETHEUS = f"shoal/prometheus:{__version__}"
PROMETHEUS_PORT = 9090
ROLE_MONITORING = "monitoring"
MONITORING_LABELS = {LABEL_MANAGED: "true", LABEL_ROLE: ROLE_MONITORING}

# The image's entrypoint without its --config.file (Command replaces the entrypoint).
PROMETHEUS_COMMAND = (
    "/usr/bin/prometheus",
    "--storage.tsdb.path=/prometheus",
    "--storage.tsdb.retention.time=2d",
    "--web.listen-address=:9090",
    "--web.enable-lifecycle",
)

_HERE = Path(__file__).resolve().parent
DOCKERFILE = _HERE / "image" / "prometheus" / "Dockerfile"


class MonitoringError(RuntimeError):
    pass


def prometheus_config_dir(root: Path | None = None) -> Path:
    """deploy/prometheus of the source checkout."""
    directory = (root or _HERE.parents[1]) / "deploy" / "prometheus"
    if not (directory / "prometheus.yml").is_file():
        raise MonitoringError(f"{directory}/prometheus.yml not found: build from a source checkout")
    return directory


def build_prometheus_image(
    base_tag: str = IMAGE_BASE, tag: str = IMAGE_PROMETHEUS, *, timeout: float = 900
) -> str:
    """`docker build` the Prometheus image from a small temporary context (the Dockerfile
    and deploy/prometheus/*.yml only). Returns the tag."""
    config = prometheus_config_dir()
    with tempfile.TemporaryDirectory(prefix="shoal-prometheus-") as tmp:
        ctx = Path(tmp)
        (ctx / "deploy" / "prometheus").mkdir(parents=True)
        for name in ("prometheus.yml", "alerts.yml"):
            shutil.copy2(config / name, ctx / "deploy" / "prometheus" / name)
        shutil.copy2(DOCKERFILE, ctx / "Dockerfile")
        cmd = ["docker", "build", "--build-arg", f"BASE={base_tag}", "-t", tag, str(ctx)]
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise MonitoringError(f"building {tag} failed (exit {result.returncode}):\n{tail}")
    return tag


async def ensure_control_network(swarm: SwarmClient, name: str = CONTROL_NETWORK) -> str:
    """The id of the shared control network, created as the operator creates it."""
    from shoal.operator.members import ensure_control_network as ensure

    if name != CONTROL_NETWORK:
        raise MonitoringError(f"monitoring joins {CONTROL_NETWORK}, not {name!r}")
    try:
        return await ensure(swarm)
    except SwarmError as e:
        raise MonitoringError(f"cannot create network {name}: {e}") from e


def prometheus_spec(
    *,
    name: str = PROMETHEUS_SERVICE,
    image: str = IMAGE_PROMETHEUS,
    network: str = CONTROL_NETWORK,
    port: int = PROMETHEUS_PORT,
    http_token_secret: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The raw Swarm service spec of the Prometheus service. With `http_token_secret`
    ((id, name) of the operator's HTTP token secret) it mounts the token and scrapes with
    it (prometheus-token.yml, made in the image from prometheus.yml)."""
    container: dict[str, Any] = {
        "Image": image,
        "Labels": dict(MONITORING_LABELS),
        "StopGracePeriod": 10_000_000_000,
    }
    if http_token_secret is not None:
        secret_id, secret_name = http_token_secret
        container["Secrets"] = [
            {
                "SecretID": secret_id,
                "SecretName": secret_name,
                "File": {"Name": OPERATOR_HTTP_TOKEN_SECRET, "UID": "0", "GID": "0", "Mode": 0o444},
            }
        ]
        container["Command"] = [
            *PROMETHEUS_COMMAND,
            "--config.file=/etc/prometheus/prometheus-token.yml",
        ]
    return {
        "Name": name,
        "Labels": dict(MONITORING_LABELS),
        "TaskTemplate": {
            "ContainerSpec": container,
            "Networks": [{"Target": network, "Aliases": [name]}],
            "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000},
            "Resources": {"Limits": {"MemoryBytes": 512 * 1024 * 1024}},
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": {
            "Mode": "vip",
            "Ports": [
                {
                    "Protocol": "tcp",
                    "TargetPort": PROMETHEUS_PORT,
                    "PublishedPort": port,
                    "PublishMode": "host",
                }
            ],
        },
    }


async def deploy_monitoring(
    swarm: SwarmClient,
    *,
    name: str = PROMETHEUS_SERVICE,
    image: str = IMAGE_PROMETHEUS,
    network: str = CONTROL_NETWORK,
    port: int = PROMETHEUS_PORT,
    http_token_secret: tuple[str, str] | None = None,
) -> str:
    """Create (or update to this spec) the Prometheus service; returns its URL on this host
    (the port is published in host mode on the node that runs it: the ingress routing
    mesh needs IPVS, which not every kernel has)."""
    await ensure_control_network(swarm, network)
    spec = prometheus_spec(
        name=name, image=image, network=network, port=port, http_token_secret=http_token_secret
    )
    existing = await swarm.service(name)
    if existing is None:
        try:
            await swarm.create_service(spec)
            log.info("created service %s (%s)", name, image)
        except SwarmError as e:
            raise MonitoringError(f"cannot create service {name}: {e}") from e
    else:
        labels = existing.get("Spec", {}).get("Labels", {})
        if labels.get(LABEL_ROLE) != ROLE_MONITORING:
            raise MonitoringError(f"service {name} exists and is not shoal's monitoring")
        try:
            await swarm.update_service(existing["ID"], existing["Version"]["Index"], spec)
            log.info("updated service %s (%s)", name, image)
        except SwarmError as e:
            raise MonitoringError(f"cannot update service {name}: {e}") from e
    return f"http://127.0.0.1:{port}"


async def remove_monitoring(swarm: SwarmClient, *, name: str = PROMETHEUS_SERVICE) -> bool:
    """Remove the Prometheus service if shoal created it. The shared control network stays.
    Returns whether something was removed."""
    existing = await swarm.service(name)
    if existing is None:
        return False
    labels = existing.get("Spec", {}).get("Labels", {})
    if labels.get(LABEL_MANAGED) != "true" or labels.get(LABEL_ROLE) != ROLE_MONITORING:
        raise MonitoringError(f"service {name} is not shoal's monitoring: left alone")
    try:
        if not await swarm.remove_service(existing["ID"]):
            return False
    except SwarmError as e:
        raise MonitoringError(f"cannot remove service {name}: {e}") from e
    return True
