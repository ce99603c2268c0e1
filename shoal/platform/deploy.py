"""`shoal operator deploy`: the operator as a Swarm service on the managers.

The operator (and only it) gets the Docker socket; it joins the shared control network that
every member joins, so adding a database never restarts it; it publishes 9650
in host mode on the manager that runs it (the ingress routing mesh needs IPVS in the kernel,
which these machines lack; host mode works everywhere).
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable, Mapping

from shoal import names
from shoal.credentials import new_operator_key
from shoal.operator import http_auth
from shoal.operator.members import RESTART_POLICY, ensure_control_network
from shoal.platform.distribution import Distributed, distribute
from shoal.platform.images import BuiltImages
from shoal.plugins.registry import image_env, plugin_classes
from shoal.swarm.client import JSON, SwarmClient

LABELS = {names.LABEL_MANAGED: "true", names.LABEL_ROLE: "operator"}


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP  # deploy_operator: leave the HTTP token as the running service has it
HttpToken = str | None | _Keep


async def ensure_operator_key(swarm: SwarmClient) -> str:
    """The one secret everything else is derived from; created once, never rotated here."""
    existing = await swarm.secret(names.OPERATOR_KEY_SECRET)
    if existing is not None:
        return str(existing["ID"])
    key = base64.b64encode(base64.urlsafe_b64encode(new_operator_key())).decode()
    return await swarm.ensure_secret(names.OPERATOR_KEY_SECRET, key, LABELS)


def _secret_mount(secret_id: str, secret_name: str, file_name: str) -> JSON:
    return {
        "SecretID": secret_id,
        "SecretName": secret_name,
        "File": {"Name": file_name, "UID": "0", "GID": "0", "Mode": 0o400},
    }


def mounted_http_token(spec: JSON) -> tuple[str, str] | None:
    """(id, name) of the HTTP token secret a service spec mounts, if any."""
    for mount in spec["TaskTemplate"]["ContainerSpec"].get("Secrets") or []:
        if mount.get("File", {}).get("Name") == http_auth.FILE_NAME:
            return str(mount["SecretID"]), str(mount["SecretName"])
    return None


async def ensure_http_token(swarm: SwarmClient, token: str) -> tuple[str, str]:
    """The secret holding `token` (created when new); (id, name)."""
    name = http_auth.secret_name(token)
    data = base64.b64encode(token.encode()).decode()
    labels = {**LABELS, names.LABEL_ROLE: "operator-http-token"}
    return await swarm.ensure_secret(name, data, labels), name


def operator_service_spec(
    image: str,
    member_images: Mapping[str, str],
    key_secret_id: str,
    control_net: str,
    replicas: int,
    name: str = names.OPERATOR_SERVICE,
    publish: bool = True,
    http_token_secret: tuple[str, str] | None = None,
) -> JSON:
    """`member_images`: engine -> the member image the operator gives its databases, in
    `SHOAL_<ENGINE>_IMAGE` (plugins/registry.py). `http_token_secret`: (id, name) of the HTTP
    token's secret, mounted as the file `shoal-operator-http-token` (operator/http_auth.py);
    None: no token."""
    secrets = [_secret_mount(key_secret_id, names.OPERATOR_KEY_SECRET, names.OPERATOR_KEY_SECRET)]
    if http_token_secret is not None:
        secrets.append(_secret_mount(*http_token_secret, http_auth.FILE_NAME))
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
                # Every installed engine's variable, empty for one whose member image was
                # not built (its server binary never given): its databases then say so.
                "Env": [
                    f"{image_env(engine)}={member_images.get(engine, '')}"
                    for engine in sorted({*plugin_classes(), *member_images})
                ],
                "Labels": LABELS,
                "Mounts": [
                    {
                        "Type": "bind",
                        "Source": "/var/run/docker.sock",
                        "Target": "/var/run/docker.sock",
                    }
                ],
                "Secrets": secrets,
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
    member_images: Mapping[str, str],
    replicas: int = 1,
    name: str = names.OPERATOR_SERVICE,
    publish: bool = True,
    http_token: HttpToken = KEEP,
) -> bool:
    """Create or update the operator service; True when something changed. A second,
    unpublished service (`name`, `publish=False`) is a standby operator on the same node.
    `http_token`: a token to require from HTTP clients, None for none, KEEP for whatever
    the running service has."""
    control = await ensure_control_network(swarm)
    key_id = await ensure_operator_key(swarm)
    current = await swarm.service(name)
    if isinstance(http_token, str):
        token_secret: tuple[str, str] | None = await ensure_http_token(swarm, http_token)
    elif http_token is KEEP and current is not None:
        token_secret = mounted_http_token(current["Spec"])
    else:
        token_secret = None
    spec = operator_service_spec(
        image, member_images, key_id, control, replicas, name, publish, token_secret
    )
    if current is None:
        await swarm.create_service(spec)
        return True
    cur = current["Spec"]
    running_image = str(cur["TaskTemplate"]["ContainerSpec"]["Image"])
    same = (
        running_image in (image, image.split("@")[0])
        and cur["TaskTemplate"]["ContainerSpec"].get("Env")
        == spec["TaskTemplate"]["ContainerSpec"]["Env"]
        and mounted_http_token(cur) == token_secret
        and (cur.get("EndpointSpec") or {}).get("Ports", []) == spec["EndpointSpec"]["Ports"]
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
    *,
    publish: bool = True,
    http_token: HttpToken = KEEP,
) -> tuple[Distributed, bool]:
    """Make the images pullable by every node (shoal/platform/distribution.py), then create
    or update the operator with them; (where the images are, whether the operator changed)."""
    placed = await distribute(swarm, images, registry, progress)
    changed = await deploy_operator(
        swarm,
        placed.images.operator,
        placed.images.members,
        replicas,
        publish=publish,
        http_token=http_token,
    )
    return placed, changed


async def operator_http_token(swarm: SwarmClient) -> tuple[str, str] | None:
    """(id, name) of the HTTP token secret the operator service mounts, if any."""
    current = await swarm.service(names.OPERATOR_SERVICE)
    return mounted_http_token(current["Spec"]) if current is not None else None


# --- the operator as a Docker stack (deploy/stack.yml) ------------------------------------

STACK_OPERATOR_IMAGE = "SHOAL_OPERATOR_IMAGE"  # the stack file's variable for the image


def stack_variables(images: BuiltImages) -> dict[str, str]:
    """The variables deploy/stack.yml reads: the operator image and, under the names the
    operator itself reads (`SHOAL_<ENGINE>_IMAGE`), each engine's member image."""
    return {
        STACK_OPERATOR_IMAGE: images.operator,
        **{image_env(engine): tag for engine, tag in sorted(images.members.items())},
    }


