"""The operator's CPU and memory while it manages many databases, and its reconcile-cycle
p95 from its own `/metrics` histogram.

    python -m bench.operator_load [--databases 20] [--batch 4] [--sample-seconds 120]

Creates N three-member PostgreSQL databases (128M, 0.2 CPU per member) in batches, waits
for each batch to be Healthy, samples `docker stats --no-stream` of the operator container
every 5 s for the sampling window, reads `shoal_reconcile_duration_seconds` before and after
the window (p95 from the bucket deltas, as Prometheus' histogram_quantile does), then deletes
every database it created. If a batch does not become Healthy in time, no more are added and
the result says how many fit.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import (
    apply,
    delete,
    docker,
    healthy,
    interrupt_on_signals,
    log,
    machine,
    operator_container,
    status,
    summary,
    unique,
    write_result,
)
from bench.common import declaration as make_declaration

METRICS_URL = "http://127.0.0.1:9650/metrics"
HIST = "shoal_reconcile_duration_seconds"
LINE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 10**3, "MB": 10**6, "GB": 10**9}

Buckets = dict[str, dict[float, float]]  # database -> le -> cumulative count


def scrape() -> Buckets:
    with urllib.request.urlopen(METRICS_URL, timeout=10) as r:
        text = r.read().decode()
    out: Buckets = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m or m.group(1) != f"{HIST}_bucket":
            continue
        labels = dict(LABEL.findall(m.group(2)))
        le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        db = labels.get("database", "")
        out.setdefault(db, {})
        out[db][le] = out[db].get(le, 0.0) + float(m.group(3))
    return out


def merge(b: Buckets, keep: set[str] | None = None) -> dict[float, float]:
    total: dict[float, float] = {}
    for db, les in b.items():
        if keep is not None and db not in keep:
            continue
        for le, n in les.items():
            total[le] = total.get(le, 0.0) + n
    return total


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets (linear within a bucket)."""
    les = sorted(buckets)
    if not les or buckets[les[-1]] <= 0:
        return None
    rank = q * buckets[les[-1]]
    prev_le, prev_n = 0.0, 0.0
    for le in les:
        n = buckets[le]
        if n >= rank:
            if math.isinf(le):
                return prev_le
            if n == prev_n:
                return le
            return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n)
        prev_le, prev_n = le, n
    return None


def parse_size(text: str) -> float:
    m = re.match(r"([\d.]+)\s*([A-Za-z]+)", text.strip())
    return float(m.group(1)) * UNITS.get(m.group(2), 1) if m else 0.0


def increase(prev: Buckets, cur: Buckets) -> Buckets:
    """Per-series increase between two scrapes, reset-aware like Prometheus' increase(): a
    series that went down belongs to a restarted operator and counts from zero."""
    out: Buckets = {}
    for db, les in cur.items():
        before = prev.get(db, {})
        for le, n in les.items():
            p = before.get(le, 0.0)
            out.setdefault(db, {})[le] = n - p if n >= p else n
    return out


