"""Database credentials, derived rather than stored.

One random operator key lives in a Docker secret mounted only into the operator. Every
password is an HMAC of that key over the database's unique id and the credential's purpose,
so a restarted operator re-derives exactly the passwords the members were given (Docker
never returns a secret's data) and no plaintext is stored anywhere but in the members'
secret files. A database deleted and declared again gets a new uid, hence new passwords.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from shoal import names
from shoal.tls import DatabaseCA, database_ca

KEY_PATHS = (Path("/run/secrets") / names.OPERATOR_KEY_SECRET,)
# Every credential, by purpose: the HMAC's input, so a purpose is never renamed. A password
# every member shares is given to members as one Docker secret each, mounted as the file
# named here under /run/secrets, where the member agent reads it (None: no member gets it).
PURPOSES: dict[str, str | None] = {
    "superuser": "superuser-password",
    "replication": "replication-password",
    "app": "app-password",
    # database-wide: mounted only in members made before per-member tokens
    "agent-token": None,
    # never mounted: each member's own agent token is derived from it (`agent_token_for`)
    "agent-token-root": None,
}
SHARED_FILES: dict[str, str] = {p: f for p, f in PURPOSES.items() if f is not None}


class MissingKey(RuntimeError):
    pass


def new_operator_key() -> bytes:
    return secrets.token_bytes(32)


def load_operator_key() -> bytes:
    explicit = os.environ.get("SHOAL_OPERATOR_KEY_FILE")
    for path in ([Path(explicit)] if explicit else []) + list(KEY_PATHS):
        if path.is_file():
            data = path.read_bytes().strip()
            if len(data) >= 16:
                return data
    raise MissingKey(
        f"the operator key secret {names.OPERATOR_KEY_SECRET!r} is not mounted; "
        "deploy the operator with `shoal operator deploy`"
    )


def derive(key: bytes, db_uid: str, purpose: str) -> str:
    """A password: 32 URL-safe characters, stable for (key, database uid, purpose)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown credential purpose {purpose!r}")
    mac = hmac.new(key, f"shoal/v1/{db_uid}/{purpose}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")[:32]


@dataclass(frozen=True)
class DatabaseCredentials:
    by_purpose: dict[str, str]  # every purpose in PURPOSES -> its credential
    ca: DatabaseCA  # signs the members' server certificates (shoal/tls.py)

    @staticmethod
    def derive(key: bytes, db_uid: str) -> DatabaseCredentials:
        return DatabaseCredentials(
            {p: derive(key, db_uid, p) for p in PURPOSES}, database_ca(key, db_uid)
        )

    @property
    def app(self) -> str:
        return self.by_purpose["app"]

    @property
    def agent_token(self) -> str:
        """Database-wide: only members made before per-member tokens hold it."""
        return self.by_purpose["agent-token"]

    def shared(self) -> dict[str, str]:
        """The credentials every member shares (one Docker secret each), by purpose."""
        return {p: self.by_purpose[p] for p in SHARED_FILES}

    def agent_token_for(self, member: str) -> str:
        """The bearer token of one member's agent: each member has its own, so a member's
        token (readable in its container) opens no other member's agent. The root they are
        derived from is never handed out."""
        root = self.by_purpose["agent-token-root"].encode()
        mac = hmac.new(root, f"member/{member}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")[:32]


def secret_payload(value: str) -> str:
    """Docker's secrets API takes base64 data."""
    return base64.b64encode(value.encode()).decode()
