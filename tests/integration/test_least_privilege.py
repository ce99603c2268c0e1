"""Least privilege on the wire (docs/security.md). From a client container on the
database's network, holding every member password, only the application role reaches its
own database and only the replication role may replicate; the superuser `postgres` cannot
log in remotely at all, whatever password it brings. Each member's agent takes only that
member's own token, and only on the control network."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from shoal.plugins.postgres import naming
from tests.integration.support import (
    apply,
    container_of,
    declaration,
    docker,
    on_network,
    shoal,
    wait_state,
)

pytestmark = pytest.mark.integration


def remote_psql(
    image: str, network: str, conninfo: str, command: str = "SELECT current_user"
) -> subprocess.CompletedProcess[str]:
    """`psql CONNINFO -c COMMAND` from a fresh container on `network` (as a client would)."""
    return on_network(network, image, "psql", "-X", "-At", "-c", command, conninfo)


def test_only_the_app_and_replication_roles_log_in_over_the_network(
    operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name
    apply(declaration(name, members=2), tmp_path)
    try:
        st = wait_state(name, "Healthy", timeout=300)
        primary = st["primary"]
        container = container_of(primary)
        assert container is not None
        password = {
            purpose: docker("exec", container, "cat", f"/run/secrets/{purpose}-password")
            for purpose in ("superuser", "app", "replication")
        }
        network = names.database_network(name)

        def login(
            user: str, db: str, secret: str, extra: str = "", command: str = "SELECT current_user"
        ) -> subprocess.CompletedProcess[str]:
            return remote_psql(
                operator.members["postgres"], network,
                f"host={primary} port={naming.PORT} user={user} dbname={db} "
                f"password={password[secret]} connect_timeout=10 {extra}",
                command,
            )  # fmt: skip

        app = login(names.APP_USER, names.APP_DATABASE, "app")
        assert app.returncode == 0, app.stderr
        assert app.stdout.strip() == names.APP_USER
        refused = {
            "superuser to postgres": login("postgres", "postgres", "superuser"),
            "superuser to app": login("postgres", names.APP_DATABASE, "superuser"),
            "app to postgres": login(names.APP_USER, "postgres", "app"),
            "replicator, not replicating": login("replicator", "postgres", "replication"),
        }
        for what, proc in refused.items():
            assert proc.returncode != 0, f"{what}: logged in ({proc.stdout.strip()})"
            assert "no pg_hba.conf entry" in proc.stderr, f"{what}: {proc.stderr.strip()}"
        # The replication role replicates (what standbys and pg_basebackup do) only with a
        # member's certificate: a client holding the replication password is refused ...
        streaming = login(
            "replicator", "postgres", "replication", "replication=true", "IDENTIFY_SYSTEM"
        )
        assert streaming.returncode != 0, f"replicated without a certificate: {streaming.stdout}"
        assert "client certificate" in streaming.stderr, streaming.stderr
        # ... and a member presenting its own, over the same network, is admitted.
        standby = container_of(next(m["name"] for m in st["members"] if m["name"] != primary))
        assert standby is not None
        tls_dir = "/var/lib/shoal/tls"
        member = docker(
            "exec", "-u", "postgres", standby, "psql", "-X", "-At", "-c", "IDENTIFY_SYSTEM",
            f"host={primary} port={naming.PORT} user=replicator dbname=postgres "
            f"replication=true password={password['replication']} connect_timeout=10 "
            f"sslmode=verify-full sslrootcert={tls_dir}/ca.crt sslcert={tls_dir}/server.crt "
            f"sslkey={tls_dir}/server.key",
        )  # fmt: skip
        assert member.split("|")[0].isdigit(), member  # systemid|timeline|xlogpos|dbname
        # The application role is refused from the shared control network (the operator's
        # container is there; other databases' members too), with the right password.
        op = container_of(names.OPERATOR_SERVICE)
        assert op is not None
        from_control = subprocess.run(
            ["docker", "exec", "-i", op, "/opt/shoal/venv/bin/python", "-c", CONTROL_LOGIN,
             f"host={primary} port={naming.PORT} user={names.APP_USER} "
             f"dbname={names.APP_DATABASE} sslmode=require connect_timeout=10"],
            input=password["app"], capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert from_control.stdout.startswith("refused"), from_control.stdout + from_control.stderr
        assert "no pg_hba.conf entry" in from_control.stdout
        # ... and the superuser still works where it should: the local socket, as postgres.
        local = docker("exec", "-u", "postgres", container, "psql", "-h", "/var/run/postgresql",
                       "-XAtc", "SELECT current_user")  # fmt: skip
        assert local == "postgres"
    finally:
        shoal("delete", name, "--wait", timeout=300)


CONTROL_LOGIN = """
import sys, psycopg
try:
    psycopg.connect(sys.argv[1], password=sys.stdin.read().strip()).close()
    print("logged in")
