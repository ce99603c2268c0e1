"""Database commands: apply, get, status, credentials, switchover, failover, recover, reinit,
delete."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.live import Live
from rich.table import Table

from shoal import names
from shoal.cli.common import EXIT_BAD_INPUT, BadInput, Failed, err, fail, out, run

# The models and the Docker client are imported where a command runs: `shoal --help` and
# every command's start-up need none of them (pydantic models, aiodocker, aiohttp).
if TYPE_CHECKING:
    from shoal.declaration import Database
    from shoal.request import Request
    from shoal.status import DatabaseStatus
    from shoal.swarm.store import DatabaseStore, StoredDatabase


def _read(path: Path) -> str:
    if str(path) == "-":
        return typer.get_text_stream("stdin").read()
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        # Outside `run()`: report it here, or a traceback with exit code 1 escapes.
        fail(f"-f {path}: cannot read: {e}", EXIT_BAD_INPUT)


async def _must_get(store: DatabaseStore, name: str) -> StoredDatabase:
    stored = await store.get(name)
    if stored is None:
        raise BadInput(f"no database named {name!r} (see `shoal get`)")
    return stored


def _member_named(stored: StoredDatabase, to: str | None) -> None:
    """Refuse a `--to` that names no member of the database."""
    name = stored.declaration.name
    members = [names.member_service(name, i) for i in range(stored.declaration.spec.members)]
    if to is not None and to not in members:
        raise BadInput(f"--to: {to!r} is not a member of {name} ({', '.join(members)})")


async def _request_and_wait(
    store: DatabaseStore,
    name: str,
    request: Request,
    done: Callable[[DatabaseStatus], bool],
    timeout: float,
    what: str,
) -> DatabaseStatus:
    """Store `request` on the anchor and wait until the operator's status says `done`."""
    from shoal.swarm.client import poll

    await store.set_request(name, request)

    async def settled() -> bool:
        return done((await _must_get(store, name)).status)

    if not await poll(settled, timeout):
        s = (await _must_get(store, name)).status
        raise Failed(f"{what} did not complete: {s.message or s.state.value}")
    return (await _must_get(store, name)).status


def describe_timeline(s: DatabaseStatus) -> str:
    """`orders-0 -> orders-1 in 0.93 s (noticed +0.00, ..., promoted +0.93)`."""
    tl = s.last_failover
    if tl is None:
        return "-"
    steps = tl.offsets()
    phases = ", ".join(f"{name} +{at:.2f}" for name, at in steps)
    took = f" in {steps[-1][1]:.2f} s" if tl.new_primary and steps else " (in progress)"
    return f"{tl.old_primary or '-'} -> {tl.new_primary or '?'}{took} ({phases})"


def members_table(s: DatabaseStatus) -> Table:
    t = Table(title=f"{s.name} ({s.engine}) — {s.state.value}", title_justify="left")
    for col in ("member", "role", "state", "node", "lag bytes", "lag s"):
        t.add_column(col)
    for m in s.members:
        t.add_row(
            m.name,
            m.role.value,
            m.state.value,
            m.node or "-",
            "-" if m.lag_bytes is None else str(m.lag_bytes),
            "-" if m.lag_seconds is None else f"{m.lag_seconds:.1f}",
        )
    return t


