"""Build-context hashing and the pure bring-up helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal import names
from shoal.platform.engine import is_debian_like, is_remote_host, parse_os_release
from shoal.platform.images import (
    BuiltImages,
    base_packages,
    exact_tag_env,
    hash_entries,
    images_from_env,
    iter_tree,
    member_context,
    operator_context,
    requirements_text,
    resolve_images,
)
from shoal.plugins.postgres.plugin import PostgresPlugin
from shoal.plugins.registry import image_recipes

pytestmark = pytest.mark.unit

PG = PostgresPlugin.image_recipe

PYPROJECT = """\
[project]
name = "shoal"
version = "0.1.0"
dependencies = ["aiohttp>=3.9", "psycopg[binary]>=3.1"]
"""


def _tree(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    pkg = root / "shoal"
    (pkg / "operator" / "image").mkdir(parents=True)
    (pkg / "plugins" / "postgres" / "image").mkdir(parents=True)
    (pkg / "plugins" / "postgres" / "agent").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "0.1.0"\n')
    (pkg / "operator" / "image" / "Dockerfile").write_text("FROM x\n")
    (pkg / "plugins" / "postgres" / "image" / "Dockerfile").write_text("FROM y\n")
    (pkg / "plugins" / "postgres" / "image" / "entrypoint.sh").write_text("#!/bin/sh\n")
    (pkg / "plugins" / "postgres" / "agent" / "pg.py").write_text("print(1)\n")
    (pkg / "agentkit").mkdir()
    (pkg / "agentkit" / "server.py").write_text("print(3)\n")
    return root


def test_hash_is_stable_and_order_independent() -> None:
    a = [("a", b"1", False), ("b", b"2", True)]
    assert hash_entries(a) == hash_entries(list(reversed(a)))
    assert len(hash_entries(a)) == 8
    assert hash_entries(a) != hash_entries([("a", b"1", False), ("b", b"2", False)])
    assert hash_entries(a) != hash_entries(a, ["BASE=other"])
    # A file boundary moved is a different context.
    assert hash_entries([("a", b"12", False)]) != hash_entries(
        [("a", b"1", False), ("2", b"", False)]
    )


def test_context_hash_ignores_caches_and_follows_content(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    first = operator_context(root, names.IMAGE_BASE).digest()
    cache = root / "shoal" / "__pycache__"
    cache.mkdir()
    (cache / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "shoal" / ".mypy_cache").mkdir()
    (root / "shoal" / ".mypy_cache" / "junk").write_text("x")
    assert operator_context(root, names.IMAGE_BASE).digest() == first
    assert operator_context(root, "other/base:1").digest() != first
    (root / "shoal" / "new.py").write_text("x = 1\n")
    assert operator_context(root, names.IMAGE_BASE).digest() != first


def test_member_context_layout(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    context = member_context(root, PG, names.IMAGE_BASE)
    assert sorted(context.files) == [
        "Dockerfile",
        "agent/pg.py",
        "entrypoint.sh",
        "shoal/agentkit/server.py",
    ]
    before = context.digest()
    (root / "shoal" / "operator" / "new.py").write_text("x = 1\n")  # not in its context
    assert member_context(root, PG, names.IMAGE_BASE).digest() == before
    (root / "shoal" / "plugins" / "postgres" / "agent" / "pg.py").write_text("print(2)\n")
    assert member_context(root, PG, names.IMAGE_BASE).digest() != before
    before = member_context(root, PG, names.IMAGE_BASE).digest()
    (root / "shoal" / "agentkit" / "server.py").write_text("print(4)\n")
    assert member_context(root, PG, names.IMAGE_BASE).digest() != before


def test_operator_context_materialises(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    context = operator_context(root, names.IMAGE_BASE)
    out = tmp_path / "ctx"
    context.materialise(out)
    assert (out / "Dockerfile").read_text() == "FROM x\n"
    assert (out / "src" / "shoal" / "__init__.py").is_file()
    assert (out / "src" / "README.md").is_file()  # stub: pyproject names a readme
    assert (out / "requirements.txt").read_text() == "aiohttp>=3.9\npsycopg[binary]>=3.1\n"
    assert [p.as_posix() for p in iter_tree(root / "shoal" / "plugins")] == [
        "postgres/agent/pg.py",
        "postgres/image/Dockerfile",
        "postgres/image/entrypoint.sh",
    ]


def test_resolve_images_tags(tmp_path: Path) -> None:
    images = resolve_images(_tree(tmp_path))
    assert images.base == names.IMAGE_BASE
    assert images.operator.startswith(f"{names.IMAGE_OPERATOR}-")
    assert images.members["postgres"].startswith(f"{PG.alias}-")
    assert images.member_aliases == {"postgres": PG.alias}
    assert images.operator_alias == names.IMAGE_OPERATOR
    assert resolve_images(tmp_path) == images


def test_requirements_text_empty() -> None:
    assert requirements_text("[project]\nname='x'\n") == ""


def test_os_release_and_docker_host() -> None:
    info = parse_os_release('ID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 22.04"\n')
    assert info["PRETTY_NAME"] == "Ubuntu 22.04"
    assert is_debian_like(info)
    assert is_debian_like({"ID": "debian"})
    assert not is_debian_like({"ID": "fedora"})
    assert not is_remote_host(None)
    assert not is_remote_host("unix:///var/run/docker.sock")
    assert is_remote_host("tcp://10.0.0.5:2376")
    assert is_remote_host("ssh://admin@host")


def test_images_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_IMAGE_OPERATOR", raising=False)
    monkeypatch.setenv("SHOAL_IMAGE_POSTGRES", "shoal/postgres:15-0.1.0-abcdef12")
    images = images_from_env()
    assert images.members["postgres"] == "shoal/postgres:15-0.1.0-abcdef12"
    assert images.operator == names.IMAGE_OPERATOR
    assert exact_tag_env("postgres") == "SHOAL_IMAGE_POSTGRES"


def test_images_print_flat_with_each_engine_by_name() -> None:
    images = BuiltImages(
        base="b", operator="o", members={"postgres": "p-1"}, member_aliases={"postgres": "p"}
    )
    assert images.as_dict() == {
        "base": "b",
        "operator": "o",
        "postgres": "p-1",
        "registry": names.IMAGE_REGISTRY,
        "operator_alias": names.IMAGE_OPERATOR,
        "postgres_alias": "p",
        "built": (),
    }
    assert list(images.as_dict()) == [
        "base", "operator", "postgres", "registry", "operator_alias", "postgres_alias", "built"
    ]  # fmt: skip


def test_the_base_image_gets_every_package_the_recipes_ask_for() -> None:
    assert base_packages(image_recipes().values()) == ("postgresql-15",)
