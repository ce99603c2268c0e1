"""Swarm objects of one database: its networks, its secrets and one service per member.

No member service ever has a mount: data lives in the container's writable layer and dies
with it. Credentials reach members only as Docker secrets (files under /run/secrets).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from shoal import names
from shoal.credentials import SHARED_FILES, DatabaseCredentials, secret_payload
from shoal.declaration import Database
from shoal.operator.placement import constraints_with_pin
from shoal.plugins.base import ActionFailed
from shoal.swarm.client import JSON, SwarmApi, SwarmError

log = logging.getLogger("shoal.operator")

# A killed member is replaced at once: Swarm's default 5 s restart delay would be pure
# outage (docs/failure-modes.md).
RESTART_POLICY: JSON = {"Condition": "any", "Delay": 0, "MaxAttempts": 0}
# A stopped member's data dies with its container, and with `durability: sync` every
# acknowledged commit is on a standby already: a long graceful stop protects nothing, while
# a fence (a forced update) waits this long before Swarm kills the old container.
STOP_GRACE_NS = 1 * 10**9
# The files a member's own secrets are mounted as (the shared ones: credentials.SHARED_FILES).
AGENT_TOKEN = "agent-token"  # its agent's bearer token
TLS_BUNDLE = "tls.pem"  # its own key, its server certificate and the CA
# spec.backup's credentials (AWS credentials file format) and optional CA bundle.
BACKUP_CREDENTIALS = "backup-credentials"
BACKUP_CA = "backup-ca.pem"


@dataclass(frozen=True)
class Infrastructure:
    network_id: str
    control_network_id: str
    secrets: dict[str, tuple[str, str]]  # shared purpose -> (secret id, secret name)
    agent_tokens: dict[int, tuple[str, str]]  # member index -> its own agent token's secret
    tls: dict[int, tuple[str, str]]  # member index -> its own TLS bundle's secret
    # The shared control network's subnets: members admit no application login from there
    # (only the operator and other databases' members are on it).
    control_subnets: tuple[str, ...] = ()
    # spec.backup's secrets, the user's own: (secret id, secret name, file name in the member)
    backup_secrets: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class SecretNames:
    """The names of a database's Docker secrets."""

    shared: dict[str, str]  # purpose (credentials.SHARED_FILES) -> name
    agent_tokens: dict[int, str]  # member index -> its own agent token's secret
    tls: dict[int, str]  # member index -> its own TLS bundle's secret

    def all(self) -> list[str]:
        return [*self.shared.values(), *self.agent_tokens.values(), *self.tls.values()]


def secret_names(db: str, uid: str, members: int) -> SecretNames:
    def name(what: str) -> str:
        # The uid in the name: a database deleted and declared again never meets the
        # previous incarnation's secrets.
        return f"shoal-{db}-{uid[:8]}-{what}"

    return SecretNames(
        shared={purpose: name(purpose) for purpose in SHARED_FILES},
        agent_tokens={i: name(f"{AGENT_TOKEN}-{i}") for i in range(members)},
        tls={i: name(f"tls-{i}") for i in range(members)},
    )


def tls_bundle(credentials: DatabaseCredentials, db: str, index: int, now: datetime) -> str:
    """What the member's TLS secret holds: its key, the certificate for `now`'s period and
    the CA. Later certificates reach the member by the agent (for the same key)."""
    member = names.member_service(db, index)
    issued = credentials.ca.issue(member, names.member_dns_names(db, index), now)
    return issued.key_pem + issued.cert_pem + credentials.ca.cert_pem


def db_labels(db: str, role: str) -> dict[str, str]:
    return {names.LABEL_MANAGED: "true", names.LABEL_DATABASE: db, names.LABEL_ROLE: role}


# Every member of every database and the operator take an address on the control network.
# Swarm's default /24 leaves 254, and Docker 20.10 was seen not to give back the addresses of
# replaced tasks fast enough under churn (chaos runs, benchmarks): new tasks then stay in
# state "new" ("could not find an available IP"). A /20 gives 4094.
CONTROL_SUBNET_CANDIDATES = tuple(f"10.{second}.0.0/20" for second in range(200, 250))


def free_subnet(
    in_use: list[str], candidates: tuple[str, ...] = CONTROL_SUBNET_CANDIDATES
) -> str | None:
    used = [ipaddress.ip_network(s, strict=False) for s in in_use if ":" not in s]
    for c in candidates:
        net = ipaddress.ip_network(c)
        if not any(net.overlaps(u) for u in used):
            return c
    return None


