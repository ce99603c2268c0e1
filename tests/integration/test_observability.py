"""Observability end to end: a real Prometheus scraping the real operator while a real
database loses a replica and then its primary; the dashboard's queries evaluated by that
Prometheus; the operator's status page rendered by headless Chromium.

Prometheus runs as its own uniquely named service on a free host port, built from
deploy/prometheus with a test copy of alerts.yml in which every `for:` is shortened (the
expressions are byte-for-byte those of alerts.yml): a re-seed takes seconds, the shipped
`for: 2m` would make the test wait minutes for a state that is already over.

Set SHOAL_UPDATE_SCREENSHOT=1 to (re)write docs/status-page.png from this run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import string
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shoal.operator.dashboard import dashboard_queries, load, raw_queries, substitute
from shoal.platform.images import BuiltImages
from shoal.platform.monitoring import (
    DOCKERFILE,
    deploy_monitoring,
    prometheus_config_dir,
    remove_monitoring,
)
from shoal.swarm.client import SwarmClient
from tests.integration.support import (
    ROOT,
    apply,
    container_of,
    declaration,
    docker,
    shoal,
    status,
    wait_for,
    wait_state,
)
from tests.unit.test_metrics import BACKUP_CONTRACT

pytestmark = pytest.mark.integration

OPERATOR_URL = "http://127.0.0.1:9650"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TEST_FOR = "1s"  # every `for:` of the test copy of alerts.yml
# Scrape and rule evaluation every second in the test copy: a replica's re-seed keeps the
# database Degraded for only a few seconds, shorter than the shipped 5 s intervals plus `for`.
TEST_INTERVAL = "1s"
SCREENSHOT = ROOT / "docs" / "status-page.png"
_ALPHABET = string.ascii_lowercase + string.digits


# ---------------------------------------------------------------------------- Prometheus
def shortened_rules(text: str, duration: str = TEST_FOR) -> str:
    """alerts.yml with every `for:` replaced by `duration`; nothing else changes."""
    return re.sub(r"(?m)^(\s+)for:[ \t]*\S+[ \t]*$", rf"\g<1>for: {duration}", text)


def fast_config(text: str) -> str:
    """prometheus.yml with every interval at TEST_INTERVAL (and the scrape timeout below it)."""
    text = re.sub(
        r"(?m)^(\s*)(scrape_interval|evaluation_interval):[ \t]*\S+",
        rf"\g<1>\g<2>: {TEST_INTERVAL}",
        text,
    )
    return re.sub(r"(?m)^(\s*)scrape_timeout:[ \t]*\S+", r"\g<1>scrape_timeout: 900ms", text)


def build_test_prometheus(base: str, tag: str) -> str:
    """The shoal/prometheus recipe (DOCKERFILE, deploy/prometheus/prometheus.yml) with the
    test copy of alerts.yml."""
    config = prometheus_config_dir()
    with tempfile.TemporaryDirectory(prefix="shoal-prom-test-") as tmp:
        ctx = Path(tmp)
        (ctx / "deploy" / "prometheus").mkdir(parents=True)
        (ctx / "deploy" / "prometheus" / "prometheus.yml").write_text(
            fast_config((config / "prometheus.yml").read_text())
        )
        rules = shortened_rules((config / "alerts.yml").read_text())
        (ctx / "deploy" / "prometheus" / "alerts.yml").write_text(rules)
        shutil.copy2(DOCKERFILE, ctx / "Dockerfile")
        proc = subprocess.run(
            ["docker", "build", "--build-arg", f"BASE={base}", "-t", tag, str(ctx)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return tag


def free_port() -> int:
    """A port in 19000-19899 that nothing on this host listens on and no Swarm service
    publishes."""
    published = docker("service", "ls", "--format", "{{.Ports}}")
    for _ in range(200):
        port = 19000 + secrets.randbelow(900)
        if f":{port}->" in published:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free port in 19000-19899")


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        return body

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; asserts that Prometheus evaluated it without error."""
        body = self.get("/api/v1/query", query=expr)
        assert body.get("status") == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, None when it has no data."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {result}"
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        body = self.get("/api/v1/alerts")
        assert body.get("status") == "success", body
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=3) as r:
                return bool(r.status == 200)
        except OSError:
            return False


