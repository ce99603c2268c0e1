"""The declaration contract (README.md, "Declaring a database"): bad declarations are refused
with one line per problem, each naming its field; good ones load with their defaults filled in."""

from __future__ import annotations

import copy
import importlib.resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from shoal.declaration import (
    Database,
    DeclarationError,
    Durability,
    Engine,
    load_declaration,
    validate_document,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

GOOD = """\
apiVersion: shoal/v1
kind: Database
metadata:
  name: orders
spec:
  engine: postgres
  version: "15"
  members: 3
  durability: sync
  resources: {memory: 512M, cpus: 1.0}
  placement:
    spread: node.id
    constraints: []
  failover:
    unreachableSeconds: 10
"""

MINIMAL = """\
apiVersion: shoal/v1
kind: Database
metadata: {name: shop}
spec: {engine: postgres}
"""

_DELETE = object()


def good_doc() -> dict[str, Any]:
    doc = yaml.safe_load(GOOD)
    assert isinstance(doc, dict)
    return doc


def with_(path: str, value: Any) -> dict[str, Any]:
    """The good declaration with the field at dotted `path` set to `value` (or deleted)."""
    doc = good_doc()
    node: Any = doc
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return doc


def with_many(*changes: tuple[str, Any]) -> dict[str, Any]:
    doc = good_doc()
    for path, value in changes:
        node: Any = doc
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return doc


def problems_of(source: str | dict[str, Any]) -> list[str]:
    with pytest.raises(DeclarationError) as info:
        if isinstance(source, str):
            load_declaration(source)
        else:
            load_declaration(yaml.safe_dump(source, sort_keys=False))
    problems = info.value.problems
    assert problems, "a DeclarationError must name at least one problem"
    assert str(info.value) == "\n".join(problems)
    for line in problems:
        assert line and "\n" not in line and len(line) < 300, line
    return problems


def assert_names(problems: list[str], prefix: str, *words: str) -> None:
    """Some line starts with `prefix: ` and holds every one of `words`."""
    matching = [p for p in problems if p.startswith(prefix + ": ")]
    assert matching, f"no line starts with {prefix!r}: {problems}"
    assert any(all(w in line for w in words) for line in matching), (words, matching)


# (id, declaration: YAML text or a document, field path the line must start with, words
# the line must contain)
BAD: list[tuple[str, str | dict[str, Any], str, tuple[str, ...]]] = [
    ("unknown-top-level", {**good_doc(), "status": {}}, "status", ("unknown field",)),
    ("unknown-in-spec", with_("spec.replicas", 3), "spec.replicas", ("unknown field",)),
    (
        "unknown-nested",
        with_("spec.resources.disk", "10G"),
        "spec.resources.disk",
        ("unknown field", "memory"),
    ),
    (
        "snake-case-alias",
        with_("spec.failover", {"unreachable_seconds": 5}),
        "spec.failover.unreachable_seconds",
        ("unknown field", "unreachableSeconds"),
    ),
    ("unknown-in-metadata", with_("metadata.labels", {"a": "b"}), "metadata.labels", ()),
    ("api-version-wrong", with_("apiVersion", "shoal/v2"), "apiVersion", ("shoal/v1", "v2")),
    ("api-version-missing", with_("apiVersion", _DELETE), "apiVersion", ("required",)),
    ("kind-wrong", with_("kind", "Cluster"), "kind", ("Database", "Cluster")),
    ("name-uppercase", with_("metadata.name", "Orders"), "metadata.name", ("'Orders'",)),
    ("name-too-long", with_("metadata.name", "a" * 31), "metadata.name", ("30", "31")),
    ("name-leading-digit", with_("metadata.name", "1orders"), "metadata.name", ("'1orders'",)),
    ("name-trailing-dash", with_("metadata.name", "orders-"), "metadata.name", ("'orders-'",)),
    ("name-underscore", with_("metadata.name", "my_db"), "metadata.name", ("'my_db'",)),
    ("name-empty", with_("metadata.name", ""), "metadata.name", ("empty",)),
    ("name-not-string", with_("metadata.name", 12), "metadata.name", ("string", "12")),
    ("name-null", with_("metadata.name", None), "metadata.name", ("null",)),
    ("name-reserved", with_("metadata.name", "control"), "metadata.name", ("reserved",)),
    ("members-0", with_("spec.members", 0), "spec.members", ("between 1 and 7", "got 0")),
    ("members-8", with_("spec.members", 8), "spec.members", ("between 1 and 7", "got 8")),
    ("members-float", with_("spec.members", 2.5), "spec.members", ("integer", "2.5")),
    ("members-word", with_("spec.members", "three"), "spec.members", ("integer", "'three'")),
    ("members-bool", with_("spec.members", True), "spec.members", ("integer", "true")),
    ("members-list", with_("spec.members", [3]), "spec.members", ("integer", "list")),
    ("engine-unknown", with_("spec.engine", "mysql"), "spec.engine", ("postgres", "'mysql'")),
    ("engine-missing", with_("spec.engine", _DELETE), "spec.engine", ("required",)),
    (
        "durability-unknown",
        with_("spec.durability", "eventual"),
        "spec.durability",
        ("sync", "async", "'eventual'"),
    ),
    ("sync-one-member", with_("spec.members", 1), "spec.durability", ("2 members", "1")),
    ("memory-word", with_("spec.resources.memory", "lots"), "spec.resources.memory", ("'lots'",)),
    ("memory-no-unit", with_("spec.resources.memory", 512), "spec.resources.memory", ("512",)),
    ("memory-unit-case", with_("spec.resources.memory", "512m"), "spec.resources.memory", ()),
    ("memory-too-small", with_("spec.resources.memory", "1M"), "spec.resources.memory", ("64M",)),
    (
        "memory-too-large",
        with_("spec.resources.memory", "5000G"),
        "spec.resources.memory",
        ("1024G",),
    ),
    ("cpus-zero", with_("spec.resources.cpus", 0), "spec.resources.cpus", ("more than 0",)),
    ("cpus-negative", with_("spec.resources.cpus", -1.5), "spec.resources.cpus", ("-1.5",)),
    ("cpus-word", with_("spec.resources.cpus", "fast"), "spec.resources.cpus", ("'fast'",)),
    ("cpus-nan", with_("spec.resources.cpus", float("nan")), "spec.resources.cpus", ("finite",)),
    (
        "constraint-single-equals",
        with_("spec.placement.constraints", ["node.role=manager"]),
        "spec.placement.constraints[0]",
        ("node.role=manager",),
    ),
    (
        "constraint-second-bad",
        with_("spec.placement.constraints", ["node.role==manager", "manager"]),
        "spec.placement.constraints[1]",
        ("'manager'",),
    ),
    (
        "constraint-unknown-attribute",
        with_("spec.placement.constraints", ["colour==blue"]),
        "spec.placement.constraints[0]",
        ("'colour'",),
    ),
    (
        "constraints-not-list",
        with_("spec.placement.constraints", "node.role==manager"),
        "spec.placement.constraints",
        ("list",),
    ),
    ("spread-unknown", with_("spec.placement.spread", "rack"), "spec.placement.spread", ("rack",)),
    (
        "unreachable-0",
        with_("spec.failover.unreachableSeconds", 0),
        "spec.failover.unreachableSeconds",
        ("got 0",),
    ),
    (
        "unreachable-negative",
        with_("spec.failover.unreachableSeconds", -5),
        "spec.failover.unreachableSeconds",
        ("got -5",),
    ),
    (
        "unreachable-string",
        with_("spec.failover.unreachableSeconds", "10s"),
        "spec.failover.unreachableSeconds",
        ("integer", "'10s'"),
    ),
    (
        "pg-reserved-sync-names",
        with_("spec.postgres.parameters", {"synchronous_standby_names": "*"}),
        "spec.postgres.parameters.synchronous_standby_names",
        ("durability",),
    ),
    (
        "pg-reserved-conninfo",
        with_("spec.postgres.parameters", {"primary_conninfo": "host=x"}),
        "spec.postgres.parameters.primary_conninfo",
        ("set by shoal itself",),
    ),
    (
        "pg-reserved-wal-level",
        with_("spec.postgres.parameters", {"wal_level": "minimal"}),
        "spec.postgres.parameters.wal_level",
        ("durability",),
    ),
    *(
        (
            f"pg-refused-{name}",
            with_("spec.postgres.parameters", {name: value}),
            f"spec.postgres.parameters.{name if '.' not in name else repr(name)}",
            words,
        )
        for name, value, words in (
            (
                "archive_cleanup_command",
                "cat /run/secrets/superuser-password > /tmp/leak",
                ("shell command",),
            ),
            ("recovery_end_command", "touch /tmp/x", ("shell command",)),
            ("ssl_passphrase_command", "echo x", ("shell command",)),
            ("shared_preload_libraries", "pg_stat_statements", ("loads code",)),
            ("dynamic_library_path", "/tmp", ("loads code",)),
            ("fsync", False, ("durability",)),
            ("synchronous_commit", "off", ("durability",)),
            ("full_page_writes", False, ("durability",)),
            ("log_directory", "/run/secrets", ("files",)),
            ("hba_file", "/tmp/hba", ("files",)),
            ("listen_addresses", "*", ("set by shoal itself",)),
            ("made_up_parameter", 1, ("not a parameter a declaration may set",)),
            ("pg_stat_statements.max", 100, ("not a parameter a declaration may set",)),
        )
    ),
    (
        "pg-bad-parameter-name",
        with_("spec.postgres.parameters", {"Work-Mem": "4MB"}),
        "spec.postgres.parameters.Work-Mem",
        ("parameter name",),
    ),
    (
        "pg-parameter-value-list",
        with_("spec.postgres.parameters", {"work_mem": ["4MB"]}),
        "spec.postgres.parameters.work_mem",
        ("string, number or boolean", "list"),
    ),
    (
        "pg-parameter-value-newline",
        with_("spec.postgres.parameters", {"work_mem": "4MB\nfsync = off"}),
        "spec.postgres.parameters.work_mem",
        ("newlines",),
    ),
    (
        "pg-parameters-not-mapping",
        with_("spec.postgres.parameters", ["work_mem=4MB"]),
        "spec.postgres.parameters",
        ("mapping",),
    ),
    ("pg-version-16", with_("spec.version", "16"), "spec.version", ("15", "'16'")),
    ("pg-version-float", with_("spec.version", 15.0), "spec.version", ("quoted",)),
    (
        "postgres-section-on-mongodb",
        with_many(
            ("spec.engine", "mongodb"),
            ("spec.version", "7.0"),
            ("spec.postgres", {"parameters": {"work_mem": "8MB"}}),
        ),
        "spec.postgres",
        ("only applies", "postgres"),
    ),
    (
        "mongodb-shards-negative",
        with_("spec.mongodb", {"shards": -1}),
        "spec.mongodb.shards",
        ("got -1",),
    ),
    (
        "mongodb-config-servers-zero",
        with_("spec.mongodb", {"configServers": 0}),
        "spec.mongodb.configServers",
        ("got 0",),
    ),
    ("expose-port-low", with_("spec.expose", {"port": 80}), "spec.expose.port", ("got 80",)),
    (
        "expose-port-high",
        with_("spec.expose", {"port": 70000}),
        "spec.expose.port",
        ("got 70000",),
    ),
    ("expose-port-operator", with_("spec.expose", {"port": 9650}), "spec.expose.port", ("9650",)),
    ("spec-not-mapping", with_("spec", ["postgres"]), "spec", ("mapping", "list")),
    ("spec-null", with_("spec", None), "spec", ("mapping", "null")),
    ("spec-missing", with_("spec", _DELETE), "spec", ("required",)),
    ("document-list", "- a\n- b\n", "declaration", ("mapping", "list")),
    ("document-scalar", "orders\n", "declaration", ("mapping", "'orders'")),
    ("document-number", "42\n", "declaration", ("mapping", "42")),
    ("two-documents", GOOD + "---\n" + GOOD, "declaration", ("2", "one")),
    ("empty-file", "", "declaration", ("empty",)),
    ("only-comments", "# nothing\n\n", "declaration", ("empty",)),
    ("invalid-yaml", GOOD + "  extra: [1, 2\n", "declaration", ("YAML", "line 17")),
    ("tab-indent", "apiVersion: shoal/v1\nspec:\n\tengine: x\n", "declaration", ("line 3",)),
    ("duplicate-key", GOOD + "kind: Database\n", "declaration", ("duplicate", "'kind'")),
    ("alias", GOOD.replace("spec:\n", "spec: &s\n") + "x: *s\n", "declaration", ("alias",)),
    ("too-large", GOOD + "#" * 70_000 + "\n", "declaration", ("too large",)),
    ("too-deep", "a: " + "[" * 200 + "]" * 200 + "\n", "declaration", ("nested",)),
    ("nul-byte", "apiVersion: shoal\x00\n", "declaration", ("character",)),
]


@pytest.mark.parametrize(
    ("source", "prefix", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_declaration_names_the_field(
    source: str | dict[str, Any], prefix: str, words: tuple[str, ...]
) -> None:
    assert_names(problems_of(source), prefix, *words)


def test_the_bad_table_is_large() -> None:
    assert len(BAD) >= 30
    assert len({c[0] for c in BAD}) == len(BAD)


def test_invalid_yaml_gives_the_line_number() -> None:
    text = "apiVersion: shoal/v1\nkind: Database\nmetadata:\n  name: [orders\nspec: {}\n"
    (line,) = problems_of(text)
    assert line.startswith("declaration: not valid YAML at line ")
    # the unclosed flow sequence on line 4 is noticed on line 5
    assert "line 5" in line or "line 4" in line


def test_every_line_starts_with_a_field_path_or_declaration() -> None:
    for _id, source, _prefix, _words in BAD:
        for line in problems_of(source):
            head = line.split(": ", 1)[0]
            assert head == "declaration" or head.replace("[", ".").split(".")[0] in (
                "apiVersion",
                "kind",
                "metadata",
                "spec",
                "status",
            ), line


def test_several_problems_are_reported_at_once_one_line_each() -> None:
    doc = {
        "apiVersion": "shoal/v2",
        "kind": "Cluster",
        "metadata": {"name": "Bad_Name"},
        "spec": {
            "engine": "postgres",
            "version": "14",
            "members": 0,
            "durability": "eventual",
            "resources": {"memory": "lots", "cpus": 0},
            "placement": {"constraints": ["node.role=manager"]},
            "failover": {"unreachableSeconds": "ten"},
            "postgres": {"parameters": {"synchronous_standby_names": "*", "fsync": "off"}},
            "expose": {"port": 80},
            "bogus": True,
        },
    }
    problems = problems_of(doc)
    expected = [
        "apiVersion",
        "kind",
        "metadata.name",
        "spec.version",
        "spec.members",
        "spec.durability",
        "spec.resources.memory",
        "spec.resources.cpus",
        "spec.placement.constraints[0]",
        "spec.failover.unreachableSeconds",
        "spec.postgres.parameters.fsync",
        "spec.postgres.parameters.synchronous_standby_names",
        "spec.expose.port",
        "spec.bogus",
    ]
    heads = [p.split(": ", 1)[0] for p in problems]
    assert sorted(heads) == sorted(expected), problems
    assert len(set(problems)) == len(problems), "no line twice"


def test_cross_field_rules_are_reported_with_the_field_problems() -> None:
    doc = with_("spec.members", 1)
    doc["spec"]["version"] = "16"
    doc["spec"]["resources"]["memory"] = "1K"
    heads = {p.split(": ", 1)[0] for p in problems_of(doc)}
    assert heads == {"spec.version", "spec.durability", "spec.resources.memory"}


def test_sync_check_is_skipped_when_members_itself_is_invalid() -> None:
    problems = problems_of(with_("spec.members", 0))
    assert [p.split(":")[0] for p in problems] == ["spec.members"]


def test_design_example_wording() -> None:
    assert problems_of(with_("spec.members", 0)) == ["spec.members: must be between 1 and 7, got 0"]


def test_message_is_joined_problems() -> None:
    err = DeclarationError(["a: x", "b: y"])
    assert str(err) == "a: x\nb: y"
    assert isinstance(err, ValueError)


# ---------------------------------------------------------------------------------------
# good declarations


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_load_and_round_trip(path: Path) -> None:
    db = load_declaration(path.read_text())
    assert isinstance(db, Database)
    again = validate_document(db.to_document())
    assert again == db
    assert again.to_document() == db.to_document()


def test_the_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"orders.yaml", "orders-async.yaml", "mongodb-rs.yaml"}


def test_default_example_is_the_contract() -> None:
    db = load_declaration((ROOT / "examples" / "orders.yaml").read_text())
    assert db.name == "orders"
    assert db.spec.engine is Engine.POSTGRES
    assert db.spec.version == "15"
    assert db.spec.members == 3
    assert db.spec.durability is Durability.SYNC
    assert db.spec.resources.memory == "512M"
    assert db.spec.resources.memory_bytes == 512 * 1024**2
    assert db.spec.resources.cpus == 1.0
    assert db.spec.placement.spread == "node.id"
    assert db.spec.failover.unreachable_seconds == 10


def test_packaged_default_matches_the_example() -> None:
    packaged = importlib.resources.files("shoal") / "data" / "default-database.yaml"
    text = packaged.read_text()
    assert text == (ROOT / "examples" / "orders.yaml").read_text()
    assert load_declaration(text).name == "orders"


def test_other_examples() -> None:
    async_db = load_declaration((ROOT / "examples" / "orders-async.yaml").read_text())
    assert async_db.spec.durability is Durability.ASYNC
    assert async_db.spec.members == 3
    mongo = load_declaration((ROOT / "examples" / "mongodb-rs.yaml").read_text())
    assert mongo.spec.engine is Engine.MONGODB
    assert mongo.spec.members == 3
    assert mongo.spec.mongodb.shards == 0


def test_defaults_are_filled() -> None:
    db = load_declaration(MINIMAL)
    spec = db.spec
    assert db.name == "shop"
    assert spec.version == "15"
    assert spec.members == 3
    assert spec.durability is Durability.SYNC
    assert spec.resources.memory == "512M"
    assert spec.resources.cpus == 1.0
    assert spec.placement.spread == "node.id"
    assert spec.placement.constraints == []
    assert spec.failover.unreachable_seconds == 10
    assert spec.postgres.parameters == {}
    assert (spec.mongodb.shards, spec.mongodb.config_servers, spec.mongodb.routers) == (0, 3, 2)
    assert spec.expose.port is None
    doc = db.to_document()
    assert doc["apiVersion"] == "shoal/v1"
    assert doc["spec"]["failover"] == {"unreachableSeconds": 10}
    assert doc["spec"]["mongodb"]["configServers"] == 3
    assert validate_document(doc) == db


def test_mongodb_default_version() -> None:
    db = load_declaration(MINIMAL.replace("engine: postgres", "engine: mongodb"))
    assert db.spec.version == "7.0"


def test_unquoted_integer_version_is_read_as_text() -> None:
    db = load_declaration(GOOD.replace('version: "15"', "version: 15"))
    assert db.spec.version == "15"


def test_everything_set_round_trips() -> None:
    doc = good_doc()
    doc["spec"].update(
        members=5,
        durability="async",
        resources={"memory": "2G", "cpus": 0.5},
        placement={"spread": "node.labels.zone", "constraints": ["node.role != manager"]},
        failover={"unreachableSeconds": 30},
        postgres={"parameters": {"work_mem": "8MB", "max_connections": 300, "jit": False}},
        expose={"port": 15432},
    )
    db = load_declaration(yaml.safe_dump(doc))
    assert db.spec.postgres.parameters == {"work_mem": "8MB", "max_connections": 300, "jit": False}
    assert db.spec.expose.port == 15432
    assert db.spec.placement.spread == "node.labels.zone"
    assert validate_document(db.to_document()) == db
    assert validate_document(copy.deepcopy(db.to_document())).to_document() == db.to_document()


def test_sharded_mongodb_is_refused_until_built() -> None:
    """Sharded clusters are designed (docs/mongodb-sharding.md), not built: `shards` other
    than 0 is refused with every other problem, one line each."""
    doc = good_doc()
    doc["spec"].update(
        engine="mongodb", version="7.0", members=9, mongodb={"shards": 2, "routers": 3}
    )
    with pytest.raises(DeclarationError) as info:
        validate_document(doc)
    assert info.value.problems == [
        "spec.members: must be between 1 and 7, got 9",
        "spec.mongodb.shards: sharded clusters are not yet supported; see "
        "docs/mongodb-sharding.md (got 2, only 0, a plain replica set, is accepted)",
    ]
    assert (ROOT / "docs" / "mongodb-sharding.md").is_file()
    doc["spec"].update(members=3, mongodb={"shards": 0, "routers": 3})
    assert validate_document(doc).spec.mongodb.routers == 3


def test_spread_may_be_null() -> None:
    assert validate_document(with_("spec.placement.spread", None)).spec.placement.spread is None


def test_validate_document_refuses_non_mapping() -> None:
    with pytest.raises(DeclarationError) as info:
        validate_document(["not", "a", "mapping"])
    assert info.value.problems == ["declaration: must be a mapping, got a list"]


def test_model_is_frozen() -> None:
    db = load_declaration(GOOD)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        db.spec.members = 4  # type: ignore[misc]
