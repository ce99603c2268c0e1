"""The operator's HTTP endpoint, against a fake StatusSource."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from shoal.operator.metrics import OperatorMetrics
from shoal.operator.web import DASH, StatusSource, fmt_bytes, fmt_seconds, make_app, render_page
from shoal.status import (
    DatabaseState,
    DatabaseStatus,
    Event,
    MemberRole,
    MemberState,
    MemberStatus,
)

pytestmark = pytest.mark.unit

Client = TestClient[web.Request, web.Application]


def orders() -> DatabaseStatus:
    s = DatabaseStatus(
        name="orders",
        engine="postgres",
        state=DatabaseState.DEGRADED,
        primary="orders-1",
        network="shoal-orders",
        connection="postgresql://app@orders-rw:5432/app",
        members=[
            MemberStatus(
                name="orders-0",
                role=MemberRole.SYNCING,
                state=MemberState.SEEDING,
                node="node-b",
                lag_bytes=50 * 1024 * 1024,
                lag_seconds=12.5,
                timeline=2,
                up=True,
            ),
            MemberStatus(
                name="orders-1",
                role=MemberRole.PRIMARY,
                state=MemberState.RUNNING,
                node="node-a",
                lag_bytes=0,
                lag_seconds=0.0,
                timeline=2,
                up=True,
            ),
            MemberStatus(name="orders-2", state=MemberState.DEAD, node="node-c", up=False),
        ],
        members_desired=3,
        members_ready=2,
        writable=True,
        generation=4,
        observed_at=1_700_000_100.0,
        identity="7301234567890123456",
        timeline=2,
        failovers=1,
        reseeds=1,
        message="orders-2: task dead, replacing",
    )
    s.add_event(
        Event(
            at=1_700_000_000.0,
            kind="failover",
            member="orders-1",
            message="promoted orders-1 (orders-0 dead)",
        )
    )
    s.add_event(
        Event(at=1_700_000_050.0, kind="fence", member="orders-0", message="old primary fenced")
    )
    s.add_event(
        Event(
            at=1_700_000_060.0, kind="reseed", member="orders-0", message="re-seeding from orders-1"
        )
    )
    return s


def evil() -> DatabaseStatus:
    return DatabaseStatus(
        name="evil",
        engine="mongodb",
        state=DatabaseState.LOST,
        members=[MemberStatus(name="<img src=x onerror=alert(1)>", node="</script><b>")],
        members_desired=3,
        message="<script>alert('x')</script> {{databases}}",
        events=[Event(at=1.0, kind="lost", message="<b>every copy gone</b> & more")],
    )


@dataclass
class FakeSource:
    statuses: list[DatabaseStatus] = field(default_factory=list)
    leader: bool = True
    health: tuple[bool, str] = (True, "")

    def databases(self) -> list[DatabaseStatus]:
        return list(self.statuses)

    def is_leader(self) -> bool:
        return self.leader

    def healthy(self) -> tuple[bool, str]:
        return self.health


@pytest.fixture
def source() -> FakeSource:
    return FakeSource([orders(), evil()])


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


@pytest.fixture
async def client(source: FakeSource, metrics: OperatorMetrics) -> AsyncIterator[Client]:
    checked: StatusSource = source  # FakeSource satisfies the Protocol
    async with TestClient(TestServer(make_app(checked, metrics))) as c:
        yield c


async def test_healthz_ok(client: Client) -> None:
    r = await client.get("/healthz")
    assert r.status == 200
    assert await r.text() == "ok"


async def test_healthz_unhealthy(client: Client, source: FakeSource) -> None:
    source.health = (False, "lost the Docker API: connection refused")
    r = await client.get("/healthz")
    assert r.status == 503
    assert "connection refused" in await r.text()


async def test_list_databases(client: Client) -> None:
    r = await client.get("/api/v1/databases")
    assert r.status == 200
    data = await r.json()
    assert [d["name"] for d in data] == ["evil", "orders"]
    o = data[1]
    assert o["state"] == "Degraded"
    assert o["primary"] == "orders-1"
    assert o["members"][0] == {
        "name": "orders-0",
        "role": "syncing",
        "state": "seeding",
        "node": "node-b",
        "lag_bytes": 52428800,
        "lag_seconds": 12.5,
        "timeline": 2,
        "task_id": None,
        "up": True,
    }
    # Everything but the system identifier and the operator's bookkeeping.
    assert not {"identity", "progress", "fence_token"} & set(o)
    public = orders().model_copy(update={"identity": None, "progress": {}, "fence_token": 0})
    assert DatabaseStatus.model_validate(o) == public


async def test_get_database(client: Client) -> None:
    r = await client.get("/api/v1/databases/orders")
    assert r.status == 200
    assert (await r.json())["connection"] == "postgresql://app@orders-rw:5432/app"


async def test_get_missing_database_is_404_json(client: Client) -> None:
    r = await client.get("/api/v1/databases/nope")
    assert r.status == 404
    assert r.content_type == "application/json"
    body = await r.json()
    assert body["database"] == "nope"
    assert "nope" in body["error"]


async def test_operator_info(client: Client, source: FakeSource) -> None:
    source.leader = False
    body = await (await client.get("/api/v1/operator")).json()
    assert body["leader"] is False and body["healthy"] is True


async def test_metrics_endpoint_syncs_from_source(
    client: Client,
    source: FakeSource,
    metrics: OperatorMetrics,
) -> None:
    r = await client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    leader = fams["shoal_operator_leader"].samples[0].value
    assert leader == 1
    ready = [
        s.value
        for s in fams["shoal_database_members_ready"].samples
        if s.labels["database"] == "orders"
    ]
    assert ready == [2]
    # a database deleted from the source disappears from the exposition
    source.statuses = [orders()]
    source.leader = False
    text = await (await client.get("/metrics")).text()
    assert 'database="evil"' not in text
    assert "shoal_operator_leader 0.0" in text


async def test_status_page_shows_everything(client: Client) -> None:
    r = await client.get("/")
    assert r.status == 200
    assert r.content_type == "text/html"
    page = await r.text()
    for needle in (
        "orders",
        "postgres",
        'class="state state-Degraded"',
        "orders-1",
        "node-b",
        "50.0 MiB",
        "12.5 s",
        "failover",
        "reseed",
        "fence",
        "promoted orders-1",
        "2/3 ready",
        "/api/v1/databases",
        "setTimeout(poll, 2000)",
        "operator leader, healthy",
    ):
        assert needle in page, needle
    assert "7301234567890123456" not in page  # the system identifier is not shown
    # no external assets: the page works without internet
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for placeholder in ("css", "js", "version", "operator", "updated"):
        assert "{{" + placeholder + "}}" not in page


async def test_status_page_escapes_html(client: Client) -> None:
    page = await (await client.get("/")).text()
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script>alert" not in page
    assert "&lt;/script&gt;&lt;b&gt;" in page
    assert "&lt;b&gt;every copy gone&lt;/b&gt; &amp; more" in page
    # a placeholder inside user data is never substituted
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; {{databases}}" in page
    assert page.count("<script>") == 1


async def test_status_page_empty_and_unhealthy(client: Client, source: FakeSource) -> None:
    source.statuses = []
    source.health = (False, "no <lease>")
    page = await (await client.get("/")).text()
    assert "No databases declared" in page
    assert "unhealthy: no &lt;lease&gt;" in page


async def test_status_page_of_one_database(client: Client, source: FakeSource) -> None:
    other = orders().model_copy(update={"name": "billing"})
    source.statuses = [orders(), other]
    page = await (await client.get("/", params={"db": "billing"})).text()
    assert 'id="db-billing"' in page and 'id="db-orders"' not in page
    page = await (await client.get("/", params={"db": "<nope>"})).text()
    assert "No database &lt;nope&gt;" in page and 'id="db-' not in page
    page = await (await client.get("/")).text()
    assert 'id="db-billing"' in page and 'id="db-orders"' in page


def test_render_page_lists_newest_event_first() -> None:
    page = render_page([orders()], leader=True, healthy=True, reason="")
    assert page.index("re-seeding from orders-1") < page.index("promoted orders-1")


def test_formatters() -> None:
    assert fmt_bytes(None) == DASH
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(1536) == "1.5 KiB"
    assert fmt_bytes(3 * 1024**4) == "3072.0 GiB"
    assert fmt_seconds(None) == DASH
    assert fmt_seconds(0.25) == "250 ms"
    assert fmt_seconds(300) == "5.0 min"


async def test_the_page_script_renders_nothing_itself(client: Client) -> None:
    """The server is the only renderer: the script fetches the page again and swaps in the
    parts it finds by id, so each must be in the server's page."""
    page = await (await client.get("/")).text()
    script = page[page.index("<script>") : page.index("</script>")]
    assert "createElement" not in script and "innerHTML" not in script
    assert "/api/v1/databases" not in script
    parts = re.search(r"var PARTS = \[([^\]]*)\]", script)
    assert parts is not None
    for part in re.findall(r'"(\w+)"', parts.group(1)):
        assert f'id="{part}"' in page, part
