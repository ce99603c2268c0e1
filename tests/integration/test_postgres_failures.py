"""PostgreSQL failures on the real swarm, run by the operator: every test asserts on the
DATA (acknowledged ids present on the primary and on every member), not only on states.

Each test has its own database (`unique_name`, resources 256M/0.5) removed with
`shoal delete NAME --wait` at the end, and unpauses whatever it paused. Timeouts are
safety nets only; no test asserts on how long something took (one lower bound aside: a
paused primary must not be failed over before `failover.unreachableSeconds`)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from tests.integration.support import (
    Writer,
    apply,
    container_of,
    credentials,
    declaration,
    psql,
    psql_in,
    row_ids,
    service_logs,
    shoal,
    status,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SYNC_CANCELED = "canceling wait for synchronous replication"
# PostgreSQL's words when a backend waiting for synchronous replication is terminated: the
# client is sent no success (syncrep.c), unlike a cancelled wait.
SYNC_TERMINATED = "terminating connection due to administrator command"


# --------------------------------------------------------------------------- helpers


class Db:
    """One test database: its name, where its declaration files go, what to unpause."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.tmp = tmp
        self.paused: set[str] = set()

    def member(self, i: int) -> str:
        return names.member_service(self.name, i)

    def apply(self, members: int = 3, durability: str = "sync", unreachable: int = 10) -> None:
        apply(declaration(self.name, members, durability, unreachable), self.tmp)

    def pause(self, *containers: str) -> None:
        self.paused.update(containers)
        for c in containers:
            # runc's freeze sometimes fails at once ("unable to freeze") on a busy
            # container; it succeeds when tried again.
            for attempt in range(10):
                proc = subprocess.run(["docker", "pause", c], capture_output=True, text=True)
                if proc.returncode == 0:
                    break
                assert attempt < 9, f"docker pause {c}: {proc.stderr}"
                time.sleep(0.5)

    def unpause(self, *containers: str) -> None:
        for c in containers or tuple(self.paused):
            # The container may be gone already (fenced): that is fine.
            subprocess.run(["docker", "unpause", c], capture_output=True)
            self.paused.discard(c)


@pytest.fixture
def db(operator: BuiltImages, unique_name: str, tmp_path: Path) -> Iterator[Db]:
    d = Db(unique_name, tmp_path)
    try:
        yield d
    finally:
        d.unpause()
        proc = shoal("delete", d.name, "--wait", timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def healthy(
    name: str,
    members: int = 3,
    timeout: float = 300,
    extra: Callable[[dict[str, Any]], bool] = lambda s: True,
) -> dict[str, Any]:
    """Wait until Healthy with `members` running members (primary + streaming replicas)
    and `extra(status)`: a Healthy read just after a fault may still be the old one."""

    seen: list[dict[str, Any]] = [{}]

    def check() -> dict[str, Any] | None:
        s = seen[0] = status(name)
        ms = s.get("members", [])
        ok = (
            s.get("state") == "Healthy"
            and s.get("primary")
            and len(ms) == members
            and sorted(m["role"] for m in ms) == ["primary"] + ["replica"] * (members - 1)
            and all(m["state"] == "running" for m in ms)
            and extra(s)
        )
        return s if ok else None

    try:
        return wait_for(check, timeout, f"{name} Healthy with {members} members", every=1.0)  # type: ignore[no-any-return]
    except AssertionError as e:
        last = {k: seen[0].get(k) for k in ("state", "primary", "message", "members", "events")}
        print(service_logs([m["name"] for m in last["members"] or []] + [names.OPERATOR_SERVICE]))
        raise AssertionError(f"{e}; status {json.dumps(last)}") from None


def member_of(st: dict[str, Any], member: str) -> dict[str, Any]:
    return next(m for m in st["members"] if m["name"] == member)


def try_ids(member: str, table: str) -> set[int] | None:
    try:
        return row_ids(member, table)
    except (AssertionError, subprocess.TimeoutExpired):
        return None


def converged(members: list[str], table: str, expected: set[int], timeout: float = 120) -> None:
    """Every member holds every expected id and all members hold the same rows."""
    last: dict[str, Any] = {}

    def check() -> bool:
        ids = {m: try_ids(m, table) for m in members}
        last.clear()
        last.update(
            {
                m: None if v is None else {"count": len(v), "missing": len(expected - v)}
                for m, v in ids.items()
            }
        )
        sets = [v for v in ids.values() if v is not None]
        return (
            len(sets) == len(members)
            and all(expected <= v for v in sets)
            and all(v == sets[0] for v in sets)
        )

    try:
        wait_for(check, timeout, f"{table} to converge on {members}", every=1.0)
    except AssertionError as e:
        raise AssertionError(f"{e}; per member: {last}") from None


def seed(primary: str, table: str, n: int, start: int = 1) -> set[int]:
    """n rows committed on the primary (with durability sync: on two members)."""
    psql(
        primary,
        f"CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY); "
        f"INSERT INTO {table} SELECT generate_series({start}, {start + n - 1})",
    )
    return set(range(start, start + n))


def start_writer(d: Db, images: BuiltImages, table: str, seconds: float = 300) -> Writer:
    creds = credentials(d.name)
    w = Writer(d.name, images.operator, creds["uri"], table, seconds, ca=creds["ca"])
    wait_for(lambda: len(w.so_far()) >= 30, 90, f"the writer to acknowledge rows; {w.errors}")
    return w


def stop_writer(w: Writer) -> set[int]:
    w.kill()
    return w.acknowledged(timeout=60)


def alive(container: str) -> bool:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", container],
        capture_output=True,
        text=True,
    )
    return out.returncode == 0 and out.stdout.strip() == "true"


