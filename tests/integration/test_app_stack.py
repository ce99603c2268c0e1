"""examples/app-stack.yml end to end (docs/operations.md, "Running a database for an
application stack, end to end"): `shoal credentials --secret` and `docker stack deploy`
give an application on the database's network that connects with verified TLS and writes;
re-pointing it at a new secret pair is a second `docker stack deploy`;
`shoal delete --with-secrets` is refused, changing nothing, while the stack uses the secrets;
a plain delete keeps them and says so; `--with-secrets` then removes them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from tests.integration.support import (
    ROOT,
    apply,
    declaration,
    docker,
    psql,
    service_logs,
    shoal,
    status,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

APP_STACK = ROOT / "examples" / "app-stack.yml"


def _secrets() -> set[str]:
    return set(docker("secret", "ls", "--format", "{{.Name}}").split())


def _logs(service: str) -> str:
    r = subprocess.run(
        ["docker", "service", "logs", "--raw", service], capture_output=True, text=True, timeout=30
    )
    return r.stdout + r.stderr


def _containers(service: str) -> list[str]:
    return docker("ps", "-aq", "-f", f"label=com.docker.swarm.service.name={service}").split()


def test_an_application_stack_uses_the_database_through_its_secret(
    operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    db = unique_name
    secret = f"{db}-app"
    stack = f"{db}app"
    app = f"{stack}_app"
    rotated = f"{secret}2"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")},
        "SHOAL_DB_NETWORK": names.database_network(db),
        "SHOAL_APP_SECRET": secret,
        "SHOAL_APP_IMAGE": operator.operator,
    }
    apply(declaration(db, members=1, durability="async"), tmp_path)
    try:
        wait_state(db, "Healthy", timeout=300)
        made = shoal("credentials", db, "--secret", secret, timeout=60)
        assert made.returncode == 0, made.stderr

        deployed = subprocess.run(
            ["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(APP_STACK),
             stack],
            capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stderr
        try:
            wait_for(lambda: "app: wrote visit 2 " in _logs(app), 180, "the application to write")
        except AssertionError:
            raise AssertionError(_logs(app) + service_logs([f"{db}-0"])) from None
        logs = _logs(app)
        assert "(ssl=True)" in logs, logs  # verify-full TLS with the CA from SECRET-ca
        # What it wrote is in the database (as the superuser, on the member itself).
        assert int(psql(f"{db}-0", "SELECT count(*) FROM app_visits")) >= 2

        # Re-pointing the application (a new secret pair, e.g. after scaling changed the
        # member list in the URI): deploy the stack again with the new name, then the old
        # pair is free to remove.
        made = shoal("credentials", db, "--secret", rotated, timeout=60)
        assert made.returncode == 0, made.stderr
        again = subprocess.run(
            ["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(APP_STACK),
             stack],
            capture_output=True, text=True, timeout=120,
            env={**env, "SHOAL_APP_SECRET": rotated}, cwd=ROOT,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        wait_for(lambda: _logs(app).count("app: wrote visit 2 ") >= 2, 180, "the re-pointed app")
        spec = json.loads(docker("service", "inspect", app))[0]["Spec"]
        mounted = spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
        assert sorted(m["SecretName"] for m in mounted) == [rotated, f"{rotated}-ca"]
        docker("secret", "rm", secret, f"{secret}-ca")

        # Refused while in use: exit 1 naming the stack's service, and nothing changed.
        refused = shoal("delete", db, "--with-secrets", timeout=60)
        assert refused.returncode == 1, refused.stderr
        assert "in use" in refused.stderr and app in refused.stderr, refused.stderr
        assert status(db).get("state") == "Healthy"
        assert {rotated, f"{rotated}-ca"} <= _secrets()

        subprocess.run(["docker", "stack", "rm", stack], capture_output=True, timeout=60)
        wait_for(lambda: not _containers(app), 90, "the application's containers gone")

        # A plain delete keeps the user's secrets, and says so.
        deleted = shoal("delete", db, "--wait", timeout=300)
        assert deleted.returncode == 0, deleted.stderr
        assert "kept the Docker secrets" in deleted.stderr and rotated in deleted.stderr
        assert {rotated, f"{rotated}-ca"} <= _secrets()
        # Asked, it removes them (the database is gone already: only the secrets remain).
        removed = shoal("delete", db, "--with-secrets", timeout=60)
        assert removed.returncode == 0, removed.stderr
        assert not {rotated, f"{rotated}-ca"} & _secrets()
        # Nothing of the name left at all: now it is bad input.
        again = shoal("delete", db, "--with-secrets", timeout=60)
        assert again.returncode == 2 and "no database" in again.stderr, again.stderr
    finally:
        subprocess.run(["docker", "stack", "rm", stack], capture_output=True, timeout=60)
        wait_for(lambda: not _containers(app), 90, "the application's containers gone")
        shoal("delete", db, "--wait", timeout=300)
        for name in (secret, f"{secret}-ca", rotated, f"{rotated}-ca"):
            subprocess.run(["docker", "secret", "rm", name], capture_output=True)
