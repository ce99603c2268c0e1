"""The member's TLS files for mongod and for the agent's own API.

The operator mounts one secret, `tls.pem`: the member's private key, its server certificate
(for the member's names, with server and client authentication usages: members present it
to each other), then the database's CA certificate (shoal/tls.py). mongod wants the key and
the certificate in one PEM file (`--tlsCertificateKeyFile`) and the CA in another
(`--tlsCAFile`); at every start the agent splits the bundle into those two under its state
directory, in the container's writable layer.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from shoal.agentkit import tls as kit
from shoal.agentkit.files import write_file
from shoal.agentkit.tls import BUNDLE as BUNDLE
from shoal.agentkit.tls import TlsError as TlsError


@dataclass(frozen=True)
class TlsFiles:
    key_and_certificate: Path  # mongod --tlsCertificateKeyFile, the agent API's chain
    ca: Path  # mongod --tlsCAFile

    @staticmethod
    def under(directory: Path) -> TlsFiles:
        return TlsFiles(directory / "member.pem", directory / "ca.pem")


def split_bundle(text: str) -> tuple[str, str]:
    """(key + server certificate, CA certificates) of a member's bundle: exactly one
    private key, then the server certificate, then one or more CA certificates."""
    key, cert, ca = kit.split_bundle(text)
    return key + cert, ca


def install(secrets_dir: Path, directory: Path) -> TlsFiles:
    """Split the mounted bundle into `directory` (0700): the key file 0600, the CA 0644."""
    key_and_cert, ca = split_bundle((secrets_dir / BUNDLE).read_text())
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = TlsFiles.under(directory)
    write_file(files.key_and_certificate, key_and_cert, 0o600)
    write_file(files.ca, ca, 0o644)
    return files


def api_context(files: TlsFiles) -> ssl.SSLContext:
    """The server side of the agent API's TLS: the member's own certificate, which the
    operator verifies against the database's CA and the member's name."""
    return kit.server_context(files.key_and_certificate)
