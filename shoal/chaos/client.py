"""`python -m shoal.chaos.client CONFIG` - the program that runs inside the chaos client
container (the operator image) on the database's overlay network.

CONFIG is the path of a JSON file copied into the container before it starts (or `-` for
stdin); it holds the password, which therefore never appears in an environment variable, a
label or a command line. Modes:

- `workload`: run the `set` or `bank` workload, print the history as JSONL (stdout or `out`),
  progress lines on stderr.
- `converge`: read every member directly until they all hold the same data (or the timeout
  expires) and print one JSON object: {"converged", "waited", "reads": {member: {...}}}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import IO, Any

from shoal.chaos.engines import Endpoint, EngineSession, connect
from shoal.chaos.history import Op
from shoal.chaos.workload import WorkloadConfig, run_workload


def load_config(arg: str) -> dict[str, Any]:
    text = sys.stdin.read() if arg == "-" else Path(arg).read_text(encoding="utf-8")
    cfg = json.loads(text)
    if not isinstance(cfg, dict):
        raise ValueError("config must be a JSON object")
    return cfg


CA_FILE = "/tmp/shoal-chaos-ca.crt"


def endpoint_from(cfg: dict[str, Any]) -> Endpoint:
    ep = cfg["endpoint"]
    ca_file = None
    if ep.get("ca"):
        Path(CA_FILE).write_text(str(ep["ca"]), encoding="utf-8")
        ca_file = CA_FILE
    return Endpoint(
        hosts=tuple(ep["hosts"]),
        port=int(ep["port"]),
        user=str(ep["user"]),
        password=str(ep["password"]),
        database=str(ep["database"]),
        connect_timeout=int(ep.get("connect_timeout", 2)),
        ca_file=ca_file,
    )


def engine_of(cfg: dict[str, Any]) -> str:
    """The engine whose plugin provides the session (shoal/chaos/engines.py: `connect`)."""
    engine = cfg.get("engine")
    if not isinstance(engine, str) or not engine:
        raise ValueError("config must name the database's engine")
    return engine


def workload_from(cfg: dict[str, Any]) -> WorkloadConfig:
    known = {f.name for f in fields(WorkloadConfig)}
    return WorkloadConfig(**{k: v for k, v in cfg.get("workload", {}).items() if k in known})


async def read_member(engine: str, ep: Endpoint, host: str, limit: float) -> dict[str, Any]:
    """Everything the checker needs from one member, read directly from it."""
    session: EngineSession | None = None
    try:
        session = await asyncio.wait_for(connect(engine, ep, host), limit)
        ids = await asyncio.wait_for(session.read_set(), limit)
        balances = await asyncio.wait_for(session.read_balances(), limit)
        return {"ids": ids, "balances": {str(k): v for k, v in balances.items()}, "error": None}
    except (TimeoutError, Exception) as e:
        return {"ids": None, "balances": None, "error": f"{type(e).__name__}: {e}"[:300]}
    finally:
        if session is not None:
            await session.close()


def agree(reads: dict[str, dict[str, Any]]) -> bool:
    """Every member answered and they all hold the same rows and balances."""
    if not reads or any(r["error"] is not None for r in reads.values()):
        return False
    first = next(iter(reads.values()))
    return all(
        r["ids"] == first["ids"] and r["balances"] == first["balances"] for r in reads.values()
    )


async def converge(
    engine: str, ep: Endpoint, wait_seconds: float, interval: float = 1.0
) -> dict[str, Any]:
    started = time.time()
    while True:
        results = await asyncio.gather(*(read_member(engine, ep, h, 10.0) for h in ep.hosts))
        reads = dict(zip(ep.hosts, results, strict=True))
        done = agree(reads)
        if done or time.time() - started >= wait_seconds:
            return {"converged": done, "waited": time.time() - started, "reads": reads}
        print(f"converge: waiting ({time.time() - started:.0f}s)", file=sys.stderr, flush=True)
        await asyncio.sleep(interval)


async def _workload(cfg: dict[str, Any], out: IO[str]) -> int:
    engine = engine_of(cfg)
    ep = endpoint_from(cfg)
    wcfg = workload_from(cfg)
    last = [time.time()]
    count = [0]

    def emit(op: Op) -> None:
        out.write(op.to_json() + "\n")
        count[0] += 1
        if time.time() - last[0] >= 5:
            last[0] = time.time()
            out.flush()
            print(f"progress: {count[0]} ops", file=sys.stderr, flush=True)

    counters = await run_workload(wcfg, lambda: connect(engine, ep), emit)
    out.flush()
    print(
        f"done: ok={counters.ok} fail={counters.fail} unknown={counters.unknown}",
        file=sys.stderr,
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m shoal.chaos.client CONFIG.json|-", file=sys.stderr)
        return 2
    cfg = load_config(args[0])
    mode = cfg.get("mode", "workload")
    if mode == "workload":
        target = cfg.get("out", "-")
        if target == "-":
            return asyncio.run(_workload(cfg, sys.stdout))
        with open(target, "w", encoding="utf-8") as f:
            return asyncio.run(_workload(cfg, f))
    if mode == "converge":
        result = asyncio.run(
            converge(
                engine_of(cfg),
                endpoint_from(cfg),
                float(cfg.get("timeout", 120)),
            )
        )
        print(json.dumps(result), flush=True)
        return 0
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
