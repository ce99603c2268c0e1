"""`shoal lab ...`: a multi-node swarm of Docker-in-Docker nodes on this machine.

The lab lives on the local engine; its nodes are reached through their own sockets, which
`shoal lab env` prints as a DOCKER_HOST for every other `shoal` and `docker` command.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from shoal.lab.model import LabError, validate_shape

if TYPE_CHECKING:
    from shoal.lab.lifecycle import RunningNode

app = typer.Typer(
    help="A multi-node swarm of Docker-in-Docker nodes on this machine, and node faults.",
    no_args_is_help=True,
)
_err = Console(stderr=True)
_out = Console()


@app.callback()
def _local_engine() -> None:
    # The lab is built on this machine's engine, even when DOCKER_HOST points at the lab.
    os.environ.pop("DOCKER_HOST", None)


def _fail(exc: Exception, code: int = 1) -> typer.Exit:
    _err.print(f"[red]error:[/red] {exc}", highlight=False)
    return typer.Exit(code)


def _say(message: str) -> None:
    _err.print(f"[bold cyan]shoal lab:[/bold cyan] {message}", highlight=False)


@app.command("up")
def up(
    nodes: int = typer.Option(4, "--nodes", help="Swarm nodes (Docker-in-Docker containers)."),
    managers: int = typer.Option(3, "--managers", help="How many of them are managers (odd)."),
) -> None:
    """Create the lab (or complete it): nodes, one swarm, shoal's images on every node."""
    problems = validate_shape(nodes, managers)
    if problems:
        for problem in problems:
            _err.print(f"[red]error:[/red] {problem}", highlight=False)
        raise typer.Exit(2)
    from shoal.lab.lifecycle import lab_up
    from shoal.platform.engine import PlatformError, ensure_engine
    from shoal.platform.images import build_all

    try:
        ensure_engine(_say)
        images = build_all(progress=_say)
        running = lab_up(
            nodes,
            managers,
            [images.base, images.operator, *images.members.values(), images.registry],
            images.base,
            _say,
        )
    except (LabError, PlatformError) as exc:
        raise _fail(exc) from None
    _print_nodes(running)
    _out.print(f"\nexport DOCKER_HOST={running[0].node.docker_host}")
    _out.print("then: shoal up   (on the lab's swarm)")


def _print_nodes(running: list[RunningNode]) -> None:
    table = Table("NODE", "ROLE", "ADDRESS", "STATE", box=None)
    table.add_column("DOCKER_HOST", overflow="fold")
    for node in running:
        table.add_row(
            node.node.name, node.node.role.value, node.address, node.state, node.node.docker_host
        )
    _out.print(table)


@app.command("env")
def env() -> None:
    """Print the `export DOCKER_HOST=...` that points docker and shoal at the lab."""
    from shoal.lab.lifecycle import lab_env

    try:
        typer.echo(lab_env())
    except LabError as exc:
        raise _fail(exc) from None


@app.command("ls")
def ls(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """The lab's nodes and their container states."""
    from shoal.lab.lifecycle import lab_containers

    try:
        running = lab_containers()
    except LabError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps([n.as_dict() for n in running], indent=2))
    else:
        _print_nodes(running)


@app.command("down")
def down() -> None:
    """Remove every lab node and its engine's state."""
    from shoal.lab.lifecycle import lab_down

    try:
        removed = lab_down(_say)
    except LabError as exc:
        raise _fail(exc) from None
    _out.print(f"removed {removed} lab nodes")


@app.command("fault")
def fault(
    kind: str = typer.Argument(..., help="kill, pause, partition or partition-managers."),
    node: str = typer.Argument(..., help="Node name (shoal-lab-2) or number (2)."),
) -> None:
    """Inject a node fault: kill the node, pause it, or cut it off from the others."""
    from shoal.lab.faults import NodeFault, inject

    try:
        chosen = NodeFault(kind)
    except ValueError:
        allowed = ", ".join(f.value for f in NodeFault)
        raise _fail(ValueError(f"unknown node fault {kind!r}; one of: {allowed}"), 2) from None
    try:
        target = inject(chosen, node)
    except LabError as exc:
        raise _fail(exc) from None
    _out.print(f"{chosen.value}: {target.node.name}")


@app.command("heal")
def heal(node: str = typer.Argument(..., help="Node name or number.")) -> None:
    """Undo a node fault: start a killed node, unpause a paused one, end a partition."""
    from shoal.lab.faults import heal as heal_node

    try:
        target = heal_node(node)
    except LabError as exc:
        raise _fail(exc) from None
    _out.print(f"healed: {target.node.name} ({target.state})")
