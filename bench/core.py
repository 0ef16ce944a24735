"""Figure 3: the pure scheduler core, `buildfarm.scheduler.plan`, on simulated agents.

A decision is one pending build considered by a `plan` call (placed, left waiting, reserving an
agent, or found impossible): decisions/s = pending builds / seconds of one `plan` call. The
seconds are the calling thread's CPU time (`time.thread_time`), so builds and tests running
elsewhere on the host do not count against the core; the wall-clock rate is shown next to it.
"""

from __future__ import annotations

import random
import time

from buildfarm.placement import Agent, Offer, PendingBuild, Resources, plan

from .common import Figure, fmt, median, say

TARGET = 20_000.0

# (cpus, mem MB, weight): a mixed fleet, mostly mid-sized
AGENT_SIZES = [(2, 4096, 10), (4, 8192, 25), (8, 16384, 30), (16, 65536, 20), (32, 131072, 10), (64, 262144, 5)]
# (cpus, mem MB, weight): what builds ask for
BUILD_SIZES = [(0.5, 512, 15), (1, 1024, 25), (1, 2048, 10), (2, 4096, 20), (4, 8192, 15), (8, 16384, 10),
               (16, 32768, 4), (48, 200000, 1)]
# (constraints, weight): most builds have none
CONSTRAINTS = [((), 60), ((("arch", "==", "x86_64"),), 15), ((("arch", "==", "aarch64"),), 10),
               ((("os", "==", "el9"),), 5), ((("os", "!=", "el8"), ("arch", "!=", "ppc64le")), 5),
               ((("gpu", "==", "yes"),), 3), ((("arch", "==", "s390x"),), 2)]  # s390x: no such agent


def _pick(rng: random.Random, table):
    return rng.choices(table, weights=[t[-1] for t in table])[0]


def scenario(n_builds: int, n_agents: int, seed: int = 7, busy: bool = True):
    """Agents of mixed sizes and attributes, their offers (partly used when `busy`), and the
    pending builds (mixed sizes, some constraints, three priorities)."""
    rng = random.Random(seed)
    agents, offers = [], []
    for i in range(n_agents):
        cpus, mem, _ = _pick(rng, AGENT_SIZES)
        arch = rng.choices(["x86_64", "aarch64", "ppc64le"], weights=[70, 25, 5])[0]
        attrs = {"arch": arch, "os": rng.choice(["el8", "el9", "ubuntu22"]), "rack": f"r{i % 40}"}
        if arch == "x86_64" and rng.random() < 0.1:
            attrs["gpu"] = "yes"
        cap = Resources(float(cpus), mem, 100_000)
        agents.append(Agent(f"agent-{i:05d}", f"host-{i:05d}", cap, attrs))
        if busy:
            used = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0])  # a fifth are full, a fifth idle
            free = Resources(round(cpus * (1 - used), 6), int(mem * (1 - used)), 100_000)
        else:
            free = cap
        offers.append(Offer(agents[-1].agent_id, free))
    pending = []
    for i in range(n_builds):
        cpus, mem, _ = _pick(rng, BUILD_SIZES)
        constraints, _ = _pick(rng, CONSTRAINTS)
        priority = rng.choices([0, 1, 2], weights=[10, 80, 10])[0]
        pending.append(PendingBuild(f"build-{i:06d}", Resources(float(cpus), mem, rng.choice([0, 0, 1000])),
                                    constraints, priority, i, wait_for_capacity=rng.random() < 0.5))
    return agents, offers, pending


def measure(agents, offers, pending, runs: int) -> tuple[list[float], list[float], object]:
    """(CPU seconds, wall seconds) of each of `runs` plan() calls, and the last plan."""
    cpu, wall, result = [], [], None
    for _ in range(runs):
        c, w = time.thread_time(), time.perf_counter()
        result = plan(agents, offers, pending)
        wall.append(time.perf_counter() - w)
        cpu.append(time.thread_time() - c)
    return cpu, wall, result


def bench_core(n_builds: int, n_agents: int, runs: int) -> Figure:
    say(f"core: {n_builds:,} pending builds on {n_agents:,} simulated agents (6 sizes; 40% of builds with "
        f"attribute constraints, 2% unsatisfiable; 3 priorities), {runs} plan() calls per cluster state")
    rates, details = {}, {}
    for label, busy in (("idle", False), ("busy", True)):
        agents, offers, pending = scenario(n_builds, n_agents, busy=busy)
        times, wall, result = measure(agents, offers, pending, runs)
        rates[label] = n_builds / median(times)
        placed, impossible = len(result.launches), len(result.impossible)
        waiting = n_builds - placed - impossible
        details[label] = {"cpu_s": times, "wall_s": wall, "rate": rates[label], "wall_rate": n_builds / median(wall),
                          "placed": placed, "waiting": waiting, "reserved_agents": len(result.reserved),
                          "impossible": impossible}
        what = "every agent wholly free" if not busy else "agents 0-100% used"
        say(f"  {label} cluster ({what}): {fmt(rates[label])} decisions/s; plan() median "
            f"{median(times) * 1000:.0f} ms CPU ({', '.join(f'{t * 1000:.0f}' for t in times)}), "
            f"{median(wall) * 1000:.0f} ms wall = {fmt(n_builds / median(wall))}/s; {placed:,} placed, "
            f"{waiting:,} left waiting ({len(result.reserved):,} agents reserved for them), {impossible:,} impossible")
    worst = min(rates, key=rates.get)
    rate = rates[worst]
    return Figure(
        key="core", name=f"scheduler core, {n_builds:,} pending on {n_agents:,} agents",
        value=rate, unit="decisions/s", baseline=TARGET, baseline_what="the target", ratio=rate / TARGET,
        target=">= 1.0x (20,000 decisions/s)", ok=rate >= TARGET,
        shown=f"{fmt(rate)} decisions per CPU-second (the slower of idle {fmt(rates['idle'])}/s, busy "
              f"{fmt(rates['busy'])}/s)",
        baseline_shown="the 20,000/s target", details=details)
