"""Ranking: the order in which builds are considered, and agents are preferred.

Builds: across teams, weighted dominant-resource fairness (DRF): among the teams with builds
waiting, a team below its guarantee goes before any team at or above its own, then the team with
the lowest dominant share (the larger of its cpu and memory fractions of the pool, divided by its
weight) goes next. Within a team: priority first (0 = high), then arrival order (FIFO within a
priority). Without teams this is exactly priority, then FIFO.
Agents: best fit -- the agent with the least free room that still fits is preferred, so large
holes stay open for large builds (bin packing, as Nomad's default does).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping

from .feasible import NO_TEAM, NOTHING, Offer, PendingBuild, Resources, Team


def build_order(build: PendingBuild) -> tuple[int, int]:
    return (build.priority, build.seq)


def agent_rank(offer: Offer) -> tuple[float, int, int, str]:
    """Lower ranks first: the tightest fit wins; the agent id breaks ties deterministically."""
    f = offer.free
    return (f.cpus, f.mem, f.disk, offer.agent_id)


def dominant_share(used: Resources, pool: Resources) -> float:
    """The larger of the cpu and memory fractions of the pool that `used` is."""
    cpu = used.cpus / pool.cpus if pool.cpus > 0 else 0.0
    mem = used.mem / pool.mem if pool.mem > 0 else 0.0
    return max(cpu, mem)


def team_rank(team: Team, used: Resources, head: PendingBuild, pool: Resources) -> tuple[int, float]:
    """Lower ranks first: a team whose next build fits in its guarantee, then the lowest weighted
    dominant share."""
    within = 0 if team.guarantee.covers(used.plus(head.request)) else 1
    return (within, dominant_share(used, pool) / max(team.weight, 1e-9))


class FairOrder:
    """The pending builds in fair-share order (`teams` None: priority, then FIFO, teams ignored).
    Iterate it; call `placed(build)` for each build that was placed before asking for the next one,
    so its team's share counts it. A team not in `teams` has no guarantee, no limit, weight 1."""

    def __init__(self, pending: Iterable[PendingBuild], teams: Mapping[str, Team] | None,
                 used: Mapping[str | None, Resources], pool: Resources):
        self.teams = teams or {}
        self.used: dict[str | None, Resources] = dict(used)
        self.pool = pool
        self._queues: dict[str | None, list[PendingBuild]] = {}
        for b in pending:
            self._queues.setdefault(b.team if teams is not None else None, []).append(b)
        for q in self._queues.values():
            q.sort(key=build_order, reverse=True)  # the next build is at the end

    def team(self, name: str | None) -> Team:
        if name is None:
            return NO_TEAM
        return self.teams.get(name) or Team(name)

    def placed(self, build: PendingBuild) -> None:
        self.used[build.team] = self.used.get(build.team, NOTHING).plus(build.request)

    def _rank(self, name: str | None) -> tuple:
        return (*team_rank(self.team(name), self.used.get(name, NOTHING), self._queues[name][-1], self.pool),
                name or "", name is None)

    def __iter__(self) -> Iterator[PendingBuild]:
        if len(self._queues) == 1:  # one team (or none): priority, then FIFO
            (queue,) = self._queues.values()
            while queue:
                yield queue.pop()
            return
        heap = [(self._rank(name), name) for name in self._queues]
        heapq.heapify(heap)
        while heap:
            _, name = heapq.heappop(heap)
            queue = self._queues[name]
            yield queue.pop()
            if queue:
                heapq.heappush(heap, (self._rank(name), name))
