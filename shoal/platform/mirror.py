"""The Debian mirror the host's apt already uses (pure parsing plus one reader)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    types: tuple[str, ...] = ("deb",)


def parse_deb822(text: str) -> list[AptSource]:
    """Stanzas of a `.sources` file (deb822): `Types:`, `URIs:`, `Suites:`, `Enabled:`."""
    sources: list[AptSource] = []
    for stanza in _stanzas(text):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        types = tuple(stanza.get("types", "deb").split())
        suites = tuple(stanza.get("suites", "").split())
        sources.extend(AptSource(uri, suites, types) for uri in stanza.get("uris", "").split())
    return sources


def _stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.lstrip().startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
            continue
        if line[0].isspace() and key:  # continuation line
            current[key] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def parse_sources_list(text: str) -> list[AptSource]:
    """One-line-style entries: `deb [options] URI SUITE COMPONENT...`."""
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        kind, rest = words[0], words[1:]
        if kind not in ("deb", "deb-src"):
            continue
        if rest and rest[0].startswith("["):  # options, possibly spanning several words
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 2:
            sources.append(AptSource(rest[0], (rest[1],), (kind,)))
    return sources


def pick_mirror(sources: list[AptSource], suite: str = "bookworm") -> str | None:
    """The first binary, non-security source that serves `suite` (or any Debian archive)."""
    binary = [s for s in sources if "deb" in s.types and "security" not in s.uri]
    for source in binary:
        if suite in source.suites:
            return source.uri.rstrip("/")
    for source in binary:
        if source.uri.rstrip("/").endswith("/debian"):
            return source.uri.rstrip("/")
    return None


def host_debian_mirror(etc_apt: Path = Path("/etc/apt"), suite: str = "bookworm") -> str:
    """The mirror from the host's apt sources, falling back to deb.debian.org."""
    sources: list[AptSource] = []
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        sources += parse_deb822(path.read_text(errors="replace"))
    lists = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in lists:
        if path.is_file():
            sources += parse_sources_list(path.read_text(errors="replace"))
    return pick_mirror(sources, suite) or DEFAULT_MIRROR
