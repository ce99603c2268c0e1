"""Turning pydantic's errors into one line per problem, each naming its field."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from shoal.declaration.model import MAX_LINE_CHARS, MAX_PROBLEMS, Database, DeclarationError
from shoal.fields import show

# ---------------------------------------------------------------------------------------
# Turning pydantic errors into problem lines


_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]" or part.startswith(("function-", "lax-or-strict")):
            continue
        else:
            text = part if _PLAIN_KEY_RE.match(part) else show(part)
            out += ("." if out else "") + text
    return out


def _known_fields(loc: tuple[int | str, ...]) -> list[str]:
    """The field names (as written in a document) of the model at `loc`, if it is one."""
    model: type[BaseModel] = Database
    for part in loc:
        for name, field in model.model_fields.items():
            if part in (name, field.alias):
                break
        else:
            return []
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [field.alias or name for name, field in model.model_fields.items()]


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    known = _known_fields(loc[:-1])
    key = str(loc[-1]) if loc else ""
    squash = key.replace("_", "").replace("-", "").lower()
    for candidate in known:
        if candidate.lower() == squash:
            return f"unknown field, did you mean {candidate!r}?"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if close:
        return f"unknown field, did you mean {close[0]!r}?"
    if known:
        return f"unknown field (known: {', '.join(known)})"
    return "unknown field"


def _message(err: Any) -> str:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    got = f", got {show(err['input'])}" if "input" in err else ""
    msg: str = err["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind == "extra_forbidden":
        msg = _unknown_field(loc)
    elif kind == "missing":
        msg = "is required"
    elif kind in ("literal_error", "enum"):
        msg = f"must be {ctx.get('expected', 'one of the allowed values')}{got}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        msg = f"must be an integer{got}"
    elif kind in ("float_type", "float_parsing"):
        msg = f"must be a number{got}"
    elif kind == "finite_number":
        msg = f"must be a finite number{got}"
    elif kind in ("string_type", "string_unicode"):
        msg = f"must be a string{got}"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        msg = f"must be a mapping{got}"
    elif kind == "list_type":
        msg = f"must be a list{got}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {
            "greater_than": f"must be greater than {ctx.get('gt')}",
            "greater_than_equal": f"must be at least {ctx.get('ge')}",
            "less_than": f"must be less than {ctx.get('lt')}",
            "less_than_equal": f"must be at most {ctx.get('le')}",
        }
        msg = words[kind] + got
    else:
        msg = f"{msg}{got}"
    return f"{_loc(loc) or 'declaration'}: {msg}"


def _clean(line: str) -> str:
    """One line, printable, bounded: safe to show on a terminal and in logs."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
    if len(line) > MAX_LINE_CHARS:
        line = line[: MAX_LINE_CHARS - 3] + "..."
    return line


def _problems(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        cleaned = _clean(line)
        if cleaned not in out:
            out.append(cleaned)
    if len(out) > MAX_PROBLEMS:
        hidden = len(out) - (MAX_PROBLEMS - 1)
        out = [*out[: MAX_PROBLEMS - 1], f"declaration: {hidden} more problems not shown"]
    return out


def validate_document(doc: object) -> Database:
    """Validate an already-parsed document; raise `DeclarationError` listing every problem."""
    if not isinstance(doc, dict):
        raise DeclarationError(_problems([f"declaration: must be a mapping, got {show(doc)}"]))
    try:
        return Database.model_validate(doc, by_alias=True, by_name=False)
    except ValidationError as e:
        raise DeclarationError(_problems([_message(err) for err in e.errors()])) from None
    except (RecursionError, MemoryError) as e:  # pragma: no cover - bounded by the loader
        raise DeclarationError([f"declaration: cannot be validated: {type(e).__name__}"]) from None
