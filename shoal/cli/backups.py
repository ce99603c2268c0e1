"""`shoal backups NAME` and `shoal restore NEW --from NAME [--to TIME | --to-latest]`
(docs/backup.md).

`backups` asks the archive itself: a one-off Swarm job of the database's member image, with
the members' environment and the user's backup secrets, prints what the bucket holds. It
works in every state, `Lost` included (no member needs to run). `restore` declares a new
database whose first member bootstraps from the source's archive.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from shoal import names
from shoal.cli.common import BadInput, Failed, out, run

if TYPE_CHECKING:
    from shoal.swarm.client import JSON, SwarmApi
    from shoal.swarm.store import DatabaseStore, StoredDatabase

JOB_TIMEOUT = 180.0
ROLE_JOB = "backup-list"


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _source(store: DatabaseStore, name: str) -> StoredDatabase:
    stored = await store.get(name)
    if stored is None:
        raise BadInput(
            f"no database named {name!r} (see `shoal get`); a deleted database's archive can "
            "still be restored with a declaration that has spec.restore (docs/backup.md)"
        )
    if stored.declaration.spec.backup is None:
        raise BadInput(f"{name} declares no spec.backup: it has no archive")
    return stored


async def _job_spec(swarm: SwarmApi, stored: StoredDatabase, command: tuple[str, ...]) -> JSON:
    from shoal.operator.members import backup_secrets, secret_mount
    from shoal.plugins.base import ActionFailed
    from shoal.plugins.registry import engine_plugin

    db = stored.declaration
    plugin = engine_plugin(db.spec.engine.value)
    # The image and networks the members run with (on a multi-node swarm the image is the
    # registry's copy every node can pull).
    member = await swarm.service(names.member_service(db.name, 0))
    template = (member or {}).get("Spec", {}).get("TaskTemplate", {})
    image = template.get("ContainerSpec", {}).get("Image") or plugin.member_image()
    networks = [{"Target": n["Target"]} for n in template.get("Networks", [])]
    if not networks:
        control = await swarm.network(names.CONTROL_NETWORK)
        if control is not None:
            networks = [{"Target": control["Id"]}]
    try:  # the members' own lookup and mounts of the user's backup secrets
        secrets = [secret_mount(*found) for found in await backup_secrets(swarm, db)]
    except ActionFailed as e:
        raise Failed(str(e)) from None
    return {
        "Name": f"shoal-backups-{db.name}-{uuid.uuid4().hex[:6]}",
        "Labels": {names.LABEL_MANAGED: "true", names.LABEL_ROLE: ROLE_JOB},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                "Command": list(command),
                "Env": list(plugin.member_env(db)),
                "Secrets": secrets,
                "Labels": {names.LABEL_MANAGED: "true", names.LABEL_ROLE: ROLE_JOB},
            },
            "RestartPolicy": {"Condition": "none"},
            "Networks": networks,
        },
        "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
    }


async def _service_logs(service: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "docker", "service", "logs", "--raw", service,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise Failed(f"docker service logs {service}: {stderr.decode(errors='replace').strip()}")
    return stdout.decode(errors="replace")


async def list_archive(swarm: SwarmApi, stored: StoredDatabase) -> list[dict[str, Any]]:
    from shoal.plugins.registry import engine_plugin

    command = engine_plugin(stored.declaration.spec.engine.value).backup_list_command
    if command is None:
        raise BadInput(f"engine {stored.declaration.spec.engine.value} keeps no backups yet")
    spec = await _job_spec(swarm, stored, command)
    service = spec["Name"]
    await swarm.create_service(spec)
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            tasks = await swarm.tasks(service=service)
            states = [t.get("Status", {}).get("State", "") for t in tasks]
            if "complete" in states:
                state = "complete"
                break
            if any(s in ("failed", "rejected") for s in states):
                state = "failed"
                break
            await asyncio.sleep(0.5)
        logs = await _service_logs(service)
    finally:
        await swarm.remove_service(service)
    if state != "complete":
        tail = " | ".join(logs.strip().splitlines()[-3:])
        raise Failed(f"listing the archive failed ({state or 'timed out'}): {tail}")
    for line in reversed(logs.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                found: list[dict[str, Any]] = json.loads(line)["backups"]
                return found
            except (ValueError, KeyError):
                break
    raise Failed("listing the archive printed no backups list")


def register(app: typer.Typer) -> None:
    @app.command()
    def backups(
        name: str = typer.Argument(..., help="The database."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """List a database's base backups in its archive and the window it can be
        restored to."""

        async def go(store: DatabaseStore) -> None:
            stored = await _source(store, name)
            found = await list_archive(store.client, stored)
            done = sorted(
                (b for b in found if b.get("status") == "DONE" and b.get("end_at")),
                key=lambda b: b["end_at"],
            )
            status = stored.status.backup
            window = {
                "from": done[0]["end_at"] if done else None,
                "to": status.archived_at if status is not None else None,
            }
            if as_json:
                typer.echo(
                    json.dumps(
                        {
                            "database": name,
                            "archive": status.destination if status else None,
                            "backups": found,
                            "recoverable": window,
                        },
                        indent=2,
                    )
                )
                return
            t = Table(box=None)
            for col in ("BACKUP", "STATUS", "BEGIN", "END", "TIMELINE", "FROM"):
                t.add_column(col)
            for b in sorted(found, key=lambda b: b.get("begin_at") or 0.0):
                t.add_row(
                    str(b.get("id")),
                    str(b.get("status")),
                    _when(b.get("begin_at")),
                    _when(b.get("end_at")),
                    str(b.get("timeline")),
                    "standby" if b.get("from_standby") else "primary",
                )
            out.print(t)
            if window["from"] is None:
                out.print("recoverable: nothing yet (no complete base backup)")
            else:
                newest = _when(window["to"]) if window["to"] else "the newest archived WAL"
                out.print(f"recoverable: from {_when(window['from'])} to {newest}")

        run(go)

    @app.command()
    def restore(
        new_name: str = typer.Argument(..., metavar="NEW_NAME", help="The new database."),
        source: str = typer.Option(..., "--from", help="The database whose archive to use."),
        to: str | None = typer.Option(
            None,
            "--to",
            help="Replay up to this time (RFC 3339 with a zone, e.g. 2026-12-06T07:30:00Z).",
        ),
        to_latest: bool = typer.Option(
            False, "--to-latest", help="Replay every archived WAL (the default)."
        ),
        wait: bool = typer.Option(False, "--wait", help="Wait until the new database is Healthy."),
        timeout: float = typer.Option(1800, help="Seconds to wait with --wait."),
    ) -> None:
        """Create NEW_NAME from the archive of another database (point in time)."""
        if to is not None and to_latest:
            raise typer.BadParameter("give --to TIME or --to-latest, not both", param_hint="--to")

        async def go(store: DatabaseStore) -> None:
            from shoal.cli.db import wait_healthy
            from shoal.declaration import DeclarationError, validate_document

            stored = await _source(store, source)
            if await store.get(new_name) is not None:
                raise BadInput(f"NEW_NAME: a database named {new_name!r} exists already")
            document = stored.declaration.to_document()
            document["metadata"] = {"name": new_name}
            document["spec"].pop("restore", None)
            document["spec"]["restore"] = {"from": source, "to": to or "latest"}
            # A port published on every node belongs to the source (which may still run).
            document["spec"].pop("expose", None)
            try:
                db = validate_document(document)
            except DeclarationError as e:
                raise DeclarationError(
                    [
                        line.replace("spec.restore.to:", "--to:").replace(
                            "metadata.name:", "NEW_NAME:"
                        )
                        for line in e.problems
                    ]
                ) from None
            outcome, generation = await store.apply(db)
            out.print(
                f"database/{new_name} {outcome.value} (generation {generation}): restoring "
                f"{source}'s archive to {db.spec.restore.to if db.spec.restore else 'latest'}"
            )
            if wait:
                await wait_healthy(store, new_name, generation, timeout)
                out.print(f"database/{new_name} Healthy")

        run(go)
