"""Bring-up times: `shoal apply --wait` of a fresh 3-member PostgreSQL database to Healthy,
and `shoal up` (cached images) to Healthy after deleting the example database `orders`.

    python -m bench.up [--apply-runs 3] [--up-runs 1] [--skip-up]

`orders` is shared: this is the only benchmark that deletes it, and it always ends with
`orders` Healthy again (it re-runs `shoal up` if a timed run failed). Images are built for
this tree before any timing (`shoal images build`, untimed), so `shoal up` finds them cached;
if the running operator uses another tree's image, `shoal up` redeploys it, which the timed
run then includes (recorded as `operator_redeployed`).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench import common
from bench.common import healthy, log, operator_image, shoal, status

EXAMPLE = "orders"


def apply_run(i: int) -> dict[str, Any]:
    db = common.unique("benchup")
    t0 = time.time()
    proc = common.apply(common.declaration(db, 3, "256M", 0.5), wait=True, timeout=600)
    seconds = time.time() - t0
    t1 = time.time()
    common.delete(db)
    deleted = time.time() - t1
    if proc.returncode != 0:
        return {"run": i, "database": db, "error": proc.stderr.strip()[-500:]}
    log(f"apply run {i}: {db} Healthy in {seconds:.1f}s (delete --wait {deleted:.1f}s)")
    return {
        "run": i,
        "database": db,
        "apply_to_healthy_seconds": round(seconds, 3),
        "delete_wait_seconds": round(deleted, 3),
    }


def up_run(i: int) -> dict[str, Any]:
    image_before = operator_image()
    t0 = time.time()
    proc = shoal("delete", EXAMPLE, "--wait", timeout=300)
    deleted = time.time() - t0
    if proc.returncode not in (0, 2):  # 2: it did not exist
        return {"run": i, "error": f"delete {EXAMPLE}: {proc.stderr.strip()[-300:]}"}
    t1 = time.time()
    proc = shoal("up", timeout=900)
    seconds = time.time() - t1
    if proc.returncode != 0:
        return {"run": i, "error": f"shoal up: {proc.stderr.strip()[-500:]}"}
    image_after = operator_image()
    log(f"up run {i}: delete {deleted:.1f}s, shoal up -> Healthy {seconds:.1f}s")
    return {
        "run": i,
        "delete_wait_seconds": round(deleted, 3),
        "up_to_healthy_seconds": round(seconds, 3),
        "operator_redeployed": image_before != image_after,
        "operator_image_before": image_before,
        "operator_image_after": image_after,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="shoal apply / shoal up to Healthy")
    ap.add_argument("--apply-runs", type=int, default=3)
    ap.add_argument("--up-runs", type=int, default=1)
    ap.add_argument("--skip-up", action="store_true", help="leave `orders` alone")
    args = ap.parse_args()

    info = common.machine()
    log("making sure the images for this tree are built (untimed)")
    t0 = time.time()
    built = shoal("images", "build", timeout=1800)
    if built.returncode != 0:
        raise SystemExit(f"shoal images build failed: {built.stderr[-500:]}")
    build_seconds = time.time() - t0
    applies = [apply_run(i) for i in range(1, args.apply_runs + 1)]
    ups: list[dict[str, Any]] = []
    try:
        if not args.skip_up:
            ups = [up_run(i) for i in range(1, args.up_runs + 1)]
    finally:
        if not args.skip_up and not healthy(status(EXAMPLE), 3):
            log(f"{EXAMPLE} is not Healthy: running shoal up again")
            shoal("up", timeout=900)
            common.wait_until(lambda: healthy(status(EXAMPLE), 3), 600, f"{EXAMPLE} Healthy")
    ok_a, ok_u = common.ok_runs(applies), common.ok_runs(ups)
    doc: dict[str, Any] = {
        "machine": info,
        "config": {
            "apply": "3 members, sync, 256M / 0.5 CPU, `shoal apply -f - --wait`",
            "up": "`shoal delete orders --wait` then `shoal up` (embedded example, 3 x 512M / "
            "1.0 CPU) until its own Healthy wait returns",
            "untimed_image_build_seconds": round(build_seconds, 1),
        },
        "apply_to_healthy_seconds": common.runs_summary(ok_a, "apply_to_healthy_seconds"),
        "apply_delete_wait_seconds": common.runs_summary(ok_a, "delete_wait_seconds"),
        "up_to_healthy_seconds": common.runs_summary(ok_u, "up_to_healthy_seconds"),
        "up_delete_wait_seconds": common.runs_summary(ok_u, "delete_wait_seconds"),
        "orders_healthy_at_end": healthy(status(EXAMPLE), 3),
        "apply_runs": applies,
        "up_runs": ups,
    }
    common.write_result("up", doc)
    print(common.spread("apply -> Healthy", doc["apply_to_healthy_seconds"]))
    print(common.spread("shoal up -> Healthy", doc["up_to_healthy_seconds"]))


if __name__ == "__main__":
    main()
