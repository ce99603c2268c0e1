"""What `durability: sync` costs: pgbench TPS on one 3-member sync database, each round once
with the default (`synchronous_commit = on`: a commit waits for a standby's flush) and once
with `synchronous_commit = local` set by the client for its own sessions (PostgreSQL's
per-session choice, which the application role keeps; docs/security.md), alternating so
that both see the same machine.

    python -m bench.sync_cost [--rounds 3] [--seconds 30] [--clients 4]

pgbench is PostgreSQL 15's, run in a container of the member image on the database's network
as the application role, over TLS with verify-full (the URI of `shoal credentials`).
pgbench's TPC-B-like script by default (`--builtin`), initialised at `--scale`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from typing import Any

from bench import common
from bench.common import log, summary
from shoal import names
from shoal.plugins.postgres.plugin import PostgresPlugin

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
MEMBER_IMAGE = PostgresPlugin.image_recipe.alias  # pgbench comes with PostgreSQL
MODES = {"sync": "", "local": "-c synchronous_commit=local"}


def pgbench(db: str, creds: dict[str, Any], args: list[str], options: str = "") -> str:
    """pgbench ARGS against the database's primary, from a client container."""
    script = 'printf "%s" "$CA" > /tmp/ca.crt && exec ' + PGBENCH + ' "$@"'
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", names.database_network(db),
         "-e", f"CA={creds['ca']}", "-e", "PGSSLROOTCERT=/tmp/ca.crt",
         "-e", f"PGOPTIONS={options}", "--entrypoint", "sh", MEMBER_IMAGE, "-c", script,
         "pgbench", *args, creds["uri"]],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def tps(output: str) -> float:
    m = re.search(r"^tps = ([0-9.]+)", output, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"no tps in pgbench output: {output[-400:]}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--builtin", default="tpcb-like", help="pgbench built-in script")
    ap.add_argument("--memory", default="256M")
    ap.add_argument("--cpus", type=float, default=0.5)
    args = ap.parse_args()
    info = common.machine()
    db = common.unique("benchsc")
    log(f"creating {db}")
    common.create(db, common.declaration(db, 3, args.memory, args.cpus))
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        creds = common.credentials(db)
        log(f"pgbench -i -s {args.scale}")
        pgbench(db, creds, ["-i", "-q", "-s", str(args.scale)])
        run = ["-b", args.builtin, "-T", str(args.seconds), "-c", str(args.clients),
               "-j", str(min(args.clients, 2)), "-n"]  # fmt: skip
        for r in range(1, args.rounds + 1):
            for mode, options in MODES.items():
                t = tps(pgbench(db, creds, run, options))
                results[mode].append(t)
                log(f"round {r}: {mode:<5} {t:.1f} tps")
                time.sleep(2)
    finally:
        log(f"deleting {db}")
        common.delete(db)
    sync, local = summary(results["sync"]), summary(results["local"])
    ratio = round(sync["median"] / local["median"], 3) if local.get("median") else None
    doc = {
        "machine": info,
        "config": {
            "members": 3,
            "durability": "sync",
            "resources": {"memory": args.memory, "cpus": args.cpus},
            "pgbench": {
                "builtin": args.builtin,
                "scale": args.scale,
                "clients": args.clients,
                "seconds": args.seconds,
                "rounds": args.rounds,
            },
            "modes": {
                "sync": "synchronous_commit = on (the database's setting)",
                "local": "PGOPTIONS=-c synchronous_commit=local (the client's own sessions)",
            },
        },
        "tps_sync": sync,
        "tps_local": local,
        "sync_over_local_median_tps": ratio,
    }
    common.write_result("sync_cost", doc)
    print(f"pgbench tps, median: sync {sync['median']}, local {local['median']}; ratio {ratio}")


if __name__ == "__main__":
    main()
