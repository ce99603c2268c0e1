"""The Grafana dashboard (deploy/grafana/shoal.json) as plain PromQL, so that tests can
check every query against the operator's metrics and evaluate it against a real
Prometheus.

Grafana variables are replaced by values that make the expression valid and broad:
`$database` (a regex, always used with `=~`) by `.+`, `$__rate_interval`/`$__interval` by
`1m`, `$__range` by `1h`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SUBSTITUTIONS: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval_ms": "60000",
    "__interval": "1m",
    "__range_ms": "3600000",
    "__range_s": "3600",
    "__range": "1h",
    "database": ".+",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def default_path() -> Path:
    """deploy/grafana/shoal.json of a source checkout."""
    return Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "shoal.json"


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace the Grafana variables of `expr` (`$name`, `${name}`, `${name:fmt}`,
    `[[name]]`). An unknown variable is left as is (and will fail to parse, loudly)."""
    table = SUBSTITUTIONS if values is None else {**SUBSTITUTIONS, **values}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        # \w+ is greedy, so `$__range_s` is looked up whole, never as `$__range` + "_s"
        return table.get(name, m.group(0))

    return _VARIABLE.sub(repl, expr)


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def raw_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard as written (variables not substituted):
    panel targets and annotation queries. Variable queries (`label_values(...)`) are
    Grafana functions, not PromQL, and are left out."""
    exprs: list[str] = []
    for panel in iter_panels(dashboard.get("panels") or []):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if isinstance(expr, str) and expr.strip():
                exprs.append(expr)
    for annotation in (dashboard.get("annotations") or {}).get("list") or []:
        expr = annotation.get("expr")
        if isinstance(expr, str) and expr.strip():
            exprs.append(expr)
    return exprs


def load(path: str | Path | None = None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path or default_path()).read_text("utf-8"))
    return data


def dashboard_queries(path: str | Path | None = None) -> list[str]:
    """Every PromQL expression of the dashboard, ready to send to Prometheus."""
    return [substitute(expr) for expr in raw_queries(load(path))]


METRIC_NAME = re.compile(r"\b(shoal_[a-zA-Z0-9_]+)\b")


def metric_names(expr: str) -> set[str]:
    """The shoal metric names an expression reads."""
    return set(METRIC_NAME.findall(expr))
