"""The operator's optional HTTP bearer token: the web app's gate, the token's rules, the
operator spec's secret mount and Prometheus following it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from shoal import names
from shoal.operator import http_auth
from shoal.operator.metrics import OperatorMetrics
from shoal.operator.web import StatusSource, authorized, make_app
from shoal.platform.deploy import mounted_http_token, operator_service_spec
from shoal.platform.monitoring import DOCKERFILE, PROMETHEUS_COMMAND, prometheus_spec
from tests.unit.test_web import FakeSource, orders

pytestmark = pytest.mark.unit

Client = TestClient[web.Request, web.Application]
TOKEN = "s3cret-Token_0123456789"
GUARDED = ("/", "/metrics", "/api/v1/databases", "/api/v1/databases/orders", "/api/v1/operator")


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[Client, FakeSource]]:
    source = FakeSource([orders()])
    checked: StatusSource = source
    async with TestClient(TestServer(make_app(checked, OperatorMetrics(), token=TOKEN))) as c:
        yield c, source


@pytest.mark.parametrize("path", GUARDED)
@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", "Bearer wrong-token-0123456789",
     f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"],
)  # fmt: skip
async def test_every_route_but_healthz_wants_the_token(
    guarded: tuple[Client, FakeSource], path: str, header: str | None
) -> None:
    client, _ = guarded
    headers = {} if header is None else {"Authorization": header}
    r = await client.get(path, headers=headers)
    assert r.status == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    body = await r.text()
    assert "orders" not in body and "node-a" not in body


@pytest.mark.parametrize("path", GUARDED)
async def test_the_token_opens_every_route(guarded: tuple[Client, FakeSource], path: str) -> None:
    client, _ = guarded
    r = await client.get(path, headers={"Authorization": f"bearer  {TOKEN} "})
    assert r.status == 200


async def test_healthz_stays_open_but_keeps_its_reason_to_itself(
    guarded: tuple[Client, FakeSource],
) -> None:
    client, source = guarded
    assert (await client.get("/healthz")).status == 200
    source.health = (False, "database orders: node-a unreachable")
    r = await client.get("/healthz")
    assert r.status == 503
    assert await r.text() == "unhealthy"


AROUND = st.text(alphabet=" \tBearerbasic", max_size=8)


@given(st.one_of(st.text(max_size=80), st.builds(lambda a, b: a + TOKEN + b, AROUND, AROUND)))
def test_no_header_is_authorized_but_one_bearing_exactly_the_token(header: str) -> None:
    expected = re.fullmatch(rf"(?i:bearer) \s*{re.escape(TOKEN)}", header.strip()) is not None
    assert authorized(header, TOKEN) == expected
    assert not authorized(header, "")


@pytest.mark.parametrize(
    ("text", "named"),
    [("short", "16 to 512"), ("x" * 513, "16 to 512"), ("with space inside it!", "' '"),
     ("tøken-with-unicode-123", "'ø'"), ("line\nbreak-0123456789", "'\\n'")],
)  # fmt: skip
def test_unusable_tokens_are_refused_with_the_reason(text: str, named: str) -> None:
    (problem,) = http_auth.token_problems(text)
    assert named in problem


def test_a_mounted_token_is_read_and_a_missing_one_means_none(tmp_path: Path) -> None:
    assert http_auth.load_http_token(tmp_path / "absent") == ""
    (tmp_path / "t").write_text(f"{TOKEN}\n")
    assert http_auth.load_http_token(tmp_path / "t") == TOKEN
    (tmp_path / "bad").write_text("short")
    with pytest.raises(ValueError, match="not a usable HTTP token"):
        http_auth.load_http_token(tmp_path / "bad")


def test_each_token_gets_a_secret_of_its_own_mounted_under_one_file_name() -> None:
    assert http_auth.secret_name(TOKEN) != http_auth.secret_name(TOKEN + "x")
    assert http_auth.secret_name(TOKEN).startswith(names.OPERATOR_HTTP_TOKEN_SECRET + "-")
    spec = operator_service_spec(
        "op", {"postgres": "pg"}, "key-id", "net", 1, http_token_secret=("tid", "tn")
    )
    assert mounted_http_token(spec) == ("tid", "tn")
    # each engine's member image, in the variable its plugin is built from (plugins/registry.py);
    # an installed engine whose image was not built gets its variable empty
    assert spec["TaskTemplate"]["ContainerSpec"]["Env"] == [
        "SHOAL_MONGODB_IMAGE=",
        "SHOAL_POSTGRES_IMAGE=pg",
    ]
    mounts = spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert [m["File"]["Name"] for m in mounts] == [
        names.OPERATOR_KEY_SECRET,
        names.OPERATOR_HTTP_TOKEN_SECRET,
    ]
    assert (
        mounted_http_token(operator_service_spec("op", {"postgres": "pg"}, "key-id", "net", 1))
        is None
    )
    unpublished = operator_service_spec("op", {"postgres": "pg"}, "key-id", "net", 1, publish=False)
    assert unpublished["EndpointSpec"]["Ports"] == []


def test_prometheus_scrapes_with_the_token_when_the_operator_has_one() -> None:
    plain = prometheus_spec()["TaskTemplate"]["ContainerSpec"]
    assert "Command" not in plain and "Secrets" not in plain
    spec = prometheus_spec(http_token_secret=("tid", "tn"))
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert mounted_http_token(spec) == ("tid", "tn")
    assert container["Command"][-1] == "--config.file=/etc/prometheus/prometheus-token.yml"
    # The Command replaces the image's entrypoint: it must be that entrypoint but the config.
    entrypoint = re.search(r"ENTRYPOINT \[(.*?)\]", DOCKERFILE.read_text(), re.S)
    assert entrypoint is not None
    args = re.findall(r'"([^"]+)"', entrypoint.group(1))
    assert tuple(a for a in args if not a.startswith("--config.file=")) == PROMETHEUS_COMMAND
