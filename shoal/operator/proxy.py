"""The read-write endpoint of a database (`spec.expose.port`): HAProxy in front of the
members, kept pointed at the current primary by its own health checks (the Patroni + HAProxy
pattern), not by the operator.

HAProxy comes from Debian and is already in the member image. Once a second it makes the HTTP
check the engine names (`EnginePlugin.proxy_backend`: for PostgreSQL the agent's `GET /primary`
on its check port, 200 only on a running primary) and sends TCP connections to the member that
answers 200; sessions to a member marked down are cut. Member names are resolved at run time
through Docker's DNS, so a replaced member (new task, new address) is followed and a missing
one does not stop HAProxy.

The configuration reaches the container as a Docker config: configs are immutable, so a new
member list is a new config (its name carries a content hash), a service update, and the old
config removed once no service uses it. The service is published in host mode (the ingress
routing mesh needs IPVS, which these machines lack).

Planning (`plan_proxy`) is pure; the rest talks to Swarm.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from shoal import names
from shoal.declaration import Database
from shoal.operator.members import RESTART_POLICY, db_labels, image_matches
from shoal.plugins.base import (
    Action,
    EnsureProxy,
    Observation,
    ProxyBackend,
    ProxyObservation,
    PruneProxyConfigs,
    RemoveProxy,
)
from shoal.swarm.client import JSON, SwarmApi

CONFIG_PATH = "/usr/local/etc/haproxy/haproxy.cfg"
PROXY_MEMORY_BYTES = 128 * 1024**2
STOP_GRACE_NS = 2 * 10**9
PROXY_ROLE = "proxy"


def render_config(backend: ProxyBackend, members: tuple[str, ...]) -> str:
    """haproxy.cfg: TCP to whichever member answers the engine's check with 200."""
    lines = [
        "# Written by the shoal operator. Do not edit: a new member list is a new config.",
        "global",
        "    log stdout format raw local0 notice",
        "    maxconn 4096",
        "",
        "resolvers docker",
        "    nameserver dns 127.0.0.11:53",
        "    resolve_retries 3",
        "    timeout resolve 1s",
        "    timeout retry 1s",
        "    hold valid 2s",
        "    hold other 2s",
        "    hold refused 2s",
        "    hold nx 2s",
        "    hold timeout 2s",
        "    hold obsolete 2s",
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option dontlognull",
        "    timeout connect 3s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout check 2s",
        "",
        "listen primary",
        f"    bind :{backend.port}",  # inside the container; non-root may bind it
        "    mode tcp",
        f"    option httpchk GET {backend.check_path}",
        "    http-check expect status 200",
        "    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions "
        "resolvers docker init-addr none resolve-prefer ipv4",
    ]
    lines += [f"    server {m} {m}:{backend.port} check port {backend.check_port}" for m in members]
    return "\n".join(lines) + "\n"


def config_name(db: str, backend: ProxyBackend, members: tuple[str, ...]) -> str:
    digest = hashlib.sha256(render_config(backend, members).encode()).hexdigest()[:12]
    return f"shoal-{db}-proxy-{digest}"


def proxy_members(obs: Observation[Any]) -> tuple[str, ...]:
    """Every member the proxy checks: the declared ones, then any extra one whose service
    still exists (while scaling down the primary may be one until it hands over)."""
    return tuple(m.name for m in obs.members)


def plan_proxy(obs: Observation[Any], backend: ProxyBackend | None) -> list[Action]:
    """Pure: the actions that bring the proxy to what `spec.expose.port` asks (none asked,
    or an engine without a `backend`: no proxy)."""
    if not obs.infrastructure_ready:
        return []
    port = obs.database.spec.expose.port
    px = obs.proxy
    if port is None or backend is None:
        return [RemoveProxy()] if px.exists or px.configs else []
    members = proxy_members(obs)
    want = config_name(obs.database.name, backend, members)
    actions: list[Action] = []
    if not px.exists or px.port != port or px.config != want or not px.image_current:
        actions.append(EnsureProxy(port, members))
    stale = tuple(c for c in px.configs if c not in (want, px.config))
    if stale:
        actions.append(PruneProxyConfigs(stale))
    return actions


