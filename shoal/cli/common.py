"""Shared CLI plumbing: exit codes, error printing, running async code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from shoal.declaration import DeclarationError
from shoal.swarm.client import SwarmClient, SwarmError
from shoal.swarm.store import DatabaseStore

T = TypeVar("T")
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

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


def run(coro_fn: Callable[[DatabaseStore], Coroutine[Any, Any, T]]) -> T:
    """Run `coro_fn(store)` against the Docker engine; map failures to exit codes."""

    async def main() -> T:
        async with SwarmClient() as swarm:
            return await coro_fn(DatabaseStore(swarm))

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


async def poll(check: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.5) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    return False
