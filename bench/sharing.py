"""Sharing the farm: the pure core over a simulated week, FIFO vs priority vs fair share.

A week on 1,000 agents (8 cpus, 32 GB each) and 10 teams with a CMS-like load: the release team
submits two nightly bursts of 500 builds (22:00 and 02:00), eight teams a steady trickle of pull-request
builds, and one team (`sim`) a backlog of 2,000 large builds at the start; durations are drawn
from a log-normal distribution (a long tail: a few builds run ten times the median). The same
arrivals are played against three policies, each a call of `buildfarm.scheduler.plan` per round
(one round every two minutes; the reclaim grace period is four):

- FIFO: arrival order only (every build at one priority);
- priority: today's core, priority then FIFO (release high, pull requests normal, backlog low);
- fair share: teams with guarantees (release 20%, sim 10%, each PR team 8.75%), weighted DRF
  across teams, loans of idle guarantee to whoever asks, and reclaim after the grace period.

Printed per policy: useful utilization (cpu-time of attempts that completed, over the pool's;
work lost to preemption does not count), p50/p95 queue wait per team, Jain's fairness index,
the time teams spent below their guarantee while asking for it, the longest a build owed
capacity waited (owed: waiting, and within what is left of its team's guarantee, from the first
round that saw it so, to the round that started it),
preemptions, and placement decisions per CPU-second with 10,000 builds pending.

Fairness: every round, over the teams with builds running or waiting: x = 1 for a team with
nothing waiting (it has all it asks for), else its dominant share divided by its guarantee's share
of the pool, capped at 1 (a team holding at least its guarantee is treated fairly); Jain's index
(sum x)^2 / (n sum x^2), averaged over the rounds in which some team had a build waiting (a round
where nobody waits is trivially fair, and would only dilute the figure). "Below its guarantee while asking": a team has a build waiting that
would fit within what is left of its guarantee.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from dataclasses import dataclass, field

from buildfarm.placement import Agent, Offer, PendingBuild, Policy, Resources, Running, Team, plan
from buildfarm.placement.feasible import NOTHING
from buildfarm.placement.rank import dominant_share

from .common import Figure, fmt, median, quantile, say

DAY = 24 * 3600
NODE = Resources(8.0, 32768)
PR_TEAMS = [f"pr{i}" for i in range(1, 9)]
GRACE = 240.0
ROUND = 120.0
# team -> (guarantee fraction of the pool, request (cpus, MB), median minutes, priority)
TEAMS = {"release": (0.20, (8, 16384), 60, 0), "sim": (0.10, (8, 16384), 480, 2),
         **{t: (0.0875, (8, 16384), 30, 1) for t in PR_TEAMS}}
PR_PER_HOUR = 50  # per PR team: on average about 40% of its guarantee busy


@dataclass(order=True)
class Job:
    arrival: float
    seq: int
    team: str = field(compare=False)
    request: Resources = field(compare=False)
    duration: float = field(compare=False)
    priority: int = field(compare=False)


def workload(days: int, seed: int = 15) -> list[Job]:
    """Every build of the simulated period, in arrival order."""
    rng = random.Random(seed)
    jobs: list[Job] = []

    def add(t: float, team: str) -> None:
        _, (cpus, mem), minutes, prio = TEAMS[team]
        duration = min(48 * 3600.0, 60 * minutes * rng.lognormvariate(0, 0.9))
        jobs.append(Job(t, 0, team, Resources(float(cpus), mem), max(60.0, duration), prio))

    for _ in range(2000):
        add(0.0, "sim")
    for day in range(days):
        for hour in (22, 26):  # 22:00 and 02:00 the next morning
            start = day * DAY + hour * 3600
            if start < days * DAY:
                for _ in range(500):
                    add(start + rng.uniform(0, 600), "release")
    for team in PR_TEAMS:
        t = rng.expovariate(PR_PER_HOUR / 3600)
        while t < days * DAY:
            add(t, team)
            t += rng.expovariate(PR_PER_HOUR / 3600)
    jobs.sort()
    for i, j in enumerate(jobs):
        j.seq = i
    return jobs


def pool_teams(n_agents: int) -> dict[str, Team]:
    out = {}
    for name, (frac, *_rest) in TEAMS.items():
        g = Resources(round(NODE.cpus * n_agents * frac, 3), int(NODE.mem * n_agents * frac))
        out[name] = Team(name, guarantee=g, weight=frac * 10)
    return out


@dataclass
class Outcome:
    policy: str
    useful_cpu_s: float = 0.0
    lost_cpu_s: float = 0.0
    waits: dict[str, list[float]] = field(default_factory=dict)
    jain: list[float] = field(default_factory=list)
    below_s: float = 0.0
    longest_below_s: float = 0.0
    preemptions: int = 0
    completed: int = 0
    plan_cpu_s: float = 0.0
    rounds: int = 0
    useful_share: float = 0.0  # useful_cpu_s over the pool's cpu-time


class Week:
    """One policy's run: the farm's state between rounds, advanced one round at a time."""

    def __init__(self, policy: str, jobs: list[Job], n_agents: int, days: int):
        self.policy = policy
        self.jobs = {j.seq: j for j in jobs}
        self.arrivals = list(jobs)
        self.end = days * DAY
        self.agents = [Agent(f"n{i:04d}", f"n{i:04d}", NODE) for i in range(n_agents)]
        self.pool = Resources(NODE.cpus * n_agents, NODE.mem * n_agents)
        self.teams = pool_teams(n_agents)
        self.free = {a.agent_id: NODE for a in self.agents}
        self.roomy = set(self.free)  # agents with room for the smallest build (8 cpus): the offers
        self.pending: dict[int, PendingBuild] = {}
        self.held: dict[str, str] = {}  # agents freed by reclaim for the build they were freed for
        self.running: dict[int, Running] = {}
        self.ends: list[tuple[float, int, int]] = []  # (end time, seq, attempt)
        self.attempt: dict[int, int] = {}
        self.preempted: dict[int, int] = {}
        self.queued_for: dict[int, float] = {}  # seq -> seconds queued so far
        self.owed_since: dict[int, float] = {}  # seq -> the first round that saw it owed (see mark_owed)
        self.used: dict[str, Resources] = {}  # team -> what its running builds hold
        self.jobs_request = {name: Resources(float(c), m) for name, (_, (c, m), *_r) in TEAMS.items()}
        self.out = Outcome(policy, waits={t: [] for t in TEAMS})

    def pending_build(self, job: Job, queued_at: float) -> PendingBuild:
        prio = 1 if self.policy == "FIFO" else job.priority
        return PendingBuild(str(job.seq), job.request, (), prio, job.seq, team=job.team, queued_at=queued_at)

    def run(self) -> Outcome:
        i, t = 0, 0.0
        while t < self.end:
            while self.ends and self.ends[0][0] <= t:
                self.finish(*heapq.heappop(self.ends))
            while i < len(self.arrivals) and self.arrivals[i].arrival <= t:
                job = self.arrivals[i]
                self.pending[job.seq] = self.pending_build(job, job.arrival)
                i += 1
            self.round(t)
            self.sample(t)
            t += ROUND
        for since in self.owed_since.values():  # still waiting at the end: counts as it stands
            self.out.longest_below_s = max(self.out.longest_below_s, self.end - since)
        self.out.useful_share = self.out.useful_cpu_s / (self.pool.cpus * self.end)
        return self.out

    def round(self, t: float) -> None:
        if not self.pending:
            return
        offers = [Offer(a, self.free[a]) for a in self.roomy]
        c = time.thread_time()
        if self.policy == "fair share":
            p = plan(self.agents, offers, list(self.pending.values()), teams=self.teams,
                     running=self.running.values(), now=t, policy=Policy(reclaim_grace=GRACE), held=self.held)
            self.held = p.freed_for
        else:
            p = plan(self.agents, offers, list(self.pending.values()))
        self.out.plan_cpu_s += time.thread_time() - c
        self.out.rounds += 1
        for k in p.kills:
            self.preempt(int(k.build_id), t)
        for launch in p.launches:
            self.start(int(launch.build_id), launch.agent_id, t)

    def start(self, seq: int, agent_id: str, t: float) -> None:
        b = self.pending.pop(seq)
        job = self.jobs[seq]
        self.free[agent_id] = self.free[agent_id].minus(job.request)
        if self.free[agent_id].cpus < 8:
            self.roomy.discard(agent_id)
        self.queued_for[seq] = self.queued_for.get(seq, 0.0) + t - b.queued_at
        if seq in self.owed_since:
            self.out.longest_below_s = max(self.out.longest_below_s, t - self.owed_since.pop(seq))
        self.attempt[seq] = self.attempt.get(seq, 0) + 1
        self.used[job.team] = self.used.get(job.team, NOTHING).plus(job.request)
        self.running[seq] = Running(str(seq), agent_id, job.request, job.team, t, True, self.preempted.get(seq, 0))
        heapq.heappush(self.ends, (t + job.duration, seq, self.attempt[seq]))

    def finish(self, end: float, seq: int, attempt: int) -> None:
        if self.attempt.get(seq) != attempt or seq not in self.running:
            return  # a preempted attempt's end
        r = self.running.pop(seq)
        self.free[r.agent_id] = self.free[r.agent_id].plus(r.request)
        self.roomy.add(r.agent_id)
        self.used[r.team] = self.used[r.team].minus(r.request)
        job = self.jobs[seq]
        self.out.useful_cpu_s += job.request.cpus * job.duration
        self.out.waits[job.team].append(self.queued_for.pop(seq))
        self.out.completed += 1

    def preempt(self, seq: int, t: float) -> None:
        r = self.running.pop(seq)
        self.free[r.agent_id] = self.free[r.agent_id].plus(r.request)
        self.roomy.add(r.agent_id)
        self.used[r.team] = self.used[r.team].minus(r.request)
        self.out.lost_cpu_s += r.request.cpus * (t - r.started_at)
        self.out.preemptions += 1
        self.preempted[seq] = self.preempted.get(seq, 0) + 1
        self.attempt[seq] += 1  # its end event no longer counts
        self.pending[seq] = self.pending_build(self.jobs[seq], t)  # its seq keeps it at its team's front

    def mark_owed(self, team: str, left: Resources, t: float) -> None:
        """The team's waiting builds that fit in what is left of its guarantee (in its order) are
        owed capacity from the first round that saw them so; `start` measures how long they waited."""
        for b in sorted((b for b in self.pending.values() if b.team == team), key=lambda b: (b.priority, b.seq)):
            if not left.covers(b.request):
                break
            left = left.minus(b.request)
            self.owed_since.setdefault(b.seq, t)

    def sample(self, t: float) -> None:
        """Fairness and time below guarantee, after the round's decisions."""
        waiting: dict[str, int] = {}
        for b in self.pending.values():
            waiting[b.team] = waiting.get(b.team, 0) + 1
        xs = []
        for name, team in self.teams.items():
            have = self.used.get(name, NOTHING)
            if name not in waiting:
                if have.cpus > 0:
                    xs.append(1.0)  # it runs everything it asked for
                continue
            xs.append(min(1.0, dominant_share(have, self.pool) / dominant_share(team.guarantee, self.pool)))
            if team.guarantee.covers(have.plus(self.jobs_request[name])):  # asking, and below its guarantee
                self.out.below_s += ROUND
                self.mark_owed(name, team.guarantee.minus(have), t)
        if waiting and len(xs) >= 2 and sum(xs) > 0:  # only while the pool is contended
            self.out.jain.append(sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)))


