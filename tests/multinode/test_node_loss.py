"""Losing a host loses nothing: on a lab of four real Swarm nodes (three managers), the
members of one database run on distinct nodes; killing the primary's node fails over with
every acknowledged write kept, the lost member is re-created on the spare node and
re-seeded, and the operator (wherever it ran) keeps acting."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest

from shoal import names
from shoal.lab.model import node_docker_host as node_host
from shoal.platform.images import BuiltImages
from shoal.plugins.postgres.agent.lease import REACTION
from shoal.swarm.lease import LeaseSettings
from tests.integration.support import (
    apply,
    declaration,
    shoal,
    status,
    wait_for,
)
from tests.multinode.support import (
    healthy_spread,
    ids_on,
    lab_nodes,
    manager_but,
    member_nodes,
    new_primary,
    node_ready,
    on_node,
    primary_and_node,
    swarm_answers,
    writer_of,
    writers_on_both_sides,
    writes_after,
    writing,
)

pytestmark = pytest.mark.integration


def test_killing_the_primarys_node_fails_over_and_loses_no_acknowledged_write(
    lab: BuiltImages, unique_name: str, tmp_path: Any
) -> None:
    name = unique_name
    apply(declaration(name, members=3, unreachable=5), tmp_path)
    victim: str | None = None
    try:
        st = healthy_spread(name, 3)
        old, victim = primary_and_node(st)
        # The client and this test's CLI talk to a manager that survives the fault.
        os.environ["DOCKER_HOST"] = node_host(manager_but(victim))
        writer = writer_of(name, lab.operator, "acked")
        try:
            writing(writer)
            before = max(writer.so_far())
            killed = shoal("lab", "fault", "kill", victim)
            assert killed.returncode == 0, killed.stderr
            st = new_primary(name, old, "a standby on another node to be promoted")
            new = st["primary"]
            assert member_nodes(st)[new] != victim
            writes_after(writer, before, 180, "writes to resume on the new primary")
            # The lost member comes back on the spare node, empty, and is re-seeded.
            st = healthy_spread(name, 3, avoid=victim)
        finally:
            writer.kill()
            acked = writer.acknowledged(timeout=60)
        assert {i for i in acked if i > before}, "nothing acknowledged after the node died"
        assert st["primary"] == new
        assert st["failovers"] >= 1
        assert member_nodes(st)[old] not in (None, victim)

        def converged() -> bool:
            now = status(name)
            sets = [ids_on(now, m, "acked") for m in member_nodes(now)]
            return all(s is not None and acked <= s for s in sets)

        wait_for(converged, 180, "every member to hold every acknowledged write", every=2)
        missing = acked - (ids_on(status(name), new, "acked") or set())
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"

        # The killed node comes back with its stale containers, the old primary's among them
        # (on disk, exited). Swarm gave that member's task to another node: the stale one
        # must stay stopped, and the database keeps its new primary and every write.
        rejoined = shoal("lab", "heal", victim)
        assert rejoined.returncode == 0, rejoined.stderr
        stale = on_node(victim, "ps", "-aq", "-f", f"label=com.docker.swarm.service.name={old}")
        assert stale.returncode == 0, stale.stderr
        assert stale.stdout.split(), f"no container of {old} left on {victim} to rejoin with"
        swarm_answers()
        wait_for(lambda: node_ready(victim), 180, f"{victim} to rejoin the swarm as Ready", every=2)
        for _ in range(10):  # for 20 s after the node is back, every 2 s
            running = on_node(
                victim, "ps", "-q", "-f", f"label=com.docker.swarm.service.name={old}"
            )
            assert running.returncode == 0, running.stderr
            assert not running.stdout.split(), f"a stale container of {old} runs on {victim}"
            now = status(name)
            assert now.get("primary") == new, f"the primary changed after the rejoin: {now}"
            assert member_nodes(now)[old] != victim
            time.sleep(2)
        wait_for(converged, 180, "every member to hold every write after the rejoin", every=2)
    finally:
        healed = shoal("lab", "heal", victim) if victim is not None else None
        if healed is not None and healed.returncode != 0:
            print(healed.stderr)
        shoal("delete", name, "--wait", timeout=300)


def test_a_primary_cut_off_with_its_clients_acknowledges_nothing_that_is_then_lost(
    lab: BuiltImages, unique_name: str, tmp_path: Any
) -> None:
    """The partition Swarm cannot fence: the old primary keeps running on the cut-off node,
    and a client beside it keeps writing to it, with a 3 s query timeout (a cancel request,
    as drivers send). No standby shares its node (placement) and the standbys stop
    following it before the promotion, so under `durability: sync` its commits wait. A
    cancelled wait would report success (PostgreSQL's syncrep.c); the member's agent ends
    such waits by terminating the backend first, so the client sees an error, never an
    acknowledgement: every write either client saw acknowledged survives the heal."""
    name = unique_name
    swarm_answers()
    apply(declaration(name, members=3, unreachable=5), tmp_path)
    victim: str | None = None
    try:
        st = healthy_spread(name, 3)
        old, victim = primary_and_node(st)
        # `beside` runs on the primary's node, so it stays on the primary's side.
        with writers_on_both_sides(name, lab.operator, victim, 3.0) as (beside, far):
            cut = shoal("lab", "fault", "partition", victim)
            assert cut.returncode == 0, cut.stderr
            st = new_primary(name, old, "a standby on the majority side to be promoted")
            new = st["primary"]
            before = max(far.so_far())
            writes_after(far, before, 180, f"writes to resume on {new}")
            time.sleep(10)  # the cut-off primary keeps running beside its client meanwhile
            healed = shoal("lab", "heal", victim)
            assert healed.returncode == 0, healed.stderr
            st = healthy_spread(name, 3)
        acked = {"far": far.acknowledged(timeout=60), "beside": beside.acknowledged(timeout=60)}
        assert st["primary"] == new

        def holds_all() -> bool:
            now = status(name)
            return all(
                (ids := ids_on(now, m, table)) is not None and acked[table] <= ids
                for m in member_nodes(now)
                for table in acked
            )

        try:
            wait_for(holds_all, 180, "every member to hold every acknowledged write", every=2)
        except AssertionError:
            now = status(name)
            lost = {
                (m, table): len(acked[table] - (ids_on(now, m, table) or set()))
                for m in member_nodes(now)
                for table in acked
            }
            raise AssertionError(f"acknowledged writes missing (member, client): {lost}") from None
    finally:
        if victim is not None:
            shoal("lab", "heal", victim)
        shoal("delete", name, "--wait", timeout=300)


# The bound an isolated primary keeps to (agent/lease.py): `unreachableSeconds` after its last
# renewal (which may come until the cut is in effect) or, when the operator was cut off with
# it, the end of that operator's leadership lease (no renewal outlasts it; at most
# duration - safety_margin after its last write to Swarm), plus the agent's reaction, plus
# 0.5 s for the way from the writer container to this process.
UNREACHABLE = 5
_LEADERSHIP = LeaseSettings().duration - LeaseSettings().safety_margin
LEASE_BOUND = max(UNREACHABLE, _LEADERSHIP) + REACTION + 0.5


def test_an_async_primary_cut_off_with_its_clients_stops_acknowledging_within_its_lease(
    lab: BuiltImages, unique_name: str, tmp_path: Any
) -> None:
    """Property 13, where only the lease helps: under `durability: async` a cut-off primary
    waits for no standby, so nothing else stops it acknowledging the writes of the clients
    beside it. Its lease ends it within the bound, and the operator promotes a standby only
    after that: the clients never see two primaries acknowledge at the same time."""
    name = unique_name
    swarm_answers()
    apply(declaration(name, members=3, durability="async", unreachable=UNREACHABLE), tmp_path)
    victim: str | None = None
    try:
        st = healthy_spread(name, 3)
        old, victim = primary_and_node(st)
        with writers_on_both_sides(name, lab.operator, victim) as (beside, far):
            cut_at = time.time()
            cut = shoal("lab", "fault", "partition", victim)
            assert cut.returncode == 0, cut.stderr
            cut_done = time.time()
            st = new_primary(
                name, old, f"a standby on the majority side to be promoted; now {status(name)}"
            )
            wait_for(
                lambda: any(t > cut_done for t in far.acked_at.values()),
                180,
                f"writes to resume on {st['primary']}; errors {far.errors[-3:]}",
            )
            time.sleep(10)  # the cut-off primary's clients keep trying meanwhile
            healed_at = time.time()
            before_heal = [t for t in beside.acked_at.values() if t < healed_at]
            print(
                f"[lease] beside: {len(before_heal)} acks before the heal, "
                f"{len([t for t in before_heal if t > cut_done])} after the cut; "
                f"errors {beside.errors[-4:]}"
            )
            healed = shoal("lab", "heal", victim)
            assert healed.returncode == 0, healed.stderr
            healthy_spread(name, 3)
        last_old = max(before_heal)
        first_new = min(t for t in far.acked_at.values() if t > cut_done)
        assert last_old - cut_done < LEASE_BOUND, (
            f"the cut-off primary acknowledged writes {last_old - cut_done:.1f}s after the cut "
            f"was in effect (bound {LEASE_BOUND:.1f}s; the cut took {cut_done - cut_at:.1f}s)"
        )
        print(
            f"[lease] last ack beside the cut-off primary {last_old - cut_done:.2f}s after the "
            "cut; "
            f"first ack of the new primary {first_new - cut_done:.2f}s after it"
        )
        assert last_old < first_new, (
            f"two primaries acknowledged at once: the old one {last_old - first_new:.1f}s "
            "after the new one's first"
        )
    finally:
        if victim is not None:
            shoal("lab", "heal", victim)
        shoal("delete", name, "--wait", timeout=300)


def operator_node() -> str | None:
    """The node running the operator's task; None while the swarm cannot say (a Raft
    election after a manager was cut off)."""
    proc = subprocess.run(
        ["docker", "service", "ps", names.OPERATOR_SERVICE, "--filter", "desired-state=running",
         "--format", "{{.Node}} {{.CurrentState}}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    running = [ln.split()[0] for ln in proc.stdout.splitlines() if " Running " in f"{ln} "]
    return running[0] if proc.returncode == 0 and running else None


def test_cutting_off_the_operators_node_with_the_primary_fails_over_elsewhere(
    lab: BuiltImages, unique_name: str, tmp_path: Any
) -> None:
    """Manager loss with the operator on it: the node running the operator *and* the primary
    is cut off. Swarm starts the operator on another manager; that operator never renewed
    the old primary's lease, and the old primary's replacement answers under its name, so
    it must count the old container's lease from its own start (operator/leases.py), and
    fail over once it is surely over. Every acknowledged write survives."""
    name = unique_name
    swarm_answers()
    apply(declaration(name, members=3, unreachable=UNREACHABLE), tmp_path)
    victim: str | None = None
    try:
        st = healthy_spread(name, 3)
        victim = wait_for(operator_node, 120, "the operator's node")
        on_victim = [m for m, host in member_nodes(st).items() if host == victim]
        if on_victim and on_victim[0] != st["primary"]:
            moved = shoal("switchover", name, "--to", on_victim[0], timeout=120)
            assert moved.returncode == 0, moved.stderr
            st = wait_for(
                lambda: (
                    (s := status(name)).get("primary") == on_victim[0]
                    and s.get("state") == "Healthy"
                    and s
                ),
                120,
                f"the switchover to {on_victim[0]}",
            )
        old = st["primary"]
        print(f"[operator-node] {victim} runs the operator and {on_victim or 'no member'}")
        os.environ["DOCKER_HOST"] = node_host(manager_but(victim))
        writer = writer_of(name, lab.operator, "acked")
        try:
            writing(writer)
            cut = shoal("lab", "fault", "partition", victim)
            assert cut.returncode == 0, cut.stderr
            before = max(writer.so_far())
            swarm_answers()  # cutting off a manager may start a Raft election
            if member_nodes(st)[old] == victim:
                what = "a standby on the majority side to be promoted by the moved operator"
                st = new_primary(name, old, what, every=2)
            writes_after(writer, before, 240, "writes to go on")
            wait_for(lambda: operator_node() not in (None, victim), 300, "the operator to move")
            healed = shoal("lab", "heal", victim)
            assert healed.returncode == 0, healed.stderr
            st = healthy_spread(name, 3)
        finally:
            writer.kill()
        acked = writer.acknowledged(timeout=60)

        def holds_all() -> bool:
            now = status(name)
            return all(
                (ids := ids_on(now, m, "acked")) is not None and acked <= ids
                for m in member_nodes(now)
            )

        wait_for(holds_all, 180, "every member to hold every acknowledged write", every=2)
    finally:
        if victim is not None:
            shoal("lab", "heal", victim)
        shoal("delete", name, "--wait", timeout=300)


def test_too_few_nodes_for_the_members_is_degraded_never_silently_stacked(
    lab: BuiltImages, unique_name: str, tmp_path: Any
) -> None:
    name = unique_name
    wait_for(
        lambda: all(n["state"] == "running" for n in lab_nodes()), 120, "every lab node to run"
    )
    swarm_answers()
    apply(declaration(name, members=5), tmp_path)  # five members, four nodes
    try:

        def degraded_over_all_nodes() -> dict[str, Any] | None:
            st = status(name)
            hosts = {m.get("node") for m in st.get("members", [])}
            ok = (
                st.get("state") == "Degraded"
                and st.get("members_ready") == 5
                and "4 eligible nodes for 5 members" in st.get("message", "")
                and len(hosts - {None}) == 4
            )
            return st if ok else None

        # Five members run; two share a node, and the status says so.
        wait_for(degraded_over_all_nodes, 600, f"Degraded on 4 nodes; now {status(name)}", every=2)
    finally:
        shoal("delete", name, "--wait", timeout=300)
