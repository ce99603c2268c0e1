"""Reading YAML text safely into a validated declaration."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml
from yaml.error import Mark, MarkedYAMLError
from yaml.nodes import MappingNode, Node, ScalarNode

from shoal.declaration.model import MAX_DOCUMENT_CHARS, MAX_NESTING, Database, DeclarationError
from shoal.declaration.problems import _problems, validate_document
from shoal.fields import show

# ---------------------------------------------------------------------------------------
# YAML loading


class _Refused(MarkedYAMLError):
    """YAML that is valid but that a declaration may not use."""


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases (no "billion laughs"), with a nesting limit, with
    duplicate keys refused, with every mapping key read as a string and with dates left as
    strings (`version: 2024-01-01` is a string to validate, not a date)."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def _mark(self) -> Mark | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Mark | None = getattr(event, "start_mark", None)
        return mark

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        # The scanner's work grows with the square of the flow nesting: stop it early.
        if self.flow_level >= MAX_NESTING:
            raise _Refused(
                None, None, f"nested more than {MAX_NESTING} levels deep", self.get_mark()
            )
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            raise _Refused(None, None, "YAML aliases (*name) are not accepted", self._mark())
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise _Refused(
                    None, None, f"nested more than {MAX_NESTING} levels deep", self._mark()
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if not isinstance(node, MappingNode):
            raise _Refused(None, None, f"expected a mapping, found {node.id}", node.start_mark)
        mapping: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise _Refused(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                )
            key = key_node.value
            if key in mapping:
                raise _Refused(None, None, f"duplicate key {show(key)}", key_node.start_mark)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def _yaml_problem(e: yaml.YAMLError, text: str) -> str:
    if isinstance(e, yaml.reader.ReaderError):
        line = text.count("\n", 0, e.position) + 1
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        return f"declaration: not valid YAML at line {line}: unacceptable character {char}"
    if isinstance(e, MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or e.context or "invalid YAML"
        if isinstance(e, _Refused):
            return f"declaration: {where}: {problem}" if where else f"declaration: {problem}"
        return (
            f"declaration: not valid YAML at {where}: {problem}"
            if where
            else (f"declaration: not valid YAML: {problem}")
        )
    return f"declaration: not valid YAML: {e}"


def load_declaration(text: str) -> Database:
    """Parse YAML text holding exactly one Database declaration."""
    if isinstance(text, bytes):  # be lenient with callers that read bytes
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DeclarationError([f"declaration: not UTF-8 text ({e.reason})"]) from None
    if not isinstance(text, str):
        raise DeclarationError([f"declaration: must be text, got {show(text)}"])
    if len(text) > MAX_DOCUMENT_CHARS:
        raise DeclarationError(
            [f"declaration: too large ({len(text)} characters, at most {MAX_DOCUMENT_CHARS})"]
        )
    try:
        docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as e:
        raise DeclarationError(_problems([_yaml_problem(e, text)])) from None
    except Exception as e:  # a constructor on odd input (`!!int x`, a 5000-digit number)
        raise DeclarationError(
            _problems([f"declaration: cannot be read: {type(e).__name__}: {e}"])
        ) from None
    if not docs:
        raise DeclarationError(["declaration: is empty"])
    if len(docs) > 1:
        raise DeclarationError(
            [f"declaration: holds {len(docs)} YAML documents, expected exactly one"]
        )
    return validate_document(docs[0])