def firing(alerts: list[dict[str, Any]], name: str, db: str) -> list[dict[str, Any]]:
    return [
        a
        for a in alerts
        if a["labels"].get("alertname") == name
        and a["labels"].get("database") == db
        and a.get("state") == "firing"
    ]


@dataclass
class AlertWatch:
    """Polls /api/v1/alerts in the background: a firing alert of a short incident can be
    over before the test gets to look."""

    prom: Prometheus
    db: str
    seen: dict[str, float] = field(default_factory=dict)  # alertname -> first seen firing
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> AlertWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for a in self.prom.alerts():
                    if a["labels"].get("database") == self.db and a.get("state") == "firing":
                        self.seen.setdefault(a["labels"]["alertname"], time.time())
            except Exception:  # a failed poll is retried
                pass
            self._stop.wait(1.0)


# ---------------------------------------------------------------------------- the stack
@dataclass
class Stack:
    db: str
    prom: Prometheus
    service: str
    tmp: Path


def _unique() -> str:
    return "t" + "".join(secrets.choice(_ALPHABET) for _ in range(6))


async def _deploy(service: str, image: str, port: int) -> str:
    async with SwarmClient() as d:
        return await deploy_monitoring(d, name=service, image=image, port=port)


async def _remove(service: str) -> None:
    async with SwarmClient() as d:
        await remove_monitoring(d, name=service)


