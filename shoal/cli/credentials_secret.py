"""`shoal credentials NAME --secret SECRET`: the connection URI as a Docker secret, for an
application service (`docker service create --secret SECRET --secret SECRET-ca ...`).

Two secrets: SECRET holds the URI with the password, naming the CA's file where Swarm mounts
it (`/run/secrets/SECRET-ca`, as the engine's URI names a CA file: `ca_path`), and SECRET-ca
holds the CA. They belong to the
user, not to the database: no `shoal.database` or `shoal.managed` label, so `shoal delete`
and `shoal down` leave them; the label `shoal.credentials-of` says where they came from.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: checking a name at start-up needs neither
    from shoal.swarm.client import SwarmClient

LABEL_CREDENTIALS_OF = "shoal.credentials-of"
# Docker's secret names: 1-64 characters, alphanumerics and [-_.], starting alphanumeric.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,60}$")  # 60: room for "-ca"
SECRETS_DIR = "/run/secrets"


def check_secret_name(name: str) -> str | None:
    """None when usable, else what is wrong (for exit 2 before anything changes)."""
    if not NAME_RE.fullmatch(name):
        return (
            f"--secret: {name!r} is not a Docker secret name for shoal to use: 1-61 letters, "
            "digits, '-', '_' or '.', starting with a letter or digit"
        )
    return None


def ca_secret(name: str) -> str:
    return f"{name}-ca"


def ca_path(name: str) -> str:
    """Where a service that mounts SECRET-ca finds the CA: what SECRET's URI names."""
    return f"{SECRETS_DIR}/{ca_secret(name)}"


class SecretExists(RuntimeError):
    pass


async def store_credentials(
    swarm: SwarmClient, name: str, database: str, uri: str, ca_pem: str
) -> tuple[str, str]:
    """Create SECRET-ca and SECRET (`uri`, naming the CA at `ca_path(name)`); refuses
    (changing nothing) when either exists, and removes the CA's secret again if the URI's
    cannot be made. Returns both names."""
    from shoal.credentials import secret_payload
    from shoal.swarm.client import SwarmError

    for existing in (name, ca_secret(name)):
        if await swarm.secret(existing) is not None:
            raise SecretExists(
                f"--secret: a Docker secret named {existing!r} exists already; "
                f"remove it (`docker secret rm {existing}`) or choose another name"
            )
    labels = {LABEL_CREDENTIALS_OF: database}
    ca_id = await swarm.create_secret(ca_secret(name), secret_payload(ca_pem), labels)
    try:
        await swarm.create_secret(name, secret_payload(uri), labels)
    except SwarmError:
        await swarm.remove_secret(ca_id)
        raise
    return name, ca_secret(name)


async def credentials_secrets(swarm: SwarmClient, database: str) -> list[str]:
    """The names of the secrets `shoal credentials DATABASE --secret` made (sorted)."""
    found = await swarm.secrets_with_label(LABEL_CREDENTIALS_OF, database)
    return sorted(str(s["Spec"]["Name"]) for s in found)


async def services_using(swarm: SwarmClient, secrets: list[str]) -> dict[str, list[str]]:
    """secret name -> the services that mount it (Docker refuses to remove those)."""
    if not secrets:
        return {}
    users: dict[str, list[str]] = {}
    for service in await swarm.call("services"):
        container = service["Spec"].get("TaskTemplate", {}).get("ContainerSpec", {})
        for mount in container.get("Secrets") or []:
            if mount.get("SecretName") in secrets:
                users.setdefault(str(mount["SecretName"]), []).append(str(service["Spec"]["Name"]))
    return {secret: sorted(set(svcs)) for secret, svcs in sorted(users.items())}
