"""The test suite's host tools: which are missing is decided from PATH plus Debian's system
directories, so `make test` installs exactly what a fresh machine lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.platform import prerequisites
from shoal.platform.prerequisites import Tool


def _exe(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_tool_on_path_is_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _exe(tmp_path / "sometool")
    monkeypatch.setenv("PATH", str(tmp_path))
    tools = (Tool("sometool", ("pkg",), "x"), Tool("absent-tool-xyz", ("other",), "y"))
    assert [t.command for t in prerequisites.missing(tools)] == ["absent-tool-xyz"]


def test_system_dirs_count_even_when_path_lacks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(prerequisites, "SYSTEM_DIRS", (str(tmp_path / "sbin"),))
    (tmp_path / "sbin").mkdir()
    _exe(tmp_path / "sbin" / "debootstrap-like")
    assert prerequisites.find("debootstrap-like") == str(tmp_path / "sbin" / "debootstrap-like")


def test_nothing_missing_installs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _exe(tmp_path / "present")
    monkeypatch.setenv("PATH", str(tmp_path))

    def no_apt(packages: list[str], progress: object = None) -> None:
        raise AssertionError(f"apt_install called for {packages}")

    monkeypatch.setattr(prerequisites, "apt_install", no_apt)
    assert prerequisites.ensure_tools((Tool("present", ("p",), "x"),)) == []


def test_every_test_tool_names_a_package_and_a_reason() -> None:
    for tool in prerequisites.TEST_TOOLS:
        assert tool.packages and tool.why and "/" not in tool.command


def test_unknown_set_is_bad_input() -> None:
    assert prerequisites.main(["nonsense"]) == 2
