"""`shoal operator deploy`: the operator as a Swarm service on the managers.

The operator (and only it) gets the Docker socket; it joins the shared control network that
every member joins, so adding a database never restarts it; it publishes 9650 on the ingress.
"""

from __future__ import annotations

import base64

from shoal import names
from shoal.credentials import new_operator_key
from shoal.operator.members import RESTART_POLICY, ensure_control_network
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
    image: str, postgres_image: str, key_secret_id: str, control_net: str, replicas: int
) -> JSON:
    return {
        "Name": names.OPERATOR_SERVICE,
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
        "EndpointSpec": {
            "Ports": [
                {
                    "Protocol": "tcp",
                    "TargetPort": names.OPERATOR_PORT,
                    "PublishedPort": names.OPERATOR_PORT,
                    "PublishMode": "ingress",
                }
            ]
        },
    }


async def deploy_operator(
    swarm: SwarmClient, image: str, postgres_image: str, replicas: int = 1
) -> bool:
    """Create or update the operator service; True when something changed."""
    control = await ensure_control_network(swarm)
    key_id = await ensure_operator_key(swarm)
    spec = operator_service_spec(image, postgres_image, key_id, control, replicas)
    current = await swarm.service(names.OPERATOR_SERVICE)
    if current is None:
        await swarm.create_service(spec)
        return True
    cur = current["Spec"]
    same = (
        cur["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0] == image
        and cur["TaskTemplate"]["ContainerSpec"].get("Env")
        == spec["TaskTemplate"]["ContainerSpec"]["Env"]
        and cur["Mode"] == spec["Mode"]
    )
    if same:
        return False
    await swarm.update_service(current["ID"], int(current["Version"]["Index"]), spec)
    return True