def proxy_service_spec(
    db: Database,
    backend: ProxyBackend,
    image: str,
    network_id: str,
    port: int,
    config_id: str,
    config: str,
) -> JSON:
    name = names.proxy_service(db.name)
    labels = db_labels(db.name, PROXY_ROLE)
    return {
        "Name": name,
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                # ContainerSpec.Command replaces the image's entrypoint (the member agent).
                "Command": ["haproxy", "-W", "-db", "-f", CONFIG_PATH],
                "Args": [],
                "Labels": labels,
                "Configs": [
                    {
                        "ConfigID": config_id,
                        "ConfigName": config,
                        "File": {"Name": CONFIG_PATH, "UID": "0", "GID": "0", "Mode": 0o444},
                    }
                ],
                "Mounts": [],
                "StopGracePeriod": STOP_GRACE_NS,
            },
            "Resources": {"Limits": {"MemoryBytes": PROXY_MEMORY_BYTES}},
            "RestartPolicy": RESTART_POLICY,
            "Placement": {"Constraints": list(db.spec.placement.constraints)},
            # The database's network only: the proxy needs no control network.
            "Networks": [{"Target": network_id, "Aliases": [name]}],
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": {
            "Mode": "dnsrr",
            "Ports": [
                {
                    "Protocol": "tcp",
                    "TargetPort": backend.port,
                    "PublishedPort": port,
                    "PublishMode": "host",
                }
            ],
        },
        # A host-mode port cannot be held by two tasks on one node: stop the old one first.
        "UpdateConfig": {"Parallelism": 1, "Order": "stop-first", "FailureAction": "continue"},
    }


def observe_proxy(
    db: str, image: str, services: list[JSON], configs: list[JSON]
) -> ProxyObservation:
    """`services`: the database's services as just listed (by its label); the proxy is one
    of them, so no lookup by name is needed (one for a proxy that does not exist is a 404,
    and an error line in dockerd's log, every cycle). `configs`: the database's configs of
    the proxy role (operator/shared.py reads them for every database at once)."""
    found = tuple(
        sorted(
            c["Spec"]["Name"]
            for c in configs
            if c["Spec"].get("Labels", {}).get(names.LABEL_ROLE) == PROXY_ROLE
            and c["Spec"].get("Labels", {}).get(names.LABEL_DATABASE) == db
        )
    )
    service = next(
        (
            s
            for s in services
            if s["Spec"]["Name"] == names.proxy_service(db)
            and s["Spec"].get("Labels", {}).get(names.LABEL_ROLE) == PROXY_ROLE
        ),
        None,
    )
    if service is None:
        return ProxyObservation(configs=found)
    spec = service["Spec"]
    container = spec.get("TaskTemplate", {}).get("ContainerSpec", {})
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    used = container.get("Configs") or []
    return ProxyObservation(
        exists=True,
        port=int(ports[0]["PublishedPort"]) if ports and "PublishedPort" in ports[0] else None,
        config=str(used[0]["ConfigName"]) if used else None,
        image_current=image_matches(str(container.get("Image", "")), image),
        configs=found,
    )


async def ensure_proxy(
    swarm: SwarmApi,
    db: Database,
    backend: ProxyBackend,
    image: str,
    port: int,
    members: tuple[str, ...],
) -> None:
    """Create the proxy's config (if new) and create or update its service."""
    network_id = await swarm.ensure_overlay(
        names.database_network(db.name), db_labels(db.name, "network")
    )
    text = render_config(backend, members)
    cname = config_name(db.name, backend, members)
    cid = await swarm.ensure_config(
        cname, base64.b64encode(text.encode()).decode(), db_labels(db.name, PROXY_ROLE)
    )
    spec = proxy_service_spec(db, backend, image, network_id, port, cid, cname)
    current = await swarm.service(spec["Name"])
    if current is None:
        await swarm.create_service(spec)
        return
    await swarm.update_service(current["ID"], int(current["Version"]["Index"]), spec)


async def prune_configs(swarm: SwarmApi, configs: tuple[str, ...]) -> None:
    for c in configs:
        await swarm.remove_config(c)


async def remove_proxy(swarm: SwarmApi, db: str) -> None:
    await swarm.remove_service(names.proxy_service(db))
    for c in await swarm.configs_with_label(names.LABEL_DATABASE, db):
        if c["Spec"].get("Labels", {}).get(names.LABEL_ROLE) == PROXY_ROLE:
            await swarm.remove_config(c["ID"])