async def ensure_control_network(swarm: SwarmApi) -> str:
    labels = {names.LABEL_MANAGED: "true", names.LABEL_ROLE: "control"}
    if await swarm.network(names.CONTROL_NETWORK) is None:
        subnet = free_subnet(await swarm.subnets_in_use())
        return await swarm.ensure_overlay(names.CONTROL_NETWORK, labels, subnet)
    return await swarm.ensure_overlay(names.CONTROL_NETWORK, labels)


async def ensure_infrastructure(
    swarm: SwarmApi, db: Database, uid: str, credentials: DatabaseCredentials
) -> Infrastructure:
    control = await ensure_control_network(swarm)
    network = await swarm.ensure_overlay(
        names.database_network(db.name), db_labels(db.name, "network")
    )
    labels = db_labels(db.name, "secret")
    wanted = secret_names(db.name, uid, db.spec.members)
    secrets: dict[str, tuple[str, str]] = {}
    for purpose, value in credentials.shared().items():
        name = wanted.shared[purpose]
        secrets[purpose] = (await swarm.ensure_secret(name, secret_payload(value), labels), name)
    tokens: dict[int, tuple[str, str]] = {}
    for index, name in wanted.agent_tokens.items():
        token = credentials.agent_token_for(names.member_service(db.name, index))
        tokens[index] = (await swarm.ensure_secret(name, secret_payload(token), labels), name)
    bundles: dict[int, tuple[str, str]] = {}
    now = datetime.now(UTC)
    for index, name in wanted.tls.items():
        # Made once (an existing secret is kept); renewals go through the agent.
        bundle = tls_bundle(credentials, db.name, index, now)
        bundles[index] = (await swarm.ensure_secret(name, secret_payload(bundle), labels), name)
    return Infrastructure(
        network,
        control,
        secrets,
        tokens,
        bundles,
        await network_subnets(swarm, names.CONTROL_NETWORK),
        await backup_secrets(swarm, db),
    )


def backup_secret_files(db: Database) -> dict[str, str]:
    """spec.backup's Docker secrets (the user's) -> their file names in a member."""
    backup = db.spec.backup
    if backup is None:
        return {}
    files = {backup.s3.credentials_secret: BACKUP_CREDENTIALS}
    if backup.s3.ca_secret is not None:
        files[backup.s3.ca_secret] = BACKUP_CA
    return files


async def backup_secrets(swarm: SwarmApi, db: Database) -> tuple[tuple[str, str, str], ...]:
    found = []
    for name, file_name in backup_secret_files(db).items():
        secret = await swarm.secret(name)
        if secret is None:
            raise ActionFailed(
                f"spec.backup: the Docker secret {name!r} does not exist: create it "
                "(docker secret create) before the members can archive"
            )
        found.append((str(secret["ID"]), name, file_name))
    return tuple(found)


async def network_subnets(swarm: SwarmApi, name: str) -> tuple[str, ...]:
    net = await swarm.network(name)
    configs = ((net or {}).get("IPAM") or {}).get("Config") or []
    return tuple(str(c["Subnet"]) for c in configs if c.get("Subnet"))


async def infrastructure_ready(swarm: SwarmApi, db: Database, uid: str) -> bool:
    control, network, secrets = await asyncio.gather(
        swarm.network(names.CONTROL_NETWORK),
        swarm.network(names.database_network(db.name)),
        swarm.secrets_with_label(names.LABEL_DATABASE, db.name),
    )
    if control is None or network is None:
        return False
    present = {s["Spec"]["Name"] for s in secrets}
    if not all(name in present for name in secret_names(db.name, uid, db.spec.members).all()):
        return False
    for name in backup_secret_files(db):
        if await swarm.secret(name) is None:
            return False
    return True


def secret_mount(secret_id: str, secret_name: str, file_name: str) -> JSON:
    return {
        "SecretID": secret_id,
        "SecretName": secret_name,
        "File": {"Name": file_name, "UID": "0", "GID": "0", "Mode": 0o444},
    }


def image_matches(image: str, want: str) -> bool:
    """A service's image is `want`, or `want` with the digest Swarm pinned it to."""
    return image == want or image.startswith(want + "@")


