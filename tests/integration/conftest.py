"""Integration fixtures: a running engine in swarm mode with shoal's images built."""

from __future__ import annotations

import secrets
import string
import sys

import pytest

from shoal.platform.engine import ensure_platform
from shoal.platform.images import BuiltImages, build_all

_ALPHABET = string.ascii_lowercase + string.digits


def _progress(message: str) -> None:
    print(f"[platform] {message}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def platform() -> BuiltImages:
    """Engine + single-node swarm (created if needed) and the images for this tree."""
    ensure_platform(_progress)
    return build_all(progress=_progress)


@pytest.fixture
def unique_name() -> str:
    """A short unique DNS-label prefix for this test's Docker objects: `t` + 6 [a-z0-9]."""
    return "t" + "".join(secrets.choice(_ALPHABET) for _ in range(6))


@pytest.fixture(scope="session")
def operator(platform: BuiltImages) -> BuiltImages:
    """The operator service, deployed from this tree's images (idempotent)."""
    from tests.integration.support import ensure_operator

    ensure_operator(platform)
    return platform
