"""`shoal credentials NAME --secret SECRET` (docs/operations.md, "An application service"):
an application service given the two secrets connects with verified TLS; the secrets are
the user's (delete leaves them); a taken or malformed name changes nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from tests.integration.support import apply, declaration, docker, shoal, wait_for, wait_state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

APP = (
    "import psycopg; uri = open('/run/secrets/{s}').read(); "
    "c = psycopg.connect(uri); "
    "print('app-connected', c.execute('SELECT ssl FROM pg_stat_ssl "
    "WHERE pid = pg_backend_pid()').fetchone()[0], flush=True)"
)


def _secrets() -> set[str]:
    return set(docker("secret", "ls", "--format", "{{.Name}}").split())


def test_an_application_service_connects_with_the_stored_credentials(
    operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name
    secret = f"{name}-app-db"
    app = f"{name}-app"
    apply(declaration(name, members=2), tmp_path)
    try:
        wait_state(name, "Healthy", timeout=300)
        before = _secrets()
        bad = shoal("credentials", name, "--secret", "no spaces/allowed")
        assert bad.returncode == 2 and "--secret" in bad.stderr, bad.stderr
        assert _secrets() == before

        made = shoal("credentials", name, "--secret", secret)
        assert made.returncode == 0, made.stderr
        assert {secret, f"{secret}-ca"} <= _secrets()
        again = shoal("credentials", name, "--secret", secret)
        assert again.returncode == 2 and "exists already" in again.stderr, again.stderr

        docker(
            "service", "create", "--detach", "--name", app,
            "--network", names.database_network(name),
            "--secret", secret, "--secret", f"{secret}-ca",
            "--restart-condition", "none", "--entrypoint", "/opt/shoal/venv/bin/python",
            operator.operator, "-c", APP.format(s=secret),
        )  # fmt: skip
        wait_for(
            lambda: "app-connected True" in docker("service", "logs", "--raw", app),
            180,
            "the application service to connect",
        )
        # The secrets are the user's: deleting the database leaves them (the application
        # goes first: Swarm keeps a network that a service still uses).
        docker("service", "rm", app)
        wait_for(
            lambda: not docker("ps", "-aq", "-f", f"label=com.docker.swarm.service.name={app}"),
            60,
            "the application's container gone",
        )
        assert shoal("delete", name, "--wait", timeout=300).returncode == 0
        assert {secret, f"{secret}-ca"} <= _secrets()
    finally:
        subprocess.run(["docker", "service", "rm", app], capture_output=True)
        shoal("delete", name, "--wait", timeout=300)
        wait_for(
            lambda: (
                subprocess.run(
                    ["docker", "secret", "rm", secret, f"{secret}-ca"], capture_output=True
                ).returncode
                == 0
                or not ({secret, f"{secret}-ca"} & _secrets())
            ),
            60,
            "the test's secrets removed",
        )
