"""A member's TLS bundle and the server side of its agent API's TLS (standard library only:
this runs inside the member container).

The operator mounts one secret, `tls.pem`: the member's private key, its server certificate
(for the member's names), then the database's CA certificate (shoal/tls.py). Each agent
splits it into the files its engine wants.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

BUNDLE = "tls.pem"
PEM_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END \1-----\r?\n?")


class TlsError(Exception):
    pass


def pem_blocks(text: str) -> list[tuple[str, str]]:
    """(label, block) for each PEM block in `text`, in order; blocks end with a newline."""
    out = []
    for m in PEM_RE.finditer(text):
        block = m.group(0)
        out.append((m.group(1), block if block.endswith("\n") else block + "\n"))
    return out


def split_bundle(text: str) -> tuple[str, str, str]:
    """(key, server certificate, CA certificates) of a secret bundle: exactly one private
    key, then the server certificate, then one or more CA certificates."""
    blocks = pem_blocks(text)
    keys = [b for label, b in blocks if label.endswith("PRIVATE KEY")]
    certs = [b for label, b in blocks if label == "CERTIFICATE"]
    if len(keys) != 1 or len(certs) < 2:
        raise TlsError(
            f"{BUNDLE}: expected one private key and two or more certificates, "
            f"found {len(keys)} key(s) and {len(certs)} certificate(s)"
        )
    return keys[0], certs[0], "".join(certs[1:])


def server_context(certfile: Path, keyfile: Path | None = None) -> ssl.SSLContext:
    """The server side of the agent API's TLS, TLS 1.2 at least: the member's own
    certificate (`certfile`, its key in `keyfile` or in `certfile` after the certificate),
    which the operator verifies against the database's CA and the member's name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    return ctx
