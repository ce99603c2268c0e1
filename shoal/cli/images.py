"""`shoal images ...`: build the operator and member images locally (no registry)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:  # imported where a command runs: `shoal --help` needs neither
    from shoal.platform.engine import PlatformError
    from shoal.platform.images import BuiltImages

app = typer.Typer(help="Build the operator and member images locally.", no_args_is_help=True)

_err = Console(stderr=True)


@app.command(
    "build",
    # `--<engine>-from IMAGE` / `--<engine>-tarball PATH`, one pair for each installed
    # engine whose server binary the user provides: taken from the recipes, not named here.
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def build(
    ctx: typer.Context,
    engines: list[str] = typer.Option(
        [],
        "--engine",
        metavar="ENGINE",
        help="Fail (exit 2) unless this engine's member image can be built; repeatable.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Rebuild the operator and member images without the layer cache."
    ),
    rebuild_base: bool = typer.Option(
        False, "--rebuild-base", help="Re-create the base image (debootstrap) as well."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the image tags as JSON."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the build output."),
) -> None:
    """Build the base, operator, member (one per engine) and registry images (a no-op when
    up to date).

    An engine whose server binary shoal cannot install gets its member image once you give
    that binary: --<engine>-from IMAGE (a local image that has it) or --<engine>-tarball
    PATH (the vendor's Linux tarball); `shoal images show` names the engines and their
    options. It is kept for later builds; without it, that engine is left out."""
    from shoal.platform.engine import PlatformError, ensure_engine
    from shoal.platform.images import build_all, check_engines
    from shoal.platform.server_binary import ServerOptionError, available, parse_server_options
    from shoal.plugins.registry import image_recipes

    # Bad input is refused before Docker is started or anything is built.
    try:
        recipes = image_recipes()
        sources = parse_server_options(ctx.args, recipes)
        check_engines(recipes, engines, sources, available(recipes))
    except ServerOptionError as exc:
        _fail(exc, code=2)

    def progress(message: str) -> None:
        _err.print(f"[bold]images:[/bold] {message}", highlight=False)

    def output(line: str) -> None:
        _err.print(line, markup=False, highlight=False)

    try:
        ensure_engine(progress)
        images = build_all(
            force=force,
            progress=progress,
            rebuild_base=rebuild_base,
            output=output if verbose else None,
            sources=sources,
            required=engines,
        )
    except ServerOptionError as exc:  # e.g. a tarball without the binary
        _fail(exc, code=2)
    except PlatformError as exc:
        _fail(exc)
    _print(images, as_json, built=True)


@app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Print the tags the current source tree builds, without building."""
    from shoal.platform.engine import PlatformError
    from shoal.platform.images import resolve_images

    try:
        images = resolve_images()
    except PlatformError as exc:
        _fail(exc)
    _print(images, as_json, built=False)


def _fail(exc: PlatformError, code: int = 1) -> NoReturn:
    _err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
    raise typer.Exit(code) from exc


def _print(images: BuiltImages, as_json: bool, built: bool) -> None:
    """The tags, as JSON or one per line; after a build, with their aliases and what was
    built."""
    if as_json:
        typer.echo(json.dumps(images.as_dict(), indent=2))
        return
    aliases = {"operator": images.operator_alias, **images.member_aliases} if built else {}
    tags = {"base": images.base, "operator": images.operator, **images.members}
    for key, tag in {**tags, "registry": images.registry}.items():
        alias = f"  (alias {aliases[key]})" if key in aliases else ""
        typer.echo(f"{key:<9} {tag}{alias}")
    for engine, why in images.unavailable.items():
        typer.echo(f"{engine:<9} not built: {why}")
    if built:
        typer.echo("built     " + (", ".join(images.built) or "nothing (up to date)"))
