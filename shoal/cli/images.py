"""`shoal images ...` (placeholder until the platform work lands)."""

import typer

app = typer.Typer(help="Build the operator and member images locally.", no_args_is_help=True)