def member_service_spec(
    db: Database,
    index: int,
    image: str,
    infra: Infrastructure,
    force_update: int = 0,
    pin: str | None = None,
    extra_env: tuple[str, ...] = (),
) -> JSON:
    """One member's service. `pin` is the spread value placement chose for it
    (operator/placement.py): Swarm's own spread preference acts within one service only,
    and every member is a service of its own."""
    name = names.member_service(db.name, index)
    spec = db.spec
    return {
        "Name": name,
        "Labels": {**db_labels(db.name, "member"), names.LABEL_MEMBER: str(index)},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                "Hostname": name,
                # The task id lets a probe answer say which container it came from: during a
                # fence the old container may answer under the member's name for a moment.
                "Env": [
                    f"SHOAL_DATABASE={db.name}",
                    f"SHOAL_MEMBER={name}",
                    "SHOAL_TASK_ID={{.Task.ID}}",
                ]
                + (
                    [f"SHOAL_CONTROL_SUBNETS={','.join(infra.control_subnets)}"]
                    if infra.control_subnets
                    else []
                )
                + list(extra_env),
                "Labels": {**db_labels(db.name, "member"), names.LABEL_MEMBER: str(index)},
                "Secrets": [
                    secret_mount(sid, sname, SHARED_FILES[purpose])
                    for purpose, (sid, sname) in sorted(infra.secrets.items())
                ]
                + [
                    secret_mount(*infra.agent_tokens[index], AGENT_TOKEN),
                    secret_mount(*infra.tls[index], TLS_BUNDLE),
                ]
                + [secret_mount(*user) for user in infra.backup_secrets],
                "StopGracePeriod": STOP_GRACE_NS,
                "Mounts": [],
            },
            "Resources": {
                "Limits": {
                    "MemoryBytes": spec.resources.memory_bytes,
                    "NanoCPUs": int(spec.resources.cpus * 1e9),
                }
            },
            "RestartPolicy": RESTART_POLICY,
            "Placement": {
                "Constraints": constraints_with_pin(
                    spec.placement.constraints, spec.placement.spread, pin
                ),
            },
            "Networks": [
                {"Target": infra.network_id, "Aliases": [name]},
                {"Target": infra.control_network_id, "Aliases": [name]},
            ],
            "ForceUpdate": force_update,
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        # dnsrr: the member's name resolves straight to its task, no VIP in between that
        # could keep routing to a fenced container.
        "EndpointSpec": {"Mode": "dnsrr"},
        "UpdateConfig": {"Parallelism": 1, "Order": "stop-first", "FailureAction": "continue"},
    }


async def pin_member(swarm: SwarmApi, db: Database, member: str, value: str) -> bool:
    """Move a lost member's pin to `value`: Swarm starts its new task there (empty; the
    engine re-seeds it)."""
    service = await swarm.service(member)
    if service is None:
        return False
    spec = service["Spec"]
    placement = spec["TaskTemplate"].setdefault("Placement", {})
    placement["Constraints"] = constraints_with_pin(
        db.spec.placement.constraints, db.spec.placement.spread, value
    )
    placement.pop("Preferences", None)
    await swarm.update_service(service["ID"], int(service["Version"]["Index"]), spec)
    return True


async def replace_member(swarm: SwarmApi, member: str) -> bool:
    """Fence or re-seed a member: a forced update makes Swarm stop its container and start
    a new, empty one. A container of it on this operator's own node is killed at once
    (`kill_local`)."""
    service = await swarm.service(member)
    if service is None:
        return False
    running = [
        t
        for t in await swarm.tasks(service=member)
        if t.get("Status", {}).get("State") == "running"
    ]
    spec = service["Spec"]
    template = spec["TaskTemplate"]
    template["ForceUpdate"] = int(template.get("ForceUpdate", 0)) + 1
    await swarm.update_service(service["ID"], int(service["Version"]["Index"]), spec)
    await kill_local(swarm, member, running)
    return True


async def kill_local(swarm: SwarmApi, member: str, tasks: list[JSON]) -> int:
    """SIGKILL the containers of `tasks` that run on the node whose engine `swarm` talks
    to; how many were killed. Swarm stops a replaced task's container only after a fixed
    2 s wait for its overlay network's gossip to converge (moby,
    daemon/cluster/executor/container/controller.go, `Shutdown`:
    defaultGossipConvergeDelay), then with its stop signal and grace period, thawing a
    paused one first: a paused primary's failover waited ~4.5 s on that. These are the
    containers Swarm is about to kill anyway (their task's service was just force-updated),
    so killing them now changes nothing but the time. A container on another node is left
    to Swarm: no other node's engine is reachable from here."""
    node = (await swarm.info()).get("Swarm", {}).get("NodeID")
    killed = 0
    for t in tasks:
        cid = t.get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
        if not node or t.get("NodeID") != node or not cid:
            continue
        try:
            await swarm.kill_container(cid, "SIGKILL")
            killed += 1
        except SwarmError as e:  # already gone, or stopped meanwhile: Swarm was quicker
            log.info("%s: container %s not killed: %s", member, cid[:12], e)
    return killed
