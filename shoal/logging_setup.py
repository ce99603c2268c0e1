"""Logging for every shoal process: readable text for people, JSON lines for machines.

    log.info("promoted %s", member, extra={"database": "orders", "member": "orders-1"})

JSON form: one object per line with `ts` (ISO 8601 UTC), `level`, `logger`, `event` (the
formatted message), `database` and `member` when given through `extra=`, any other extra
field, and `exc` with the traceback. Text form:
`2024-05-01 12:00:00.123 INFO  shoal.operator [orders/orders-1] promoted orders-1`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
CONTEXT_FIELDS = ("database", "member")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        extras = _extras(record)
        for key in CONTEXT_FIELDS:
            if extras.get(key) is not None:
                entry[key] = extras.pop(key)
            else:
                extras.pop(key, None)
        for key, value in extras.items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        ms = int(record.msecs)
        extras = _extras(record)
        where = "/".join(str(extras.pop(k)) for k in CONTEXT_FIELDS if extras.get(k) is not None)
        for k in CONTEXT_FIELDS:
            extras.pop(k, None)
        line = f"{ts}.{ms:03d} {record.levelname:<5} {record.name}"
        if where:
            line += f" [{where}]"
        line += f" {record.getMessage()}"
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


_HANDLER_MARK = "_shoal_handler"


def configure_logging(
    fmt: Literal["text", "json"] = "text",
    level: int | str = logging.INFO,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Configure the root logger (idempotent: a second call replaces shoal's handler).
    Returns the handler. Noisy third-party loggers are capped at WARNING."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r}")
        level = resolved
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiohttp.access", "aiodocker", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler
