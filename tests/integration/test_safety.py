"""Safety properties of failover on the real swarm (docs/failure-modes.md lists them).

Every test records what a real client saw acknowledged, then checks that it survives; the
sampling test records every member's role and synchronous standby list every ~20 ms from a
container on the database's network. Timeouts are safety nets, not timing assertions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal import names
from shoal.declaration import Durability
from shoal.platform.images import BuiltImages
from shoal.plugins.postgres import naming
from shoal.plugins.postgres.clients import JsonLines
from shoal.plugins.postgres.durability import list_for
from shoal.plugins.postgres.failover import SWITCHOVER_TIMEOUT
from shoal.plugins.postgres.progress import PgProgress, SwitchoverProgress
from shoal.swarm.client import SwarmClient
from shoal.swarm.store import DatabaseStore
from tests.integration.support import (
    Writer,
    apply,
    container_of,
    credentials,
    declaration,
    ensure_operator,
    psql_in,
    shoal,
    status,
    wait_for,
)
from tests.integration.test_expose import free_port
from tests.integration.test_postgres_failures import (
    Db,
    converged,
    db,
    healthy,
    row_ids,
    start_writer,
    stop_writer,
)

__all__ = ["db"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


class Sampler(JsonLines):
    """Every member's (in recovery, synchronous_standby_names), sampled every ~20 ms over
    the database network with the application user (both are readable by any role)."""

    def __init__(self, d: Db, image: str, seconds: float = 600) -> None:
        name = f"sampler-{d.name}-{time.monotonic_ns() % 10**8}"
        hosts = [d.member(i) for i in range(3)]
        creds = credentials(d.name)
        cfg = {"hosts": hosts, "password": creds["password"], "seconds": seconds, "ca": creds["ca"]}
        super().__init__(names.database_network(d.name), image, "sampler", cfg, name, "test-writer")
        self.samples = self.records

    def writable(self, member: str, after: float = 0.0) -> list[dict[str, Any]]:
        return [
            s for s in self.samples if s["m"] == member and not s["recovery"] and s["t"] > after
        ]


def _new_primary(d: Db, old: str, what: str) -> str:
    st = wait_for(lambda: (s := status(d.name)).get("primary") not in (None, old) and s, 180, what)
    return str(st["primary"])


def _kill(container: str) -> None:
    subprocess.run(["docker", "kill", container], check=True, capture_output=True)


def test_no_writable_member_ever_has_an_empty_synchronous_list(
    db: Db, operator: BuiltImages
) -> None:
    """Property 2: under `durability: sync` a member that accepts writes has a synchronous
    standby list in force at every sample, through a kill, a switchover and a pause."""
    db.apply(unreachable=3)
    st = healthy(db.name)
    sampler = Sampler(db, operator.operator)
    writer = start_writer(db, operator, "s2t")
    try:
        wait_for(lambda: len(sampler.samples) > 50, 60, "the sampler to start")
        # 1. kill the primary
        old = st["primary"]
        cid = container_of(old)
        assert cid
        killed_at = time.time()
        _kill(cid)
        promoted = _new_primary(db, old, "a failover after the kill")
        wait_for(lambda: len(sampler.writable(promoted, killed_at)) > 20, 60,
                 f"samples of {promoted} as primary")  # fmt: skip
        st = healthy(db.name, extra=lambda s: s["primary"] == promoted)
        # 2. switchover to another member
        target = next(m["name"] for m in st["members"] if m["role"] == "replica")
        switched_at = time.time()
        proc = shoal("switchover", db.name, "--to", target)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        wait_for(lambda: status(db.name).get("primary") == target, 120, "the switchover")
        wait_for(lambda: len(sampler.writable(target, switched_at)) > 20, 60,
                 f"samples of {target} as primary")  # fmt: skip
        st = healthy(db.name, extra=lambda s: s["primary"] == target)
        # 3. pause the primary past unreachableSeconds
        cid = container_of(target)
        assert cid
        paused_at = time.time()
        db.pause(cid)
        third = _new_primary(db, target, "a failover while the primary is paused")
        db.unpause(cid)
        wait_for(lambda: len(sampler.writable(third, paused_at)) > 20, 60,
                 f"samples of {third} as primary")  # fmt: skip
        healthy(db.name, extra=lambda s: s["primary"] == third)
    finally:
        sampler.stop()
        samples = sampler.samples
        acked = stop_writer(writer)
    bad = [s for s in samples if not s["recovery"] and s["ssn"].strip() == ""]
    assert not bad, f"{len(bad)} samples of a writable member with no synchronous list: {bad[:5]}"
    converged([db.member(i) for i in range(3)], "s2t", acked)


def _iptables(container: str, script: str, check: bool = True) -> None:
    """Rules in the member's own network namespace (its container is local here)."""
    subprocess.run(
        ["docker", "run", "--rm", "--network", f"container:{container}", "--cap-add",
         "NET_ADMIN", names.IMAGE_BASE, "sh", "-c", script],
        check=check, capture_output=True, timeout=60,
    )  # fmt: skip


# Both directions of every PostgreSQL connection of the member (its walreceiver's included):
# dropping only what it sends would still let it receive WAL, just not acknowledge it.
_PG = str(naming.PORT)
_CUT = (
    f"iptables -w -I OUTPUT -p tcp --dport {_PG} -j DROP && "
    f"iptables -w -I INPUT -p tcp --sport {_PG} -j DROP"
)
_HEAL = (
    f"iptables -w -D OUTPUT -p tcp --dport {_PG} -j DROP; "
    f"iptables -w -D INPUT -p tcp --sport {_PG} -j DROP; true"
)


def _replication_broken(d: Db, member: str) -> None:
    """The cut took: the operator no longer sees the member streaming."""
    wait_for(
        lambda: (
            next(m for m in status(d.name)["members"] if m["name"] == member)["role"] != "replica"
        ),
        60,
        f"{member}'s replication to break",
    )


def _cut(container: str) -> None:
    _iptables(container, _CUT)


def _heal(container: str) -> None:
    _iptables(container, _HEAL, check=False)


@dataclass
class AheadCluster:
    old: str
    s1: str
    s2: str
    c_old: str
    c1: str
    c2: str
    writer: Writer


def _s1_ahead_of_s2(d: Db, operator: BuiltImages, table: str) -> AheadCluster:
    """A Healthy 3-member database under writes whose standby s2 has had its replication cut
    for 10 s: every commit since was acknowledged by s1 alone."""
    d.apply(unreachable=3)
    st = healthy(d.name)
    old = st["primary"]
    s1, s2 = [m["name"] for m in st["members"] if m["role"] == "replica"]
    c_old, c1, c2 = container_of(old), container_of(s1), container_of(s2)
    assert c_old and c1 and c2
    writer = start_writer(d, operator, table)
    try:
        _cut(c2)
        _replication_broken(d, s2)
        time.sleep(10)
    except BaseException:
        stop_writer(writer)
        raise
    return AheadCluster(old, s1, s2, c_old, c1, c2, writer)


def test_unreachable_standby_that_may_hold_the_newest_commit_is_waited_for(
    db: Db, operator: BuiltImages
) -> None:
    """Property 1: s2's replication is cut for 10 s while writes go on (they are
    acknowledged by s1 alone), then s1 is paused and the primary killed together. The
    operator must wait for s1, not promote s2; every acknowledged write survives."""
    c = _s1_ahead_of_s2(db, operator, "s1t")
    old, s1, s2, c1, c2, writer = c.old, c.s1, c.s2, c.c1, c.c2, c.writer
    try:
        before = len(writer.so_far())
        wait_for(lambda: len(writer.so_far()) > before + 20, 60, "writes acknowledged by s1")
        db.pause(c1)
        _kill(c.c_old)
        # The operator must wait for s1: it may hold commits s2 never received.
        waiting = wait_for(
            lambda: (
                (s := status(db.name)).get("state") == "Unavailable"
                and s1 in (s.get("message") or "")
                and s
            ),
            60,
            f"Unavailable, waiting for {s1}",
        )
        assert waiting["primary"] in (None, old), waiting
        time.sleep(4)
        assert status(db.name).get("primary") in (None, old), "promoted without s1's position"
        db.unpause(c1)
        new = _new_primary(db, old, "a failover once s1 answers")
    finally:
        db.unpause()
        if container_of(s2) == c2:
            _heal(c2)
        acked = stop_writer(writer)
    assert new == s1, f"{new} promoted; {s1} held the newest acknowledged commits"
    missing = acked - row_ids(new, "s1t")
    assert not missing, f"{len(missing)} acknowledged ids lost, e.g. {sorted(missing)[:5]}"
    healthy(db.name, extra=lambda s: s["primary"] == new)
    converged([db.member(i) for i in range(3)], "s1t", acked)


def test_forced_failover_is_explicit_and_a_forked_standby_is_reseeded(
    db: Db, operator: BuiltImages
) -> None:
    """The escape hatch, and property 3. While the operator waits for s1 (paused, holding
    writes s2 never received), the user promotes s2, which needs --accept-data-loss and is
    logged. s1 then wakes up with WAL past the point where s2's new timeline branched off:
    it can never follow, so it must be re-seeded, not left Degraded forever."""
    c = _s1_ahead_of_s2(db, operator, "s3t")
    s1, s2, c1, c2, writer = c.s1, c.s2, c.c1, c.c2, c.writer
    try:
        db.pause(c1)
        _kill(c.c_old)
        wait_for(lambda: s1 in (status(db.name).get("message") or ""), 60, f"waiting for {s1}")
        _heal(c2)
        refused = shoal("failover", db.name, "--to", s2)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "--accept-data-loss" in refused.stderr
        forced = shoal("failover", db.name, "--to", s2, "--accept-data-loss")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        promoted_at = max(writer.so_far() or {0})
        db.unpause(c1)
        st = healthy(db.name, timeout=300, extra=lambda s: s["primary"] == s2)
        more = len(writer.so_far())
        wait_for(lambda: len(writer.so_far()) > more + 30, 60, "writes on the new primary")
    finally:
        db.unpause()
        acked = stop_writer(writer)
    assert container_of(s1) != c1, f"{s1} (forked) must run in a new, re-seeded container"
    events = st["events"]
    assert any(
        e["kind"] == "failover" and e["member"] == s2 and "data loss accepted" in e["message"]
        for e in events
    ), events
    assert any(e["member"] == s1 and "re-seeded" in e["message"] for e in events), events
    after = {i for i in acked if i > promoted_at}
    rows = row_ids(s2, "s3t")
    assert after and after <= rows, "a write acknowledged by the new primary is missing"
    converged([db.member(i) for i in range(3)], "s3t", rows)


def _address_on(container: str, network: str) -> str:
    nets = json.loads(
        subprocess.run(
            ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    return str(nets[network]["IPAddress"])


class IdentityWriter(JsonLines):
    """A client in a container on the database network that inserts rows as fast as it can
    through `uri` and records, for every acknowledged write, the address of the server that
    acknowledged it (`inet_server_addr()`: through HAProxy too, it is the member's)."""

    def __init__(
        self, d: Db, image: str, uri: str, ca: str, table: str, seconds: float = 240
    ) -> None:
        name = f"who-{d.name}-{time.monotonic_ns() % 10**8}"
        cfg = {"uri": uri, "ca": ca, "table": table, "seconds": seconds}
        super().__init__(
            names.database_network(d.name), image, "identity", cfg, name, "test-writer"
        )
        self.acks = self.records


def test_a_deposed_primary_acknowledges_nothing_after_it_is_replaced(
    db: Db, operator: BuiltImages, tmp_path: Path
) -> None:
    """Property 7, with `durability: async` (where nothing else would stop it): the primary
    is paused past unreachableSeconds and unpaused the moment the promotion is recorded. Two
    clients record which server acknowledged each write, one through the multi-host URI and
    one through the HAProxy endpoint (`expose.port`): none acknowledged after the promotion
    may come from the old primary, on either path."""
    port = free_port()
    apply(declaration(db.name, 3, "async", 3, expose={"port": port}), tmp_path)
    st = healthy(db.name)
    old = st["primary"]
    cid = container_of(old)
    assert cid
    old_addr = _address_on(cid, names.database_network(db.name))
    creds = credentials(db.name)
    password = creds["password"]
    proxy_uri = (
        f"postgresql://{names.APP_USER}:{password}@{names.proxy_service(db.name)}:"
        f"{naming.PORT}/{names.APP_DATABASE}?sslmode=verify-full"
    )  # the proxy passes TLS through: its name is in every member's certificate
    ca = creds["ca"]
    writers = {
        "multi-host URI": IdentityWriter(db, operator.operator, creds["uri"], ca, "who_uri"),
        "HAProxy": IdentityWriter(db, operator.operator, proxy_uri, ca, "who_proxy"),
    }
    try:
        for path, w in writers.items():
            wait_for(lambda w=w: len(w.acks) > 30, 120, f"writes acknowledged through {path}")
        paused_at = time.time()
        db.pause(cid)
        new = _new_primary(db, old, "a failover while the primary is paused")
        promoted_at = time.time()  # the new primary is recorded: the old one is deposed
        db.unpause(cid)
        for path, w in writers.items():
            seen = len(w.acks)
            wait_for(
                lambda w=w, seen=seen: len(w.acks) > seen + 50,
                120,
                f"writes acknowledged by {new} through {path}",
            )
    finally:
        db.unpause()
        for w in writers.values():
            w.stop()
    deposed = {
        path: [a for a in w.acks if a["addr"] == old_addr and a["acked"] > promoted_at]
        for path, w in writers.items()
    }
    assert not any(deposed.values()), "the deposed primary acknowledged writes: " + "; ".join(
        f"through {path}: {len(acks)}, first {acks[:2]}" for path, acks in deposed.items() if acks
    )
    for path, w in writers.items():
        assert any(a["acked"] > promoted_at for a in w.acks), path
    assert paused_at < promoted_at


def _as_app(d: Db, member: str, password: str, sql: str) -> subprocess.CompletedProcess[str]:
    """SQL as the application role, over TCP to `member`, from inside its container. The
    host is the member's name on the database's network (`NAME.NETWORK` resolves on that
    network only): its plain name may resolve to its control-network address, from which
    the application role is refused (docs/security.md)."""
    cid = container_of(member)
    assert cid
    host = f"{member}.{names.database_network(d.name)}"
    return subprocess.run(
        ["docker", "exec", "-e", f"PGPASSWORD={password}", cid, "psql", "-h", host,
         "-U", names.APP_USER, "-d", names.APP_DATABASE, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_the_app_role_cannot_switch_synchronous_commit_off_for_everyone(db: Db) -> None:
    """`durability: sync` holds for every session the app role opens: it does not own its
    database (`ALTER DATABASE app SET synchronous_commit = off` is refused), and the
    role-level setting PostgreSQL lets every role make for itself is reset by the operator.
    (`SET synchronous_commit` inside one session stays that session's own choice.)"""
    db.apply()
    st = healthy(db.name)
    primary = st["primary"]
    password = credentials(db.name)["password"]
    refused = _as_app(db, primary, password, "ALTER DATABASE app SET synchronous_commit = off")
    assert refused.returncode != 0 and "must be owner" in refused.stderr, refused
    made = _as_app(db, primary, password, "CREATE TABLE owned_by_app (id int)")
    assert made.returncode == 0, made.stderr
    done = _as_app(db, primary, password, "ALTER ROLE app SET synchronous_commit = off")
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: _as_app(db, primary, password, "SHOW synchronous_commit").stdout.strip() == "on",
        60,
        "the operator to reset the app role's synchronous_commit",
    )
    # The reset is done by the member before the operator's cycle writes its event down.
    wait_for(
        lambda: any(
            e["kind"] == "durability" and "synchronous_commit" in e["message"]
            for e in status(db.name).get("events", [])
        ),
        60,
        "the durability event for the reset",
    )


AGENT_CALL = (
    "import sys, urllib.request; "
    "token = open('/run/secrets/agent-token').read().strip(); "
    "req = urllib.request.Request('http://127.0.0.1:8008' + sys.argv[1], "
    "data=sys.argv[2].encode(), "
    "headers={'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'}); "
    "print(urllib.request.urlopen(req, timeout=90).read().decode())"
)


def _agent(member: str, path: str, body: dict[str, Any]) -> None:
    """An action sent to a member's own agent, as the operator would send it."""
    cid = container_of(member)
    assert cid
    proc = subprocess.run(
        ["docker", "exec", cid, "python3", "-c", AGENT_CALL, path, json.dumps(body)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, f"{member} {path}: {proc.stderr}"


async def _record_switchover(db: str, old: str, target: str) -> None:
    """Write down a switchover in flight, as the operator does when it sends `Demote`."""
    async with SwarmClient() as swarm:
        store = DatabaseStore(swarm)
        stored = await store.get(db)
        assert stored is not None
        progress = PgProgress.from_status(stored.status.progress)
        progress.switchover = SwitchoverProgress(from_member=old, to_member=target)
        status = stored.status.model_copy(update={"progress": progress.to_status()})
        assert await store.write_status(db, status)


def test_a_switchover_target_promoted_by_an_operator_that_died_is_adopted(
    db: Db, operator: BuiltImages
) -> None:
    """Property 4 for switchovers, as the safety soak met it: the operator recorded a
    switchover, demoted the primary, promoted the target and died before writing that down.
    Here the operator is stopped and those steps are sent to the members' agents by hand;
    then an operator starts. It must adopt the promoted target, and the old primary must
    never be writable again, not even after the switchover's 30 s abort."""
    db.apply()
    st = healthy(db.name)
    old = st["primary"]
    target = next(m["name"] for m in st["members"] if m["name"] != old)
    token = int(st["fence_token"])
    declared = [db.member(i) for i in range(3)]
    old_container = container_of(old)
    assert old_container
    subprocess.run(
        ["docker", "service", "update", "--detach", "--replicas", "0", names.OPERATOR_SERVICE],
        capture_output=True, check=True,
    )  # fmt: skip
    try:
        wait_for(lambda: container_of(names.OPERATOR_SERVICE) is None, 60, "no operator")
        asyncio.run(_record_switchover(db.name, old, target))
        _agent(old, "/demote", {"token": token})
        _agent(
            target,
            "/promote",
            {
                "token": token,
                "synchronous_standby_names": list_for(target, declared, Durability.SYNC),
            },
        )
    finally:
        ensure_operator(operator)
    # From the moment an operator runs until past the switchover's 30 s abort, the demoted
    # primary is never writable again (its own container, sampled as fast as docker exec
    # allows), and it is never fenced: it has nothing to be fenced for.
    end = time.time() + SWITCHOVER_TIMEOUT + 10
    while time.time() < end:
        if container_of(old) != old_container:
            break
        probe = psql_in(old_container, "SELECT pg_is_in_recovery()", timeout=10)
        assert probe.returncode != 0 or probe.stdout.strip() == "t", f"{old} is writable again"
        time.sleep(0.1)
    assert container_of(old) == old_container, f"{old} was fenced: a second primary was made"
    s = wait_for(
        lambda: (
            (s := status(db.name)).get("primary") == target and s.get("state") == "Healthy" and s
        ),
        120,
        f"the new operator to adopt {target}",
    )
    assert not any("aborted" in e["message"] for e in s["events"]), s["events"][-5:]
