"""What every test directory shares: `FakeSwarm`, the one in-memory fake of Swarm.

`FakeSwarm` implements `SwarmApi` (shoal/swarm/client.py), the calls the operator's reconcile
cycle, the declaration store, the lease and the clean-up make, with Swarm's semantics where
a decision depends on them: every service update names the version it read and fails with
`VersionConflict` when the service changed since (the compare-and-swap the store and the
lease stand on); names are unique per kind; a replicated service gets a task on the local
node, a forced update replaces it; label filters match as Docker's do. It inherits the
named calls (`ensure_secret`, `networks_with_label`, ...) from `ByKind`, as `SwarmClient`
does, so both build the same specs.

It fakes Docker for UNIT tests of the logic above it only. Integration, chaos and multinode
tests run against real engines, never against this.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from shoal.swarm.client import (
    CONFIGS,
    JSON,
    NETWORKS,
    SECRETS,
    SERVICES,
    ByKind,
    Kind,
    NotFound,
    SwarmApi,
    SwarmError,
    VersionConflict,
)

KINDS = (SERVICES, NETWORKS, SECRETS, CONFIGS)
SERVICE_ID_LABEL = "com.docker.swarm.service.id"
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"


def fake_node(node_id: str, hostname: str, state: str = "ready", role: str = "manager") -> JSON:
    """A node as `GET /nodes` answers it."""
    return {
        "ID": node_id,
        "Spec": {"Role": role, "Availability": "active", "Labels": {}},
        "Description": {"Hostname": hostname, "Platform": {"OS": "linux"}},
        "Status": {"State": state},
    }


class FakeSwarm(ByKind):
    """A single-node swarm in dictionaries (see the module's docstring)."""

    def __init__(self, node_id: str = "node-1", hostname: str = "vm") -> None:
        self.objects: dict[str, dict[str, JSON]] = {k.path: {} for k in KINDS}
        self.task_list: list[JSON] = []
        self.node_list: list[JSON] = [fake_node(node_id, hostname)]
        self.node_id = node_id
        self.hostname = hostname
        self.updates = 0  # service updates that went through
        self.conflicts_to_inject = 0  # the next N updates fail as if someone wrote first
        self.yield_on_read = False  # let other coroutines run between a read and a write
        self.busy: dict[str, int] = {}  # object name -> removals refused as "in use"
        self.lingering: dict[str, int] = {}  # service id -> polls its containers outlive it
        self.log: list[str] = []  # every change, in order: "create service orders-0", ...
        # Every Docker API round trip the real `SwarmClient` would make for the calls made
        # so far, as "METHOD path" ("GET services/shoal-db-orders", "GET tasks?filters"):
        # one entry per `SwarmClient.call`, so tests can bound how many a cycle makes.
        self.calls: list[str] = []
        self._serial = itertools.count(1)
        self._versions = itertools.count(11)

    # --- the primitives of ByKind -------------------------------------------------------
    async def find(self, kind: Kind, name: str) -> JSON | None:
        self.calls.append(f"GET {kind.path}?name={name}")
        await self._read()
        found = next((o for o in self.objects[kind.path].values() if kind.name_of(o) == name), None)
        return copy.deepcopy(found)

    async def with_label(self, kind: Kind, key: str, value: str | None = None) -> list[JSON]:
        self.calls.append(f"GET {kind.path}?label={key}" + (f"={value}" if value else ""))
        await self._read()
        return [
            copy.deepcopy(o)
            for o in self.objects[kind.path].values()
            if key in _labels(kind, o) and (value is None or _labels(kind, o)[key] == value)
        ]

    async def create(self, kind: Kind, spec: JSON) -> str:
        name = str(spec["Name"])
        self.calls.append(f"POST {kind.path}/create {name}")
        if self._lookup(kind, name) is not None:
            raise SwarmError(
                f"Docker API error 409: {kind.noun} {name} already exists",
                409,
                docker=f"{kind.noun} {name} already exists",
            )
        ident = f"{kind.noun}{next(self._serial)}"
        obj: JSON
        if kind is NETWORKS:
            obj = {"Id": ident, "Scope": "swarm", **copy.deepcopy(spec)}
            obj.setdefault("Labels", {})
            obj.setdefault(
                "IPAM", {"Config": [{"Subnet": f"10.0.{len(self.objects['networks'])}.0/24"}]}
            )
        else:
            obj = {"ID": ident, "Version": {"Index": next(self._versions)}}
            obj["Spec"] = copy.deepcopy(spec)
        self.objects[kind.path][ident] = obj
        self.log.append(f"create {kind.noun} {name}")
        if kind is SERVICES:
            self._schedule(obj)
        return ident

    async def remove(self, kind: Kind, name_or_id: str) -> bool:
        self.calls.append(f"DELETE {kind.path}/{name_or_id}")
        obj = self._lookup(kind, name_or_id)
        if obj is None:
            return False
        name = kind.name_of(obj)
        if self.busy.get(name, 0) > 0:
            self.busy[name] -= 1
            raise SwarmError(f"Docker API error 400: {kind.noun} {name} is in use", 400)
        del self.objects[kind.path][kind.id_of(obj)]
        self.log.append(f"remove {kind.noun} {name}")
        if kind is SERVICES:
            for t in self.task_list:
                if t["ServiceID"] == obj["ID"] and t["DesiredState"] == "running":
                    self._end(t, "shutdown")
        return True

    # --- services ------------------------------------------------------------------------
    async def service(self, name_or_id: str) -> JSON | None:
        self.calls.append(f"GET services/{name_or_id}")
        found = copy.deepcopy(self._lookup(SERVICES, name_or_id))
        await self._read()
        return found

    async def update_service(self, service_id: str, version: int, spec: JSON) -> None:
        self.calls.append(f"POST services/{spec['Name']}/update")
        current = self.objects["services"].get(service_id)
        if current is None:
            raise NotFound(f"service {service_id} not found", 404)
        if self.conflicts_to_inject > 0:
            self.conflicts_to_inject -= 1
            current["Version"]["Index"] = next(self._versions)  # someone else wrote in between
        if current["Version"]["Index"] != version:
            raise VersionConflict("update out of sequence", 500)
        template_changed = current["Spec"].get("TaskTemplate") != spec.get("TaskTemplate")
        current["Spec"] = copy.deepcopy(spec)
        current["Version"]["Index"] = next(self._versions)
        self.updates += 1
        self.log.append(f"update service {spec['Name']}")
        if template_changed:  # Swarm rolls the service's tasks: stop-first, one by one
            for t in self.task_list:
                if t["ServiceID"] == service_id and t["DesiredState"] == "running":
                    self._end(t, "shutdown")
            self._schedule(current)

    # --- tasks, nodes, the engine ----------------------------------------------------------
    async def tasks(self, **filters: str | list[str]) -> list[JSON]:
        self.calls.append("GET tasks" + "".join(f"?{k}={filters[k]}" for k in sorted(filters)))
        await self._read()
        wanted = _as_list(filters.get("service"))
        desired = _as_list(filters.get("desired-state"))
        labels = _as_list(filters.get("label"))
        out = []
        for t in self.task_list:
            svc = self.objects["services"].get(t["ServiceID"])
            names = {t["ServiceID"], svc["Spec"]["Name"] if svc else t["ServiceName"]}
            if wanted and not names & set(wanted):
                continue
            if desired and t["DesiredState"] not in desired:
                continue
            if not all(_label_matches(t["ServiceLabels"], label) for label in labels):
                continue
            out.append(copy.deepcopy(t))
        return out

    async def nodes(self) -> list[JSON]:
        self.calls.append("GET nodes")
        return copy.deepcopy(self.node_list)

    async def info(self) -> JSON:
        self.calls.append("GET info")
        return {"Name": self.hostname, "Swarm": {"NodeID": self.node_id}}

    async def events(self, **filters: list[str]) -> AsyncIterator[JSON]:
        """No events: the tests drive the cycle themselves."""
        none: list[JSON] = []
        for event in none:
            yield event

    async def subnets_in_use(self) -> list[str]:
        self.calls.append("GET networks")
        return [
            str(c["Subnet"])
            for n in self.objects["networks"].values()
            for c in (n.get("IPAM") or {}).get("Config") or []
            if c.get("Subnet")
        ]

    # --- containers of this node (those of its running tasks) ----------------------------
    async def containers(self, **filters: str | list[str]) -> list[JSON]:
        self.calls.append("GET containers/json")
        labels = _as_list(filters.get("label"))
        states = _as_list(filters.get("status"))
        out: list[JSON] = []
        for sid, left in self.lingering.items():
            if left > 0 and f"{SERVICE_ID_LABEL}={sid}" in labels:
                self.lingering[sid] = left - 1
                out.append({"Id": f"lingering-{sid}", "State": "running", "Labels": {}})
        for t in self.task_list:
            status = t["Status"]
            if t["NodeID"] != self.node_id or status["State"] != "running":
                continue
            svc = self.objects["services"].get(t["ServiceID"])
            # As Docker labels a task's container: the service's ContainerSpec labels too.
            own = (svc or {}).get("Spec", {}).get("TaskTemplate", {}).get("ContainerSpec", {})
            container = {
                "Id": status["ContainerStatus"]["ContainerID"],
                "State": "running",
                "Labels": {
                    **(own.get("Labels") or {}),
                    SERVICE_ID_LABEL: t["ServiceID"],
                    SERVICE_NAME_LABEL: t["ServiceName"],
                },
            }
            have = {f"{k}={v}" for k, v in container["Labels"].items()}
            if all(label in have for label in labels) and (not states or "running" in states):
                out.append(container)
        return out

    async def kill_container(
        self, container_id: str, signal: str = "SIGKILL", *, timeout: float | None = 30.0
    ) -> None:
        self.calls.append(f"POST containers/{container_id}/kill")
        task = next(
            (
                t
                for t in self.task_list
                if t["Status"]["ContainerStatus"]["ContainerID"] == container_id
                and t["NodeID"] == self.node_id
            ),
            None,
        )
        if task is None:
            raise NotFound(f"No such container: {container_id}", 404)
        if task["Status"]["State"] != "running":
            raise SwarmError(f"Docker API error 409: container {container_id} is not running", 409)
        self.log.append(f"kill container {container_id}")
        self._end(task, "failed", "task: non-zero exit (137)")

    # --- for the tests ----------------------------------------------------------------------
    def write_label(self, service: str, key: str, value: str) -> None:
        """Set a service label as another writer would (its version moves on)."""
        svc = self._lookup(SERVICES, service)
        assert svc is not None, f"no service {service}"
        svc["Spec"].setdefault("Labels", {})[key] = value
        svc["Version"]["Index"] = next(self._versions)

    def labels(self, name: str) -> dict[str, Any]:
        """The labels of the service `name` as stored now."""
        found = self._lookup(SERVICES, name)
        assert found is not None, name
        return dict(found["Spec"].get("Labels") or {})

    def names(self, kind: Kind) -> set[str]:
        return {kind.name_of(o) for o in self.objects[kind.path].values()}

    def task_of(self, service: str) -> JSON:
        """The newest task of the service `service`."""
        tasks = [t for t in self.task_list if t["ServiceName"] == service]
        assert tasks, f"{service} has no task"
        return max(tasks, key=lambda t: int(t["Version"]["Index"]))

    def task_dies(self, service: str, err: str = "task: non-zero exit (137)") -> JSON:
        """The service's task fails, as Swarm reports it before it has started another one
        (the new task is `restart`ed by the test, if it wants one)."""
        task = self.task_of(service)
        self._end(task, "failed", err)
        return task

    def restart(self, service: str) -> JSON:
        """Swarm starts the service's next task (a new, empty container)."""
        svc = self._lookup(SERVICES, service)
        assert svc is not None, service
        return self._schedule(svc)

    # --- inside ------------------------------------------------------------------------------
    async def _read(self) -> None:
        if self.yield_on_read:
            await asyncio.sleep(0)

    def _lookup(self, kind: Kind, name_or_id: str) -> JSON | None:
        objects = self.objects[kind.path]
        if name_or_id in objects:
            return objects[name_or_id]
        return next((o for o in objects.values() if kind.name_of(o) == name_or_id), None)

    def _schedule(self, service: JSON) -> JSON:
        """A replicated service with replicas gets a running task on this node."""
        replicas = service["Spec"].get("Mode", {}).get("Replicated", {}).get("Replicas", 0)
        if not replicas:
            return {}
        n = next(self._serial)
        task: JSON = {
            "ID": f"task{n}",
            "ServiceID": service["ID"],
            "ServiceName": service["Spec"]["Name"],  # not Docker's: the fake's own index
            # Not shown by Docker either: the service's labels when the task was made, which
            # Docker's `label` filter of GET /tasks matches (swarmkit's ServiceAnnotations).
            "ServiceLabels": dict(service["Spec"].get("Labels") or {}),
            "Spec": copy.deepcopy(service["Spec"].get("TaskTemplate") or {}),
            "NodeID": self.node_id,
            "DesiredState": "running",
            "Version": {"Index": next(self._versions)},
            "UpdatedAt": f"2026-01-01T00:00:{n % 60:02d}Z",
            "Status": {"State": "running", "ContainerStatus": {"ContainerID": f"container{n}"}},
        }
        self.task_list.append(task)
        return task

    def _end(self, task: JSON, state: str, err: str | None = None) -> None:
        task["DesiredState"] = "shutdown"
        task["Status"]["State"] = state
        if err is not None:
            task["Status"]["Err"] = err
        task["Version"]["Index"] = next(self._versions)


def _labels(kind: Kind, obj: JSON) -> Mapping[str, str]:
    labels = obj.get("Labels") if kind.name_at_top else obj["Spec"].get("Labels")
    return labels or {}


def _label_matches(labels: Mapping[str, str], wanted: str) -> bool:
    """Docker's label filter: `key` (present) or `key=value`."""
    key, eq, value = wanted.partition("=")
    return key in labels and (not eq or labels[key] == value)


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _is_a_swarm_api(fake: FakeSwarm) -> SwarmApi:
    return fake  # mypy: the fake keeps the shape of the Protocol


@pytest.fixture
def fake_swarm() -> FakeSwarm:
    return FakeSwarm()
