"""A member's Swarm task as the operator sees it: Swarm's word, no engine in it."""

from __future__ import annotations

from dataclasses import dataclass

DEAD_TASK_STATES = frozenset({"failed", "shutdown", "rejected", "complete", "orphaned", "remove"})


@dataclass(frozen=True)
class TaskInfo:
    """The member's newest Swarm task."""

    task_id: str
    state: str  # Swarm's Status.State: new, pending, assigned, preparing, starting, running, ...
    node_id: str
    node: str | None
    container_id: str | None
    error: str | None = None
    # Swarm lost the heartbeat of the task's node: what runs there is out of reach, and no
    # word of its death can come (a killed or cut-off host).
    node_down: bool = False

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def dead(self) -> bool:
        return self.state in DEAD_TASK_STATES
