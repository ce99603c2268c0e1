"""The chaos suite's fault names and how they parse (`kill-primary`, `pause-replica+kill-
primary`, `kill-node`, ...): no Docker in it, so the command line lists and checks them
without importing the fault machinery (shoal/chaos/faults.py)."""

from __future__ import annotations

from dataclasses import dataclass

ACTIONS = ("kill", "stop", "pause", "partition", "disconnect", "loss", "latency", "switchover")
MAX_PARTS = 3
SELECTORS = ("primary", "replica", "random")
# Node faults by name -> the lab's fault (shoal/lab/faults.py NodeFault values).
NODE_FAULTS = {
    "kill-node": "kill",
    "pause-node": "pause",
    "partition-node": "partition",
    "partition-node-managers": "partition-managers",
}
NODE = "node"


@dataclass(frozen=True)
class FaultSpec:
    action: str
    selector: str  # primary | replica | random | operator
    loss_percent: int = 30
    latency_ms: int = 500

    @property
    def name(self) -> str:
        if self.selector == NODE:
            return next(n for n, a in NODE_FAULTS.items() if a == self.action)
        return "kill-operator" if self.selector == "operator" else f"{self.action}-{self.selector}"


def parse_fault(name: str) -> FaultSpec:
    """`kill-primary` -> FaultSpec("kill", "primary"); raises ValueError with a clear message."""
    if name == "kill-operator":
        return FaultSpec("kill", "operator")
    if name in NODE_FAULTS:
        return FaultSpec(NODE_FAULTS[name], NODE)
    action, _, selector = name.partition("-")
    if action not in ACTIONS or selector not in SELECTORS:
        raise ValueError(
            f"unknown fault {name!r}: expected kill-operator, {', '.join(NODE_FAULTS)} or "
            f"ACTION-TARGET with ACTION in {', '.join(ACTIONS)} and TARGET in "
            f"{', '.join(SELECTORS)}"
        )
    if action == "switchover" and selector != "primary":
        raise ValueError(f"unknown fault {name!r}: a switchover is of the primary only")
    return FaultSpec(action, selector)


def parse_faults(name: str) -> tuple[FaultSpec, ...]:
    """A single or compound (`A+B`) fault name; raises ValueError naming the problem."""
    parts = name.split("+")
    if len(parts) > MAX_PARTS:
        raise ValueError(f"fault {name!r}: a compound fault has at most {MAX_PARTS} parts")
    if len(set(parts)) != len(parts):
        raise ValueError(f"fault {name!r}: the same part twice")
    return tuple(parse_fault(p) for p in parts)


def all_fault_names() -> list[str]:
    single = [f"{a}-{s}" for a in ACTIONS for s in SELECTORS if a != "switchover"]
    return [*single, "switchover-primary", "kill-operator", *NODE_FAULTS]
