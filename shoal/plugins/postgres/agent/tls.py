"""The member's TLS files (stdlib, shoal.agentkit and the `openssl` command only: this file
runs inside the member container with Debian's python3).

The operator mounts one secret, `tls.pem`: the member's private key, its server
certificate, then its database's CA certificate (shoal/tls.py). At every start the agent
splits it into TLS_DIR (server.key 0600, as PostgreSQL demands of a key its own user owns,
server.crt, ca.crt), outside the data directory that a re-seed wipes. A renewed certificate
arrives later over the agent API for the same key (`POST /certificate`): it is checked
against the CA and the key, written over server.crt and loaded with a reload
(PostgreSQL 15 re-reads its SSL files on SIGHUP, "Server Configuration: SSL", 19.9), so
connections stay up.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import tempfile
from pathlib import Path

from shoal.agentkit.files import write_file
from shoal.agentkit.tls import BUNDLE as BUNDLE
from shoal.agentkit.tls import PEM_RE as PEM_RE
from shoal.agentkit.tls import TlsError as TlsError
from shoal.agentkit.tls import pem_blocks as pem_blocks
from shoal.agentkit.tls import server_context
from shoal.agentkit.tls import split_bundle as split_bundle

STATE_DIR = Path(os.environ.get("SHOAL_PGDATA", "/var/lib/shoal/pgdata")).parent
SECRETS_DIR = Path(os.environ.get("SHOAL_SECRETS_DIR", "/run/secrets"))
TLS_DIR = STATE_DIR / "tls"
KEY = TLS_DIR / "server.key"
CERT = TLS_DIR / "server.crt"
CA = TLS_DIR / "ca.crt"
MAX_PEM = 64 * 1024


def install_from_secret() -> bool:
    """Lay out TLS_DIR from the mounted bundle; False when none is mounted (TLS off)."""
    src = SECRETS_DIR / BUNDLE
    if not src.is_file():
        return False
    key, cert, ca = split_bundle(src.read_text())
    TLS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file(KEY, key, 0o600)
    write_file(CA, ca, 0o644)
    write_file(CERT, cert, 0o644)
    return True


def enabled() -> bool:
    return CERT.is_file() and KEY.is_file() and CA.is_file()


def api_context() -> ssl.SSLContext | None:
    """The server side of the agent API's TLS: the key and certificate PostgreSQL serves
    (their names include the member's, which the operator verifies against the CA); None
    when this member has no TLS files."""
    if not enabled():
        return None
    return server_context(CERT, KEY)


def reload_api_context(ctx: ssl.SSLContext) -> None:
    """A renewed certificate: handshakes from now on present it (open connections keep
    the one they agreed on)."""
    ctx.load_cert_chain(CERT, KEY)


def _openssl(*args: str, stdin: str | None = None) -> str:
    try:
        r = subprocess.run(
            ["openssl", *args], input=stdin, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise TlsError(f"openssl failed: {e}") from e
    if r.returncode != 0:
        raise TlsError(f"openssl {args[0]}: {(r.stderr or r.stdout).strip()[-300:]}")
    return r.stdout


def serial_of(cert_pem: str) -> int:
    out = _openssl("x509", "-noout", "-serial", stdin=cert_pem).strip()
    if not out.startswith("serial="):
        raise TlsError(f"unexpected openssl output {out[:60]!r}")
    return int(out.split("=", 1)[1], 16)


def current_serial() -> int | None:
    return serial_of(CERT.read_text()) if enabled() else None


def check_certificate(cert_pem: str) -> int:
    """A renewed certificate is accepted only if it is one PEM certificate, issued by this
    member's CA for a server, and for this member's own key. Returns its serial."""
    if len(cert_pem) > MAX_PEM:
        raise TlsError("certificate too large")
    blocks = pem_blocks(cert_pem)
    if len(blocks) != 1 or blocks[0][0] != "CERTIFICATE":
        raise TlsError("expected exactly one PEM certificate")
    if not enabled():
        raise TlsError("this member has no TLS key: it was started without tls.pem")
    cert = blocks[0][1]
    with tempfile.NamedTemporaryFile("w", dir=TLS_DIR, suffix=".crt") as f:
        f.write(cert)
        f.flush()
        _openssl("verify", "-CAfile", str(CA), "-purpose", "sslserver", f.name)
    if _openssl("x509", "-noout", "-pubkey", stdin=cert) != _openssl(
        "pkey", "-pubout", "-in", str(KEY)
    ):
        raise TlsError("the certificate is not for this member's key")
    return serial_of(cert)


def install_certificate(cert_pem: str) -> int:
    serial = check_certificate(cert_pem)
    write_file(CERT, pem_blocks(cert_pem)[0][1], 0o644)
    return serial


def conninfo_options() -> str:
    """What a member adds to its connections to another member (replication, re-seed):
    verify the peer's certificate and name against the database's CA when TLS is on, and
    present its own certificate, which the primary requires of a replication login
    (pg.hba_conf)."""
    if enabled():
        return f"sslmode=verify-full sslrootcert={CA} sslcert={CERT} sslkey={KEY}"
    return "sslmode=prefer"


def client_env() -> dict[str, str]:
    """The same, for a libpq tool that takes its settings from the environment."""
    if enabled():
        return {
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": str(CA),
            "PGSSLCERT": str(CERT),
            "PGSSLKEY": str(KEY),
        }
    return {"PGSSLMODE": "prefer"}


def server_settings() -> str:
    """Lines for shoal.conf."""
    if not enabled():
        return "ssl = off\n"
    return (
        "ssl = on\n"
        f"ssl_cert_file = '{CERT}'\n"
        f"ssl_key_file = '{KEY}'\n"
        # The CA that client certificates are checked against: a replication login must
        # present a member's (`clientcert=verify-ca` in pg_hba.conf).
        f"ssl_ca_file = '{CA}'\n"
        "ssl_min_protocol_version = 'TLSv1.2'\n"
    )
