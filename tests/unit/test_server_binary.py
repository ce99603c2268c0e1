"""Server binaries the user provides (`ImageRecipe.server`, shoal/platform/server_binary.py):
the options, the refusal before anything is built, and the build context. No Docker: the
image lookups are given, not asked."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from shoal.platform.images import check_engines, member_context, unavailable
from shoal.platform.server_binary import (
    ServerOptionError,
    ServerSource,
    extract_binary,
    how_to_provide,
    parse_server_options,
    tarball_member,
)
from shoal.plugins.base import ImageRecipe, ServerBinary

pytestmark = pytest.mark.unit

SERVER = ServerBinary(
    name="db",
    option="acme",
    image="shoal/acme-server:1",
    image_path="/usr/bin/db",
    tarball_path="bin/db",
    example_image="acme:9",
)
RECIPES = {
    "acme": ImageRecipe(package="shoal.plugins.acme", alias="shoal/acme:9-1", server=SERVER),
    "plain": ImageRecipe(package="shoal.plugins.plain", alias="shoal/plain:1-1"),
}


def test_the_options_come_from_the_recipes(tmp_path: Path) -> None:
    tarball = tmp_path / "acme.tgz"
    tarball.write_bytes(b"")
    assert parse_server_options([], RECIPES) == {}
    assert parse_server_options(["--acme-from", "acme:9"], RECIPES) == {
        "acme": ServerSource("from", "acme:9")
    }
    assert parse_server_options([f"--acme-tarball={tarball}"], RECIPES) == {
        "acme": ServerSource("tarball", str(tarball))
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plain-from", "x"], "no such option: --plain-from"),
        (["--acme-from"], "needs a value"),
        (["--acme-from", "--force"], "needs a value"),
        (["--acme-tarball", "/nonexistent/acme.tgz"], "no such file"),
        (["--acme-from", "Bad Image!"], "not an image reference"),
        (["--acme-from", "a:1", "--acme-from", "b:2"], "give one of --acme-from"),
        (["stray"], "no such option: stray"),
    ],
)
def test_bad_server_options_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(ServerOptionError, match=message):
        parse_server_options(args, RECIPES)


def test_an_engine_asked_for_without_its_binary_is_refused_naming_both_options() -> None:
    with pytest.raises(ServerOptionError) as refused:
        check_engines(RECIPES, ["acme"], sources={}, servers={})
    message = str(refused.value)
    assert "--acme-from IMAGE" in message and "--acme-tarball PATH" in message
    assert "acme:9" in message
    # given now, or kept from an earlier build: fine; an engine needing nothing: fine
    check_engines(RECIPES, ["acme"], {"acme": ServerSource("from", "acme:9")}, servers={})
    check_engines(RECIPES, ["acme", "plain"], sources={}, servers={"acme": "sha256:1"})
    with pytest.raises(ServerOptionError, match="no such engine here"):
        check_engines(RECIPES, ["cassandra"], sources={}, servers={})


def test_an_engine_without_its_binary_is_reported_not_built() -> None:
    assert unavailable(RECIPES, built=["plain"]) == {"acme": how_to_provide("acme", SERVER)}
    assert unavailable(RECIPES, built=["plain", "acme"]) == {}


def test_the_binary_is_found_under_the_tarballs_top_directory() -> None:
    names = ["acme-9.0/", "acme-9.0/bin/db", "acme-9.0/bin/dbs", "acme-9.0/LICENSE"]
    assert tarball_member(names, SERVER) == "acme-9.0/bin/db"
    with pytest.raises(ServerOptionError, match="expected exactly one"):
        tarball_member(["acme-9.0/bin/other"], SERVER)
    with pytest.raises(ServerOptionError, match="expected exactly one"):
        tarball_member(["a/bin/db", "b/bin/db"], SERVER)


def test_a_real_tarball_layout_is_read(tmp_path: Path) -> None:
    path = tmp_path / "acme.tgz"
    with tarfile.open(path, "w:gz") as tar:
        data = b"\x7fELF..."
        info = tarfile.TarInfo("acme-linux-x86_64-9.0.1/bin/db")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        assert tarball_member(tar.getnames(), SERVER) == "acme-linux-x86_64-9.0.1/bin/db"
    out = tmp_path / "out"
    out.mkdir()
    binary = extract_binary(path, SERVER, out)
    assert binary == out / "db" and binary.read_bytes() == data
    assert binary.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in out.iterdir()) == ["db"]  # nothing else written
    (tmp_path / "broken.tgz").write_bytes(b"not a tarball")
    with pytest.raises(ServerOptionError, match=r"broken\.tgz"):
        extract_binary(tmp_path / "broken.tgz", SERVER, out)


def test_the_member_context_names_the_server_image_and_hashes_its_id(tmp_path: Path) -> None:
    recipe_dir = tmp_path / "shoal" / "plugins" / "acme" / "image"
    recipe_dir.mkdir(parents=True)
    (recipe_dir / "Dockerfile").write_text("ARG SERVER\nFROM ${SERVER} AS server\n")
    recipe = RECIPES["acme"]
    one = member_context(tmp_path, recipe, "base:1", "sha256:aaa")
    two = member_context(tmp_path, recipe, "base:1", "sha256:bbb")
    assert one.build_args == {"BASE": "base:1", "SERVER": "shoal/acme-server:1"}
    assert one.generated["server-source"] == b"shoal/acme-server:1 sha256:aaa\n"
    assert one.digest() != two.digest()
    with pytest.raises(ValueError, match="server image"):
        member_context(tmp_path, recipe, "base:1")
