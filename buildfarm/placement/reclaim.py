"""Reclaim: give a team its guarantee back when others borrowed it while it was idle.

A planner step after selection, pure like it (the time comes in as `now`). A team's build is owed
capacity when it found no room, fits within what is left of its team's guarantee, and its team
has waited the grace period (its oldest waiting build was queued that long ago). Borrowed builds are those a team runs beyond its own guarantee: the newest
ones, counting its running builds oldest first. For each owed build, the agent that needs the
fewest preemptions (of borrowed builds, newest first) to make room is chosen; those builds are
killed with the reason "preempted: capacity returned to team X", and the agent is reserved for
the owed build, which starts in the next round (the caller passes `freed_for` back as `held`, so
no other build takes the room first). A build that is not preemptible, or that was
preempted `max_preemptions` times already, is never taken.
"""

from __future__ import annotations

from dataclasses import dataclass

from .feasible import NOTHING, Agent, PendingBuild, Resources, Running, constraints_met
from .rank import FairOrder, build_order


@dataclass(frozen=True, slots=True)
class Kill:
    """Stop a running build and queue it again, for `reason` (a preemption, not a failure)."""

    build_id: str
    agent_id: str
    reason: str


def reclaim(result, agents: list[Agent], free: dict[str, Resources], pending: list[PendingBuild],
            running: list[Running], order: FairOrder, now: float, policy) -> None:
    """Add to `result` the kills (and reservations) that return guarantees; `free` and
    `order.used` are updated as if they were done."""
    owed = owed_builds(result, pending, now, policy.reclaim_grace)
    if not owed:
        return
    by_team: dict[str | None, list[Running]] = {}
    for r in running:
        by_team.setdefault(r.team, []).append(r)
    takeable: dict[str, list[Running]] = {}  # agent id -> borrowed builds on it, newest first
    for team, runs in by_team.items():
        _index(takeable, borrowed(runs, order.team(team).guarantee), policy.max_preemptions)
    by_id = {a.agent_id: a for a in agents}
    for build in owed:
        team = order.team(build.team)
        if not team.guarantee.covers(order.used.get(build.team, NOTHING).plus(build.request)):
            continue  # its team's guarantee is used up by what placed or reclaimed before it
        choice = cheapest(build, by_id, free, takeable, result.reserved)
        if choice is None:
            continue
        agent_id, victims = choice
        room = free.get(agent_id, NOTHING)
        for v in victims:
            result.kills.append(_kill(v, team.name))
            room = room.plus(v.request)
            order.used[v.team] = order.used.get(v.team, NOTHING).minus(v.request)
            by_team[v.team] = [r for r in by_team[v.team] if r.build_id != v.build_id]
            _drop_team(takeable, v.team)
            _index(takeable, borrowed(by_team[v.team], order.team(v.team).guarantee), policy.max_preemptions)
        free[agent_id] = room.minus(build.request)
        for held, holder in list(result.reserved.items()):  # the build's own reservation from selection
            if holder == build.build_id:
                del result.reserved[held]
        result.reserved[agent_id] = result.freed_for[agent_id] = build.build_id
        order.placed(build)


def _kill(victim: Running, team: str) -> Kill:
    return Kill(victim.build_id, victim.agent_id, f"preempted: capacity returned to team {team}")


def owed_builds(result, pending: list[PendingBuild], now: float, grace: float) -> list[PendingBuild]:
    """The builds that found no room, of the teams whose oldest such build has waited at least the
    grace period (a team waits the grace period once, not once per build), in each team's order
    (priority, then FIFO)."""
    skip = {launch.build_id for launch in result.launches} | set(result.impossible) | set(result.held)
    waiting = [b for b in pending if b.team is not None and b.build_id not in skip]
    oldest: dict[str, float] = {}
    for b in waiting:
        oldest[b.team] = min(oldest.get(b.team, b.queued_at), b.queued_at)
    return sorted((b for b in waiting if now - oldest[b.team] >= grace), key=lambda b: (b.team, *build_order(b)))


def borrowed(runs: list[Running], guarantee: Resources) -> list[Running]:
    """A team's builds beyond its guarantee: counting its builds oldest first, the one that takes
    it over its guarantee and every later one."""
    used = NOTHING
    ordered = sorted(runs, key=lambda r: (r.started_at, r.build_id))
    for i, r in enumerate(ordered):
        used = used.plus(r.request)
        if not guarantee.covers(used):
            return ordered[i:]
    return []


def _index(takeable: dict[str, list[Running]], runs: list[Running], max_preemptions: int) -> None:
    touched = set()
    for r in runs:
        if r.preemptible and r.preemptions < max_preemptions:
            takeable.setdefault(r.agent_id, []).append(r)
            touched.add(r.agent_id)
    for agent_id in touched:
        if len(takeable[agent_id]) > 1:
            takeable[agent_id].sort(key=lambda x: (-x.started_at, x.build_id))


def _drop_team(takeable: dict[str, list[Running]], team: str | None) -> None:
    for agent_id in list(takeable):
        takeable[agent_id] = [r for r in takeable[agent_id] if r.team != team]


def cheapest(build: PendingBuild, by_id: dict[str, Agent], free: dict[str, Resources],
             takeable: dict[str, list[Running]], reserved: dict[str, str]) -> tuple[str, list[Running]] | None:
    """The agent where preempting the fewest borrowed builds (newest first) makes room for `build`,
    and those builds; ties go to the agent whose victims started last. None: nowhere."""
    best = None
    for agent_id, candidates in takeable.items():
        agent = by_id.get(agent_id)
        if agent is None or reserved.get(agent_id, build.build_id) != build.build_id:
            continue
        if not agent.capacity.covers(build.request) or not constraints_met(agent.attributes, build.constraints):
            continue
        room, victims = free.get(agent_id, NOTHING), []
        for v in candidates:
            if room.covers(build.request):
                break
            room = room.plus(v.request)
            victims.append(v)
        if not victims or not room.covers(build.request):
            continue
        key = (len(victims), -min(v.started_at for v in victims), agent_id)
        if best is None or key < best[0]:
            best = (key, agent_id, victims)
    return None if best is None else (best[1], best[2])
