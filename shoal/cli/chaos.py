"""`shoal chaos ...` (placeholder until the chaos suite lands)."""

import typer

app = typer.Typer(help="The chaos suite.", no_args_is_help=True)
