"""Shared plumbing for the benchmarks: statistics, machine info, result files, and small
helpers around the real CLI and the swarm (single node: every member container is local)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import statistics
import string
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shoal import names
from shoal.plugins.postgres.clients import psql_args
from shoal.swarm.client import SwarmClient
from shoal.swarm.store import DatabaseStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SHOAL = [sys.executable, "-c", "import sys; from shoal.cli.main import main; main()"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- statistics -------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of the samples; None when empty."""
    if not samples:
        return None
    xs = sorted(samples)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(samples: Sequence[float]) -> dict[str, Any]:
    xs = [float(x) for x in samples]
    return {
        "n": len(xs),
        "median": statistics.median(xs) if xs else None,
        "p95": percentile(xs, 95),
        "min": min(xs) if xs else None,
        "max": max(xs) if xs else None,
        "samples": xs,
    }


def ok_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs that did not fail (a failed run is `{"run": i, "error": ...}`)."""
    return [r for r in runs if "error" not in r]


def runs_summary(ok: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """The summary of `run[key]` over the runs where it has a value."""
    return summary([r[key] for r in ok if r[key] is not None])


def spread(what: str, s: dict[str, Any]) -> str:
    """One line for a summary: `WHAT: median Xs p95 Ys n=N`."""
    return f"{what}: median {s['median']}s p95 {s['p95']}s n={s['n']}"


def phase_summaries(runs: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Per phase name (in first-seen order), the summary of `run[key][name]` over the runs."""
    names_ = dict.fromkeys(n for r in runs for n in r[key])
    return {n: summary([r[key][n] for r in runs if n in r[key]]) for n in names_}


def timeline_phases(doc: dict[str, Any], kind: str, old: str, t0: float) -> dict[str, float]:
    """The operator's timeline of a failover or switchover away from `old`
    (`status.last_failover`) as seconds after `t0`: one machine, one clock."""
    tl = doc.get("last_failover") or {}
    if tl.get("kind") != kind or tl.get("old_primary") != old:
        return {}
    return {ph["name"]: round(float(ph["at"]) - t0, 3) for ph in tl.get("phases", [])}


# --- machine and result files -----------------------------------------------------------


