"""`shoal recover NAME --force-reconfig` is refused, before anything is asked of Docker,
without the flag that accepts the loss."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from shoal.cli import db

pytestmark = pytest.mark.unit


def test_recover_without_force_reconfig_is_refused_with_exit_2() -> None:
    app = typer.Typer()
    db.register(app)
    result = CliRunner().invoke(app, ["recover", "orders"])
    assert result.exit_code == 2
    assert "--force-reconfig" in result.output
