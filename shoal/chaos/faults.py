"""Faults injected through the Docker API (Pumba style), each with an undo.

A fault name is `ACTION-TARGET` (`kill-primary`, `pause-replica`, `partition-primary`, ...)
or `kill-operator`; `switchover-primary` asks for a planned switchover (under load, like any
fault). A compound fault joins two or three with `+` (`pause-replica+kill-primary`,
`partition-replica+kill-primary`, `kill-primary+kill-operator`): every target is chosen
first, then the parts are injected back to back, in the order written, and undone together.
Node faults (`kill-node`, `pause-node`, `partition-node`, `partition-node-managers`) act on
the node that runs the primary, in a lab (`shoal lab`): the node's container is killed or
paused on the local engine, or cut off from every other node (or from the managers only);
the undo heals it (a killed node is started again and rejoins with its stale containers).
The node that runs the chaos client (the engine `DOCKER_HOST` points at) is never faulted:
an injection that would hit it is skipped.
Targets are resolved from the database status (the `shoal.status` label
on the anchor service) and the Swarm task of the member's service. Network faults run in a
short-lived helper container (the base image, with iptables and iproute2) that shares the
target's network namespace and has NET_ADMIN: the member itself stays unprivileged.

`FaultRegistry` remembers every active fault; `undo_all` reverts whatever is still active
(the runner calls it in `finally`, so also on Ctrl-C and cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal import names
from shoal.chaos import dockerapi
from shoal.chaos.fault_names import NODE, FaultSpec
from shoal.chaos.history import FaultRecord
from shoal.lab import faults as lab_faults
from shoal.lab.faults import NodeFault
from shoal.lab.model import LabError
from shoal.status import MemberRole
from shoal.swarm.client import NotFound, SwarmClient, SwarmError
from shoal.swarm.operator_exec import operator_services

PARTITION_RULES = [("INPUT", "!", "-i", "lo"), ("OUTPUT", "!", "-o", "lo")]


class FaultError(RuntimeError):
    """A fault could not be injected (no such target, unsupported by the kernel, ...)."""


@dataclass(frozen=True)
class Target:
    name: str  # member (= its service) or the operator service
    container_id: str


async def resolve_target(swarm: SwarmClient, db: str, selector: str, rng: random.Random) -> Target:
    if selector == NODE:
        status = await dockerapi.database_status(swarm, db)
        node = next((m.node for m in status.members if m.name == status.primary), None)
        if not status.primary or not node:
            raise FaultError(f"database {db} has no primary on a known node right now")
        return Target(node, "")
    if selector == "operator":
        # `shoal operator deploy`'s service, else one deployed otherwise (a stack's
        # STACK_operator): operators are found by their label.
        found = await operator_services(swarm)
        service = (
            found[0] if found and names.OPERATOR_SERVICE not in found else names.OPERATOR_SERVICE
        )
    else:
        status = await dockerapi.database_status(swarm, db)
        members = [m.name for m in status.members] or [
            names.member_service(db, i) for i in range(max(status.members_desired, 1))
        ]
        if selector == "primary":
            if not status.primary:
                raise FaultError(f"database {db} has no primary right now")
            service = status.primary
        elif selector == "replica":
            replicas = [
                m.name
                for m in status.members
                if m.name != status.primary and m.role in (MemberRole.REPLICA, MemberRole.SYNCING)
            ]
            if not replicas:
                raise FaultError(f"database {db} has no replica right now")
            service = rng.choice(replicas)
        else:
            service = rng.choice(members)
    cid = await dockerapi.running_container(swarm, service)
    if cid is None:
        raise FaultError(f"{service} has no running container right now")
    return Target(service, cid)


@dataclass
class ActiveFault:
    spec: FaultSpec
    target: Target
    start: float
    end: float | None = None
    undone: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    parts: list[ActiveFault] = field(default_factory=list)  # a compound fault's injections

    @property
    def name(self) -> str:
        return "+".join(p.spec.name for p in self.parts) if self.parts else self.spec.name

    @property
    def target_names(self) -> str:
        return "+".join(p.target.name for p in self.parts) if self.parts else self.target.name

    def record(self) -> FaultRecord:
        return FaultRecord(self.name, self.target_names, self.start, self.end, self.detail)


def _iptables(op: str, rules: Sequence[tuple[str, ...]], extra: str = "") -> str:
    return " && ".join(
        f"iptables -w {op} {chain} {' '.join(m)} {extra} -j DROP".replace("  ", " ")
        for chain, *m in rules
    )


def _helper_script(spec: FaultSpec, undo: bool) -> str:
    if spec.action == "partition":
        if undo:
            return _iptables("-D", PARTITION_RULES) + " ; true"
        return " && ".join(
            f"iptables -w -I {c} 1 {' '.join(m)} -j DROP" for c, *m in PARTITION_RULES
        )
    if spec.action == "loss":
        p = spec.loss_percent / 100
        stat = f"-m statistic --mode random --probability {p}"
        if undo:
            return _iptables("-D", PARTITION_RULES, stat) + " ; true"
        return " && ".join(
            f"iptables -w -I {c} 1 {' '.join(m)} {stat} -j DROP" for c, *m in PARTITION_RULES
        )
    if spec.action == "latency":
        loop = "for i in $(ls /sys/class/net); do [ $i = lo ] && continue; "
        if undo:
            return loop + "tc qdisc del dev $i root 2>/dev/null; done; true"
        return loop + f"tc qdisc add dev $i root netem delay {spec.latency_ms}ms || exit 1; done"
    raise FaultError(f"{spec.action} needs no helper")


class FaultRegistry:
    """Injects faults and remembers them until they are undone."""

    def __init__(self, swarm: SwarmClient, db: str, run_id: str) -> None:
        self.swarm = swarm
        self.db = db
        self.run_id = run_id
        self.active: list[ActiveFault] = []
        self.history: list[ActiveFault] = []
        self._helpers = 0
        self._client_node: str | None = None

    async def client_node(self) -> str:
        """The Swarm node name of the engine the chaos client runs on (never faulted)."""
        if self._client_node is None:
            info = await self.swarm.info()
            self._client_node = str(info.get("Name", ""))
        return self._client_node

    async def _node_fault(self, fault: ActiveFault, undo: bool) -> None:
        node = fault.target.name
        if not undo and node == await self.client_node():
            raise FaultError(f"{node} runs the chaos client: not faulted")
        try:
            if undo:
                await asyncio.to_thread(lab_faults.heal, node)
            else:
                self.active.append(fault)  # registered first: a failed call is healed too
                await asyncio.to_thread(lab_faults.inject, NodeFault(fault.spec.action), node)
        except LabError as e:
            raise FaultError(f"node {node}: {e}") from e

    async def _helper(self, target: Target, script: str) -> None:
        self._helpers += 1
        try:
            code, out = await dockerapi.run_once(
                self.swarm,
                name=f"shoal-chaos-{self.run_id}-h{self._helpers}",
                image=names.IMAGE_BASE,
                cmd=["sh", "-c", script],
                labels=dockerapi.chaos_labels(self.run_id, "chaos-helper", self.db),
                network_mode=f"container:{target.container_id}",
                cap_add=["NET_ADMIN"],
            )
        except SwarmError as e:
            raise FaultError(f"helper for {target.name} failed: {e.message}") from e
        if code != 0:
            raise FaultError(f"helper for {target.name} exited {code}: {out.strip()[-300:]}")

    async def _target_running(self, target: Target) -> bool:
        info = await self.swarm.container(target.container_id)
        return info is not None and bool(info.get("State", {}).get("Running"))

    async def inject_all(self, specs: Sequence[FaultSpec], rng: random.Random) -> ActiveFault:
        """One fault, or a compound one: every target is chosen before anything is injected
        (so `pause-replica+kill-primary` pauses a replica of the primary it then kills)."""
        if len(specs) == 1:
            return await self.inject(specs[0], rng)
        targets = [await resolve_target(self.swarm, self.db, s.selector, rng) for s in specs]
        compound = ActiveFault(specs[0], targets[0], time.time())
        try:
            for spec, target in zip(specs, targets, strict=True):
                part = await self.inject(spec, rng, target=target, record=False)
                compound.parts.append(part)
        except BaseException:
            for part in reversed(compound.parts):
                with contextlib.suppress(Exception):
                    await self.undo(part)
            raise
        compound.detail["in_effect"] = time.time()
        self.history.append(compound)
        return compound

    async def inject(
        self,
        spec: FaultSpec,
        rng: random.Random,
        target: Target | None = None,
        record: bool = True,
    ) -> ActiveFault:
        if target is None:
            target = await resolve_target(self.swarm, self.db, spec.selector, rng)
        container = target.container_id or "-"
        fault = ActiveFault(spec, target, time.time())
        try:
            if spec.selector == NODE:
                await self._node_fault(fault, undo=False)
            elif spec.action == "switchover":
                await dockerapi.request_switchover(self.swarm, self.db)
            elif spec.action == "kill":
                await self.swarm.kill_container(container, "SIGKILL", timeout=None)
            elif spec.action == "stop":
                await self.swarm.stop_container(container, grace=5)
            elif spec.action == "pause":
                self.active.append(fault)  # registered first: a cancelled call is undone too
                await self.swarm.pause_container(container)
            elif spec.action == "disconnect":
                network = names.database_network(self.db)
                if await self.swarm.network(network) is None:
                    raise FaultError(f"network {network} not found")
                self.active.append(fault)
                await self.swarm.disconnect_network(network, target.container_id, force=True)
            else:
                self.active.append(fault)
                await self._helper(target, _helper_script(spec, undo=False))
        except (SwarmError, FaultError) as e:
            if fault in self.active:
                with contextlib.suppress(Exception):
                    await self.undo(fault)
            msg = e.message if isinstance(e, SwarmError) else str(e)
            raise FaultError(f"{spec.name} on {target.name}: {msg}") from e
        # (On cancellation the fault stays in `active` and `undo_all` reverts it.)
        # The fault is certainly in effect once the call returns: writes that were in flight
        # or slipped in while it was taking hold must not count as recovery.
        fault.detail["in_effect"] = time.time()
        if fault not in self.active:
            self.active.append(fault)
        if record:
            self.history.append(fault)
        return fault

    async def undo(self, fault: ActiveFault) -> None:
        """Revert one fault; a target that has disappeared needs no undo."""
        if fault.undone:
            return
        if fault.parts:
            try:
                for part in reversed(fault.parts):
                    await self.undo(part)
            finally:
                fault.undone = True
                fault.end = time.time()
            return
        spec, target = fault.spec, fault.target
        try:
            if spec.selector == NODE:
                await self._node_fault(fault, undo=True)
            elif spec.action == "pause":
                try:
                    await self.swarm.unpause_container(target.container_id)
                except SwarmError as e:
                    if e.status not in (404, 409):
                        raise
            elif spec.action == "disconnect":
                if await self._target_running(target):
                    await self.swarm.connect_network(
                        names.database_network(self.db), target.container_id
                    )
            elif spec.action in ("partition", "loss", "latency") and await self._target_running(
                target
            ):
                await self._helper(target, _helper_script(spec, undo=True))
        finally:
            fault.undone = True
            fault.end = time.time()
            if fault in self.active:
                self.active.remove(fault)

    async def undo_all(self) -> list[str]:
        """Undo every active fault and remove leftover helpers; returns the errors."""
        errors: list[str] = []
        for fault in list(reversed(self.active)):
            try:
                await self.undo(fault)
            except Exception as e:
                errors.append(f"undo {fault.spec.name} on {fault.target.name}: {e}")
        for cid in await dockerapi.list_run_containers(self.swarm, self.run_id):
            info = await self.swarm.container(cid)
            if info is None:  # as before the port: a helper gone meanwhile is an error
                raise NotFound(f"No such container: {cid}", 404)
            if info.get("Config", {}).get("Labels", {}).get(names.LABEL_ROLE) == "chaos-helper":
                await dockerapi.remove_container(self.swarm, cid)
        return errors
