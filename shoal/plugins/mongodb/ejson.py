"""MongoDB Extended JSON (the manual's "MongoDB Extended JSON (v2)") to plain values.

The member agent sends its command replies through `bson.json_util`, whose default output is
relaxed Extended JSON: an ObjectId is `{"$oid": "<24 hex>"}`, a Timestamp
`{"$timestamp": {"t": <seconds>, "i": <increment>}}`, a date `{"$date": "<ISO-8601>"}` (or
`{"$date": {"$numberLong": "<ms>"}}` outside 1970..9999), 64-bit integers plain numbers.
Canonical Extended JSON wraps numbers too (`$numberInt`, `$numberLong`, `$numberDouble`).

`plain` accepts both forms, and documents already made of plain values: an ObjectId becomes
its lowercase hex string, a Timestamp the mapping `{"t": ..., "i": ...}`, a date a timezone-aware
`datetime`, a wrapped number the number. Any other `$`-key is left alone (the typed model
then refuses it where a plain value was wanted).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_DEPTH = 64  # replies shoal reads are a few levels deep; this bounds hostile input
OID_RE = re.compile(r"^[0-9a-fA-F]{24}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class NotExtendedJson(ValueError):
    """A wrapper (`{"$oid": ...}`, ...) whose content is not what Extended JSON says."""


def plain(value: Any, depth: int = 0) -> Any:
    """`value` with every Extended JSON wrapper replaced by its plain value."""
    if depth > MAX_DEPTH:
        raise NotExtendedJson(f"nested more than {MAX_DEPTH} levels")
    if isinstance(value, list | tuple):
        return [plain(v, depth + 1) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key == "$oid":
            return _oid(inner)
        if key == "$timestamp":
            return _timestamp(inner)
        if key == "$date":
            return _date(inner)
        if key in ("$numberInt", "$numberLong"):
            return _integer(inner)
        if key == "$numberDouble":
            return _double(inner)
    return {k: plain(v, depth + 1) for k, v in value.items()}


def _oid(v: Any) -> str:
    if not isinstance(v, str) or not OID_RE.match(v):
        raise NotExtendedJson(f"$oid must be 24 hex digits, got {v!r:.40}")
    return v.lower()


def _integer(v: Any) -> int:
    if not isinstance(v, str) or not re.fullmatch(r"-?[0-9]{1,19}", v):
        raise NotExtendedJson(f"a wrapped integer must be a string of digits, got {v!r:.40}")
    return int(v)


def _double(v: Any) -> float:
    if not isinstance(v, str):
        raise NotExtendedJson(f"$numberDouble must be a string, got {v!r:.40}")
    try:
        return float(v)  # "NaN", "Infinity" and "-Infinity" are Extended JSON's own
    except ValueError:
        raise NotExtendedJson(f"$numberDouble {v!r:.40} is not a number") from None


def _timestamp(v: Any) -> dict[str, int]:
    if not isinstance(v, dict) or set(v) != {"t", "i"}:
        raise NotExtendedJson("$timestamp must be {t: seconds, i: increment}")
    t, i = v["t"], v["i"]
    if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32 for x in (t, i)):
        raise NotExtendedJson("$timestamp's t and i must be unsigned 32-bit integers")
    return {"t": t, "i": i}


def _date(v: Any) -> datetime:
    if isinstance(v, dict) and set(v) == {"$numberLong"}:
        millis = _integer(v["$numberLong"])
        try:
            return _EPOCH + timedelta(milliseconds=millis)
        except OverflowError:
            raise NotExtendedJson("$date out of range") from None
    if isinstance(v, str):
        try:
            parsed = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise NotExtendedJson(f"$date {v!r:.40} is not an ISO-8601 date") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise NotExtendedJson("$date must be an ISO-8601 string or {$numberLong: milliseconds}")
