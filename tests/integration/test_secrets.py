"""No generated secret ever shows where it should not (docs/security.md, "Secrets").

A database is created, taken through a failover (so the operator logs its actions and the
members their promotion and re-seed), and then every place a secret could leak to is read:
every service spec and label on the swarm, every container's `docker inspect` (environment,
command line, labels), the logs of the operator and every member, the CLI's output and the
operator's HTTP pages. None may contain the operator key, any member password or the agent
token, as text or in the base64 form Docker secrets are created from. The secret values
themselves are read where they are meant to be: the files under /run/secrets."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from tests.integration.support import (
    apply,
    container_of,
    declaration,
    docker,
    shoal,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MEMBER_SECRETS = ("superuser-password", "replication-password", "app-password", "agent-token")


def _read(container: str, path: str) -> str:
    return docker("exec", container, "cat", path).strip()


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    found = []
    for what, value in secrets.items():
        forms = {value, base64.b64encode(value.encode()).decode()}
        if any(f and f in text for f in forms):
            found.append(what)
    return found


def test_no_secret_appears_in_specs_labels_inspect_logs_or_output(
    operator: BuiltImages, unique_name: str, tmp_path: Path
) -> None:
    db = unique_name
    apply(declaration(db), tmp_path)
    try:
        st = wait_state(db, "Healthy")
        primary = container_of(st["primary"])
        assert primary
        secrets = {f"{db} {s}": _read(primary, f"/run/secrets/{s}") for s in MEMBER_SECRETS}
        # The member's TLS private key: its PEM body's second line (the first starts with
        # the header every P-256 PKCS#8 key shares), as any dump of the key would show it.
        bundle = _read(primary, "/run/secrets/tls.pem")
        key_body = bundle.split("-----BEGIN PRIVATE KEY-----", 1)[1]
        key_lines = key_body.split("-----END PRIVATE KEY-----", 1)[0].split()
        secrets[f"{db} TLS key"] = key_lines[1]
        op = container_of(names.OPERATOR_SERVICE)
        assert op
        secrets["operator key"] = _read(op, f"/run/secrets/{names.OPERATOR_KEY_SECRET}")
        assert all(len(v) >= 16 for v in secrets.values()), "secrets were read"

        # A failover, so that actions, promotion and re-seed are all in the logs.
        docker("kill", primary)
        wait_for(
            lambda: (
                (s := json.loads(shoal("status", db, "--json").stdout or "{}")).get("primary")
                not in (None, st["primary"])
                and s.get("state") == "Healthy"
            ),
            300,
            "a failover and Healthy again",
        )

        places: dict[str, str] = {}
        for sid in docker("service", "ls", "-q").split():
            places[f"service {sid}"] = docker("service", "inspect", sid)
        for cid in docker("ps", "-aq").split():
            places[f"container {cid}"] = docker("inspect", cid)
        # Every container of the operator and of the members, the fenced and replaced ones
        # too (`docker logs`: `docker service logs` was seen to hang here).
        services = [names.OPERATOR_SERVICE] + [names.member_service(db, i) for i in range(3)]
        for svc in services:
            label = f"label=com.docker.swarm.service.name={svc}"
            for cid in docker("ps", "-aq", "--filter", label).split():
                logs = subprocess.run(
                    ["docker", "logs", cid], capture_output=True, text=True, timeout=120
                )
                places[f"logs of {svc} ({cid})"] = logs.stdout + logs.stderr
        assert sum(k.startswith("logs of") for k in places) >= 4
        for args in (("get",), ("status", db), ("status", db, "--json"), ("get", "--json")):
            proc = shoal(*args)
            places["shoal " + " ".join(args)] = proc.stdout + proc.stderr
        for path in (
            "/",
            "/metrics",
            f"/?db={db}",
            "/healthz",
            "/api/v1/databases",
            f"/api/v1/databases/{db}",
            "/api/v1/operator",
        ):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:9650{path}", timeout=10) as r:
                    places[f"GET {path}"] = r.read().decode(errors="replace")
            except OSError as e:  # a page that does not exist leaks nothing either
                places[f"GET {path}"] = str(e)

        leaked = {where: w for where, text in places.items() if (w := _leaks(text, secrets))}
        assert not leaked, f"secrets found: {leaked}"
        assert any(st["primary"] in text for text in places.values()), "the places were read"
    finally:
        proc = shoal("delete", db, "--wait", timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
