"""Swarm nodes as decisions read them: readiness, availability and the attributes that
placement constraints and the spread key name (`node.id`, `node.labels.zone`, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.declaration.model import CONSTRAINT_RE


@dataclass(frozen=True)
class NodeInfo:
    """One Swarm node, as placement decisions read it."""

    id: str
    hostname: str
    role: str  # manager | worker
    state: str  # Status.State: ready, down, unknown (after a leader election), disconnected
    active: bool  # Spec.Availability == "active" (not drained or paused)
    labels: Mapping[str, str] = field(default_factory=dict)  # node.labels.*
    engine_labels: Mapping[str, str] = field(default_factory=dict)  # engine.labels.*
    os: str = "linux"
    arch: str = "x86_64"

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def down(self) -> bool:
        """Swarm declared this node down (its heartbeat expired): what runs there is out of
        reach, not known dead. Only `down` counts: after a Raft leader election every node
        is `unknown` until its next heartbeat, and treating that as lost would move (and so
        empty) every member at once."""
        return self.state == "down"

    def attribute(self, key: str) -> str | None:
        """The value of a Swarm node attribute (`node.id`, `node.labels.zone`, ...)."""
        simple = {
            "node.id": self.id,
            "node.hostname": self.hostname,
            "node.role": self.role,
            "node.platform.os": self.os,
            "node.platform.arch": self.arch,
        }
        if key in simple:
            return simple[key]
        prefixed = (("node.labels.", self.labels), ("engine.labels.", self.engine_labels))
        for prefix, labels in prefixed:
            if key.startswith(prefix):
                return labels.get(key[len(prefix) :])
        return None

    def satisfies(self, constraint: str) -> bool:
        m = CONSTRAINT_RE.match(constraint)
        if m is None:
            return False
        key, op, value = m.groups()
        have = self.attribute(key)
        return have == value if op == "==" else have != value


def node_info(raw: Mapping[str, Any]) -> NodeInfo:
    """A node from Docker's `GET /nodes` answer."""
    spec = raw.get("Spec") or {}
    desc = raw.get("Description") or {}
    platform = desc.get("Platform") or {}
    return NodeInfo(
        id=str(raw.get("ID", "")),
        hostname=str(desc.get("Hostname", "")),
        role=str(spec.get("Role", "worker")),
        state=str((raw.get("Status") or {}).get("State", "unknown")),
        active=spec.get("Availability", "active") == "active",
        labels=dict(spec.get("Labels") or {}),
        engine_labels=dict((desc.get("Engine") or {}).get("Labels") or {}),
        os=str(platform.get("OS", "linux")),
        arch=str(platform.get("Architecture", "x86_64")),
    )