def decisions_per_cpu_second(n_agents: int, n_pending: int, runs: int = 3) -> tuple[float, int]:
    """plan() with teams, loans and reclaim, on a half-full pool with `n_pending` builds waiting
    (the week's first builds, their grace periods over): pending builds per CPU-second."""
    jobs = workload(7)[:n_pending + n_agents]
    week = Week("fair share", [], n_agents, 1)
    agents = week.agents
    running, free = [], dict(week.free)
    for k, job in enumerate(jobs[n_pending:]):  # one borrowed build on every agent
        a = agents[k % n_agents].agent_id
        if free[a].covers(job.request):
            free[a] = free[a].minus(job.request)
            running.append(Running(f"r{k}", a, job.request, job.team, float(k)))
    pending = [week.pending_build(j, 0.0) for j in jobs[:n_pending]]
    offers = [Offer(a, f) for a, f in free.items()]
    times = []
    for _ in range(runs):
        c = time.thread_time()
        plan(agents, offers, pending, teams=week.teams, running=running, now=3600.0)
        times.append(time.thread_time() - c)
    return n_pending / median(times), len(running)


def bench_sharing(days: int, n_agents: int) -> Figure:
    say(f"sharing: a simulated {days}-day period on {n_agents:,} agents (8 cpus, 32 GB), 10 teams: release bursts "
        f"of 500 at 22:00 and 02:00, 8 PR teams at {PR_PER_HOUR}/h each, a 2,000-build backlog; a round every "
        f"{ROUND / 60:.0f} min, reclaim grace {GRACE / 60:.0f} min")
    jobs = workload(days)
    say(f"  {len(jobs):,} builds")
    results = {}
    for policy in ("FIFO", "priority", "fair share"):
        t = time.perf_counter()
        results[policy] = Week(policy, jobs, n_agents, days).run()
        o = results[policy]
        say(f"  {policy}: {o.completed:,} builds done, {o.rounds:,} rounds, plan() {o.plan_cpu_s:.1f} s CPU "
            f"({time.perf_counter() - t:.1f} s)")
    rate, n_running = decisions_per_cpu_second(n_agents, 10_000)
    say(f"  plan() with teams at 10,000 pending and {n_running:,} running: {fmt(rate)} decisions per CPU-second")
    rows = table_rows(results)
    for row in rows:
        say("  " + row)
    fifo, fair = results["FIFO"], results["fair share"]
    util_ratio = fair.useful_share / fifo.useful_share
    fair_jain, fifo_jain = _mean(fair.jain), _mean(fifo.jain)
    ok = (util_ratio >= 0.95 and fair_jain >= 0.9 and fair.longest_below_s <= GRACE + ROUND
          and rate >= 20_000)
    return Figure(
        key="sharing", name=f"fair share over a simulated week ({n_agents:,} agents, 10 teams)",
        value=fair_jain, unit="Jain", baseline=fifo_jain, baseline_what="FIFO", ratio=fair_jain / fifo_jain,
        target="fairness >= 0.9, utilization >= 95% of FIFO's, back to guarantee within grace + 1 round, "
               ">= 20,000 decisions/s", ok=ok,
        shown=f"fairness {fair_jain:.2f}, utilization {fair.useful_share:.1%} ({util_ratio:.2f}x FIFO's), "
              f"guarantee back within {fair.longest_below_s / 60:.0f} min (grace {GRACE / 60:.0f} + 1 round), {fmt(rate)} decisions/s",
        baseline_shown=f"FIFO fairness {fifo_jain:.2f}",
        details={"table": rows, "decisions_per_cpu_s": rate, "policies": {
            p: {"useful_utilization": o.useful_share, "lost_cpu_h": o.lost_cpu_s / 3600, "jain": _mean(o.jain),
                "below_guarantee_h": o.below_s / 3600, "longest_below_s": o.longest_below_s,
                "preemptions": o.preemptions, "completed": o.completed,
                "wait_p50_p95_s": {t: _p(w) for t, w in o.waits.items()}} for p, o in results.items()}})


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 1.0


