"""The Debian mirror the base image is bootstrapped from, read from apt's sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.platform.mirror import (
    DEFAULT_MIRROR,
    host_debian_mirror,
    parse_deb822,
    parse_sources_list,
    pick_mirror,
)

pytestmark = pytest.mark.unit

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_deb822_stanzas() -> None:
    sources = parse_deb822(DEB822)
    assert [s.uri for s in sources] == [
        "http://deb.debian.org/debian",
        "http://deb.debian.org/debian-security",
    ]
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert pick_mirror(sources) == "http://deb.debian.org/debian"


def test_deb822_skips_disabled_and_source_only_stanzas() -> None:
    text = (
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm\nComponents: main\n"
    )
    assert pick_mirror(parse_deb822(text)) == "http://mirror.example/debian"


def test_deb822_continuation_lines() -> None:
    text = "Types: deb\nURIs:\n http://a.example/debian\nSuites: bookworm\n"
    assert [s.uri for s in parse_deb822(text)] == ["http://a.example/debian"]


def test_one_line_sources_with_options() -> None:
    text = (
        "# comment\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
    )
    sources = parse_sources_list(text)
    assert [s.uri for s in sources] == [
        "http://src.example/debian",
        "http://mirror.example/debian",
        "http://security.debian.org/debian-security",
    ]
    assert pick_mirror(sources) == "http://mirror.example/debian"


def test_other_suite_falls_back_to_a_debian_archive_or_nothing() -> None:
    trixie = parse_sources_list("deb http://ftp.example/debian trixie main\n")
    assert pick_mirror(trixie) == "http://ftp.example/debian"
    ubuntu = parse_sources_list("deb http://archive.ubuntu.com/ubuntu jammy main\n")
    assert pick_mirror(ubuntu) is None


def test_host_mirror_from_files(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    assert host_debian_mirror(tmp_path) == DEFAULT_MIRROR
    (tmp_path / "sources.list").write_text("deb http://old.example/debian bookworm main\n")
    assert host_debian_mirror(tmp_path) == "http://old.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert host_debian_mirror(tmp_path) == "http://deb.debian.org/debian"
