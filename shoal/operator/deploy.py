"""`shoal operator deploy`: the operator as a Swarm service on the managers.

The operator (and only it) gets the Docker socket; it joins the shared control network that
every member joins, so adding a database never restarts it; it publishes 9650
in host mode on the manager that runs it (the ingress routing mesh needs IPVS in the kernel,
which these machines lack; host mode works everywhere).
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from shoal import names
from shoal.credentials import new_operator_key
from shoal.operator.members import RESTART_POLICY, ensure_control_network
from shoal.platform.distribution import Distributed, distribute
from shoal.platform.images import BuiltImages
from shoal.swarm.client import JSON, SwarmClient

LABELS = {names.LABEL_MANAGED: "true", names.LABEL_ROLE: "operator"}


async def ensure_operator_key(swarm: SwarmClient) -> str:
    """The one secret everything else is derived from; created once, never rotated here."""
    existing = await swarm.secret(names.OPERATOR_KEY_SECRET)
    if existing is not None:
        return str(existing["ID"])
    key = base64.b64encode(base64.urlsafe_b64encode(new_operator_key())).decode()
    return await swarm.ensure_secret(names.OPERATOR_KEY_SECRET, key, LABELS)


def operator_service_spec(
    image: str,
    postgres_image: str,
    key_secret_id: str,
    control_net: str,
    replicas: int,
    name: str = names.OPERATOR_SERVICE,
    publish: bool = True,
) -> JSON:
    ports = [
        {
            "Protocol": "tcp",
            "TargetPort": names.OPERATOR_PORT,
            "PublishedPort": names.OPERATOR_PORT,
            "PublishMode": "host",
        }
    ]
    return {
        "Name": name,
        "Labels": LABELS,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                "Args": ["operator", "run"],
                "Env": [f"SHOAL_POSTGRES_IMAGE={postgres_image}"],
                "Labels": LABELS,
                "Mounts": [
                    {
                        "Type": "bind",
                        "Source": "/var/run/docker.sock",
                        "Target": "/var/run/docker.sock",
                    }
                ],
                "Secrets": [
                    {
                        "SecretID": key_secret_id,
                        "SecretName": names.OPERATOR_KEY_SECRET,
                        "File": {
                            "Name": names.OPERATOR_KEY_SECRET,
                            "UID": "0",
                            "GID": "0",
                            "Mode": 0o400,
                        },
                    }
                ],
                "StopGracePeriod": 10 * 10**9,
            },
            "RestartPolicy": RESTART_POLICY,
            "Placement": {"Constraints": ["node.role==manager"]},
            "Networks": [{"Target": control_net}],
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "EndpointSpec": {"Ports": ports if publish else []},
    }


async def deploy_operator(
    swarm: SwarmClient,
    image: str,
    postgres_image: str,
    replicas: int = 1,
    name: str = names.OPERATOR_SERVICE,
    publish: bool = True,
) -> bool:
    """Create or update the operator service; True when something changed. A second,
    unpublished service (`name`, `publish=False`) is a standby operator on the same node."""
    control = await ensure_control_network(swarm)
    key_id = await ensure_operator_key(swarm)
    spec = operator_service_spec(image, postgres_image, key_id, control, replicas, name, publish)
    current = await swarm.service(name)
    if current is None:
        await swarm.create_service(spec)
        return True
    cur = current["Spec"]
    running_image = str(cur["TaskTemplate"]["ContainerSpec"]["Image"])
    same = (
        running_image in (image, image.split("@")[0])
        and cur["TaskTemplate"]["ContainerSpec"].get("Env")
        == spec["TaskTemplate"]["ContainerSpec"]["Env"]
        and cur["Mode"] == spec["Mode"]
    )
    if same:
        return False
    await swarm.update_service(current["ID"], int(current["Version"]["Index"]), spec)
    return True


async def install_operator(
    swarm: SwarmClient,
    images: BuiltImages,
    registry: str | None = None,
    progress: Callable[[str], None] | None = None,
    replicas: int = 1,
) -> tuple[Distributed, bool]:
    """Make the images pullable by every node (shoal/platform/distribution.py), then create
    or update the operator with them; (where the images are, whether the operator changed)."""
    placed = await distribute(swarm, images, registry, progress)
    changed = await deploy_operator(swarm, placed.images.operator, placed.images.postgres, replicas)
    return placed, changed
