"""`shoal chaos run`: start the client container, inject faults on the suite's schedule,
wait for convergence, check, write the report. Every fault and every container it created
is undone/removed in `finally` (also on SIGINT/SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from shoal import names
from shoal.chaos import dockerapi
from shoal.chaos.checker import MemberRead, check
from shoal.chaos.engines import session_class
from shoal.chaos.fault_names import parse_faults
from shoal.chaos.faults import FaultError, FaultRegistry
from shoal.chaos.history import parse_lines, save_ops
from shoal.chaos.report import build_report, write_report
from shoal.chaos.suite import Suite, schedule
from shoal.swarm import operator_exec
from shoal.swarm.client import SwarmClient, SwarmError

CONFIG_DIR = "/tmp"
CONFIG_NAME = "shoal-chaos.json"
PYTHON = "/opt/shoal/venv/bin/python"


class BadInput(ValueError):
    """Exit code 2: nothing was changed."""


@dataclass
class RunOptions:
    db: str
    suite: Suite
    report_dir: Path
    image: str = names.IMAGE_OPERATOR
    password: str | None = None


async def get_credentials(swarm: SwarmClient, db: str) -> dict[str, Any]:
    """The application password and the CA, derived by the operator: the same call as
    `shoal credentials NAME` (never the CLI found on `PATH`)."""
    try:
        doc = await operator_exec.fetch_credentials(swarm, db)
    except operator_exec.NoSuchDatabase as e:
        raise BadInput(f"--db {db}: {e}") from None
    except (operator_exec.OperatorUnavailable, SwarmError) as e:
        raise BadInput(f"cannot read the credentials of {db}: {e}") from None
    return doc


def client_config(
    opts: RunOptions,
    engine: str,
    port: int,
    hosts: list[str],
    password: str,
    run_id: str,
    ca: str | None = None,
) -> dict[str, Any]:
    s = opts.suite
    return {
        "mode": "workload",
        "engine": engine,
        "endpoint": {
            "hosts": hosts,
            "port": port,
            "user": names.APP_USER,
            "password": password,
            "database": names.APP_DATABASE,
            "connect_timeout": 2,
            "ca": ca,
        },
        "workload": {
            "workload": s.workload,
            "duration": s.duration,
            "concurrency": s.concurrency,
            "rate": s.rate,
            "op_timeout": s.op_timeout,
            "accounts": s.accounts,
            "initial_balance": s.initial_balance,
            "run_id": run_id,
            "seed": s.seed,
        },
        "timeout": s.converge_timeout,
    }


class ChaosAborted(RuntimeError):
    """A fault could not be undone: the run stops rather than go on against a broken system."""


class Runner:
    def __init__(self, swarm: SwarmClient, opts: RunOptions, console: Console) -> None:
        self.swarm = swarm
        self.opts = opts
        self.console = console
        self.run_id = uuid.uuid4().hex[:10]
        self.registry = FaultRegistry(swarm, opts.db, self.run_id)
        self.rng = random.Random(opts.suite.seed)

    async def _start(self, role: str, config: dict[str, Any], network: str) -> str:
        container = await dockerapi.create_container(
            self.swarm,
            name=f"shoal-chaos-{self.run_id}-{role}",
            image=self.opts.image,
            entrypoint=[PYTHON],
            cmd=["-m", "shoal.chaos.client", f"{CONFIG_DIR}/{CONFIG_NAME}"],
            labels=dockerapi.chaos_labels(self.run_id, "client", self.opts.db),
            network_mode=network,
            files={CONFIG_NAME: json.dumps(config).encode()},
        )
        await self.swarm.start_container(container)
        return container

    async def _finish(self, container: str, limit: float, what: str) -> str:
        code = await asyncio.wait_for(self.swarm.wait_container(container), limit)
        out = await self.swarm.container_logs(container, stdout=True, stderr=False)
        if code != 0:
            err = await self.swarm.container_logs(container, stdout=False, stderr=True)
            raise RuntimeError(f"{what} exited {code}: {err.strip()[-500:]}")
        return out

    async def _faults(self, started: float) -> None:
        s = self.opts.suite
        plan = schedule(s)
        for n, (at, name) in enumerate(plan, 1):
            with self.console.status(f"[{n}/{len(plan)}] next fault {name}") as st:
                while (wait := started + at - time.time()) > 0:
                    st.update(f"[{n}/{len(plan)}] {name} in {wait:.0f}s")
                    await asyncio.sleep(min(wait, 1.0))
            try:
                fault = await self.registry.inject_all(parse_faults(name), self.rng)
            except (FaultError, dockerapi.ChaosDockerError) as e:
                self.console.print(f"[yellow]skipped {name}: {e}[/yellow]")
                continue
            except SwarmError as e:  # one failed injection does not end the run
                self.console.print(f"[yellow]skipped {name}: Docker said {e.message}[/yellow]")
                continue
            self.console.print(f"injected {name} on {fault.target_names}")
            await asyncio.sleep(s.fault_duration)
            try:
                await self.registry.undo(fault)
            except FaultError as e:  # e.g. a killed lab node that did not come back
                raise ChaosAborted(
                    f"undoing {name} on {fault.target_names} failed, so the next faults would "
                    f"hit a system that is not whole: {e}"
                ) from None

    async def run(self) -> tuple[int, dict[str, Any]]:
        opts, s = self.opts, self.opts.suite
        for f in s.faults:
            parse_faults(f)
        try:
            status = await dockerapi.database_status(self.swarm, opts.db, not_found_wait=0)
        except dockerapi.ChaosDockerError as e:
            raise BadInput(f"--db {opts.db}: no such database ({e})") from None
        session = session_class(status.engine)
        if session is None:
            raise BadInput(f"--db {opts.db}: engine {status.engine} has no chaos client yet")
        hosts = [m.name for m in status.members] or [
            names.member_service(opts.db, i) for i in range(max(status.members_desired, 1))
        ]
        network = status.network or names.database_network(opts.db)
        # With --password-file the operator is not asked: the client then encrypts but
        # cannot verify the members' certificates (no CA).
        doc = {} if opts.password else await get_credentials(self.swarm, opts.db)
        password = opts.password or str(doc["password"])
        config = client_config(
            opts, status.engine, session.port, hosts, password, self.run_id, ca=doc.get("ca")
        )
        self.console.print(
            f"chaos run {self.run_id}: {opts.db} ({', '.join(hosts)}), "
            f"suite {s.name}, {s.workload} workload for {s.duration:.0f}s"
        )
        client = await self._start("client", config, network)
        started = time.time()
        await self._faults(started)
        with self.console.status("waiting for the client to finish"):
            out = await self._finish(client, s.duration + 600, "chaos client")
        ops = list(parse_lines(out.splitlines()))
        with self.console.status(f"waiting up to {s.converge_timeout:.0f}s for convergence"):
            conv = await self._start("checker", {**config, "mode": "converge"}, network)
            conv_out = await self._finish(conv, s.converge_timeout + 120, "convergence check")
        final = json.loads(conv_out.strip().splitlines()[-1])
        reads = {m: MemberRead.from_json(r) for m, r in final["reads"].items()}
        primary = (await dockerapi.database_status(self.swarm, opts.db)).primary
        records = [f.record() for f in self.registry.history]
        result = check(
            ops,
            reads,
            workload=s.workload,
            primary=primary,
            faults=records,
            bank_total=s.accounts * s.initial_balance if s.workload == "bank" else None,
        )
        meta = {
            "db": opts.db,
            "run_id": self.run_id,
            "suite": s.name,
            "duration": s.duration,
            "started": started,
            "converge_seconds": final["waited"],
        }
        report = build_report(result, ops, meta, bool(final["converged"]))
        opts.report_dir.mkdir(parents=True, exist_ok=True)
        save_ops(ops, opts.report_dir / "history.jsonl")
        write_report(opts.report_dir, report, ops, records)
        return (0 if result.valid else 1), report

    async def cleanup(self) -> list[str]:
        errors = await self.registry.undo_all()
        for cid in await dockerapi.list_run_containers(self.swarm, self.run_id):
            try:
                await dockerapi.remove_container(self.swarm, cid)
            except SwarmError as e:
                errors.append(f"remove {cid[:12]}: {e.message}")
        return errors


async def run_chaos(opts: RunOptions, console: Console) -> tuple[int, dict[str, Any] | None]:
    """Run a suite; on SIGINT/SIGTERM the run is cancelled and everything is undone."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupted: list[int] = []

    def _interrupt() -> None:  # cancel once: a second Ctrl-C must not abort the clean-up
        if not interrupted:
            interrupted.append(1)
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _interrupt)
    swarm = SwarmClient()
    runner = Runner(swarm, opts, console)
    try:
        return await runner.run()
    finally:
        errors = await asyncio.shield(runner.cleanup())
        for e in errors:
            console.print(f"[red]cleanup: {e}[/red]")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await swarm.close()