async def wait_healthy(
    store: DatabaseStore, name: str, generation: int, timeout: float
) -> DatabaseStatus:
    """Wait with a live progress line until the database is Healthy at `generation`."""
    from shoal.status import DatabaseState
    from shoal.swarm.client import poll

    last: DatabaseStatus | None = None
    started = time.monotonic()
    with Live(console=err, transient=True, refresh_per_second=4) as live:

        async def check() -> bool:
            nonlocal last
            stored = await store.get(name)
            if stored is None:
                raise Failed(f"{name!r} disappeared while waiting")
            last = stored.status
            ready = f"{last.members_ready}/{stored.declaration.spec.members}"
            live.update(
                f"[bold]{name}[/bold] {last.state.value} {ready} ready "
                f"({time.monotonic() - started:.0f}s) {last.message}"
            )
            if last.state == DatabaseState.LOST:
                raise Failed(f"{name} is {last.state.value}: {last.message}")
            return last.state == DatabaseState.HEALTHY and last.generation >= generation

        ok = await poll(check, timeout)
    if not ok or last is None:
        state = last.state.value if last else "unknown"
        raise Failed(
            f"{name} not Healthy after {timeout:.0f}s (state {state}); see `shoal status {name}`"
        )
    return last


def register(app: typer.Typer) -> None:
    @app.command()
    def apply(
        file: Path = typer.Option(..., "-f", "--file", help="Declaration YAML ('-' for stdin)."),
        wait: bool = typer.Option(False, "--wait", help="Wait until the database is Healthy."),
        timeout: float = typer.Option(600, help="Seconds to wait with --wait."),
    ) -> None:
        """Create or change a database."""
        db = load_or_exit(_read(file))

        async def go(store: DatabaseStore) -> None:
            outcome, generation = await store.apply(db)
            out.print(f"database/{db.name} {outcome.value} (generation {generation})")
            if wait:
                await wait_healthy(store, db.name, generation, timeout)
                out.print(f"database/{db.name} Healthy")

        run(go)

    @app.command()
    def get(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """One line per database: engine, members ready/desired, primary, state."""

        async def go(store: DatabaseStore) -> None:
            dbs = await store.list()
            if as_json:
                typer.echo(json.dumps([d.status.model_dump(mode="json") for d in dbs], indent=2))
                return
            t = Table(box=None)
            for col in ("NAME", "ENGINE", "READY", "PRIMARY", "STATE", "OBSERVED"):
                t.add_column(col)
            for d in dbs:
                s = d.status
                t.add_row(
                    d.name,
                    d.declaration.spec.engine.value,
                    f"{s.members_ready}/{d.declaration.spec.members}",
                    s.primary or "-",
                    s.state.value,
                    _age(s.observed_at) + " ago" if s.observed_at else "-",
                )
            out.print(t)

        run(go)

    @app.command()
    def status(
        name: str,
        as_json: bool = typer.Option(False, "--json", help="Print JSON (the status contract)."),
        watch: bool = typer.Option(False, "--watch", help="Refresh until interrupted."),
    ) -> None:
        """Per member: role, state, node, lag; and the connection string."""

        async def go(store: DatabaseStore) -> None:
            while True:
                stored = await _must_get(store, name)
                if stored.status_error is not None:
                    raise Failed(
                        f"{name}: {stored.status_error}; the operator does not act on this "
                        "database until the anchor's status label is repaired"
                    )
                s = stored.status
                if as_json:
                    typer.echo(json.dumps(s.model_dump(mode="json"), indent=2))
                else:
                    if watch:
                        out.clear()
                    out.print(members_table(s))
                    out.print(f"primary:    {s.primary or '-'}")
                    out.print(f"network:    {s.network}")
                    out.print(f"connection: {s.connection}")
                    if s.message:
                        out.print(f"message:    {s.message}")
                    if s.last_failover is not None:
                        out.print(f"last {s.last_failover.kind}: {describe_timeline(s)}")
                if not watch:
                    return
                await asyncio.sleep(2)

        with contextlib.suppress(KeyboardInterrupt):
            run(go)

    @app.command()
    def switchover(
        name: str,
        to: str | None = typer.Option(None, "--to", help="The member to promote."),
        timeout: float = typer.Option(120, help="Seconds to wait for the new primary."),
    ) -> None:
        """Planned primary change; no acknowledged write is lost."""
        from shoal.request import SwitchoverRequest
        from shoal.status import DatabaseState

        async def go(store: DatabaseStore) -> None:
            stored = await _must_get(store, name)
            _member_named(stored, to)
            old = stored.status.primary
            if stored.status.state != DatabaseState.HEALTHY:
                raise Failed(
                    f"{name} is {stored.status.state.value}; switch over a Healthy database"
                )
            now = await _request_and_wait(
                store,
                name,
                SwitchoverRequest(id=uuid.uuid4().hex[:12], to=to),
                lambda s: s.primary != old and s.state == DatabaseState.HEALTHY,
                timeout,
                "switchover",
            )
            out.print(f"{name}: primary is now {now.primary}")

        run(go)

    @app.command()
    def failover(
        name: str,
        to: str = typer.Option(..., "--to", help="The standby to promote."),
        accept_data_loss: bool = typer.Option(
            False,
            "--accept-data-loss",
            help="Required: writes acknowledged only by an unreachable member may be lost.",
        ),
        timeout: float = typer.Option(120, help="Seconds to wait for the new primary."),
    ) -> None:
        """Force a promotion the safety rules refuse (they wait for a standby that may hold
        the newest acknowledged commits). Logged as an event."""
        if not accept_data_loss:
            err.print(
                "failover: refusing without --accept-data-loss (the member shoal waits for "
                "may hold acknowledged writes that the new primary lacks)"
            )
            raise typer.Exit(EXIT_BAD_INPUT)
        from shoal.request import FailoverRequest
        from shoal.status import DatabaseState

        async def go(store: DatabaseStore) -> None:
            stored = await _must_get(store, name)
            _member_named(stored, to)
            if stored.status.state not in (DatabaseState.UNAVAILABLE, DatabaseState.FAILING_OVER):
                raise BadInput(
                    f"{name} is {stored.status.state.value}: a forced failover is only for a "
                    "database without a writable primary (use `shoal switchover`)"
                )
            await _request_and_wait(
                store,
                name,
                FailoverRequest(id=uuid.uuid4().hex[:12], to=to, accept_data_loss=True),
                lambda s: s.primary == to,
                timeout,
                "forced failover",
            )
            out.print(f"{name}: primary is now {to} (data loss accepted)")

        run(go)

    @app.command()
    def recover(
        name: str,
        force_reconfig: bool = typer.Option(
            False,
            "--force-reconfig",
            help="Required: re-form the database from the members that still answer (a "
            "forced reconfig); writes only the missing members hold are lost.",
        ),
        timeout: float = typer.Option(120, help="Seconds to wait for a primary."),
    ) -> None:
        """Re-form a database that has no primary and cannot elect one from the members
        that still answer (a forced reconfig where the engine has one). Never done by shoal
        on its own; logged as an event. Engines without such a step refuse it."""
        if not force_reconfig:
            err.print(
                "recover: refusing without --force-reconfig (writes that only the members "
                "left out hold are lost)"
            )
            raise typer.Exit(EXIT_BAD_INPUT)
        from shoal.request import RecoverRequest
        from shoal.status import DatabaseState

        async def go(store: DatabaseStore) -> None:
            stored = await _must_get(store, name)
            if stored.status.state != DatabaseState.UNAVAILABLE:
                raise BadInput(
                    f"{name} is {stored.status.state.value}: recover is only for a database "
                    "without a primary (Unavailable)"
                )
            status = await _request_and_wait(
                store,
                name,
                RecoverRequest(id=uuid.uuid4().hex[:12], accept_data_loss=True),
                lambda s: s.primary is not None,
                timeout,
                "recover",
            )
            out.print(f"{name}: re-formed; primary is now {status.primary} (data loss accepted)")

        run(go)

    @app.command()
    def reinit(
        name: str,
        accept_data_loss: bool = typer.Option(
            False, "--accept-data-loss", help="Required: the database's data is gone for good."
        ),
    ) -> None:
        """Start a Lost database again, empty. Needs --accept-data-loss."""
        if not accept_data_loss:
            err.print("reinit: refusing without --accept-data-loss (the old data is gone for good)")
            raise typer.Exit(2)
        from shoal.request import ReinitRequest
        from shoal.status import DatabaseState

        async def go(store: DatabaseStore) -> None:
            stored = await _must_get(store, name)
            if stored.status.state != DatabaseState.LOST:
                raise BadInput(
                    f"{name} is {stored.status.state.value}, not Lost: nothing to reinit"
                )
            await store.set_request(name, ReinitRequest(id=uuid.uuid4().hex[:12]))
            out.print(f"{name}: re-initialisation requested; data loss accepted")

        run(go)

    @app.command()
    def delete(
        name: str,
        wait: bool = typer.Option(False, "--wait", help="Wait until every object is gone."),
        with_secrets: bool = typer.Option(
            False,
            "--with-secrets",
            help="Also remove the Docker secrets `shoal credentials NAME --secret` made "
            "(they are yours, so they are kept without it); refused, changing nothing, "
            "while a service uses one.",
        ),
    ) -> None:
        """Remove the database and everything shoal created for it."""
        from shoal.cli.credentials_secret import credentials_secrets, services_using
        from shoal.swarm.cleanup import leftovers, purge_database
        from shoal.swarm.client import SwarmError, poll

        async def go(store: DatabaseStore) -> None:
            user_secrets = await credentials_secrets(store.client, name)
            if with_secrets:
                used = await services_using(store.client, user_secrets)
                if used:
                    by = "; ".join(f"{s} by {', '.join(svcs)}" for s, svcs in used.items())
                    raise Failed(
                        f"--with-secrets: the secrets are in use ({by}): remove those "
                        f"services first (`docker stack rm`, `docker service rm`); "
                        f"nothing was deleted"
                    )
            exists = await store.mark_deleting(name) or bool(await leftovers(store.client, name))
            if not exists and not (with_secrets and user_secrets):
                raise BadInput(f"no database named {name!r}")
            if exists:
                await purge_database(store.client, name)
                if wait and not await poll(lambda: _purged(store, name), 120, every=1.0):
                    left = ", ".join(await leftovers(store.client, name))
                    raise Failed(f"still present: {left}")
                out.print(f"database/{name} deleted")
            if not user_secrets:
                return
            listed = ", ".join(user_secrets)
            if not with_secrets:
                err.print(
                    f"kept the Docker secrets {listed} (`shoal credentials {name} --secret`): "
                    f"they are yours; `shoal delete {name} --with-secrets` or "
                    f"`docker secret rm` removes them",
                    soft_wrap=True,
                )
                return
            for secret in user_secrets:
                try:
                    await store.client.remove_secret(secret)
                except SwarmError as e:
                    raise Failed(f"could not remove the secret {secret}: {e}") from None
            out.print(f"removed the secrets {listed}")

        run(go)


async def _gone(store: DatabaseStore, name: str) -> bool:
    from shoal.swarm.cleanup import leftovers

    return not await leftovers(store.client, name)


async def _purged(store: DatabaseStore, name: str) -> bool:
    """Gone, or purge again: an operator cycle that was already in flight when the database
    was deleted may have re-created an object. Never touches a database declared again under
    the same name meanwhile (its anchor exists)."""
    from shoal.swarm.cleanup import purge_database

    if await _gone(store, name):
        return True
    if await store.get(name) is None:
        await purge_database(store.client, name)
    return await _gone(store, name)


def load_or_exit(text: str) -> Database:
    from shoal.declaration import DeclarationError, load_declaration

    try:
        return load_declaration(text)
    except DeclarationError as e:
        for line in e.problems:
            err.print(line, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _age(ts: float) -> str:
    if not ts:
        return "-"
    d = max(0, time.time() - ts)
    return f"{d:.0f}s" if d < 120 else f"{d / 60:.0f}m"
