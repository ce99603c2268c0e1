"""The operator's HTTP token on a real swarm: `shoal operator deploy --http-token-file`
mounts it as a Docker secret; the operator then answers 401 on every route but /healthz
without it; Prometheus (the shipped image) scrapes with it; a bad token file changes
nothing; `--no-http-token` opens the operator again."""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from shoal import names
from shoal.platform.deploy import operator_http_token
from shoal.platform.images import BuiltImages
from shoal.platform.monitoring import build_prometheus_image, deploy_monitoring, remove_monitoring
from shoal.swarm.client import SwarmClient
from tests.integration.support import docker, shoal, wait_for
from tests.integration.test_observability import Prometheus, free_port

pytestmark = pytest.mark.integration

URL = f"http://127.0.0.1:{names.OPERATOR_PORT}"


def http_status(path: str, token: str | None = None) -> int | None:
    request = urllib.request.Request(URL + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None  # the operator is restarting


def spec_version() -> int:
    return int(
        json.loads(docker("service", "inspect", names.OPERATOR_SERVICE))[0]["Version"]["Index"]
    )


async def _token_secret() -> tuple[str, str] | None:
    async with SwarmClient() as swarm:
        return await operator_http_token(swarm)


async def _prometheus(service: str, image: str, port: int, secret: tuple[str, str]) -> str:
    async with SwarmClient() as d:
        return await deploy_monitoring(
            d, name=service, image=image, port=port, http_token_secret=secret
        )


async def _remove(service: str) -> None:
    async with SwarmClient() as d:
        await remove_monitoring(d, name=service)


def test_a_token_closes_every_route_but_healthz_and_prometheus_presents_it(
    operator: BuiltImages, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(24)
    good = tmp_path / "token"
    good.write_text(token + "\n")
    bad = tmp_path / "bad"
    bad.write_text("short token")
    service = f"t{secrets.token_hex(3)}-prometheus"
    deployed = False
    try:
        before = spec_version()
        refused = shoal("operator", "deploy", "--http-token-file", str(bad))
        assert refused.returncode == 2, refused.stderr
        assert "16 to 512" in refused.stderr
        assert spec_version() == before, "a refused token changed the operator service"

        done = shoal("operator", "deploy", "--http-token-file", str(good), timeout=300)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: http_status("/api/v1/operator") == 401, 120, "the operator to want it")
        for path in ("/", "/metrics", "/api/v1/databases", "/api/v1/operator"):
            assert http_status(path) == 401, path
            assert http_status(path, "wrong-" + token) == 401, path
            assert http_status(path, token) == 200, path
        assert http_status("/healthz") == 200
        again = shoal("operator", "deploy", timeout=300)  # no token option: kept
        assert again.returncode == 0, again.stderr
        assert "unchanged" in again.stdout
        assert http_status("/metrics") == 401

        secret = asyncio.run(_token_secret())
        assert secret is not None
        image = build_prometheus_image(operator.base)
        prom = Prometheus(asyncio.run(_prometheus(service, image, free_port(), secret)))
        deployed = True
        wait_for(prom.ready, 120, f"Prometheus {service} to be ready", every=1)
        wait_for(
            lambda: prom.value('max(up{job="shoal-operator"})') == 1,
            90,
            "Prometheus to scrape the operator with its token",
            every=2,
        )
    finally:
        if deployed:
            asyncio.run(_remove(service))
        opened = shoal("operator", "deploy", "--no-http-token", timeout=300)
        assert opened.returncode == 0, opened.stderr
        wait_for(lambda: http_status("/metrics") == 200, 120, "the operator open again")
