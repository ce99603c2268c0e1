"""deploy/prometheus: the alert rules are valid and every alert fires (and stays quiet) as
alerts_test.yml says; the Prometheus config is valid."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from shoal.operator.metrics import OperatorMetrics
from shoal.platform import prerequisites

pytestmark = pytest.mark.unit

PROM_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
CONFIG = PROM_DIR / "prometheus.yml"

REQUIRED_ALERTS = {
    "ShoalDatabaseNotWritable",
    "ShoalDatabaseDegraded",
    "ShoalReplicationLagHigh",
    "ShoalFailover",
    "ShoalMemberReseedLoop",
    "ShoalOperatorDown",
    "ShoalNoOperatorLeader",
    "ShoalDatabaseLost",
    "ShoalWalArchivingStuck",
    "ShoalBaseBackupTooOld",
}


def promtool() -> str:
    path = prerequisites.find("promtool")
    if path is None:
        pytest.fail("promtool not found: `make tools` installs it (Debian package `prometheus`)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=120
    )


def rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_check_rules() -> None:
    r = run("check", "rules", ALERTS.name)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_test_rules() -> None:
    r = run("test", "rules", ALERTS_TEST.name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_check_config() -> None:
    r = run("check", "config", CONFIG.name)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_required_alert_exists_with_severity_and_annotations() -> None:
    names = {str(r["alert"]) for r in rules()}
    assert names >= REQUIRED_ALERTS
    for rule in rules():
        labels = rule["labels"]
        annotations = rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in {"warning", "critical"}
        assert isinstance(annotations, dict) and {"summary", "description"} <= set(annotations)
        if "shoal_database" in str(rule["expr"]) or "shoal_member" in str(rule["expr"]):
            assert "$labels.database" in annotations["description"], rule["alert"]


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    doc = yaml.safe_load(ALERTS_TEST.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in doc["tests"]:
        for case in group["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {str(r["alert"]) for r in rules()}
    assert names <= firing, names - firing
    assert names <= quiet, names - quiet


def test_alerts_use_only_exposed_metrics() -> None:
    exposed = OperatorMetrics().metric_names() | {"up"}
    for rule in rules():
        used = set(re.findall(r"\b(shoal_[a-z_]+|up)\b", str(rule["expr"])))
        assert used <= exposed, (rule["alert"], used - exposed)


def test_config_scrapes_the_operator() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    op = jobs["shoal-operator"]
    assert op["scrape_interval"] == "5s"
    sd = op["dns_sd_configs"][0]
    # the tasks, not the service's virtual IP (no IPVS on some hosts)
    assert (sd["names"], sd["type"], sd["port"]) == (["tasks.shoal-operator"], "A", 9650)
