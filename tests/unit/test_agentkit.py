"""shoal.agentkit on its own: what both member agents share (their own tests exercise it
through their APIs)."""

from __future__ import annotations

import http.client
import json
import ssl
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shoal.agentkit import files, server, tls
from shoal.credentials import DatabaseCredentials

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("header", "token", "expected"),
    [
        ("Bearer s3cret", "s3cret", True),
        ("Bearer s3cret ", "s3cret", False),
        ("bearer s3cret", "s3cret", False),
        ("Bearer s3cre", "s3cret", False),
        ("s3cret", "s3cret", False),
        ("", "s3cret", False),
        ("Bearer ", "", False),
        ("", "", False),
    ],
)
def test_bearer_matches_exactly_and_never_an_empty_token(
    header: str, token: str, expected: bool
) -> None:
    assert server.bearer_matches(header, token) is expected


def test_write_file_gives_exactly_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "keyfile"
    files.write_file(target, "one\n", 0o400)
    files.write_file(target, "two\n", 0o400)  # a read-only file is replaced, not opened
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o400
    assert not (tmp_path / "keyfile.tmp").exists()


def bundle(c: DatabaseCredentials) -> str:
    issued = c.ca.issue("m-0", ["m-0"], datetime.now(UTC))
    return issued.key_pem + issued.cert_pem + c.ca.cert_pem


def test_split_bundle() -> None:
    c = DatabaseCredentials.derive(b"k" * 32, "db")
    key, cert, ca = tls.split_bundle(bundle(c))
    assert "PRIVATE KEY" in key and ca == c.ca.cert_pem.rstrip("\n") + "\n"
    assert [label for label, _ in tls.pem_blocks(cert)] == ["CERTIFICATE"]
    with pytest.raises(tls.TlsError, match="found 1 key"):
        tls.split_bundle(key + cert)


def test_server_context_with_the_key_in_the_certificate_file_or_its_own(tmp_path: Path) -> None:
    key, cert, _ = tls.split_bundle(bundle(DatabaseCredentials.derive(b"k" * 32, "db")))
    (tmp_path / "both.pem").write_text(key + cert)
    (tmp_path / "cert.pem").write_text(cert)
    (tmp_path / "key.pem").write_text(key)
    for ctx in (
        tls.server_context(tmp_path / "both.pem"),
        tls.server_context(tmp_path / "cert.pem", tmp_path / "key.pem"),
    ):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


class Echo(server.AgentHandler):
    timeout = 5.0
    server_version = "kit-test"
    max_body = 16

    def bearer_token(self) -> str:
        return "t0ken"

    def do_POST(self) -> None:
        raw = self.authorized_body()
        if raw is not None:
            self.reply(200, {"got": raw.decode()})


def test_the_handler_bounds_the_body_and_checks_the_token() -> None:
    srv = server.BoundedServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    def post(body: bytes, token: str) -> tuple[int, object, str | None]:
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=5)
        try:
            conn.request("POST", "/", body, {"Authorization": f"Bearer {token}"})
            r = conn.getresponse()
            return r.status, json.loads(r.read()), r.getheader("Content-Type")
        finally:
            conn.close()

    try:
        assert post(b"x" * 16, "t0ken") == (200, {"got": "x" * 16}, "application/json")
        assert post(b"x" * 17, "t0ken")[:2] == (413, {"error": "body too large"})
        assert post(b"x", "other")[:2] == (401, {"error": "missing or wrong bearer token"})
    finally:
        srv.shutdown()
        srv.server_close()
