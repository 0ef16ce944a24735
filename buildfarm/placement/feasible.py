"""Feasibility: can this build run on this agent at all, and does it fit in what is free now?
May its team run it now?

Pure functions, no I/O. A build is feasible on an agent when the agent's attributes satisfy
every constraint; it fits when the agent's free resources cover its request. A team's build may
start when it keeps the team within its limit; a build that cannot be preempted, or a team out of
credits, may run only within the team's guarantee.
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

    def plus(self, other: Resources) -> Resources:
        return Resources(round(self.cpus + other.cpus, 6), self.mem + other.mem, self.disk + other.disk)

    def shown(self) -> str:
        return f"cpus={self.cpus:g},mem={self.mem}M"


NOTHING = Resources(0.0, 0, 0)


@dataclass(frozen=True, slots=True)
class Agent:
    """A node: a machine that runs builds (a Mesos agent; this host for the local backend), with its
    whole capacity, known whether or not it has an outstanding offer. Named `Agent`/`agent_id` as
    Mesos names its nodes and as the API shows them ("agent_id"); not the build agent (the program
    in each container, executors/) nor a Jenkins agent (jenkins/)."""

    agent_id: str
    host: str
    capacity: Resources
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Offer:
    """Free resources on one agent that the scheduler may use now. `teams`: the teams whose builds
    they may serve (None stands for builds without a team); None: any build (a Mesos offer made to
    one team's role serves only that team)."""

    agent_id: str
    free: Resources
    teams: frozenset[str | None] | None = None

    def serves(self, team: str | None) -> bool:
        return self.teams is None or team in self.teams


@dataclass(frozen=True, slots=True)
class PendingBuild:
    build_id: str
    request: Resources
    constraints: tuple[Constraint, ...] = ()
    priority: int = 1  # 0 is the highest
    seq: int = 0  # arrival order; FIFO within a priority
    wait_for_capacity: bool = False
    team: str | None = None  # None: the farm's builds without a team (no guarantee, no limit)
    preemptible: bool = True  # False: runs only within its team's guarantee
    queued_at: float = 0.0  # when it last entered the queue (for the reclaim grace period)


@dataclass(frozen=True, slots=True)
class Running:
    """A build that holds resources on an agent now (what reclaim may take back)."""

    build_id: str
    agent_id: str
    request: Resources
    team: str | None = None
    started_at: float = 0.0
    preemptible: bool = True
    preemptions: int = 0  # how many times it was preempted already


@dataclass(frozen=True, slots=True)
class Team:
    """A team's share of the pool: `guarantee` is its own (lent out while idle), `limit` the most it
    may hold with loans, `weight` its weight in fair share. `may_borrow` is False when it is out of
    credits: it then runs only within its guarantee."""

    name: str
    guarantee: Resources = NOTHING
    limit: Resources | None = None
    weight: float = 1.0
    may_borrow: bool = True


NO_TEAM = Team("")


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
    matching = [a for a in agents if constraints_met(a.attributes, build.constraints)] if build.constraints \
        else agents
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


def total(resources) -> Resources:
    """The sum of some Resources (plain sums: this runs over every agent each round)."""
    cpus = mem = disk = 0
    for r in resources:
        cpus += r.cpus
        mem += r.mem
        disk += r.disk
    return Resources(round(cpus, 6), mem, disk)


def team_usage(running) -> dict[str | None, Resources]:
    """What each team holds now: the sum of its running builds' requests."""
    by_team: dict[str | None, list[Resources]] = {}
    for r in running:
        by_team.setdefault(r.team, []).append(r.request)
    return {team: total(reqs) for team, reqs in by_team.items()}


def beyond_limit(team: Team, build: PendingBuild) -> str | None:
    """Why the build can never run for its team (larger than the team's limit), or None."""
    if team.limit is not None and not team.limit.covers(build.request):
        return (f"the build asks for {build.request.shown()}, more than team {team.name}'s limit of "
                f"{team.limit.shown()}")
    return None


def team_holds(team: Team, used: Resources, build: PendingBuild) -> str | None:
    """Why the team may not start this build now (it waits), or None when it may."""
    after = used.plus(build.request)
    if team.limit is not None and not team.limit.covers(after):
        return f"team {team.name} is at its limit of {team.limit.shown()}"
    if team.guarantee.covers(after):
        return None
    if not build.preemptible:
        return f"a non-preemptible build runs only within team {team.name or '(none)'}'s guarantee, which is in use"
    if not team.may_borrow:
        return f"team {team.name} is out of credits and runs only within its guarantee, which is in use"
    return None
