"""Helpers for integration tests against the real swarm: the CLI as a user runs it, SQL on
members through `docker exec` (single-node swarm: every member container is local), and a
client on the database's overlay network for acknowledged writes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shoal import names
from shoal.platform.deploy import deploy_operator
from shoal.plugins.postgres.clients import IdsWriter, psql_args
from shoal.swarm.client import SwarmClient

ROOT = Path(__file__).resolve().parents[2]
SHOAL = [sys.executable, "-c", "import sys; from shoal.cli.main import main; main()"]


def shoal(
    *args: str, timeout: float = 600, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOAL, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, input=stdin
    )


def status(name: str) -> dict[str, Any]:
    proc = shoal("status", name, "--json", timeout=60)
    if proc.returncode != 0:
        return {}
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll until `predicate()` is truthy; a generous safety net, not a timing assertion."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def wait_state(name: str, state: str, timeout: float = 300) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        s = status(name)
        return s if s.get("state") == state else None

    return wait_for(check, timeout, f"{name} {state} (now {status(name).get('state')})")  # type: ignore[no-any-return]


def declaration(
    name: str, members: int = 3, durability: str = "sync", unreachable: int = 10, **spec: Any
) -> str:
    extra = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in spec.items())
    return (
        "apiVersion: shoal/v1\nkind: Database\n"
        f"metadata:\n  name: {name}\n"
        "spec:\n  engine: postgres\n"
        f"  members: {members}\n  durability: {durability}\n"
        f"  resources: {{memory: 256M, cpus: 0.5}}\n"
        f"  failover: {{unreachableSeconds: {unreachable}}}\n" + extra
    )


def apply(text: str, tmp: Path) -> None:
    path = tmp / f"decl-{time.monotonic_ns()}.yaml"
    path.write_text(text)
    proc = shoal("apply", "-f", str(path))
    assert proc.returncode == 0, proc.stderr


def container_of(member: str) -> str | None:
    out = subprocess.run(
        ["docker", "ps", "-q", "-f", f"label=com.docker.swarm.service.name={member}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] if out else None


def psql_in(container: str, sql: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run SQL as the superuser in one container over its local socket; the raw result
    (exit status, stdout, stderr with any WARNING) for tests that assert on failures."""
    return subprocess.run(
        ["docker", *psql_args(container, sql)], capture_output=True, text=True, timeout=timeout
    )


def psql(member: str, sql: str, timeout: float = 30) -> str:
    """Run SQL as the superuser on one member, over its local socket."""
    cid = container_of(member)
    assert cid, f"no running container for {member}"
    proc = psql_in(cid, sql, timeout)
    assert proc.returncode == 0, f"psql on {member} failed: {proc.stderr}"
    return proc.stdout.strip()


def row_ids(member: str, table: str) -> set[int]:
    out = psql(member, f"SELECT id FROM {table}")
    return {int(x) for x in out.split()} if out else set()


def on_network(
    network: str, image: str, entrypoint: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`ENTRYPOINT ARGS` in a fresh container of `image` on `network`, where a client of the
    database runs (the operator image has psycopg, the member image psql and python3)."""
    return subprocess.run(
        ["docker", "run", "--rm", "--network", network, "--entrypoint", entrypoint, image,
         *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def service_logs(services: list[str], tail: int = 40) -> str:
    """The last lines each service logged (member agents, the operator), for a failure
    report: the containers are gone by the time anyone reads it."""
    out = []
    for svc in services:
        r = subprocess.run(
            ["docker", "service", "logs", "--raw", "--tail", str(tail), svc],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        out.append(f"---- {svc} (last {tail} lines)\n{r.stdout}{r.stderr}")
    return "\n".join(out)


def ensure_operator(images: Any, replicas: int = 1) -> None:
    async def go() -> None:
        async with SwarmClient() as swarm:
            await deploy_operator(swarm, images.operator, images.members, replicas)

    asyncio.run(go())

    def only_this_image() -> bool:
        # An operator of an earlier image still running may hold the lease and create
        # members from its own member image: wait until every running one is this one.
        running = docker(
            "ps", "-f", f"label=com.docker.swarm.service.name={names.OPERATOR_SERVICE}",
            "--format", "{{.Image}}",
        ).split()  # fmt: skip
        return bool(running) and all(image == images.operator for image in running)

    wait_for(only_this_image, 180, f"only operator containers of {images.operator} to run")


class Writer(IdsWriter):
    """Inserts unique ids through the multi-host URI from a container on the database's
    network; the ids it prints were acknowledged (autocommit INSERT returned). A test reads
    the ids acknowledged so far (`so_far`, for example at the moment of a fault), when each
    reached this process (`acked_at`: containers and lab nodes share this machine's clock),
    and the client's `errors`."""

    def __init__(
        self,
        db: str,
        image: str,
        uri: str,
        table: str,
        seconds: float,
        cancel_after: float | None = None,
        ca: str | None = None,
    ) -> None:
        cfg: dict[str, Any] = {"uri": uri, "table": table, "seconds": seconds, "ca": ca}
        if cancel_after is not None:
            cfg["cancel_after"] = cancel_after
        name = f"writer-{db}-{time.monotonic_ns() % 10**8}"
        super().__init__(names.database_network(db), image, cfg, name, "test-writer")

    def kill(self) -> None:
        self.remove()


def credentials(db: str) -> dict[str, Any]:
    proc = shoal("credentials", db, "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc
