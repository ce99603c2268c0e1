"""`shoal operator ...` and `shoal credentials`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from shoal import names
from shoal.cli.common import (
    EXIT_BAD_INPUT,
    REGISTRY_OPTION,
    BadInput,
    Failed,
    check_registry,
    err,
    fail,
    out,
    run,
)
from shoal.cli.credentials_secret import (
    SecretExists,
    ca_path,
    check_secret_name,
    store_credentials,
)

# Imported where a command runs: `shoal --help` and start-up need none of them (the
# credentials' cryptography, the Docker client).
if TYPE_CHECKING:
    from shoal.swarm.store import DatabaseStore

app = typer.Typer(help="Deploy the operator service, or run its process.", no_args_is_help=True)


async def follow_token_in_monitoring(store: DatabaseStore) -> bool:
    """Point a running shoal Prometheus at the operator's current token (or none); True
    when it had to change."""
    from shoal.platform.deploy import mounted_http_token, operator_http_token
    from shoal.platform.monitoring import PROMETHEUS_SERVICE, deploy_monitoring

    prometheus = await store.client.service(PROMETHEUS_SERVICE)
    if prometheus is None:
        return False
    token = await operator_http_token(store.client)
    if mounted_http_token(prometheus["Spec"]) == token:
        return False
    image = str(prometheus["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])
    await deploy_monitoring(store.client, image=image, http_token_secret=token)
    return True


def read_http_token(path: Path) -> str:
    """The token in `path`, or exit 2 naming what is wrong with it."""
    from shoal.operator.http_auth import token_problems

    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        fail(f"--http-token-file {path}: cannot read it: {e}", EXIT_BAD_INPUT)
    problems = token_problems(text)
    if problems:
        fail(f"--http-token-file {path}: {problems[0]}", EXIT_BAD_INPUT)
    return text


@app.command("deploy")
def deploy(
    replicas: int = typer.Option(
        1, min=1, max=1, help="Operator replicas (host-mode port: one per node)."
    ),
    image: str | None = typer.Option(
        None, help="Operator image (default: the one built from this tree)."
    ),
    registry: str | None = REGISTRY_OPTION,
    publish: bool = typer.Option(
        True,
        "--publish/--no-publish",
        help="Publish port 9650 (host mode, on the node running the operator only).",
    ),
    http_token_file: Path | None = typer.Option(
        None,
        "--http-token-file",
        help="Require this bearer token (the file's content) on every HTTP route but "
        "/healthz. Without it or --no-http-token, the running operator's token is kept.",
    ),
    no_http_token: bool = typer.Option(
        False, "--no-http-token", help="Serve HTTP without a token again."
    ),
) -> None:
    """Create or update the operator service (builds the images when missing; on a
    multi-node swarm, pushes them where every node can pull them)."""
    from dataclasses import replace

    from shoal.platform.deploy import (
        KEEP,
        HttpToken,
        install_operator,
        stack_operator_problem,
        stack_operators,
    )
    from shoal.platform.distribution import DistributionError
    from shoal.platform.images import build_all

    check_registry(registry)
    http_token: HttpToken = KEEP
    if http_token_file is not None and no_http_token:
        fail("--http-token-file and --no-http-token exclude each other", EXIT_BAD_INPUT)
    if http_token_file is not None:
        http_token = read_http_token(http_token_file)
    elif no_http_token:
        http_token = None
    images = build_all()
    if image:
        images = replace(images, operator=image)

    async def go(store: DatabaseStore) -> None:
        problem = stack_operator_problem(await stack_operators(store.client))
        if problem is not None:
            raise BadInput(problem)
        try:
            placed, changed = await install_operator(
                store.client,
                images,
                registry,
                progress=lambda m: out.print(m),
                replicas=replicas,
                publish=publish,
                http_token=http_token,
            )
        except DistributionError as e:
            fail(str(e))
        pulled = placed.images.operator
        out.print(f"operator {'deployed' if changed else 'unchanged'}: {pulled}")
        if await follow_token_in_monitoring(store):
            out.print("Prometheus now scrapes with the operator's HTTP token setting")

    run(go)


@app.command("prepare")
def prepare(
    registry: str | None = REGISTRY_OPTION,
    image: str | None = typer.Option(
        None, help="Operator image (default: the one built from this tree)."
    ),
) -> None:
    """Make what `docker stack deploy -c deploy/stack.yml` needs and cannot create itself
    (the images, pushed where every node pulls them on a multi-node swarm; the control
    network; the operator key), then print the stack's variables as `export` lines:
    eval "$(shoal operator prepare)" && docker stack deploy -c deploy/stack.yml shoal"""
    import shlex
    from dataclasses import replace

    from shoal.platform.deploy import prepare_stack
    from shoal.platform.distribution import DistributionError
    from shoal.platform.images import build_all

    check_registry(registry)
    images = build_all(progress=lambda m: err.print(m))
    if image:
        images = replace(images, operator=image)

    async def go(store: DatabaseStore) -> None:
        try:
            variables = await prepare_stack(
                store.client, images, registry, progress=lambda m: err.print(m)
            )
        except DistributionError as e:
            fail(str(e))
        for key, value in variables.items():
            typer.echo(f"export {key}={shlex.quote(value)}")
        err.print(
            "# the operator key and the control network exist; now: "
            "docker stack deploy -c deploy/stack.yml shoal",
            style="dim",
        )

    run(go)


@app.command("run")
def run_cmd(
    log_format: str = typer.Option("text", "--log-format", help="text or json"),
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """The operator process (what the operator service runs)."""
    from shoal.logging_setup import configure_logging
    from shoal.operator.runtime import run_operator

    if log_format not in ("text", "json"):
        fail("--log-format: must be text or json", EXIT_BAD_INPUT)
    configure_logging(
        "json" if log_format == "json" else "text",
        getattr(logging, log_level.upper(), logging.INFO),
    )
    run_operator()


def credentials_document(stored: Any, key: bytes) -> dict[str, Any]:
    from shoal.credentials import DatabaseCredentials
    from shoal.plugins.registry import engine_plugin

    creds = DatabaseCredentials.derive(key, stored.uid)
    plugin = engine_plugin(stored.declaration.spec.engine.value)
    return {
        "name": stored.name,
        "user": names.APP_USER,
        "password": creds.app,
        "database": names.APP_DATABASE,
        "uri": plugin.connection(stored.declaration, creds.app),
        "network": names.database_network(stored.name),
        "ca": creds.ca.cert_pem,
    }


@app.command("credentials", hidden=True)
def credentials_inside(name: str) -> None:
    """Inside the operator container: derive a database's credentials from the key."""
    from shoal.credentials import load_operator_key

    key = load_operator_key()

    async def go(store: DatabaseStore) -> None:
        stored = await store.get(name)
        if stored is None:
            raise BadInput(f"no database named {name!r}")
        typer.echo(json.dumps(credentials_document(stored, key)))

    run(go)


async def fetch_credentials(store: DatabaseStore, name: str) -> dict[str, Any]:
    from shoal.swarm import operator_exec

    """Ask the operator (the only holder of the key) through `docker exec`."""
    try:
        return await operator_exec.fetch_credentials(store.client, name)
    except operator_exec.NoSuchDatabase as e:
        raise BadInput(str(e)) from None
    except operator_exec.OperatorUnavailable as e:
        raise Failed(str(e)) from None


def write_ca(path: Path, pem: str) -> str:
    """Write the CA certificate (public: readable by all); returns the absolute path."""
    target = path.expanduser().absolute()
    try:
        target.write_text(pem)
    except OSError as e:
        raise BadInput(f"--ca: cannot write {target}: {e.strerror or e}") from None
    return str(target)


async def uri_with_ca(store: DatabaseStore, name: str, password: str, ca_file: str) -> str:
    """The connection URI naming `ca_file` for verifying the members' certificates, in the
    engine's own words (`EnginePlugin.connection`: sslrootcert=, tlsCAFile=, ...)."""
    from shoal.plugins.registry import engine_plugin

    stored = await store.get(name)
    if stored is None:
        raise BadInput(f"no database named {name!r}")
    try:
        plugin = engine_plugin(stored.declaration.spec.engine.value)
    except LookupError as e:
        raise Failed(str(e)) from None
    return plugin.connection(stored.declaration, password, ca_file)


