"""Shared CLI plumbing: exit codes, error printing, running async code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:  # imported where used: `shoal --help` needs none of them
    from shoal.swarm.store import DatabaseStore

T = TypeVar("T")
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class Failed(RuntimeError):
    """The operation failed (exit code 1)."""


class BadInput(RuntimeError):
    """The user's input is wrong (exit code 2)."""


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


REGISTRY_OPTION: Any = typer.Option(
    None,
    "--registry",
    metavar="HOST[:PORT][/PREFIX]",
    help="Push shoal's images to this registry for the swarm's nodes to pull (default on "
    "more than one node: a shoal-registry service on this manager).",
)


def check_registry(value: str | None) -> None:
    """Exit 2, before anything changes, when `--registry` is not a registry location."""
    from shoal.platform.distribution import registry_problems

    problems = registry_problems(value) if value is not None else []
    if problems:
        fail("; ".join(problems), EXIT_BAD_INPUT)


# How long a command waits out a Raft election of the swarm's managers (a manager lost, cut
# off or healed) before it reports the error: elections seen on the lab took up to a minute.
RAFT_WAIT = 120.0


def run(coro_fn: Callable[[DatabaseStore], Coroutine[Any, Any, T]]) -> T:
    """Run `coro_fn(store)` against the Docker engine; map failures to exit codes.

    While the managers elect a Raft leader every swarm call fails, and a write may or may not
    have been committed. Every command reads the anchor before it writes and writes it by
    compare-and-swap, so running it again is what the user would do by hand and is safe:
    an apply whose first write went through finds its declaration there and is unchanged."""
    from shoal.declaration import DeclarationError
    from shoal.swarm.client import SwarmClient, SwarmError, raft_busy, while_raft_busy
    from shoal.swarm.store import DatabaseStore

    async def main() -> T:
        said = False
        async for attempt in while_raft_busy(RAFT_WAIT):
            with attempt:
                try:
                    async with SwarmClient() as swarm:
                        return await coro_fn(DatabaseStore(swarm))
                except SwarmError as e:
                    if raft_busy(e) and not said:
                        err.print("the swarm is electing a leader; waiting", soft_wrap=True)
                        said = True
                    raise
        raise AssertionError("unreachable: AsyncRetrying either returns or raises")

    try:
        return asyncio.run(main())
    except DeclarationError as e:
        for line in e.problems:
            err.print(line, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except BadInput as e:
        fail(str(e), EXIT_BAD_INPUT)
    except (Failed, SwarmError) as e:
        fail(str(e))
    except (OSError, ValueError) as e:
        fail(f"cannot talk to the Docker engine: {e}")
