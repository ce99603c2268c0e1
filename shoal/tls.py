"""Each database's certificate authority and its members' server certificates, derived
rather than stored, like the passwords (shoal/credentials.py).

Every key is an HMAC of the operator key over the database's uid and what the key is for,
turned into a P-256 private key, and every signature is deterministic ECDSA (RFC 6979): a
restarted operator re-derives byte for byte the CA certificate clients were given and the
certificate a member serves in the current period. Nothing here is written anywhere: the
operator hands a member its key once, in a Docker secret, and later certificates for that
same key over the agent API (a certificate is public; the key never travels again).

A member's certificate is valid for LIFETIME from the start of the period it was issued in
and a new one is due every PERIOD, so a member always holds one with at least
LIFETIME - PERIOD left (tests/unit/test_tls.py).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PERIOD = timedelta(days=30)
LIFETIME = timedelta(days=90)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# RFC 5280 4.1.2.5: the GeneralizedTime 99991231235959Z means "no well-defined expiration".
CA_NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)
CA_NOT_AFTER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
# Clocks of the swarm's nodes may disagree a little; a certificate starts this much early.
CLOCK_SKEW = timedelta(hours=1)

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _derived_key(key: bytes, db_uid: str, purpose: str) -> ec.EllipticCurvePrivateKey:
    mac = hmac.new(key, f"shoal/v1/{db_uid}/tls/{purpose}".encode(), hashlib.sha512).digest()
    scalar = int.from_bytes(mac, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


# What a member certificate is for: serving (PostgreSQL, the agent's API) and, as a client,
# proving to the primary that a replication connection comes from a member. Part of the
# serial, so that certificates issued for less are renewed as any other stale one.
PROFILE = "server+client"


def _serial(*parts: str) -> int:
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return int.from_bytes(digest[:16], "big") >> 1 or 1  # positive, at most 127 bits


def period_of(now: datetime) -> int:
    return max(0, int((now - EPOCH) // PERIOD))


@dataclass(frozen=True)
class ServerCertificate:
    key_pem: str
    cert_pem: str
    serial: int
    not_after: datetime


@dataclass(frozen=True)
class DatabaseCA:
    """One database's CA: it signs only that database's members, so trusting it trusts
    no other database on the swarm."""

    db_uid: str
    _operator_key: bytes = field(repr=False)
    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @staticmethod
    def derive(operator_key: bytes, db_uid: str) -> DatabaseCA:
        private_key = _derived_key(operator_key, db_uid, "ca")
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shoal"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"shoal database CA {db_uid[:8]}"),
            ]
        )
        public = private_key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(_serial(db_uid, "ca"))
            .not_valid_before(CA_NOT_BEFORE)
            .not_valid_after(CA_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(private_key, hashes.SHA256(), ecdsa_deterministic=True)
        )
        return DatabaseCA(db_uid, operator_key, private_key, cert)

    @functools.cached_property
    def cert_pem(self) -> str:
        # Cached: every call to a member's agent builds its TLS context from it.
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def member_key(self, member: str) -> ec.EllipticCurvePrivateKey:
        return _derived_key(self._operator_key, self.db_uid, f"member/{member}")

    def serial_for(self, member: str, dns_names: list[str], now: datetime) -> int:
        """The serial `issue` gives, without signing anything (the operator compares it with
        what every member serves on every pass)."""
        return _serial(self.db_uid, member, str(period_of(now)), PROFILE, *dns_names)

    def issue(self, member: str, dns_names: list[str], now: datetime) -> ServerCertificate:
        """The certificate `member` should serve at `now`: the same bytes for the same
        period, whoever asks."""
        period = period_of(now)
        start = EPOCH + period * PERIOD
        key = self.member_key(member)
        serial = self.serial_for(member, dns_names, now)
        not_after = start + LIFETIME
        ski = x509.SubjectKeyIdentifier.from_public_key(self.private_key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(self.private_key, hashes.SHA256(), ecdsa_deterministic=True)
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return ServerCertificate(
            key_pem=key_pem,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            serial=serial,
            not_after=not_after,
        )


@functools.lru_cache(maxsize=256)
def database_ca(operator_key: bytes, db_uid: str) -> DatabaseCA:
    """Derived once per database and operator process (a derivation signs a certificate)."""
    return DatabaseCA.derive(operator_key, db_uid)