def _p(ws: list[float]) -> tuple[float, float]:
    return (quantile(ws, 0.5), quantile(ws, 0.95)) if ws else (math.nan, math.nan)


def _mins(s: float) -> str:
    if math.isnan(s):
        return "-"
    return f"{s / 60:.0f}m" if s < 5940 else f"{s / 3600:.1f}h"


def table_rows(results: dict[str, Outcome]) -> list[str]:
    """The README's table: one row per policy."""
    rows = ["| policy | utilization | wait p50/p95: release | sim (backlog) | PR teams (worst) | fairness "
            "| below guarantee (longest owed wait) | preemptions |", "|---|---|---|---|---|---|---|---|"]
    for name, o in results.items():
        pr = max((_p(o.waits[t]) for t in PR_TEAMS), key=lambda x: x[1])
        rel, sim = _p(o.waits["release"]), _p(o.waits["sim"])
        rows.append(f"| {name} | {o.useful_share:.1%} | {_mins(rel[0])}/{_mins(rel[1])} | {_mins(sim[0])}/"
                    f"{_mins(sim[1])} | {_mins(pr[0])}/{_mins(pr[1])} | {_mean(o.jain):.2f} | "
                    f"{o.below_s / 3600:.0f} h ({_mins(o.longest_below_s)}) | {o.preemptions:,} |")
    return rows