async def connect_hint(store: DatabaseStore, name: str, uri: str) -> str | None:
    """The engine's command for an interactive session on `uri` (`EnginePlugin.connect_hint`);
    None when it suggests none or its plugin is not installed here."""
    from shoal.plugins.registry import engine_plugin

    stored = await store.get(name)
    if stored is None:
        return None
    try:
        plugin = engine_plugin(stored.declaration.spec.engine.value)
    except LookupError:
        return None
    return plugin.connect_hint(uri)


def register(root: typer.Typer) -> None:
    @root.command()
    def credentials(
        name: str,
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        ca: Path | None = typer.Option(
            None,
            "--ca",
            help="Write the database's CA certificate to this file; the URI then names it "
            "for verifying the members' certificates.",
            dir_okay=False,
        ),
        secret: str | None = typer.Option(
            None,
            "--secret",
            help="Also store the URI as the Docker secret SECRET (and the CA as SECRET-ca) "
            "for an application service; they are yours: `shoal delete` leaves them.",
        ),
    ) -> None:
        """The connection URI with the application user's password (TLS, verify-full)."""
        if secret is not None and (problem := check_secret_name(secret)) is not None:
            fail(problem, EXIT_BAD_INPUT)

        async def go(store: DatabaseStore) -> None:
            doc = await fetch_credentials(store, name)
            if secret is not None:
                uri = await uri_with_ca(store, name, doc["password"], ca_path(secret))
                try:
                    made = await store_credentials(store.client, secret, name, uri, doc["ca"])
                except SecretExists as e:
                    raise BadInput(str(e)) from None
                err.print(
                    f"# stored as the Docker secrets {made[0]} (the URI) and {made[1]} "
                    f"(the CA): docker service create --network {doc['network']} "
                    f"--secret {made[0]} --secret {made[1]} ... reads /run/secrets/{made[0]}",
                    style="dim",
                )
            ca_file = write_ca(ca, doc["ca"]) if ca is not None else None
            if ca_file is not None:
                doc["uri"] = await uri_with_ca(store, name, doc["password"], ca_file)
            if as_json:
                typer.echo(json.dumps(doc, indent=2))
                return
            typer.echo(doc["uri"])
            hint = (
                f"# with the CA in {ca_file}"
                if ca_file is not None
                else f"# the members' certificates verify against the CA: "
                f"`shoal credentials {name} --ca FILE` writes it"
            )
            command = await connect_hint(store, name, doc["uri"])
            if command is not None:
                hint += (
                    f"\n# from a container on the network {doc['network']}, e.g.\n"
                    f"# docker run --rm -it --network {doc['network']} {names.IMAGE_BASE} "
                    f"{command}"
                )
            out.print(hint, style="dim")

        run(go)


@app.command("snapshot", hidden=True)
def snapshot(name: str) -> None:
    """Inside the operator container: print what the operator observes of a database (every
    member's probe as the engine reports it, and its Swarm task), as JSON. Used to record
    real observations for the planner's unit tests, and for debugging."""
    from shoal.credentials import DatabaseCredentials, load_operator_key
    from shoal.plugins.base import member_http_session
    from shoal.plugins.registry import engine_plugin

    key = load_operator_key()

    async def go(store: DatabaseStore) -> None:
        stored = await store.get(name)
        if stored is None:
            raise BadInput(f"no database named {name!r}")
        creds = DatabaseCredentials.derive(key, stored.uid)
        plugin = engine_plugin(stored.declaration.spec.engine.value)
        members = [names.member_service(name, i) for i in range(stored.declaration.spec.members)]
        services = await store.client.services_of(name)
        tasks = await store.client.tasks(
            service=[s["Spec"]["Name"] for s in services if s["Spec"]["Name"] in members]
        )
        probes: dict[str, Any] = {}
        async with member_http_session() as http:
            for m in members:
                probes[m] = await plugin.probe_document(http, m, creds)
        doc = {
            "declaration": stored.declaration.to_document(),
            "status": stored.status.model_dump(mode="json"),
            "probes": probes,
            "tasks": {
                t["ServiceID"] + ":" + t["ID"]: {
                    "state": t["Status"]["State"],
                    "desired": t["DesiredState"],
                    "version": t["Version"]["Index"],
                }
                for t in tasks
            },
        }
        typer.echo(json.dumps(doc, indent=1, sort_keys=True))

    run(go)
