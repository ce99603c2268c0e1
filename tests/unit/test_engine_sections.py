"""Each engine's section of the declaration lives in its own package
(`shoal/plugins/<engine>/spec.py`) and the generic model only consults the table of them
(`shoal.declaration.model.SECTIONS`). The user-facing contract is in test_declaration.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shoal.declaration import Engine, Spec
from shoal.declaration.model import SECTIONS

pytestmark = pytest.mark.unit


def test_every_engine_has_a_section_under_its_own_name() -> None:
    assert set(SECTIONS) == set(Engine)
    for engine, section in SECTIONS.items():
        assert section.engine == engine.value
        assert Spec.model_fields[engine.value].annotation is section.model
        assert section.version_problem(section.default_version) is None


@pytest.mark.parametrize("module", ["shoal.plugins.postgres.spec", "shoal.plugins.mongodb.spec"])
def test_a_section_module_imports_on_its_own(module: str) -> None:
    # The declaration imports the sections: a section must not import the declaration.
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
