"""Image builds against the real engine: the second build of an unchanged tree is a no-op."""

from __future__ import annotations

import subprocess

import pytest

from shoal import __version__, names
from shoal.platform.images import BuiltImages, build_all, image_id, resolve_images
from shoal.plugins.postgres.plugin import PostgresPlugin

pytestmark = pytest.mark.integration


def _run(image: str, *args: str) -> str:
    result = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", args[0], image, *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def test_tags_match_the_source_tree(platform: BuiltImages) -> None:
    assert platform.base == names.IMAGE_BASE
    assert platform.operator.startswith(names.IMAGE_OPERATOR + "-")
    assert platform.members["postgres"].startswith(PostgresPlugin.image_recipe.alias + "-")
    expected = resolve_images()
    assert (platform.base, platform.operator, platform.members) == (
        expected.base,
        expected.operator,
        expected.members,
    )


def test_second_build_is_a_noop(platform: BuiltImages) -> None:
    tags = (platform.base, platform.operator, *platform.members.values())
    before = {tag: image_id(tag) for tag in tags}
    again = build_all()
    assert again.built == ()
    assert (again.base, again.operator, again.members) == (
        platform.base,
        platform.operator,
        platform.members,
    )
    after = {tag: image_id(tag) for tag in before}
    assert after == before
    assert None not in after.values()


def test_stable_aliases_point_at_the_exact_tags(platform: BuiltImages) -> None:
    assert image_id(platform.operator_alias) == image_id(platform.operator)
    for engine, tag in platform.members.items():
        assert image_id(platform.member_aliases[engine]) == image_id(tag)


def test_operator_image_runs_shoal(platform: BuiltImages) -> None:
    out = _run(platform.operator, "/opt/shoal/venv/bin/shoal", "--version")
    assert out.strip() == __version__


def test_base_image_has_the_member_tooling(platform: BuiltImages) -> None:
    out = _run(
        platform.base,
        "sh",
        "-c",
        "for c in python3 tini haproxy ip iptables ps ping; do command -v $c; done"
        " && ls /usr/lib/postgresql",
    )
    lines = out.split()
    assert "15" in lines
    assert len(lines) == 8, out
