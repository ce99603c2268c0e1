"""Image distribution: make shoal's locally built images pullable by every Swarm node.

Swarm schedules a task on whichever node fits and that node's engine must find the image
itself; images built on one node exist only there. On a single-node swarm nothing needs
doing. On more nodes `shoal up` and `shoal operator deploy` push the operator and member
images to a registry and name them in every service spec as `REGISTRY/shoal/...:tag@digest`
(pinned by digest, so each node runs the very bytes that were built):

* `--registry HOST[:PORT][/PREFIX]`: the user's own registry. The engine `shoal` talks to
  pushes (with the credentials `docker login` stored in ~/.docker/config.json, if any); every
  node must be able to pull without credentials (the operator creates member services
  itself and holds no registry login).
* otherwise the built-in one: a `shoal-registry` service (Debian's `docker-registry`,
  `shoal/platform/image/registry/`) pinned to the manager `shoal` talks to, its port 5000
  published in host mode on that node and its blobs in a named volume there, so a restarted
  registry task still serves every image pushed before. The routing mesh would let every
  node pull from `127.0.0.1:5000` (Docker's own swarm tutorial), but it needs IPVS, which
  these machines lack; nodes therefore pull from `MANAGER_ADDRESS:5000`, which each node's
  engine must accept over plain HTTP (`"insecure-registries"` in daemon.json; the lab's
  nodes are started with the lab's subnet there). docs/operations.md says how.

Either way, every pushed image is then pulled onto every node ahead of need by a global job
per image (`shoal-images-operator`, `shoal-images-<engine>`: it runs `true` once per node,
and Swarm runs it again on every node that joins later). A node that pulled an image by
digest starts it without asking the registry again, so losing the registry's node (the
built-in one lives on a single manager) does not stop a member lost with another node from
being re-created elsewhere: seen on the lab, where a member re-created while the registry's
node was down was rejected with "No such image" until that node came back.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shoal import names
from shoal.platform.engine import PlatformError
from shoal.platform.images import BuiltImages
from shoal.swarm.client import JSON, SwarmClient, SwarmError, retrying_for, while_raft_busy

Progress = Callable[[str], None]

LABELS = {names.LABEL_MANAGED: "true", names.LABEL_ROLE: "registry"}
CACHE_LABELS = {names.LABEL_MANAGED: "true", names.LABEL_ROLE: "image-cache"}
STORAGE = "/var/lib/shoal-registry"
# How long a just-created registry task gets to start answering pushes.
REGISTRY_START_TIMEOUT = 120.0
# How long a command waits for the managers to elect a Raft leader before giving up.
RAFT_WAIT = 60.0

# A registry location as a Docker image reference starts: a host that is a domain with a
# dot, `localhost` or has a port, then optional lowercase path components (the grammar of
# github.com/distribution/reference, reduced to what a prefix may hold).
_HOST = r"(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+|\[[0-9a-fA-F:]+\]|[A-Za-z0-9-]+(?=:))"  # noqa: E501
_PORT = r"(?::[0-9]{1,5})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REGISTRY_RE = re.compile(rf"^(?P<host>{_HOST}{_PORT})(?P<path>(?:/{_COMPONENT})*)$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class DistributionError(PlatformError):
    """The images could not be made pullable by every node; the message says why."""


def registry_problems(value: str) -> list[str]:
    """Why `value` is not a usable `--registry HOST[:PORT][/PREFIX]` (empty when it is)."""
    if not value:
        return ["--registry: must not be empty"]
    if "://" in value:
        return [f"--registry {value!r}: give HOST[:PORT][/PREFIX] without a scheme"]
    match = REGISTRY_RE.match(value)
    if match is None:
        return [
            f"--registry {value!r}: not HOST[:PORT][/PREFIX] (a host with a dot, "
            "'localhost' or a port, then lowercase path components)"
        ]
    port = match["host"].rpartition(":")[2] if match["host"].count(":") == 1 else None
    if port is not None and port.isdigit() and not 0 < int(port) < 65536:
        return [f"--registry {value!r}: port {port} is out of range"]
    return []


def registry_host(prefix: str) -> str:
    return prefix.split("/", 1)[0]


def pushed_name(prefix: str, tag: str) -> str:
    """`shoal/operator:0.1.0-abc` in registry `prefix`: `PREFIX/shoal/operator:0.1.0-abc`."""
    return f"{prefix.rstrip('/')}/{tag}"


def pinned(name: str, digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise DistributionError(f"the registry answered an unusable digest {digest!r}")
    return f"{name}@{digest}"


def push_digest(progress: list[dict[str, Any]]) -> str:
    """The manifest digest from an engine's push progress stream (its `aux` record);
    a stream with an `error` record raises with the engine's words."""
    digest = None
    for record in progress:
        if record.get("error"):
            raise DistributionError(str(record.get("error")))
        aux = record.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
            digest = aux["Digest"]
    if digest is None:
        raise DistributionError("the push finished without the registry naming a digest")
    return str(digest)