class Sampler:
    """`docker stats --no-stream` of the operator container and a `/metrics` scrape every
    `every` seconds; histogram increases are accumulated per phase (restart-safe)."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.phase = "idle"
        self.samples: list[dict[str, Any]] = []
        self.increases: dict[str, Buckets] = {}
        self.last_scrape: Buckets | None = None
        self.scrape_errors = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            cid = operator_container()
            if cid:
                raw = docker("stats", "--no-stream", "--format", "{{json .}}", cid, check=False)
                try:
                    doc = json.loads(raw)
                    self.samples.append(
                        {
                            "t": round(time.time(), 2),
                            "phase": self.phase,
                            "container": cid,
                            "cpu_percent": float(doc["CPUPerc"].rstrip("%")),
                            "memory_bytes": parse_size(doc["MemUsage"].split("/")[0]),
                        }
                    )
                except (ValueError, KeyError):
                    pass
            self._scrape()
            self.stop_event.wait(max(0.0, self.every - (time.monotonic() - t0)))

    def _scrape(self) -> None:
        try:
            cur = scrape()
        except OSError:
            self.scrape_errors += 1
            return
        if self.last_scrape is not None:
            acc = self.increases.setdefault(self.phase, {})
            for db, les in increase(self.last_scrape, cur).items():
                for le, n in les.items():
                    acc.setdefault(db, {})[le] = acc.get(db, {}).get(le, 0.0) + n
        self.last_scrape = cur

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)

    def of(self, phase: str, key: str) -> list[float]:
        return [s[key] for s in self.samples if s["phase"] == phase]


def all_healthy(dbs: list[str]) -> tuple[bool, dict[str, str]]:
    states = {}
    ok = True
    for db in dbs:
        s = status(db)
        states[db] = str(s.get("state"))
        ok = ok and healthy(s, 3)
    return ok, states


def main() -> None:
    ap = argparse.ArgumentParser(description="operator CPU/memory and reconcile p95 under load")
    ap.add_argument("--databases", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--memory", default="128M")
    ap.add_argument("--cpus", type=float, default=0.2)
    ap.add_argument("--sample-seconds", type=float, default=120)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--batch-timeout", type=float, default=900)
    args = ap.parse_args()
    interrupt_on_signals()  # so that an interrupted run still deletes its databases

    info = machine()
    prefix = unique("benchol")
    sampler = Sampler()
    sampler.start()
    created: list[str] = []
    healthy_dbs: list[str] = []
    batch_times: list[float] = []
    stopped_because: str | None = None
    op_before = operator_container()
    window: dict[str, Any] = {}
    try:
        log(f"sampling the operator idle for {args.idle_seconds:.0f}s")
        time.sleep(args.idle_seconds)
        sampler.phase = "bringup"
        for first in range(0, args.databases, args.batch):
            batch = [f"{prefix}-{i}" for i in range(first, min(first + args.batch, args.databases))]
            t0 = time.time()
            for db in batch:
                proc = apply(make_declaration(db, 3, args.memory, args.cpus))
                created.append(db)
                if proc.returncode != 0:
                    raise RuntimeError(f"apply {db}: {proc.stderr.strip()}")
            deadline = time.monotonic() + args.batch_timeout
            ok, states = all_healthy(batch)
            while not ok and time.monotonic() < deadline:
                time.sleep(3)
                ok, states = all_healthy(batch)
            if not ok:
                stopped_because = f"batch {batch} not Healthy after {args.batch_timeout}s: {states}"
                log(stopped_because)
                break
            batch_times.append(round(time.time() - t0, 1))
            healthy_dbs += batch
            log(f"{len(healthy_dbs)} databases Healthy (batch took {batch_times[-1]}s)")
        ok, states = all_healthy(healthy_dbs)
        log(f"all {len(healthy_dbs)} Healthy: {ok}; sampling for {args.sample_seconds:.0f}s")
        sampler.phase = "steady"
        t_window = time.time()
        time.sleep(args.sample_seconds)
        sampler.phase = "after"
        window_seconds = time.time() - t_window
        ok_after, states_after = all_healthy(healthy_dbs)
        ours = set(created)
        steady = sampler.increases.get("steady", {})
        d_ours = merge(steady, ours)
        d_all = merge(steady)
        d_bringup = merge(sampler.increases.get("bringup", {}), ours)
        window = {
            "seconds": round(window_seconds, 1),
            "healthy_at_start": ok,
            "healthy_at_end": ok_after,
            "states_at_end": states_after,
            "reconcile_passes_bench_dbs": d_ours.get(math.inf, 0.0),
            "reconcile_passes_all_dbs": d_all.get(math.inf, 0.0),
            "reconcile_p95_seconds_bench_dbs": histogram_quantile(0.95, d_ours),
            "reconcile_p50_seconds_bench_dbs": histogram_quantile(0.50, d_ours),
            "reconcile_p95_seconds_all_dbs": histogram_quantile(0.95, d_all),
            "reconcile_p95_seconds_bench_dbs_during_bringup": histogram_quantile(0.95, d_bringup),
            "buckets_delta_bench_dbs": {str(k): v for k, v in sorted(d_ours.items())},
        }
        log(f"window: {window}")
    finally:
        sampler.phase = "deleting"
        log(f"deleting {len(created)} databases")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(delete, created))
        sampler.stop()
    op_after = operator_container()
    cpu = {p: summary(sampler.of(p, "cpu_percent")) for p in ("idle", "bringup", "steady")}
    mem = {
        p: summary([x / 2**20 for x in sampler.of(p, "memory_bytes")])
        for p in ("idle", "bringup", "steady")
    }
    doc: dict[str, Any] = {
        "machine": info,
        "config": {
            "databases_requested": args.databases,
            "batch": args.batch,
            "members_each": 3,
            "resources": {"memory": args.memory, "cpus": args.cpus},
            "sample_every_seconds": sampler.every,
            "sample_seconds": args.sample_seconds,
        },
        "databases_healthy": len(healthy_dbs),
        "members_managed_by_bench": 3 * len(healthy_dbs),
        "stopped_because": stopped_because,
        "batch_seconds": summary(batch_times),
        "operator_container_changed": op_before != op_after,
        "operator_containers_seen": sorted({x["container"] for x in sampler.samples}),
        "operator_containers_in_window": sorted(
            {x["container"] for x in sampler.samples if x["phase"] == "steady"}
        ),
        "metrics_scrape_errors": sampler.scrape_errors,
        "operator_cpu_percent": cpu,
        "operator_memory_mib": mem,
        "reconcile": window,
        "samples": sampler.samples,
    }
    path: Path = write_result("operator_load", doc)
    s = cpu["steady"]
    print(
        f"{len(healthy_dbs)} databases: operator CPU median {s['median']}% p95 {s['p95']}%, "
        f"memory median {mem['steady']['median']} MiB; reconcile p95 "
        f"{window.get('reconcile_p95_seconds_bench_dbs')}s -> {path.name}"
    )


if __name__ == "__main__":
    main()