async def prepare_stack(
    swarm: SwarmClient,
    images: BuiltImages,
    registry: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """What `docker stack deploy -c deploy/stack.yml` cannot make itself and `shoal operator
    deploy` makes at deploy time: the images where every node pulls them, the control
    network (external in the stack: members join it too and it outlives the stack) and the
    operator key (generated; external in the stack). Returns the stack's variables."""
    placed = await distribute(swarm, images, registry, progress)
    await ensure_control_network(swarm)
    await ensure_operator_key(swarm)
    return stack_variables(placed.images)


STACK_NAMESPACE_LABEL = "com.docker.stack.namespace"  # what `docker stack deploy` sets


async def stack_operators(swarm: SwarmClient) -> dict[str, str]:
    """Operator services a `docker stack deploy` made: service name -> its stack."""
    found = await swarm.services_with_label(names.LABEL_ROLE, "operator")
    return {
        str(s["Spec"]["Name"]): str(s["Spec"]["Labels"][STACK_NAMESPACE_LABEL])
        for s in found
        if STACK_NAMESPACE_LABEL in (s["Spec"].get("Labels") or {})
    }


def stack_operator_problem(found: Mapping[str, str]) -> str | None:
    """Why `shoal operator deploy` must not add its own operator next to a stack's."""
    if not found:
        return None
    service, stack = next(iter(sorted(found.items())))
    return (
        f"the operator runs as the Docker stack {stack!r} (service {service}): run one "
        f"operator, either update it with `docker stack deploy -c deploy/stack.yml {stack}` "
        f"or remove it (`docker stack rm {stack}`) before `shoal operator deploy`"
    )
