"""Bad input through the real CLI (docs/security.md, "Bad input"): every bad declaration is
refused with exit code 2 and a stderr line naming the field, before anything changes in Docker:
no anchor service, no network, no secret for that database. Bad arguments also exit 2. Never a
traceback."""

from __future__ import annotations

import json
import re
import secrets
import string
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from tests.integration.support import shoal

pytestmark = pytest.mark.integration

PREFIX = "tc" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
HEAD = "apiVersion: shoal/v1\nkind: Database\nmetadata: {name: NAME}\n"
BASE = HEAD + "spec:\n  engine: postgres\n"
# a problem line: `spec.members: ...`, `spec.placement.constraints[0]: ...`, `declaration: ...`
FIELD_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\[\]-]*: \S")

# (case id, declaration with NAME for the database name, the field path the error must name)
BAD: list[tuple[str, str, str]] = [
    ("members-zero", BASE + "  members: 0\n", "spec.members:"),
    ("members-eight", BASE + "  members: 8\n", "spec.members:"),
    ("members-word", BASE + "  members: three\n", "spec.members:"),
    ("engine", HEAD + "spec: {engine: mysql}\n", "spec.engine:"),
    ("version", BASE + '  version: "14"\n', "spec.version:"),
    ("durability", BASE + "  durability: eventually\n", "spec.durability:"),
    ("sync-one-member", BASE + "  members: 1\n  durability: sync\n", "spec.durability:"),
    ("memory-word", BASE + "  resources: {memory: lots}\n", "spec.resources.memory:"),
    ("memory-small", BASE + "  resources: {memory: 1M}\n", "spec.resources.memory:"),
    ("cpus-zero", BASE + "  resources: {cpus: 0}\n", "spec.resources.cpus:"),
    (
        "constraint",
        BASE + "  placement: {constraints: ['rm -rf']}\n",
        "spec.placement.constraints[0]:",
    ),
    ("spread", BASE + "  placement: {spread: node.color}\n", "spec.placement.spread:"),
    (
        "unreachable",
        BASE + "  failover: {unreachableSeconds: -1}\n",
        "spec.failover.unreachableSeconds:",
    ),
    ("unknown-spec-field", BASE + "  replicas: 3\n", "spec.replicas:"),
    ("unknown-top-field", BASE + "extra: 1\n", "extra:"),
    (
        "pg-reserved-parameter",
        BASE + "  postgres: {parameters: {synchronous_commit: 'off'}}\n",
        "spec.postgres.parameters.synchronous_commit:",
    ),
    ("mongodb-section", BASE + "  mongodb: {routers: 3}\n", "spec.mongodb:"),
    ("expose-operator-port", BASE + "  expose: {port: 9650}\n", "spec.expose.port:"),
    ("expose-port-range", BASE + "  expose: {port: 70000}\n", "spec.expose.port:"),
    (
        "api-version",
        HEAD.replace("shoal/v1", "shoal/v2") + "spec: {engine: postgres}\n",
        "apiVersion:",
    ),
    ("kind", HEAD.replace("Database", "Table") + "spec: {engine: postgres}\n", "kind:"),
    ("no-spec", HEAD, "spec:"),
    (
        "name-upper",
        HEAD.replace("NAME", "X" + "NAME") + "spec: {engine: postgres}\n",
        "metadata.name:",
    ),
    (
        "name-long",
        HEAD.replace("NAME", "NAME" + "a" * 30) + "spec: {engine: postgres}\n",
        "metadata.name:",
    ),
    ("two-problems", BASE + "  members: 0\n  durability: maybe\n", "spec.members:"),
    ("not-yaml", "apiVersion: [unclosed\nmetadata: {name: NAME}\n", "declaration:"),
    ("duplicate-key", BASE + "  members: 3\n  members: 4\n", "declaration:"),
    ("two-documents", BASE + "---\n" + BASE, "declaration:"),
    ("a-list", "- NAME\n- b\n", "declaration:"),
    ("empty", "", "declaration:"),
]


def _all_objects() -> list[str]:
    found: list[str] = []
    for kind in ("service", "network", "secret"):
        proc = subprocess.run(
            ["docker", kind, "ls", "--format", "{{.Name}}"],
            capture_output=True,
            text=True,
            check=True,
        )
        found += [f"{kind} {n}" for n in proc.stdout.split()]
    return found


def _labelled(db: str) -> list[str]:
    """Services, networks and secrets carrying `db`'s database label."""
    found: list[str] = []
    for kind in ("service", "network", "secret"):
        proc = subprocess.run(
            ["docker", kind, "ls", "-q", "--filter", f"label={names.LABEL_DATABASE}={db}"],
            capture_output=True,
            text=True,
            check=True,
        )
        found += [f"{kind} {x}" for x in proc.stdout.split()]
    return found


def _assert_clean_refusal(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def test_table_has_enough_cases() -> None:
    assert len(BAD) >= 20
    assert len({case for case, _, _ in BAD}) == len(BAD)


def _db_of(case: str) -> str:
    return f"{PREFIX}{[c for c, _, _ in BAD].index(case)}"


@pytest.fixture(scope="module")
def refusals(
    platform: BuiltImages, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, subprocess.CompletedProcess[str]], list[str]]:
    """Every bad declaration through `shoal apply -f FILE` (a few at a time: each is a CLI
    process start), then one listing of Docker's services, networks and secrets: anything
    an apply created would still be there (nothing deletes anchors but `shoal delete`)."""
    folder = tmp_path_factory.mktemp("bad")

    def one(item: tuple[str, str, str]) -> tuple[str, subprocess.CompletedProcess[str]]:
        case, text, _ = item
        path = folder / f"{case}.yaml"
        path.write_text(text.replace("NAME", _db_of(case)))
        return case, shoal("apply", "-f", str(path), timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(one, BAD))
    return results, _all_objects()


