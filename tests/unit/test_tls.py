"""The derived CA and member certificates (shoal/tls.py), and the agent's side of them
(shoal/plugins/postgres/agent/tls.py, with the real `openssl` command)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from shoal import names, tls
from shoal.credentials import DatabaseCredentials
from shoal.plugins.postgres.agent import tls as member_tls

KEY = b"k" * 32
UID = "0123abcd-0000-4000-8000-000000000001"
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def ca(key: bytes = KEY, uid: str = UID) -> tls.DatabaseCA:
    return tls.DatabaseCA.derive(key, uid)


def test_the_ca_is_derived_byte_for_byte() -> None:
    """A restarted operator gives clients the same CA file and members the same
    certificates: nothing needs storing."""
    assert ca().cert_pem == ca().cert_pem
    a = ca().issue("orders-1", ["orders-1", "orders-rw"], NOW)
    b = ca().issue("orders-1", ["orders-1", "orders-rw"], NOW)
    assert a == b
    # another database, another operator key: other CAs and keys
    assert ca(uid=UID.replace("1", "2")).cert_pem != ca().cert_pem
    assert ca(key=b"x" * 32).cert_pem != ca().cert_pem
    other = ca().issue("orders-2", ["orders-2", "orders-rw"], NOW)
    assert other.key_pem != a.key_pem


def test_the_ca_is_a_ca_and_signs_only_servers() -> None:
    cert = ca().certificate
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    issued = x509.load_pem_x509_certificate(
        ca().issue("orders-1", ["orders-1", "orders-rw"], NOW).cert_pem.encode()
    )
    assert not issued.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = issued.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # A server, and a client of its peers: the primary requires a member's certificate of
    # a replication login (agent/pg.py: hba_conf).
    assert list(eku) == [
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
    ]


def verify(cert_pem: str, name: str, at: datetime, root: tls.DatabaseCA | None = None) -> None:
    store = Store([(root or ca()).certificate])
    verifier = PolicyBuilder().store(store).time(at).build_server_verifier(x509.DNSName(name))
    verifier.verify(x509.load_pem_x509_certificate(cert_pem.encode()), [])


def test_a_member_certificate_verifies_for_its_names_only() -> None:
    issued = ca().issue("orders-1", ["orders-1", "orders-rw"], NOW)
    verify(issued.cert_pem, "orders-1", NOW)
    verify(issued.cert_pem, "orders-rw", NOW)
    with pytest.raises(x509.verification.VerificationError):
        verify(issued.cert_pem, "orders-2", NOW)
    with pytest.raises(x509.verification.VerificationError):  # another database's CA
        verify(issued.cert_pem, "orders-1", NOW, root=ca(uid=UID.replace("1", "3")))


def test_periods_renew_well_before_expiry() -> None:
    """Every certificate issued in a period outlives the period by LIFETIME - PERIOD, and
    the next period's has another serial (the operator's cue to renew)."""
    assert timedelta(days=30) <= tls.LIFETIME - tls.PERIOD
    c = ca()
    first = c.issue("orders-0", ["orders-0"], NOW)
    assert first.serial == c.serial_for("orders-0", ["orders-0"], NOW)
    same = c.issue("orders-0", ["orders-0"], NOW + timedelta(hours=1))
    assert same.serial == first.serial
    end_of_period = tls.EPOCH + (tls.period_of(NOW) + 1) * tls.PERIOD
    later = c.issue("orders-0", ["orders-0"], end_of_period)
    assert later.serial != first.serial
    assert first.not_after - end_of_period >= tls.LIFETIME - tls.PERIOD
    verify(first.cert_pem, "orders-0", end_of_period)  # still valid when the next is due
    # the same key across periods: a renewal needs no new key on the member
    assert later.key_pem == first.key_pem


def test_credentials_carry_the_ca_and_hide_the_key() -> None:
    creds = DatabaseCredentials.derive(KEY, UID)
    assert creds.ca.cert_pem == ca().cert_pem
    assert KEY.decode() not in repr(creds.ca)


@pytest.fixture
def member_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    state = tmp_path / "state" / "tls"
    monkeypatch.setattr(member_tls, "SECRETS_DIR", secrets)
    monkeypatch.setattr(member_tls, "TLS_DIR", state)
    monkeypatch.setattr(member_tls, "KEY", state / "server.key")
    monkeypatch.setattr(member_tls, "CERT", state / "server.crt")
    monkeypatch.setattr(member_tls, "CA", state / "ca.crt")
    return secrets


def bundle(member: str = "orders-1", now: datetime = NOW) -> str:
    issued = ca().issue(member, names.member_dns_names("orders", int(member[-1])), now)
    return issued.key_pem + issued.cert_pem + ca().cert_pem


def test_agent_lays_out_the_bundle(member_dirs: Path) -> None:
    assert not member_tls.install_from_secret()  # nothing mounted: TLS off
    assert member_tls.server_settings() == "ssl = off\n"
    (member_dirs / member_tls.BUNDLE).write_text(bundle())
    assert member_tls.install_from_secret()
    assert member_tls.KEY.stat().st_mode & 0o777 == 0o600  # PostgreSQL refuses anything more
    assert member_tls.CA.read_text() == ca().cert_pem
    assert member_tls.current_serial() == ca().serial_for(
        "orders-1", names.member_dns_names("orders", 1), NOW
    )
    key = serialization.load_pem_private_key(member_tls.KEY.read_bytes(), None)
    assert key.public_key() == ca().member_key("orders-1").public_key()
    assert "ssl = on" in member_tls.server_settings()
    assert "sslmode=verify-full" in member_tls.conninfo_options()
    assert f"sslcert={member_tls.CERT} sslkey={member_tls.KEY}" in member_tls.conninfo_options()
    assert f"ssl_ca_file = '{member_tls.CA}'" in member_tls.server_settings()


def test_agent_accepts_a_renewal_only_for_its_own_key_from_its_ca(member_dirs: Path) -> None:
    # openssl checks validity at the real time: the secret's certificate is from the
    # previous period (still valid), the renewal from this one
    later = datetime.now(UTC)
    (member_dirs / member_tls.BUNDLE).write_text(bundle(now=later - tls.PERIOD))
    member_tls.install_from_secret()
    renewal = ca().issue("orders-1", names.member_dns_names("orders", 1), later)
    assert renewal.serial != member_tls.current_serial()
    assert member_tls.install_certificate(renewal.cert_pem) == renewal.serial
    assert member_tls.current_serial() == renewal.serial
    with pytest.raises(member_tls.TlsError, match="not for this member's key"):
        member_tls.check_certificate(ca().issue("orders-2", ["orders-2"], later).cert_pem)
    foreign = tls.DatabaseCA.derive(b"z" * 32, UID).issue("orders-1", ["orders-1"], later)
    with pytest.raises(member_tls.TlsError, match="verify"):
        member_tls.check_certificate(foreign.cert_pem)
    for bad in ("", "not pem", renewal.cert_pem * 2, renewal.key_pem):
        with pytest.raises(member_tls.TlsError):
            member_tls.check_certificate(bad)
    assert member_tls.current_serial() == renewal.serial  # nothing bad was installed


def test_split_bundle_names_what_is_missing() -> None:
    issued = ca().issue("orders-1", ["orders-1"], NOW)
    with pytest.raises(member_tls.TlsError, match="0 key"):
        member_tls.split_bundle(issued.cert_pem + ca().cert_pem)
    with pytest.raises(member_tls.TlsError, match="1 certificate"):
        member_tls.split_bundle(issued.key_pem + issued.cert_pem)


def test_openssl_agrees_with_the_operator(tmp_path: Path) -> None:
    """What the member's own tools see: the chain verifies for a server."""
    (tmp_path / "ca.crt").write_text(ca().cert_pem)
    (tmp_path / "m.crt").write_text(ca().issue("orders-1", ["orders-1"], NOW).cert_pem)
    r = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), "-purpose", "sslserver",
         "-attime", str(int(NOW.timestamp())), str(tmp_path / "m.crt")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_credentials_secret_names_and_uri() -> None:
    from shoal.cli.credentials_secret import ca_path, check_secret_name
    from shoal.declaration import load_declaration
    from shoal.plugins.postgres.plugin import PostgresPlugin

    assert check_secret_name("orders-app.db_1") is None
    for bad in ("", "-x", "a b", "a/b", "x" * 62, "é"):
        assert check_secret_name(bad) is not None, bad
    # The secret's URI names the CA where Swarm mounts SECRET-ca, in the engine's words.
    assert ca_path("s") == "/run/secrets/s-ca"
    db = load_declaration(
        "apiVersion: shoal/v1\nkind: Database\nmetadata: {name: orders}\nspec: {engine: postgres}\n"
    )
    uri = PostgresPlugin().connection(db, "pw", ca_path("s"))
    assert uri.endswith("&sslrootcert=/run/secrets/s-ca")
