"""The replica set's keyFile: the shared secret members authenticate one another with
(MongoDB manual, "Deploy a Replica Set with Keyfile Authentication", and "Keyfiles":
6 to 1024 characters of the base64 set, the same content on every member, readable by the
mongod user only).

Every member already gets the database's replication password as a Docker secret
(`replication-password`, mode 0444). Its characters are URL-safe base64 (`-` and `_`), not
all of the base64 set a keyFile allows, so the keyFile is an HMAC-SHA-512 keyed by that
password, in standard base64: 88 characters, the same on every member, different for every
database (its passwords are) and not the password itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from pathlib import Path

from shoal.agentkit.files import write_file

SECRET = "replication-password"  # the file under /run/secrets the keyFile is derived from
CONTEXT = b"shoal/mongodb/keyFile/v1"
BASE64_SET = re.compile(r"[A-Za-z0-9+/=]{6,1024}")


class KeyfileError(Exception):
    pass


def keyfile_content(password: str) -> str:
    """What the keyFile holds for a database whose replication password is `password`."""
    if not password:
        raise KeyfileError(f"{SECRET} is empty")
    mac = hmac.new(password.encode(), CONTEXT, hashlib.sha512).digest()
    content = base64.b64encode(mac).decode()
    if not BASE64_SET.fullmatch(content):  # cannot happen with standard base64 of 64 bytes
        raise KeyfileError("derived keyFile content is outside the base64 set")
    return content


def install(secrets_dir: Path, target: Path) -> None:
    """Write the keyFile at `target`, mode 0400, owned by the process (the mongod user)."""
    password = (secrets_dir / SECRET).read_text().strip()
    write_file(target, keyfile_content(password) + "\n", 0o400)
