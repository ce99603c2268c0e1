"""`shoal up` (the embedded default) and `shoal down`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from shoal import names
from shoal.cli.common import REGISTRY_OPTION, check_registry, err, fail, out, run
from shoal.cli.db import load_or_exit, members_table, wait_healthy

if TYPE_CHECKING:  # imported where a command runs: `shoal --help` needs neither
    from shoal.swarm.client import SwarmClient
    from shoal.swarm.store import DatabaseStore


def _say(message: str) -> None:
    err.print(f"[bold cyan]shoal up:[/bold cyan] {message}")


async def operator_page(swarm: SwarmClient) -> str:
    from shoal.swarm.operator_exec import operator_services

    """Where the operator's status page answers: port 9650 on the node running it (host-mode
    publish), 127.0.0.1 on a single-node swarm."""
    nodes = await swarm.nodes()
    if len(nodes) <= 1:
        return f"http://127.0.0.1:{names.OPERATOR_PORT}/"
    services = await operator_services(swarm) or [names.OPERATOR_SERVICE]
    running = await swarm.tasks(service=services, **{"desired-state": "running"})
    on = {str(t.get("NodeID")) for t in running}
    for node in nodes:
        address = str(node.get("Status", {}).get("Addr") or "")
        if node.get("ID") in on and address:
            return f"http://{address}:{names.OPERATOR_PORT}/"
    return f"port {names.OPERATOR_PORT} of the manager that runs {names.OPERATOR_SERVICE}"


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        file: Path | None = typer.Option(
            None, "-f", "--file", help="Declaration to apply (default: the embedded example)."
        ),
        timeout: float = typer.Option(600, help="Seconds to wait for Healthy."),
        with_monitoring: bool = typer.Option(
            False, "--with-monitoring", help="Also run Prometheus with shoal's alert rules."
        ),
        registry: str | None = REGISTRY_OPTION,
    ) -> None:
        """Engine, swarm, images, operator, the example database; waits until Healthy."""
        from shoal.platform.deploy import install_operator, operator_http_token, stack_operators
        from shoal.platform.distribution import DistributionError
        from shoal.platform.engine import PlatformError, ensure_platform
        from shoal.platform.images import build_all

        check_registry(registry)
        text = (
            file.read_text()
            if file
            else (resources.files("shoal") / "data" / "default-database.yaml").read_text()
        )
        db = load_or_exit(text)
        try:
            ensure_platform(_say)
            images = build_all(progress=_say)
        except PlatformError as e:
            err.print(f"[red]error:[/red] {e}")
            raise typer.Exit(1) from None

        async def go(store: DatabaseStore) -> None:
            stacked = await stack_operators(store.client)
            if stacked:
                # The user runs the operator as a stack (deploy/stack.yml): theirs to update.
                stacks = ", ".join(sorted(set(stacked.values())))
                _say(f"the operator runs as the Docker stack {stacks}: leaving it as it is")
            else:
                _say("deploying the operator")
                try:
                    await install_operator(store.client, images, registry, _say)
                except DistributionError as e:
                    fail(str(e))
            if with_monitoring:
                from shoal.platform.monitoring import build_prometheus_image, deploy_monitoring

                _say("building and deploying Prometheus")
                build_prometheus_image(images.base)
                token = await operator_http_token(store.client)
                url = await deploy_monitoring(store.client, http_token_secret=token)
                _say(f"Prometheus: {url}")
            outcome, generation = await store.apply(db)
            _say(f"database/{db.name} {outcome.value}; waiting until Healthy")
            status = await wait_healthy(store, db.name, generation, timeout)
            out.print(members_table(status))
            out.print(f"\n[bold green]{db.name} is Healthy.[/bold green]")
            out.print(f"connection (no password): {status.connection}")
            out.print(f"with the password:        shoal credentials {db.name}")
            out.print(
                f"the CA to verify it by:   shoal credentials {db.name} --ca {db.name}-ca.crt"
            )
            page = await operator_page(store.client)
            out.print(f"status:                   shoal status {db.name}   (or {page})")
            out.print(f"clients join the overlay network {status.network}")

        run(go)

    @app.command()
    def down() -> None:
        """Remove everything shoal created; the swarm itself is left alone."""
        from shoal.swarm.cleanup import purge_everything

        async def go(store: DatabaseStore) -> None:
            await purge_everything(store.client)
            out.print("removed every shoal service, network and secret")

        run(go)
