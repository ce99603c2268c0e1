"""Whatever text arrives, `load_declaration` returns a `Database` or raises `DeclarationError`
with well-formed problem lines: never another exception, never a hang, never a memory blow-up.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.declaration import Database, DeclarationError, load_declaration, validate_document

pytestmark = pytest.mark.unit

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# "Fast" is checked with room for a loaded CI machine: the bounds are about hanging (seconds
# to hours without the loader's limits), not about milliseconds.
LIMIT = 5.0

GOOD: dict[str, Any] = {
    "apiVersion": "shoal/v1",
    "kind": "Database",
    "metadata": {"name": "orders"},
    "spec": {
        "engine": "postgres",
        "version": "15",
        "members": 3,
        "durability": "sync",
        "resources": {"memory": "512M", "cpus": 1.0},
        "placement": {"spread": "node.id", "constraints": ["node.role==manager"]},
        "failover": {"unreachableSeconds": 10},
        "postgres": {"parameters": {"work_mem": "4MB", "max_connections": 100}},
        "mongodb": {"shards": 0, "configServers": 3, "routers": 2},
        "expose": {"port": None},
    },
}


def check(source: object) -> Database | None:
    """The property: a Database, or a DeclarationError with good lines."""
    try:
        if isinstance(source, str):
            return load_declaration(source)
        return validate_document(source)
    except DeclarationError as e:
        assert e.problems, "at least one problem"
        for line in e.problems:
            assert isinstance(line, str)
            assert line.strip(), "a problem line is not empty"
            assert "\n" not in line and "\r" not in line, repr(line)
            assert len(line) < 300, line
            assert line.isprintable(), repr(line)
        assert len(set(e.problems)) == len(e.problems), e.problems
        return None


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(
        ["shoal/v1", "Database", "postgres", "mongodb", "sync", "async", "512M", "15", "node.id"]
    )
)
keys = st.text(max_size=20) | st.sampled_from(
    ["apiVersion", "kind", "metadata", "name", "spec", "engine", "members", "resources"]
)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=30,
)

YAML_TOKENS = [
    "apiVersion: shoal/v1\n", "kind: Database\n", "metadata:\n", "  name: orders\n", "spec:\n",
    "  engine: postgres\n", "  members: 3\n", "- ", "? ", ": ", "{", "}", "[", "]", ",", "&a ",
    "*a", "!!str ", "!!int ", "!!float ", "!!binary ", "!!timestamp ", "!!set ", "!!omap ",
    "!!python/object:os.system ", "%YAML 1.1\n", "---\n", "...\n", "|\n", ">\n", "'", '"',
    "#", "\t", "  ", "\n", "<<: ", "~", "null", "yes", "no", "0x1F", "1e999", ".nan", "-.inf",
    "2024-01-01", "9" * 50, "\\u0000", "\x00", "\ufeff", "\ud800",
]  # fmt: skip
yamlish = st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=5), max_size=40).map("".join)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    paths = _paths(doc)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(paths))
        node: Any = doc
        try:
            for part in path[:-1]:
                node = node[part]
            action = draw(st.sampled_from(["delete", "replace", "add"]))
            if action == "delete" and isinstance(node, dict):
                node.pop(path[-1], None)
            elif action == "add" and isinstance(node, dict):
                node[draw(keys)] = draw(trees)
            else:
                node[path[-1]] = draw(trees)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced the parent
    return doc


def _dump(doc: object) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    check(text)


@FUZZ
@given(yamlish)
def test_yaml_token_soup(text: str) -> None:
    check(text)


@FUZZ
@given(trees)
def test_random_documents_dumped_as_yaml(doc: object) -> None:
    check(_dump(doc))


@FUZZ
@given(trees)
def test_random_documents_validated_directly(doc: object) -> None:
    check(doc)


@FUZZ
@given(mutated())
def test_mutated_good_declarations(doc: dict[str, Any]) -> None:
    db = check(_dump(doc))
    if db is not None:  # whatever is accepted round-trips
        assert validate_document(db.to_document()) == db
    check(doc)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["replace", "ignore", "surrogateescape"]))
def test_random_bytes_decoded_leniently(data: bytes, errors: str) -> None:
    check(data.decode("utf-8", errors=errors))
    check(data.decode("latin-1"))


@FUZZ
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["[", "{a: ", "- ", "a:\n "]))
def test_deep_nesting(depth: int, opener: str) -> None:
    if opener == "a:\n ":
        depth = min(depth, 300)  # indentation makes the text grow as depth squared
        text = "".join(" " * i + "a:\n" for i in range(depth)) + " " * depth + "1\n"
    else:
        closer = {"[": "]", "{a: ": "}", "- ": ""}[opener]
        text = opener * depth + "1" + closer * depth
    check(text)


@FUZZ
@given(
    st.sampled_from(["members", "cpus", "unreachableSeconds", "port", "version"]),
    st.integers(min_value=1, max_value=20_000),
    st.sampled_from(["", "-", "0x", "0o", "1e", "."]),
)
def test_huge_numbers(field: str, digits: int, prefix: str) -> None:
    number = prefix + "9" * digits
    text = _dump(GOOD).replace("members: 3", f"members: {number}")
    text = text.replace("cpus: 1.0", f"cpus: {number}" if field == "cpus" else "cpus: 1.0")
    check(text)
    doc = copy.deepcopy(GOOD)
    doc["spec"]["members"] = 10 ** min(digits, 4000)
    check(doc)


def billion_laughs(levels: int, width: int) -> str:
    lines = ['a0: &a0 "lol"']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


@FUZZ
@given(st.integers(min_value=2, max_value=30), st.integers(min_value=2, max_value=20))
def test_alias_bombs_are_refused_quickly(levels: int, width: int) -> None:
    text = billion_laughs(levels, width)
    start = time.monotonic()
    assert check(text) is None
    assert time.monotonic() - start < LIMIT


def test_classic_billion_laughs() -> None:
    start = time.monotonic()
    with pytest.raises(DeclarationError) as info:
        load_declaration(billion_laughs(10, 10))
    assert time.monotonic() - start < LIMIT
    assert info.value.problems[0].startswith("declaration: ")
    assert "alias" in info.value.problems[0]


def test_huge_input_is_refused_without_parsing() -> None:
    text = "a: [" + "1, " * 1_000_000 + "1]\n"
    start = time.monotonic()
    with pytest.raises(DeclarationError) as info:
        load_declaration(text)
    assert time.monotonic() - start < LIMIT
    assert info.value.problems[0].startswith("declaration: too large")


@pytest.mark.parametrize(
    "text",
    [
        "[" * 60_000,
        "{a: " * 15_000,
        "- " * 30_000,
        "? " * 30_000,
        "a: '" + "x" * 60_000 + "'",
        "- x\n" * 15_000,
    ],
    ids=["flow-seq", "flow-map", "block-seq", "complex-key", "long-scalar", "long-list"],
)
def test_worst_case_inputs_within_the_size_limit_are_fast(text: str) -> None:
    start = time.monotonic()
    check(text)
    assert time.monotonic() - start < LIMIT


def test_many_unknown_fields_give_a_bounded_report() -> None:
    text = "{" + ", ".join(f"k{i}: {i}" for i in range(5000)) + "}"
    with pytest.raises(DeclarationError) as info:
        load_declaration(text)
    assert len(info.value.problems) <= 50
    assert info.value.problems[-1].startswith("declaration: ")
    assert "more problems" in info.value.problems[-1]


def test_odd_tags_and_constructors() -> None:
    for text in [
        "a: !!int x\n",
        "a: !!float x\n",
        "a: !!timestamp x\n",
        "a: !!binary '@@@'\n",
        "!!python/object/apply:os.system ['true']\n",
        "a: !!set {1, 2}\n",
        "a: !!omap [a: 1]\n",
        "!!map [1, 2]\n",
        "? [1, 2]\n: x\n",
        "members: 1" + "0" * 5000 + "\n",
        "\ufeffapiVersion: shoal/v1\n",
    ]:
        check(text)