@pytest.fixture(scope="module")
def stack(operator: BuiltImages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = _unique()
    service = f"{db}-prometheus"
    tmp = tmp_path_factory.mktemp("observability")
    # named by its content: reused by later runs, never removed by one (no leak per run)
    recipe = hashlib.sha256()
    config = prometheus_config_dir()
    for path in (DOCKERFILE, config / "prometheus.yml", config / "alerts.yml"):
        recipe.update(path.read_bytes())
    recipe.update(TEST_FOR.encode() + TEST_INTERVAL.encode())
    tag = f"shoal/prometheus-test:{recipe.hexdigest()[:12]}"

    # the image builds while the database bootstraps
    built: dict[str, Any] = {}

    def build() -> None:
        try:
            built["tag"] = build_test_prometheus(operator.base, tag)
        except BaseException as e:  # re-raised in the test thread
            built["error"] = e

    builder = threading.Thread(target=build, daemon=True)
    builder.start()
    created = False
    deployed = False
    try:
        apply(declaration(db, members=3), tmp)
        created = True
        builder.join(timeout=600)
        if "error" in built:
            raise built["error"]
        assert "tag" in built, "the Prometheus test image did not build in time"
        port = free_port()
        url = asyncio.run(_deploy(service, tag, port))
        deployed = True
        prom = Prometheus(url)
        wait_state(db, "Healthy", timeout=240)
        wait_for(prom.ready, 120, f"Prometheus {service} on {url} to be ready", every=1)
        wait_for(
            lambda: prom.value(f'max(shoal_database_members_ready{{database="{db}"}})') == 3,
            60,
            f"Prometheus to scrape 3 ready members of {db}",
            every=1,
        )
        yield Stack(db=db, prom=prom, service=service, tmp=tmp)
    finally:
        if deployed:
            asyncio.run(_remove(service))
        if created:
            shoal("delete", db, "--wait", timeout=300)


# ---------------------------------------------------------------------------- tests
def test_test_rules_only_shorten_for() -> None:
    text = (prometheus_config_dir() / "alerts.yml").read_text()
    shortened = shortened_rules(text)
    fors = re.findall(r"(?m)^\s+for:\s*(\S+)\s*$", shortened)
    assert fors and set(fors) == {TEST_FOR}
    strip = re.compile(r"(?m)^\s+for:.*\n")
    assert strip.sub("", shortened) == strip.sub("", text)


def test_prometheus_scrapes_the_operator(stack: Stack) -> None:
    prom, db = stack.prom, stack.db
    assert prom.value('max(up{job="shoal-operator"})') == 1
    members = {
        r["metric"]["member"]: float(r["value"][1])
        for r in prom.query(f'max by (member) (shoal_member_up{{database="{db}"}})')
    }
    assert members == {f"{db}-0": 1.0, f"{db}-1": 1.0, f"{db}-2": 1.0}
    # the rules of the test copy are loaded
    groups = prom.get("/api/v1/rules")["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"ShoalDatabaseDegraded", "ShoalFailover", "ShoalMemberReseedLoop"} <= names


def _counter(prom: Prometheus, expr: str) -> float:
    v = prom.value(f"sum({expr})")
    return 0.0 if v is None else v


def _rose(prom: Prometheus, expr: str, before: float, since: float) -> bool:
    """The counter went up since `since`: above its old value, or (the operator restarted
    meanwhile: other test sessions redeploy it, and its counters start again at 0) an
    increase over the window, which Prometheus computes across counter resets."""
    window = int(time.time() - since) + 10
    return _counter(prom, expr) > before or _counter(prom, f"increase({expr}[{window}s])") > 0


def test_killed_replica(stack: Stack) -> None:
    prom, db = stack.prom, stack.db
    s = wait_state(db, "Healthy", timeout=180)
    replica = next(m["name"] for m in s["members"] if m["role"] == "replica")
    reseeds = f'shoal_member_reseeds_total{{database="{db}",member="{replica}"}}'
    before = _counter(prom, reseeds)
    cid = container_of(replica)
    assert cid
    start = time.time()
    states: list[tuple[float, str]] = []
    with AlertWatch(prom, db) as watch:
        docker("kill", cid)

        def recovered() -> bool:
            st = status(db)
            states.append((round(time.time() - start, 1), st.get("state", "?")))
            m = {x["name"]: x for x in st.get("members", [])}.get(replica, {})
            return (
                st.get("state") == "Healthy"
                and m.get("up") is True
                and container_of(replica) not in (None, cid)
            )

        wait_for(recovered, 180, f"{replica} replaced and {db} Healthy again", every=1)
        # Prometheus sees it back up and the re-seed counted
        wait_for(
            lambda: (
                prom.value(f'max(shoal_member_up{{member="{replica}"}})') == 1
                and _rose(prom, reseeds, before, start)
            ),
            60,
            f"Prometheus: {replica} up again and its re-seed counted",
            every=1,
        )
        # one more evaluation so that a last firing state is recorded
        time.sleep(6)
    window = int(time.time() - start) + 10
    dropped = prom.value(f'min(min_over_time(shoal_member_up{{member="{replica}"}}[{window}s]))')
    degraded_alert = prom.value(
        f'max(max_over_time(ALERTS{{alertname="ShoalDatabaseDegraded",alertstate="firing",'
        f'database="{db}"}}[{window}s]))'
    )
    transitions = [st for i, st in enumerate(states) if i == 0 or st[1] != states[i - 1][1]]
    print(f"states of {db} after the kill: {transitions}; alerts seen: {watch.seen}")
    assert dropped == 0, f"shoal_member_up of {replica} never scraped at 0 in {window}s"
    assert _rose(prom, reseeds, before, start)
    assert "ShoalDatabaseDegraded" in watch.seen or degraded_alert == 1, (
        f"ShoalDatabaseDegraded never fired for {db}; states {transitions}, seen {watch.seen}"
    )


def test_killed_primary(stack: Stack) -> None:
    prom, db = stack.prom, stack.db
    s = wait_state(db, "Healthy", timeout=180)
    old = s["primary"]
    assert old
    failovers = f'shoal_failovers_total{{database="{db}"}}'
    before = _counter(prom, failovers)
    cid = container_of(old)
    assert cid
    start = time.time()
    docker("kill", cid)
    wait_for(
        lambda: (
            (st := status(db)).get("primary") not in (None, old) and st.get("state") == "Healthy"
        ),
        240,
        f"{db} failed over away from {old} and Healthy again",
        every=1,
    )
    wait_for(
        lambda: _rose(prom, failovers, before, start),
        60,
        f"Prometheus: {failovers} above {before}",
        every=1,
    )
    alert = wait_for(
        lambda: firing(prom.alerts(), "ShoalFailover", db),
        60,
        f"ShoalFailover firing for {db}",
        every=1,
    )
    assert alert[0]["labels"]["severity"] == "warning"
    assert prom.value(f'max(max_over_time(shoal_member_up{{member="{old}"}}[5m]))') == 1
    assert prom.value(f'min(min_over_time(shoal_member_up{{member="{old}"}}[5m]))') == 0


def test_dashboard_queries_evaluate(stack: Stack) -> None:
    prom, db = stack.prom, stack.db
    exprs = dashboard_queries()
    assert exprs
    for expr in exprs:
        prom.query(expr)  # asserts status success
    # scoped to this database, every query that selects the database returns data, except
    # the annotation that only has data within a minute of a failover (`... > 0`) and the
    # backups row: those series exist only for a database with spec.backup (docs/backup.md),
    # which this one has not
    scoped = [
        substitute(raw, {"database": re.escape(db)})
        for raw in raw_queries(load())
        if "$database" in raw
        and not raw.rstrip().endswith("> 0")
        and not any(name in raw for name in BACKUP_CONTRACT)
    ]
    assert scoped

    def empty() -> list[str]:
        return [expr for expr in scoped if not prom.query(expr)]

    # eventually: while another session redeploys the operator its series are briefly stale
    wait_for(lambda: not empty(), 90, f"data for {db} from every scoped query", every=2)


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _operator_lists(db: str) -> bool:
    try:
        with urllib.request.urlopen(f"{OPERATOR_URL}/api/v1/databases", timeout=5) as r:
            return any(s.get("name") == db for s in json.loads(r.read()))
    except (OSError, ValueError):
        return False


def _dom(tmp: Path, db: str, url: str) -> str:
    """The status page's DOM after its script ran; retried while the operator is being
    replaced (other test sessions redeploy it: port 9650 is gone for a few seconds)."""
    dom, err = "", ""
    for _ in range(5):
        wait_for(lambda: _operator_lists(db), 120, f"the operator to list {db}", every=1)
        proc = _chromium(tmp, "--virtual-time-budget=5000", "--dump-dom", url)
        dom, err = proc.stdout, proc.stderr
        if proc.returncode == 0 and f'id="db-{db}"' in dom:
            return dom
        time.sleep(3)
    raise AssertionError(f"{db} not on the status page {url}:\n{dom[:3000]}\n{err[-2000:]}")


def test_status_page_in_chromium(stack: Stack) -> None:
    db = stack.db
    s = wait_state(db, "Healthy", timeout=180)
    dom = _dom(stack.tmp, db, f"{OPERATOR_URL}/")
    m = re.search(rf'<section class="db" id="db-{db}">(.*?)</section>', dom, re.S)
    assert m, f"{db} not on the status page:\n{dom[:3000]}"
    section = m.group(1)
    assert "Healthy" in section
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", section, re.S)
    roles = {}
    for row in rows:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        if cells:
            role = re.sub(r"<[^>]+>", "", cells[1]).strip()
            roles[re.sub(r"<[^>]+>", "", cells[0]).strip()] = role
    assert roles == {m["name"]: m["role"] for m in s["members"]}
    assert sorted(roles.values()) == ["primary", "replica", "replica"]
    # the page was refreshed by its script (the live marker is set only by a good poll)
    assert re.search(r'id="live" class="live">live<', dom)

    # `/?db=NAME`: this database only, also after the script's refresh
    one = _dom(stack.tmp, db, f"{OPERATOR_URL}/?db={db}")
    assert re.findall(r'<section class="db" id="db-([^"]+)"', one) == [db]
    assert re.search(r'id="live" class="live">live<', one)

    wait_state(db, "Healthy", timeout=180)
    wait_for(lambda: _operator_lists(db), 120, f"the operator to list {db}", every=1)
    shot = stack.tmp / "status-page.png"
    proc = _chromium(
        stack.tmp,
        "--virtual-time-budget=5000",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1280,900",
        f"{OPERATOR_URL}/?db={db}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    if os.environ.get("SHOAL_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(data)