def metric(name: str, **labels: str) -> float | None:
    """One sample of the operator's /metrics (published on the host), None if absent."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:9650/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            return float(line.rsplit(" ", 1)[1])
    return None


def operator_logs() -> str:
    proc = subprocess.run(
        ["docker", "service", "logs", "--raw", "--since", "5m", names.OPERATOR_SERVICE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (proc.stdout + proc.stderr)[-6000:]


# --------------------------------------------------------------------------- tests


def test_killed_replica_is_reseeded_with_all_rows(db: Db) -> None:
    db.apply()
    st = healthy(db.name)
    primary = st["primary"]
    rows = seed(primary, "t1", 500)
    replica = next(m["name"] for m in st["members"] if m["role"] == "replica")
    old_cid = container_of(replica)
    old_task = member_of(st, replica)["task_id"]
    assert old_cid
    reseeds_before = st["reseeds"]
    operator_before = container_of(names.OPERATOR_SERVICE)

    subprocess.run(["docker", "kill", old_cid], check=True, capture_output=True)

    st = healthy(db.name, extra=lambda s: member_of(s, replica)["task_id"] != old_task)
    new_cid = container_of(replica)
    assert new_cid and new_cid != old_cid, "the replica must run in a new container"
    assert st["primary"] == primary, "killing a replica must not move the primary"
    assert st["reseeds"] > reseeds_before
    assert any(e["kind"] == "reseed" and e["member"] == replica for e in st["events"])
    # The re-seeded member answers from its own copy: every row, streamed from the primary.
    assert row_ids(replica, "t1") == rows
    assert psql(replica, "SELECT pg_is_in_recovery()") == "t"
    more = seed(primary, "t1", 100, start=501)
    converged([db.member(i) for i in range(3)], "t1", rows | more)
    # The counter lives in the operator process: only meaningful if no one redeployed it
    # meanwhile (other work on this swarm does).
    if container_of(names.OPERATOR_SERVICE) == operator_before:
        reseeds = metric("shoal_member_reseeds_total", database=db.name, member=replica)
        assert reseeds is not None and reseeds >= 1, "shoal_member_reseeds_total not counted"


def test_killed_primary_fails_over_without_losing_acknowledged_writes(
    db: Db, operator: BuiltImages
) -> None:
    db.apply()
    st = healthy(db.name)
    old = st["primary"]
    old_task = member_of(st, old)["task_id"]
    old_cid = container_of(old)
    assert old_cid
    writer = start_writer(db, operator, "t2")
    try:
        before_kill = max(writer.so_far())
        subprocess.run(["docker", "kill", old_cid], check=True, capture_output=True)
        st = wait_for(
            lambda: (s := status(db.name)).get("primary") not in (None, old) and s,
            120,
            "a standby to be promoted",
        )
        new = st["primary"]
        # Writes resume on the new primary: ids acknowledged after the kill.
        wait_for(
            lambda: len([i for i in writer.so_far() if i > before_kill]) >= 30,
            120,
            f"writes to resume after the failover; writer errors {writer.errors[-3:]}",
        )
    finally:
        acked = stop_writer(writer)
    after = {i for i in acked if i > before_kill}
    assert after, "no write was acknowledged after the primary was killed"
    st = healthy(db.name, extra=lambda s: member_of(s, old)["task_id"] != old_task)
    assert st["primary"] == new
    assert member_of(st, old)["role"] == "replica", "the old primary must come back a replica"
    assert st["failovers"] >= 1
    assert acked <= row_ids(new, "t2"), "acknowledged ids missing on the new primary"
    converged([db.member(i) for i in range(3)], "t2", acked)


def test_paused_primary_is_failed_over_and_fenced(db: Db, operator: BuiltImages) -> None:
    db.apply(unreachable=3)
    st = healthy(db.name)
    old = st["primary"]
    old_cid = container_of(old)
    assert old_cid
    failovers_before = st["failovers"]
    writer = start_writer(db, operator, "t3")
    try:
        paused_at = time.time()
        db.pause(old_cid)
        st = wait_for(
            lambda: (s := status(db.name)).get("primary") not in (None, old) and s,
            120,
            "a standby to be promoted while the primary is paused",
        )
        new = st["primary"]
        failover = [e for e in st["events"] if e["kind"] == "failover" and e["at"] >= paused_at]
        assert failover, st["events"]
        # Not before unreachableSeconds (a lower bound: it holds however slow the machine).
        assert failover[0]["at"] - paused_at >= 3.0 - 0.5, failover
        assert st["failovers"] == failovers_before + 1
    finally:
        db.unpause(old_cid)
    # The old container never acknowledges anything again: it is fenced (stopped, its task
    # replaced) and a write on it fails.
    wait_for(lambda: not alive(old_cid), 120, "the old primary's container to be stopped")
    attempt = psql_in(old_cid, "INSERT INTO t3 VALUES (-1)", timeout=30)
    assert attempt.returncode != 0, attempt.stdout
    try:
        wait_for(
            lambda: (
                len([i for i in writer.so_far() if i > 0]) > 0
                and status(db.name).get("state") == "Healthy"
            ),
            180,
            "the database to be Healthy again",
        )
        st = healthy(db.name, extra=lambda s: container_of(old) not in (None, old_cid))
    finally:
        acked = stop_writer(writer)
    assert st["primary"] == new
    assert member_of(st, old)["role"] == "replica"
    assert -1 not in row_ids(new, "t3")
    converged([db.member(i) for i in range(3)], "t3", acked)


def test_switchover_loses_no_acknowledged_write(db: Db, operator: BuiltImages) -> None:
    db.apply()
    st = healthy(db.name)
    first = st["primary"]
    containers = {db.member(i): container_of(db.member(i)) for i in range(3)}
    reseeds_before = st["reseeds"]
    writer = start_writer(db, operator, "t4")
    try:
        proc = shoal("switchover", db.name, timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        st = healthy(db.name, extra=lambda s: s["primary"] != first)
        second = st["primary"]
        assert member_of(st, first)["role"] == "replica"
        mark = max(writer.so_far())
        wait_for(
            lambda: max(writer.so_far()) > mark + 20,
            120,
            f"writes to continue after the switchover; {writer.errors[-3:]}",
        )
        third = next(db.member(i) for i in range(3) if db.member(i) not in (first, second))
        proc = shoal("switchover", db.name, "--to", third, timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        st = healthy(db.name, extra=lambda s: s["primary"] == third)
        mark = max(writer.so_far())
        wait_for(
            lambda: max(writer.so_far()) > mark + 20,
            120,
            f"writes to continue after the switchover to {third}; {writer.errors[-3:]}",
        )
    finally:
        acked = stop_writer(writer)
    assert member_of(st, second)["role"] == "replica"
    assert acked <= row_ids(third, "t4")
    converged([db.member(i) for i in range(3)], "t4", acked)
    # Demoted primaries followed the new one on its timeline: same containers, no re-seed.
    st = status(db.name)
    events = [(e["kind"], e["member"], e["message"]) for e in st["events"]]
    now = {m: container_of(m) for m in containers}
    assert now == containers, f"{first} -> {second} -> {third}; events {events}"
    assert st["reseeds"] == reseeds_before, events


def test_every_member_killed_is_lost_until_reinit(db: Db) -> None:
    db.apply()
    st = healthy(db.name)
    seed(st["primary"], "t5", 100)
    cids = [container_of(db.member(i)) for i in range(3)]
    assert all(cids)
    subprocess.run(["docker", "kill", *[c for c in cids if c]], check=True, capture_output=True)

    st = wait_for(
        lambda: (s := status(db.name)).get("state") == "Lost" and s, 180, f"{db.name} Lost"
    )
    # It stays Lost, and no member serves a fresh empty database meanwhile.
    for _ in range(8):
        st = status(db.name)
        assert st["state"] == "Lost", st
        assert st["primary"] is None
        for i in range(3):
            cid = container_of(db.member(i))
            if cid is None:
                continue
            probe = psql_in(cid, "SELECT pg_is_in_recovery()", timeout=15)
            assert not (probe.returncode == 0 and probe.stdout.strip() == "f"), (
                f"{db.member(i)} serves a primary while the database is Lost"
            )
        time.sleep(1.5)
    listed = json.loads(shoal("get", "--json", timeout=60).stdout)
    assert next(d for d in listed if d["name"] == db.name)["state"] == "Lost"
    assert db.name in shoal("get", timeout=60).stdout

    refused = shoal("reinit", db.name, timeout=60)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert status(db.name)["state"] == "Lost"

    proc = shoal("reinit", db.name, "--accept-data-loss", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = healthy(db.name)
    assert st["identity"] is not None
    # Empty, and a working database: the old table is gone, new rows replicate.
    assert psql(st["primary"], "SELECT to_regclass('t5') IS NULL") == "t"
    rows = seed(st["primary"], "t5b", 50)
    converged([db.member(i) for i in range(3)], "t5b", rows)


def test_sync_commit_waits_for_a_standby(db: Db) -> None:
    db.apply(durability="sync")
    st = healthy(db.name)
    primary = st["primary"]
    pcid = container_of(primary)
    assert pcid
    cids = [container_of(db.member(i)) for i in range(3)]
    standby_cids = [c for c in cids if c and c != pcid]
    assert len(standby_cids) == 2, cids
    seed(primary, "t6", 10)
    assert psql(primary, "SHOW synchronous_standby_names").startswith("ANY 1")

    db.pause(*standby_cids)
    try:
        commit = subprocess.Popen(
            [
                "docker",
                "exec",
                "-u",
                "postgres",
                pcid,
                "psql",
                "-h",
                "/var/run/postgresql",
                "-d",
                names.APP_DATABASE,
                "-Atqc",
                "INSERT INTO t6 VALUES (100)",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The commit is not acknowledged: its backend waits for a synchronous standby, and
        # once it has waited SYNC_WAIT_LIMIT the member's agent terminates the backend
        # (agent/syncguard.py): a cancel would have reported it committed, with a WARNING.
        # (statement_timeout cannot end this wait: PostgreSQL disarms it before COMMIT.)
        out, err = commit.communicate(timeout=60)
    finally:
        db.unpause(*standby_cids)
    assert commit.returncode != 0, ("the commit was acknowledged with no standby", out, err)
    assert "INSERT" not in out, out
    assert SYNC_TERMINATED in err, err

    db.apply(durability="async")
    wait_for(
        lambda: psql(primary, "SHOW synchronous_standby_names") == "",
        120,
        "synchronous_standby_names to be cleared for durability async",
    )
    healthy(db.name)
    db.pause(*standby_cids)
    try:
        attempt = psql_in(pcid, "INSERT INTO t6 VALUES (200)", timeout=60)
        assert attempt.returncode == 0, attempt.stderr
        assert SYNC_CANCELED not in attempt.stderr, attempt.stderr
        assert psql(primary, "SELECT count(*) FROM t6 WHERE id = 200") == "1"
    finally:
        db.unpause(*standby_cids)
    converged([db.member(i) for i in range(3)], "t6", set(range(1, 11)) | {100, 200})


def test_scale_up_and_down_keeps_data(db: Db) -> None:
    db.apply(members=3)
    st = healthy(db.name)
    rows = seed(st["primary"], "t7", 300)

    db.apply(members=5)
    st = healthy(db.name, members=5)
    for i in (3, 4):
        assert row_ids(db.member(i), "t7") == rows, f"{db.member(i)} lacks the data"
    rows |= seed(st["primary"], "t7", 100, start=301)
    converged([db.member(i) for i in range(5)], "t7", rows)

    top = db.member(4)
    proc = shoal("switchover", db.name, "--to", top, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = healthy(db.name, members=5, extra=lambda s: s["primary"] == top)
    rows |= seed(top, "t7", 100, start=401)

    # Scaling down never removes the primary: the operator hands its role to a declared
    # member first, then removes the two extra services.
    db.apply(members=3)
    declared = [db.member(i) for i in range(3)]
    st = healthy(db.name, members=3)
    assert st["primary"] in declared
    for extra in (db.member(3), db.member(4)):
        gone = subprocess.run(["docker", "service", "inspect", extra], capture_output=True)
        assert gone.returncode != 0, f"{extra} still exists"
    converged(declared, "t7", rows)