@pytest.mark.parametrize(("case", "text", "field"), BAD, ids=[c for c, _, _ in BAD])
def test_bad_declaration_is_refused_and_creates_nothing(
    refusals: tuple[dict[str, subprocess.CompletedProcess[str]], list[str]],
    case: str,
    text: str,
    field: str,
) -> None:
    results, objects = refusals
    proc = results[case]
    _assert_clean_refusal(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert any(line.startswith(field) for line in lines), (field, proc.stderr)
    # one line per problem, each naming its field (or `declaration:`)
    for line in lines:
        assert FIELD_LINE.match(line), (line, proc.stderr)
    assert "database/" not in proc.stdout  # nothing was reported as stored
    db = _db_of(case)
    assert [o for o in objects if db in o.lower()] == []
    assert _labelled(db) == []
    if case == "two-problems":  # every problem is reported, one line each
        assert len(lines) == 2 and lines[1].startswith("spec.durability:"), proc.stderr


def test_bad_declaration_from_stdin(platform: BuiltImages) -> None:
    db = f"{PREFIX}stdin"
    proc = shoal("apply", "-f", "-", stdin=BASE.replace("NAME", db) + "  members: 9\n", timeout=60)
    _assert_clean_refusal(proc)
    assert proc.stderr.startswith("spec.members:"), proc.stderr
    assert [o for o in _all_objects() if db in o] == [] and _labelled(db) == []


def test_apply_of_a_missing_file(platform: BuiltImages) -> None:
    proc = shoal("apply", "-f", f"/nonexistent/{PREFIX}.yaml", timeout=60)
    _assert_clean_refusal(proc)
    assert "-f" in proc.stderr or "nonexistent" in proc.stderr, proc.stderr


def test_status_of_a_missing_database(platform: BuiltImages) -> None:
    for args in (["status", f"{PREFIX}none"], ["status", f"{PREFIX}none", "--json"]):
        proc = shoal(*args, timeout=60)
        _assert_clean_refusal(proc)
        assert f"{PREFIX}none" in proc.stderr, proc.stderr
        assert proc.stdout.strip() == ""


def test_commands_about_a_missing_database(platform: BuiltImages) -> None:
    missing = f"{PREFIX}none"
    for args in (
        ["switchover", missing],
        ["credentials", missing],
        ["delete", missing],
        ["reinit", missing, "--accept-data-loss"],
    ):
        proc = shoal(*args, timeout=60)
        _assert_clean_refusal(proc)
        assert missing in proc.stderr, (args, proc.stderr)
    assert _labelled(missing) == []


@pytest.fixture(scope="module")
def real_db(operator: BuiltImages, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database that exists (its anchor is enough: no need to wait for members)."""
    db = f"{PREFIX}real"
    path = tmp_path_factory.mktemp("cli") / "real.yaml"
    path.write_text(BASE.replace("NAME", db) + "  members: 2\n  durability: async\n")
    proc = shoal("apply", "-f", str(path), timeout=60)
    assert proc.returncode == 0, proc.stderr
    yield db  # type: ignore[misc]
    shoal("delete", db, "--wait", timeout=180)


def test_switchover_to_a_non_member(real_db: str) -> None:
    before = json.loads(shoal("status", real_db, "--json", timeout=60).stdout)
    for target in ("not-a-member", f"{real_db}-7", f"{real_db}-2", "shoal-operator"):
        proc = shoal("switchover", real_db, "--to", target, timeout=60)
        _assert_clean_refusal(proc)
        assert "--to" in proc.stderr and target in proc.stderr, proc.stderr
    labels = _anchor_labels(real_db)
    assert names.LABEL_REQUEST not in labels  # no request was stored
    assert (
        json.loads(shoal("status", real_db, "--json", timeout=60).stdout)["name"] == before["name"]
    )


def test_reinit_without_accepting_data_loss(real_db: str) -> None:
    proc = shoal("reinit", real_db, timeout=60)
    _assert_clean_refusal(proc)
    assert "--accept-data-loss" in proc.stderr, proc.stderr
    assert names.LABEL_REQUEST not in _anchor_labels(real_db)


def test_changing_the_engine_is_refused(real_db: str, tmp_path: Path) -> None:
    path = tmp_path / "mongo.yaml"
    path.write_text(HEAD.replace("NAME", real_db) + "spec: {engine: mongodb, members: 3}\n")
    proc = shoal("apply", "-f", str(path), timeout=60)
    _assert_clean_refusal(proc)
    assert any(line.startswith("spec.engine:") for line in proc.stderr.splitlines())
    spec = json.loads(_anchor_labels(real_db)[names.LABEL_SPEC])
    assert spec["spec"]["engine"] == "postgres"


def _anchor_labels(db: str) -> dict[str, str]:
    out = subprocess.run(
        [
            "docker",
            "service",
            "inspect",
            names.anchor_service(db),
            "--format",
            "{{json .Spec.Labels}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    labels: dict[str, str] = json.loads(out)
    return labels
