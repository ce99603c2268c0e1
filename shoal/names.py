"""Every name and label shoal gives a Docker object, in one place."""

from __future__ import annotations

from shoal import __version__

LABEL_MANAGED = "shoal.managed"  # "true" on every object shoal creates
LABEL_DATABASE = "shoal.database"  # the database an object belongs to
LABEL_ROLE = "shoal.role"  # anchor | member | proxy | operator | lease | client | chaos-helper
LABEL_MEMBER = "shoal.member"  # member service: its ordinal
LABEL_SPEC = "shoal.spec"  # anchor: the declaration, JSON
LABEL_GENERATION = "shoal.generation"  # anchor: bumped on every declaration change
LABEL_STATUS = "shoal.status"  # anchor: the operator's status, JSON
LABEL_REQUEST = "shoal.request"  # anchor: a pending user request (switchover, reinit), JSON
LABEL_LEASE = "shoal.lease"  # lease service: holder/token, JSON

CONTROL_NETWORK = "shoal-control"
OPERATOR_SERVICE = "shoal-operator"
LEASE_SERVICE = "shoal-lease"
OPERATOR_KEY_SECRET = "shoal-operator-key"
OPERATOR_HTTP_TOKEN_SECRET = "shoal-operator-http-token"
OPERATOR_PORT = 9650
AGENT_PORT = 8008  # a member agent's API, on the control network
CHECK_PORT = 8009  # its role checks (GET /primary), on the database network
APP_USER = "app"
APP_DATABASE = "app"

IMAGE_BASE = "shoal/base:bookworm-1"
IMAGE_OPERATOR = f"shoal/operator:{__version__}"
IMAGE_REGISTRY = f"shoal/registry:2.8-{__version__}"
REGISTRY_SERVICE = "shoal-registry"
REGISTRY_VOLUME = "shoal-registry"
REGISTRY_PORT = 5000
# A global job per image that has every node pull it (platform/distribution.py).
IMAGE_CACHE_PREFIX = "shoal-images-"


def anchor_service(db: str) -> str:
    return f"shoal-db-{db}"


def member_service(db: str, index: int) -> str:
    return f"{db}-{index}"


def member_index(db: str, service_name: str) -> int | None:
    prefix = f"{db}-"
    if not service_name.startswith(prefix):
        return None
    rest = service_name[len(prefix) :]
    return int(rest) if rest.isdigit() else None


def proxy_service(db: str) -> str:
    return f"{db}-rw"


def member_dns_names(db: str, index: int) -> list[str]:
    """The names a client may reach member `index` by, as its TLS certificate lists them:
    its own (on every network it is on) and the read-write proxy's (which passes TLS
    through to the primary)."""
    return [member_service(db, index), proxy_service(db)]


def database_network(db: str) -> str:
    return f"shoal-{db}"
