"""Feasibility: can this build run on this agent at all, and does it fit in what is free now?

Pure functions, no I/O. A build is feasible on an agent when the agent's attributes satisfy
every constraint; it fits when the agent's free resources cover its request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Constraint = tuple[str, str, str]  # (attribute, "==" | "!=", value)


@dataclass(frozen=True, slots=True)
class Resources:
    cpus: float
    mem: int
    disk: int = 0

    def covers(self, other: Resources) -> bool:
        # A small epsilon so 0.1 + 0.2 style sums do not refuse an exact fit.
        return (self.cpus + 1e-9 >= other.cpus and self.mem >= other.mem and self.disk >= other.disk)

    def minus(self, other: Resources) -> Resources:
        return Resources(round(self.cpus - other.cpus, 6), self.mem - other.mem, self.disk - other.disk)


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent's whole capacity, known whether or not it has an outstanding offer."""

    agent_id: str
    host: str
    capacity: Resources
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Offer:
    """Free resources on one agent that the scheduler may use now."""

    agent_id: str
    free: Resources


@dataclass(frozen=True, slots=True)
class PendingBuild:
    build_id: str
    request: Resources
    constraints: tuple[Constraint, ...] = ()
    priority: int = 1  # 0 is the highest
    seq: int = 0  # arrival order; FIFO within a priority
    wait_for_capacity: bool = False


def constraints_met(attributes: Mapping[str, str], constraints: tuple[Constraint, ...]) -> bool:
    for key, op, value in constraints:
        have = attributes.get(key)
        if op == "==" and have != value:
            return False
        if op == "!=" and have == value:
            return False
    return True


def unmet_reason(agents: list[Agent], build: PendingBuild) -> str | None:
    """Why no agent could ever run this build (None when some agent could, once free)."""
    if not agents:
        return None  # nothing known yet: cannot say "never"
    matching = [a for a in agents if constraints_met(a.attributes, build.constraints)]
    if not matching:
        wanted = ", ".join(f"{k}{':' if op == '==' else '!='}{v}" for k, op, v in build.constraints)
        return f"no agent has the attributes {wanted}"
    if any(a.capacity.covers(build.request) for a in matching):
        return None
    r = build.request
    biggest = max(matching, key=lambda a: (a.capacity.cpus, a.capacity.mem, a.capacity.disk)).capacity
    parts = []
    if r.cpus > max(a.capacity.cpus for a in matching) + 1e-9:
        parts.append(f"{r.cpus:g} cpus (largest agent has {max(a.capacity.cpus for a in matching):g})")
    if r.mem > max(a.capacity.mem for a in matching):
        parts.append(f"{r.mem} MB memory (largest agent has {max(a.capacity.mem for a in matching)} MB)")
    if r.disk > max(a.capacity.disk for a in matching):
        parts.append(f"{r.disk} MB disk (largest agent has {max(a.capacity.disk for a in matching)} MB)")
    if not parts:
        parts.append(f"{r.cpus:g} cpus, {r.mem} MB together (largest agent: {biggest.cpus:g} cpus, {biggest.mem} MB)")
    return "the build asks for more than any agent has: " + "; ".join(parts)
