"""Print two benchmark result files side by side, with ratios (new / old).

    python -m bench.compare bench/results/failover-A.json bench/results/failover-B.json

Every summary (an object with `median` and `p95`) found anywhere in the files is compared on
its median and p95; plain numbers at the top level (e.g. `ratio_of_medians`) too. A ratio
above 1 means the second file is slower/larger. These machines are noisy: read a ratio within
~±15% as "no change".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MACHINE_KEYS = ("git_commit", "nproc", "memory_gib", "docker_version", "loadavg_at_start")


def summaries(doc: Any, path: str = "") -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    if isinstance(doc, dict):
        if "median" in doc and "p95" in doc:
            found[path] = doc
            return found
        for key, value in doc.items():
            if key in ("machine", "samples", "runs", "apply_runs", "up_runs"):
                continue
            found.update(summaries(value, f"{path}.{key}" if path else key))
    return found


def scalars(doc: dict[str, Any]) -> dict[str, float | int]:
    return {k: v for k, v in doc.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"
    return str(x)


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or a == 0:
        return "-"
    return f"{b / a:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description="compare two bench result files")
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    args = ap.parse_args()
    a = json.loads(args.old.read_text())
    b = json.loads(args.new.read_text())
    if a.get("benchmark") != b.get("benchmark"):
        print(f"warning: comparing {a.get('benchmark')} with {b.get('benchmark')}")
    rows: list[tuple[str, str, str, str]] = [("", args.old.name, args.new.name, "new/old")]
    for key in MACHINE_KEYS:
        va, vb = a.get("machine", {}).get(key), b.get("machine", {}).get(key)
        rows.append((f"machine.{key}", str(va)[:12], str(vb)[:12], ""))
    sa, sb = summaries(a), summaries(b)
    for name in sorted(set(sa) | set(sb)):
        x, y = sa.get(name, {}), sb.get(name, {})
        for stat in ("median", "p95"):
            rows.append(
                (
                    f"{name} {stat}",
                    fmt(x.get(stat)),
                    fmt(y.get(stat)),
                    ratio(x.get(stat), y.get(stat)),
                )
            )
        rows.append((f"{name} n", fmt(x.get("n")), fmt(y.get("n")), ""))
    ca, cb = scalars(a), scalars(b)
    for name in sorted(set(ca) | set(cb)):
        rows.append((name, fmt(ca.get(name)), fmt(cb.get(name)), ratio(ca.get(name), cb.get(name))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


if __name__ == "__main__":
    main()
