"""The SCRAM users the agent creates when it initiates the replica set (MongoDB manual,
"Deploy a Replica Set with Keyfile Authentication": the first user through the localhost
exception, then the others authenticated as it).

* the operator's administrator, `shoal-admin` in `admin`, role `root`: the operator
  reconfigures and steps down members as it; its password is the database's superuser
  password (`superuser-password` secret).
* the application's user, `app` in `app`, role `readWrite` on `app` (the names every
  engine uses, shoal/names.py: APP_USER, APP_DATABASE); its password is the database's
  application password (`app-password` secret), the one `shoal credentials` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ADMIN_USER = "shoal-admin"
ADMIN_DATABASE = "admin"
ADMIN_SECRET = "superuser-password"
APP_USER = "app"  # = shoal.names.APP_USER (the agent cannot import shoal; a unit test checks)
APP_DATABASE = "app"  # = shoal.names.APP_DATABASE
APP_SECRET = "app-password"


@dataclass(frozen=True)
class Role:
    role: str
    db: str

    def document(self) -> dict[str, str]:
        return {"role": self.role, "db": self.db}


@dataclass(frozen=True)
class User:
    name: str
    database: str  # its authentication database
    password: str
    roles: tuple[Role, ...]

    def create_command(self) -> dict[str, Any]:
        """The `createUser` command's fields after its name (run on `database`)."""
        return {"pwd": self.password, "roles": [r.document() for r in self.roles]}


def admin_user(password: str) -> User:
    return User(ADMIN_USER, ADMIN_DATABASE, password, (Role("root", ADMIN_DATABASE),))


def app_user(password: str) -> User:
    return User(APP_USER, APP_DATABASE, password, (Role("readWrite", APP_DATABASE),))