except psycopg.OperationalError as e:
    print("refused", str(e).replace("\\n", " "))
"""

# argv: bearer ("-": none), trust ("ca": the CA certificate on stdin, else the system's), URLs
AGENT_GET = """
import ssl, sys, urllib.request, urllib.error
bearer, trust, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
ctx = ssl.create_default_context(cadata=sys.stdin.read()) if trust == "ca" else None
for url in urls:
    req = urllib.request.Request(url)
    if bearer != "-":
        req.add_header("Authorization", "Bearer " + bearer)
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            print(r.status)
    except urllib.error.HTTPError as e:
        print(e.code)
    except OSError as e:
        print("unreachable", getattr(e, "reason", None) or e)
"""


def test_an_agent_takes_only_its_members_token_and_only_from_the_control_network(
    operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    """A member's token (readable in its container) opens its own agent only: from the
    operator's container, member 1's agent refuses member 0's token and takes its own. A
    client on the database network cannot reach the API at all, token or not; it sees only
    the role checks the proxy uses, on their own port."""
    name = unique_name
    apply(declaration(name, members=2), tmp_path)
    try:
        st = wait_state(name, "Healthy", timeout=300)
        first, second = names.member_service(name, 0), names.member_service(name, 1)
        c0, c1 = container_of(first), container_of(second)
        op = container_of(names.OPERATOR_SERVICE)
        assert c0 is not None and c1 is not None and op is not None
        token = {m: docker("exec", c, "cat", "/run/secrets/agent-token")
                 for m, c in ((first, c0), (second, c1))}  # fmt: skip
        assert token[first] != token[second]

        ca = docker("exec", c0, "cat", "/var/lib/shoal/tls/ca.crt")

        def state_of(member: str, bearer: str, scheme: str = "https", trust: str = "ca") -> str:
            url = f"{scheme}://{member}:{names.AGENT_PORT}/state"
            return subprocess.run(
                ["docker", "exec", "-i", op, "/opt/shoal/venv/bin/python", "-c", AGENT_GET,
                 bearer, trust, url],
                input=ca, capture_output=True, text=True, timeout=60, check=True,
            ).stdout.strip()  # fmt: skip

        # Over TLS, the certificate checked against the database's CA for the member's name.
        assert state_of(second, token[first]) == "401"
        assert state_of(second, token[second]) == "200"
        assert state_of(first, token[first]) == "200"
        assert state_of(first, token[second]) == "401"
        # No plain HTTP on the control network, and no certificate but the CA's is trusted.
        plain = state_of(first, token[first], scheme="http")
        assert plain.startswith("unreachable"), plain
        untrusted = state_of(first, token[first], trust="system")
        assert untrusted.startswith("unreachable") and "CERTIFICATE_VERIFY_FAILED" in untrusted

        def from_database_network(bearer: str, *urls: str) -> list[str]:
            network = names.database_network(name)
            proc = on_network(
                network,
                operator.members["postgres"],
                "python3",
                "-c",
                AGENT_GET,
                bearer,
                "system",
                *urls,
            )
            assert proc.returncode == 0, proc.stderr
            return proc.stdout.splitlines()

        primary = st["primary"]
        standby = second if primary == first else first
        api = from_database_network(
            token[first],
            f"http://{first}:{names.AGENT_PORT}/state",
            f"http://{second}:{names.AGENT_PORT}/state",
        )
        assert len(api) == 2 and all(line.startswith("unreachable") for line in api), api
        checks = from_database_network(
            "-",
            f"http://{primary}:{names.CHECK_PORT}/primary",
            f"http://{standby}:{names.CHECK_PORT}/primary",
            f"http://{primary}:{names.CHECK_PORT}/state",
        )
        assert checks == ["200", "503", "404"], checks
    finally:
        shoal("delete", name, "--wait", timeout=300)