def registry_service_spec(image: str, node_id: str) -> JSON:
    """The built-in registry: one task, on the node `shoal` talks to, blobs in a named
    volume there, port 5000 published in host mode on that node."""
    return {
        "Name": names.REGISTRY_SERVICE,
        "Labels": LABELS,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                "Labels": LABELS,
                "Mounts": [{"Type": "volume", "Source": names.REGISTRY_VOLUME, "Target": STORAGE}],
                "StopGracePeriod": 10 * 10**9,
            },
            "RestartPolicy": {"Condition": "any", "Delay": 10**9},
            "Placement": {"Constraints": [f"node.id=={node_id}"]},
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": {
            "Ports": [
                {
                    "Protocol": "tcp",
                    "TargetPort": names.REGISTRY_PORT,
                    "PublishedPort": names.REGISTRY_PORT,
                    "PublishMode": "host",
                }
            ]
        },
    }


def image_cache_spec(kind: str, image: str) -> JSON:
    """A global job that pulls `image` onto every node (and onto each node that joins
    later): its task runs `true` and exits; the image stays on the node."""
    return {
        "Name": f"{names.IMAGE_CACHE_PREFIX}{kind}",
        "Labels": CACHE_LABELS,
        "TaskTemplate": {
            "ContainerSpec": {"Image": image, "Command": ["true"], "Labels": CACHE_LABELS},
            "Resources": {"Limits": {"MemoryBytes": 32 * 2**20, "NanoCPUs": 10**8}},
            "RestartPolicy": {"Condition": "on-failure", "Delay": 5 * 10**9, "MaxAttempts": 5},
        },
        "Mode": {"GlobalJob": {}},
    }


async def ensure_image_caches(swarm: SwarmClient, images: dict[str, str]) -> None:
    """Create or update the global pull job of each image (`kind` -> pinned reference)."""
    for kind, image in images.items():
        spec = image_cache_spec(kind, image)
        current = await swarm.service(spec["Name"])
        if current is None:
            await swarm.create_service(spec)
        elif current["Spec"]["TaskTemplate"]["ContainerSpec"].get("Image") != image:
            # A job whose spec changes runs again on every node.
            await swarm.update_service(current["ID"], int(current["Version"]["Index"]), spec)


def stored_push_auth(prefix: str, config: Path | None = None) -> dict[str, str] | None:
    """The credentials `docker login HOST` stored for the registry, if any (plain `auth`
    entries only; credential helpers are not consulted)."""
    path = config or Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        auths = json.loads(path.read_text()).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    host = registry_host(prefix)
    entry = auths.get(host) or auths.get(f"https://{host}") or {}
    encoded = entry.get("auth") if isinstance(entry, dict) else None
    if not isinstance(encoded, str):
        return None
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return {"username": user, "password": password, "serveraddress": host}


# --- on the swarm -----------------------------------------------------------------------


