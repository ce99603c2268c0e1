"""TLS on a real swarm (docs/security.md, "TLS"): clients and standbys reach PostgreSQL only
over TLS, with each member's certificate verified against its database's CA by name, and a
member's certificate is renewed by a reload, never a restart."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from shoal.plugins.postgres import naming
from tests.integration.support import (
    apply,
    container_of,
    credentials,
    declaration,
    docker,
    on_network,
    psql,
    shoal,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CA_IN_MEMBER = "/var/lib/shoal/tls/ca.crt"


def client(image: str, network: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A Python snippet in a fresh container on the database network (psycopg is there)."""
    return on_network(network, image, "/opt/shoal/venv/bin/python", "-c", script, *args)


CONNECT = """
import sys, psycopg
uri, ca, extra = sys.argv[1], sys.argv[2], sys.argv[3]
open("/tmp/ca.crt", "w").write(ca)
try:
    with psycopg.connect(uri + extra, sslrootcert="/tmp/ca.crt") as conn:
        row = conn.execute(
            "SELECT s.ssl, s.version FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()"
        ).fetchone()
        print("connected", row[0], row[1])
except psycopg.OperationalError as e:
    print("refused", str(e).replace("\\n", " "))
"""


def served_serial(container: str, member: str) -> int:
    """The serial of the certificate PostgreSQL on `member` presents in its TLS handshake,
    seen from `container` (another member: openssl and the CA are there), name verified."""
    out = docker(
        "exec", container, "sh", "-c",
        f"openssl s_client -starttls postgres -connect {member}:{naming.PORT} "
        f"-CAfile {CA_IN_MEMBER} -verify_hostname {member} -verify_return_error "
        "</dev/null 2>/dev/null | openssl x509 -noout -serial",
    )  # fmt: skip
    assert out.startswith("serial="), out
    return int(out.split("=", 1)[1], 16)


ISSUE = """
import sys
from datetime import UTC, datetime
from shoal import names, tls
from shoal.credentials import load_operator_key
uid, db, index, days_ago = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
ca = tls.DatabaseCA.derive(load_operator_key(), uid)
member = names.member_service(db, index)
when = datetime.now(UTC) - tls.PERIOD * days_ago / tls.PERIOD.days
cert = ca.issue(member, names.member_dns_names(db, index), when)
print(cert.cert_pem, end="")
"""

POST = """
import json, sys, urllib.request
token = open("/run/secrets/agent-token").read().strip()
def call(method, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:8008" + path, method=method,
        data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())
fence = call("GET", "/state")["fence_token"]
print(json.dumps(call("POST", "/certificate", {"token": fence, "certificate": sys.stdin.read()})))
"""


def test_clients_and_standbys_use_verified_tls_only(
    operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name
    apply(declaration(name, members=3), tmp_path)
    try:
        st = wait_state(name, "Healthy", timeout=300)
        primary = st["primary"]
        creds = credentials(name)
        assert "sslmode=verify-full" in creds["uri"]
        network = names.database_network(name)

        ok = client(operator.operator, network, CONNECT, creds["uri"], creds["ca"], "")
        assert ok.stdout.startswith("connected True TLSv1."), ok.stdout + ok.stderr
        # Without TLS, no pg_hba.conf line matches: refused whatever the password.
        plain = client(
            operator.operator, network, CONNECT, creds["uri"], creds["ca"], "&sslmode=disable"
        )
        assert plain.stdout.startswith("refused"), plain.stdout + plain.stderr
        assert "no encryption" in plain.stdout
        # Another database's CA (here: a self-made one) does not vouch for these members.
        foreign = docker(
            "run", "--rm", "--entrypoint", "sh", operator.members["postgres"], "-c",
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
            "-keyout /dev/null -subj /CN=other -days 1 2>/dev/null",
        )  # fmt: skip
        wrong = client(operator.operator, network, CONNECT, creds["uri"], foreign, "")
        assert wrong.stdout.startswith("refused"), wrong.stdout + wrong.stderr
        assert "certificate verify failed" in wrong.stdout

        # Streaming replication runs over TLS too (standbys verify the primary's name).
        tls_walsenders = psql(
            primary,
            "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE s.ssl",
        )
        assert tls_walsenders == "2"
    finally:
        shoal("delete", name, "--wait", timeout=300)


def test_a_certificate_is_renewed_by_a_reload(
    operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    """A member handed an older certificate (what a member restarted from its secret, or
    any member when a period turns, serves) gets the current one back from the operator;
    PostgreSQL loads each by a reload: same postmaster, and a session opened before still
    runs queries after."""
    name = unique_name
    apply(declaration(name, members=2), tmp_path)
    op_scaled = False
    try:
        st = wait_state(name, "Healthy", timeout=300)
        member = next(m["name"] for m in st["members"] if m["name"] != st["primary"])
        index = names.member_index(name, member)
        assert index is not None
        target, peer = container_of(member), container_of(st["primary"])
        assert target and peer
        current = served_serial(peer, member)
        started = psql(member, "SELECT pg_postmaster_start_time()")
        # A session held open across both renewals.
        session = subprocess.Popen(
            ["docker", "exec", "-i", "-u", "postgres", target, "psql", "-h", "/var/run/postgresql",
             "-XAtq", "-d", names.APP_DATABASE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert session.stdin is not None
        session.stdin.write("SELECT 'before', pg_backend_pid();\n")
        session.stdin.flush()

        uid = docker(
            "service", "inspect", names.anchor_service(name),
            "--format", '{{ index .Spec.Labels "shoal.uid" }}',
        )  # fmt: skip
        op = container_of(names.OPERATOR_SERVICE)
        assert op
        older = subprocess.run(
            ["docker", "exec", op, "/opt/shoal/venv/bin/python", "-c", ISSUE,
             uid, name, str(index), "30"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        # Stop the operator, so the older certificate stays served long enough to see.
        docker("service", "scale", "--detach", f"{names.OPERATOR_SERVICE}=0")
        op_scaled = True
        wait_for(lambda: container_of(names.OPERATOR_SERVICE) is None, 120, "operator stopped")
        posted = subprocess.run(
            ["docker", "exec", "-i", target, "python3", "-c", POST],
            input=older, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert posted.returncode == 0, posted.stderr
        old_serial = served_serial(peer, member)
        assert old_serial != current
        assert posted.stdout.strip().endswith(f'"{old_serial:x}"}}')

        # The operator notices the member serves another period's certificate and renews it.
        docker("service", "scale", "--detach", f"{names.OPERATOR_SERVICE}=1")
        op_scaled = False
        wait_for(lambda: served_serial(peer, member) == current, 180, "the renewal")
        assert psql(member, "SELECT pg_postmaster_start_time()") == started
        out, err = session.communicate("SELECT 'after', pg_backend_pid();\n", timeout=60)
        lines = out.split()
        assert len(lines) == 2, (out, err)
        (before, pid1), (after, pid2) = (line.split("|") for line in lines)
        assert (before, after) == ("before", "after") and pid1 == pid2
    finally:
        if op_scaled:
            docker("service", "scale", "--detach", f"{names.OPERATOR_SERVICE}=1")
            time.sleep(1)
        shoal("delete", name, "--wait", timeout=300)
