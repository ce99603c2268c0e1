"""configure_logging: JSON lines and readable text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from shoal.logging_setup import configure_logging

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines() -> None:
    out = io.StringIO()
    configure_logging("json", "DEBUG", stream=out)
    log = logging.getLogger("shoal.operator")
    log.info("promoted %s", "orders-1", extra={"database": "orders", "member": "orders-1"})
    log.debug("plain", extra={"generation": 4, "obj": object()})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("reconcile failed", extra={"database": "orders"})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3
    first = lines[0]
    assert first["level"] == "info"
    assert first["event"] == "promoted orders-1"
    assert first["database"] == "orders" and first["member"] == "orders-1"
    assert first["logger"] == "shoal.operator"
    assert first["ts"].endswith("+00:00") and "T" in first["ts"]
    assert "database" not in lines[1] and lines[1]["generation"] == 4
    assert lines[1]["level"] == "debug"
    assert "RuntimeError: boom" in lines[2]["exc"]
    assert lines[2]["level"] == "error"


def test_text_is_readable() -> None:
    out = io.StringIO()
    configure_logging("text", logging.INFO, stream=out)
    log = logging.getLogger("shoal.operator")
    log.info("promoted %s", "orders-1", extra={"database": "orders", "member": "orders-1"})
    log.warning("slow", extra={"database": "orders", "seconds": 2.5})
    log.debug("hidden")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("INFO  shoal.operator [orders/orders-1] promoted orders-1")
    assert lines[1].endswith("WARNING shoal.operator [orders] slow seconds=2.5")


def test_reconfigure_replaces_handler_and_level() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("text", "INFO", stream=first)
    configure_logging("json", "WARNING", stream=second)
    log = logging.getLogger("shoal.test")
    log.info("dropped")
    log.warning("kept")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["event"] == "kept"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        configure_logging("xml", "INFO")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        configure_logging("text", "LOUD")
