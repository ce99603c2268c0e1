"""deploy/grafana/shoal.json: loads, uses only metrics the operator exposes, and every
expression is valid PromQL (checked by promtool as recording rules)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from shoal.operator.dashboard import (
    dashboard_queries,
    default_path,
    iter_panels,
    load,
    metric_names,
    raw_queries,
    substitute,
)
from shoal.operator.metrics import OperatorMetrics
from shoal.platform import prerequisites
from tests.unit.test_metrics import BACKUP_CONTRACT
from tests.unit.test_metrics import CONTRACT as METRICS_CONTRACT

pytestmark = pytest.mark.unit

# The metrics contract (test_metrics.py); the dashboard reads the histogram's buckets.
CONTRACT = {
    f"{name}_bucket" if name == "shoal_reconcile_duration_seconds" else name
    for name in METRICS_CONTRACT
} | set(BACKUP_CONTRACT)


def test_dashboard_loads_with_variables() -> None:
    dash = json.loads(default_path().read_text())
    assert 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    db = variables["database"]
    assert db["query"]["query"] == "label_values(shoal_database_members_desired, database)"
    assert db["datasource"]["uid"] == "${datasource}"


def test_every_panel_has_a_query_on_the_datasource_variable() -> None:
    for panel in iter_panels(load()["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in iter_panels(load()["panels"])]
    assert len(ids) == len(set(ids))


def test_queries_only_use_exposed_metrics() -> None:
    exposed = OperatorMetrics().metric_names()
    used: set[str] = set()
    for expr in dashboard_queries():
        names = metric_names(expr)
        assert names, expr
        assert names <= exposed, (expr, names - exposed)
        used |= names
    # the dashboard shows every contract metric
    assert used >= CONTRACT, CONTRACT - used


def test_database_variable_is_always_a_regex_match() -> None:
    for expr in raw_queries(load()):
        if "$database" in expr:
            assert 'database=~"$database"' in expr, expr
            assert 'database="$database"' not in expr


def test_substitution() -> None:
    assert substitute('rate(x{database=~"$database"}[$__rate_interval])') == (
        'rate(x{database=~".+"}[1m])'
    )
    assert substitute("x[${__range}] offset $__range_s") == "x[1h] offset 3600"
    assert substitute("[[database]] $unknown") == ".+ $unknown"
    for expr in dashboard_queries():
        assert "$" not in expr and "[[" not in expr, expr


def test_queries_include_annotations(tmp_path: Path) -> None:
    dash = {
        "panels": [
            {"type": "row", "panels": [{"targets": [{"expr": "up"}, {"expr": ""}]}]},
            {"targets": [{"expr": 'shoal_member_up{database=~"$database"}'}]},
        ],
        "annotations": {"list": [{"expr": "shoal_operator_leader"}, {"builtIn": 1}]},
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(dash))
    assert dashboard_queries(path) == [
        "up",
        'shoal_member_up{database=~".+"}',
        "shoal_operator_leader",
    ]


def test_every_query_parses(tmp_path: Path) -> None:
    promtool = prerequisites.find("promtool")
    if promtool is None:
        pytest.fail("promtool not found: `make tools` installs it (Debian package `prometheus`)")
    queries = dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"shoal:dashboard_query_{i}", "expr": e}
                    for i, e in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    r = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(queries)} rules found" in r.stdout
