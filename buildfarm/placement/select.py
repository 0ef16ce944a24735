"""Selection: walk the builds in order, give each the best-ranked feasible agent that fits.

A build that does not fit anywhere right now but would fit on some agent once it frees up
reserves that agent: builds behind it may not take room on it. This is what stops a large
build from being starved forever by a stream of small ones (strict FIFO per agent, with
backfill on the other agents). With teams, each team holds at most one such reservation (its
first build that does not fit), so a team's backlog cannot hold the whole pool.

Then, with teams, reclaim (reclaim.py) may take lent capacity back: its kills come out next to
the launches.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from collections.abc import Iterable, Mapping

from .feasible import (NOTHING, Agent, Offer, PendingBuild, Resources, Running, Team, beyond_limit,
                       constraints_met, team_holds, team_usage, total, unmet_reason)
from .rank import FairOrder, agent_rank
from .reclaim import Kill, reclaim


@dataclass(frozen=True, slots=True)
class Launch:
    build_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class Policy:
    """How teams share the pool. `reclaim_grace`: seconds a team below its guarantee waits before
    borrowed builds are preempted for it; `max_preemptions`: how often one build may be preempted."""

    reclaim: bool = True
    reclaim_grace: float = 180.0
    max_preemptions: int = 2


@dataclass
class Placement:
    launches: list[Launch] = field(default_factory=list)
    # builds no known agent can ever run, with the reason (the caller ends or parks them)
    impossible: dict[str, str] = field(default_factory=dict)
    # agent id -> build id holding it, so a big build is not starved
    reserved: dict[str, str] = field(default_factory=dict)
    # builds their team may not start now, with the reason (a limit, a guarantee in use)
    held: dict[str, str] = field(default_factory=dict)
    # running builds to preempt so a team gets its guarantee back
    kills: list[Kill] = field(default_factory=list)
    # agent id -> the owed build its kills make room for: pass it as `held` to the next plan
    freed_for: dict[str, str] = field(default_factory=dict)


def pool_of(agents: list[Agent], offers: list[Offer]) -> Resources:
    """The whole pool: every known agent's capacity (the offers' when no agent is known)."""
    return total(a.capacity for a in agents) if agents else total(o.free for o in offers)


def plan(agents: list[Agent], offers: list[Offer], pending: list[PendingBuild], *,
         teams: Mapping[str, Team] | None = None, running: Iterable[Running] = (), now: float = 0.0,
         policy: Policy = Policy(), held: Mapping[str, str] | None = None) -> Placement:
    """Decide which pending builds to launch on which offers and, with teams, which borrowed builds
    to preempt. Pure: no I/O; the time is `now`. Without teams: priority, then FIFO. `held`: the
    last plan's `freed_for`, so room freed for a build is not taken by another before it starts."""
    running = list(running)
    order = FairOrder(pending, teams, team_usage(running) if teams else {}, pool_of(agents, offers))
    waiting = {b.build_id for b in pending}
    result, free = _select(agents, offers, order, teams is not None,
                           {a: b for a, b in (held or {}).items() if b in waiting})
    if teams is not None and policy.reclaim:
        reclaim(result, agents, free, pending, running, order, now, policy)
    return result


def _select(agents: list[Agent], offers: list[Offer], order: FairOrder, with_teams: bool,
            held: dict[str, str]) -> tuple[Placement, dict[str, Resources]]:
    """The placement pass: returns the plan and what is left free on each agent. An agent in
    `held` takes only the build it is held for."""
    result = Placement(reserved=dict(held))
    holders = set(held.values())  # a shape that found no room may still fit the room held for these
    by_id = {a.agent_id: a for a in agents}
    free: dict[str, Resources] = {o.agent_id: o.free for o in offers}
    serving = {o.agent_id: o for o in offers if o.teams is not None}  # offers made for some teams only
    # Sorted index of offers by rank; rebuilt entries on each placement.
    index = sorted(agent_rank(o) for o in offers)
    failed_shapes: set = set()  # (request, constraints) that found no room: free only shrinks
    eligible_cache: dict[tuple, frozenset] = {}
    impossible_cache: dict[tuple, str | None] = {}
    reserve_order: dict[tuple, list[str]] = {}  # shape -> agents it could reserve, best last
    reserving_teams: set[str] = set()  # teams that hold a reservation already

    def eligible(constraints):
        got = eligible_cache.get(constraints)
        if got is None and not constraints:
            got = eligible_cache[constraints] = frozenset(by_id) if agents else frozenset(free)
        if got is None:
            got = frozenset(a.agent_id for a in agents if constraints_met(a.attributes, constraints)) if agents \
                else frozenset(free)
            eligible_cache[constraints] = got
        return got

    for build in order:
        # With per-team offers, a shape that found no room may still find it among another team's.
        shape = (build.request, build.constraints, build.team if serving else None)
        if shape not in impossible_cache:
            impossible_cache[shape] = unmet_reason(agents, build)
        reason = impossible_cache[shape]
        if with_teams and build.team is not None and reason is None:
            team = order.team(build.team)
            reason = beyond_limit(team, build)
            held = reason is None and team_holds(team, order.used.get(build.team, NOTHING), build)
            if held:
                result.held[build.build_id] = held
                continue
        if reason is not None:
            result.impossible[build.build_id] = reason
            continue
        ok_agents = eligible(build.constraints)
        chosen = None
        if shape not in failed_shapes or build.build_id in holders:
            r = build.request
            i = bisect.bisect_left(index, (r.cpus - 1e-9,))
            for j in range(i, len(index)):
                cpus, mem, disk, agent_id = index[j]
                holder = result.reserved.get(agent_id)
                if (holder is not None and holder != build.build_id) or agent_id not in ok_agents:
                    continue
                if agent_id in serving and not serving[agent_id].serves(build.team):
                    continue
                if mem >= r.mem and disk >= r.disk:
                    chosen = j
                    break
        if chosen is None:
            failed_shapes.add(shape)
            if with_teams and build.team is not None:
                if build.team in reserving_teams:
                    continue
                reserving_teams.add(build.team)
            if shape not in reserve_order:
                reserve_order[shape] = _reservable(build, ok_agents, by_id, free)
            _reserve(result, build, reserve_order[shape])
            continue
        _, _, _, agent_id = index.pop(chosen)
        if result.reserved.get(agent_id) == build.build_id:
            del result.reserved[agent_id]
        free[agent_id] = free[agent_id].minus(build.request)
        bisect.insort(index, agent_rank(Offer(agent_id, free[agent_id])))
        result.launches.append(Launch(build.build_id, agent_id))
        order.placed(build)
    return result, free


def _reservable(build: PendingBuild, ok_agents, by_id, free) -> list[str]:
    """The agents this build could hold, worst first: the one with the most free room (which
    frees up soonest, on average; the smallest id among equals) is at the end, so `_reserve` pops it."""
    out = []
    for agent_id in ok_agents:
        agent = by_id.get(agent_id)
        if agent is not None and agent.capacity.covers(build.request):
            f = free.get(agent_id, NOTHING)
            out.append((-f.cpus, -f.mem, agent_id))
    out.sort(reverse=True)
    return [a for _, _, a in out]


def _reserve(result: Placement, build: PendingBuild, candidates: list[str]) -> bool:
    """Hold the best candidate agent not held already. Returns whether one was reserved."""
    while candidates:
        agent_id = candidates.pop()
        if agent_id not in result.reserved:
            result.reserved[agent_id] = build.build_id
            return True
    return False