def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    load = os.getloadavg()
    return {
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "memory_bytes": mem_kib * 1024,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker_version": _cmd(["docker", "version", "--format", "{{.Server.Version}}"]),
        "git_commit": _cmd(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
        "loadavg_at_start": [round(x, 2) for x in load],
        "running_containers": len(_cmd(["docker", "ps", "-q"]).split()),
    }


def write_result(name: str, doc: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    full = {"benchmark": name, "timestamp": stamp, **doc}
    path.write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    log(f"results written to {path.relative_to(ROOT)}")
    return path


# --- names, CLI, status -----------------------------------------------------------------


def unique(prefix: str) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(5))


def shoal(
    *args: str, timeout: float = 900, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOAL, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, input=stdin
    )


def declaration(
    name: str,
    members: int = 3,
    memory: str = "256M",
    cpus: float = 0.5,
    durability: str = "sync",
    unreachable_seconds: float = 10,
) -> str:
    return (
        "apiVersion: shoal/v1\nkind: Database\n"
        f"metadata:\n  name: {name}\n"
        'spec:\n  engine: postgres\n  version: "15"\n'
        f"  members: {members}\n  durability: {durability}\n"
        f"  resources: {{memory: {memory}, cpus: {cpus}}}\n"
        f"  failover: {{unreachableSeconds: {unreachable_seconds:g}}}\n"
    )


def apply(text: str, wait: bool = False, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    args = ["apply", "-f", "-"]
    if wait:
        args += ["--wait", "--timeout", str(timeout)]
    return shoal(*args, stdin=text, timeout=timeout + 60)


def delete(name: str) -> None:
    proc = shoal("delete", name, "--wait", timeout=300)
    if proc.returncode != 0:
        log(f"delete {name}: rc={proc.returncode} {proc.stderr.strip()}")


async def _status(name: str) -> dict[str, Any]:
    async with SwarmClient() as swarm:
        stored = await DatabaseStore(swarm).get(name)
        if stored is None:
            return {}
        doc: dict[str, Any] = stored.status.model_dump(mode="json")
        return doc


def status(name: str) -> dict[str, Any]:
    """What `shoal status NAME --json` prints, read in-process (fast enough to poll at 4 Hz)."""
    try:
        return asyncio.run(_status(name))
    except Exception as e:  # the engine is busy: treat as "not yet"
        log(f"status {name}: {type(e).__name__}: {e}")
        return {}


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.25
) -> tuple[Any, float]:
    """Poll `predicate` until truthy; returns (value, time.time() when it became truthy)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last, time.time()
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def healthy(doc: dict[str, Any], members: int) -> bool:
    ms = doc.get("members") or []
    return (
        doc.get("state") == "Healthy"
        and doc.get("primary") is not None
        and len(ms) == members
        and all(m.get("state") == "running" for m in ms)
    )


def credentials(name: str) -> dict[str, Any]:
    proc = shoal("credentials", name, "--json", timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"credentials {name}: {proc.stderr.strip()}")
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def container_of(member: str) -> str | None:
    out = docker("ps", "-q", "-f", f"label=com.docker.swarm.service.name={member}")
    ids = out.split()
    return ids[0] if ids else None


def psql(member: str, sql: str, timeout: float = 600) -> str:
    """SQL as the superuser on one member, over its local socket."""
    cid = container_of(member)
    if not cid:
        raise RuntimeError(f"no running container for {member}")
    return docker(*psql_args(cid, sql), timeout=timeout)


def operator_container() -> str | None:
    return container_of(names.OPERATOR_SERVICE)


def operator_image() -> str:
    """The running operator's image without its digest ("" when there is none)."""
    image = docker(
        "service", "inspect", names.OPERATOR_SERVICE,
        "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", check=False,
    )  # fmt: skip
    return image.split("@")[0]


def client_image() -> str:
    """An image with Python and psycopg: the one the running operator uses."""
    return operator_image() or names.IMAGE_OPERATOR


# --- runs -------------------------------------------------------------------------------


def create(db: str, text: str, timeout: float = 300) -> None:
    """`shoal apply --wait` of the declaration `text` of `db`; on failure, delete what was
    created and stop the benchmark."""
    proc = apply(text, wait=True, timeout=timeout)
    if proc.returncode != 0:
        delete(db)
        raise SystemExit(f"apply {db} failed: {proc.stderr}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def interrupt_on_signals() -> None:
    """SIGTERM and SIGINT (which background shells ignore) raise KeyboardInterrupt."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def runs_parser(doc: str | None, runs: int, pause: float) -> argparse.ArgumentParser:
    """The arguments every fault benchmark takes: --runs, --memory, --cpus, --pause."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--memory", default="256M")
    ap.add_argument("--cpus", type=float, default=0.5)
    ap.add_argument("--pause", type=float, default=pause, help="seconds between runs")
    return ap


def repeat(
    one_run: Callable[[int], dict[str, Any]],
    runs: int,
    pause: float = 0.0,
    what: str = "run",
    interruptible: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """`one_run(i)` for i = 1..runs, `pause` seconds apart; the first run that fails (the
    database did not recover: later runs would only measure that again) is recorded as
    `{"run": i, "error": ...}` and ends the series. With `interruptible`, KeyboardInterrupt
    ends it too, keeping the runs done so far. Returns the runs and why they stopped early."""
    done: list[dict[str, Any]] = []
    for i in range(1, runs + 1):
        try:
            done.append(one_run(i))
        except (TimeoutError, RuntimeError) as e:
            log(f"{what} {i} failed, stopping: {e}")
            done.append({"run": i, "error": str(e)})
            return done, str(e)
        except KeyboardInterrupt:
            if not interruptible:
                raise
            log("interrupted: writing the runs done so far")
            return done, "interrupted"
        if pause:
            time.sleep(pause)
    return done, None
