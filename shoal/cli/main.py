"""The `shoal` command: one entry point, sub-commands registered from small modules."""

from __future__ import annotations

import os

import typer

from shoal import __version__

app = typer.Typer(
    name="shoal",
    help="Self-healing replicated databases on Docker Swarm, without volumes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    host: str | None = typer.Option(
        None,
        "--host",
        "-H",
        help="Docker engine to talk to (as DOCKER_HOST: unix:///path, tcp://host:port).",
    ),
) -> None:
    if host:
        # Every Docker client shoal makes (aiodocker, the `docker` command) reads DOCKER_HOST.
        os.environ["DOCKER_HOST"] = host
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


def _register() -> None:
    # Each module adds its own commands; imported here so `shoal --help` lists them all.
    from shoal.cli import backups, chaos, db, images, lab, operator, up

    up.register(app)
    db.register(app)
    backups.register(app)
    operator.register(app)
    app.add_typer(images.app, name="images")
    app.add_typer(operator.app, name="operator")
    app.add_typer(chaos.app, name="chaos")
    app.add_typer(lab.app, name="lab")


def main() -> None:
    _register()
    app()