async def swarm_node_count(swarm: SwarmClient, wait: float = RAFT_WAIT) -> int:
    """How many nodes the swarm has; waits out a Raft election for up to `wait` seconds."""
    async for attempt in while_raft_busy(wait):
        with attempt:
            return len(await swarm.nodes())
    raise AssertionError("unreachable")  # pragma: no cover  (reraise=True raises first)


async def ensure_builtin_registry(swarm: SwarmClient, image: str) -> str:
    """Create or update `shoal-registry` on this manager; its address as nodes reach it."""
    info = await swarm.info()
    node_id = str(info.get("Swarm", {}).get("NodeID") or "")
    address = str(info.get("Swarm", {}).get("NodeAddr") or "")
    if not node_id or not address:
        raise DistributionError("the engine is not a swarm node (no NodeID in docker info)")
    spec = registry_service_spec(image, node_id)
    current = await swarm.service(names.REGISTRY_SERVICE)
    if current is None:
        await swarm.create_service(spec)
    elif current["Spec"].get("TaskTemplate") != spec["TaskTemplate"]:
        await swarm.update_service(current["ID"], int(current["Version"]["Index"]), spec)
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{names.REGISTRY_PORT}"


async def _push_once(
    swarm: SwarmClient, repository: str, version: str, auth: dict[str, str] | None
) -> str:
    try:
        records = await swarm.push_image(repository, version, auth)
    except SwarmError as e:
        raise DistributionError(e.message) from None
    return push_digest(records)


def _plain_http_hint(message: str, prefix: str) -> str:
    if "https" not in message.lower():
        return ""
    return (
        f"; every node's engine must accept {registry_host(prefix)} over plain HTTP "
        '("insecure-registries" in /etc/docker/daemon.json, see docs/operations.md)'
    )


async def push(
    swarm: SwarmClient, tag: str, prefix: str, *, wait: float = REGISTRY_START_TIMEOUT
) -> str:
    """Push local image `tag` into `prefix`; the pinned reference nodes pull. Retries for
    up to `wait` seconds while the registry does not answer (a task still starting)."""
    name = pushed_name(prefix, tag)
    repository, _, version = name.rpartition(":")
    auth = stored_push_auth(prefix)
    try:
        await swarm.tag_image(tag, repository, version)
    except SwarmError as e:
        raise DistributionError(f"cannot tag {tag} as {name}: {e.message}") from None
    try:
        async for attempt in retrying_for(wait, every=2, on=DistributionError):
            with attempt:
                digest = await _push_once(swarm, repository, version, auth)
    except DistributionError as e:
        raise DistributionError(
            f"pushing {tag} to {registry_host(prefix)} failed for {wait:.0f}s: "
            f"{e}{_plain_http_hint(str(e), prefix)}"
        ) from None
    return pinned(name, digest)


@dataclass(frozen=True)
class Distributed:
    images: BuiltImages  # the operator and member images as every node pulls them
    registry: str | None  # where they were pushed; None on a single node


async def distribute(
    swarm: SwarmClient,
    images: BuiltImages,
    registry: str | None = None,
    progress: Progress | None = None,
) -> Distributed:
    """Make the operator and member images pullable by every node (module docstring)."""
    say = progress or (lambda _m: None)
    if registry is None:
        try:
            count = await swarm_node_count(swarm)
        except SwarmError as e:
            raise DistributionError(f"cannot list the swarm's nodes: {e}") from None
        if count <= 1:
            return Distributed(images, None)
        say(f"{count} nodes: starting the swarm's registry ({names.REGISTRY_SERVICE})")
        registry = await ensure_builtin_registry(swarm, images.registry)
    pulled: dict[str, str] = {}
    for tag in (images.operator, *images.members.values()):
        say(f"pushing {tag} to {registry}")
        pulled[tag] = await push(swarm, tag, registry)
    members = {engine: pulled[tag] for engine, tag in images.members.items()}
    say("every node pulls the images ahead of need (global jobs shoal-images-*)")
    await ensure_image_caches(swarm, {"operator": pulled[images.operator], **members})
    return Distributed(replace(images, operator=pulled[images.operator], members=members), registry)
