"""Extras (informational, no target): the Mesos backend, against the master double of the tests
(tests/doubles/mesos.py) and with a recording driver."""

from __future__ import annotations

import time
from pathlib import Path

from buildfarm.placement import PendingBuild, Resources, plan
from tests.conftest import FarmProcess

from .common import Api, Figure, fmt, median, say, stop_farm


def bench_mesos_running(local: Api, n: int, tmp: Path) -> Figure:
    """Submit -> running, median of n, through the Mesos double vs the local backend."""
    from tests.doubles.mesos import AgentSpec, MesosDouble

    say(f"mesos-running: {n} builds of `true`, submit -> running, Mesos double vs local backend")
    master = MesosDouble([AgentSpec("S0", cpus=2, mem=8192)], heartbeat_seconds=5).start()
    mfarm = FarmProcess(tmp / "mesos-data", "--backend", "mesos", "--master", master.address,
                        "--mesos-cache-path", str(tmp / "mesos-cache"))
    mapi = Api(mfarm, local.repo)
    try:
        def to_running(api: Api) -> float:
            api.wait_end(api.submit(["true"]))
            out = []
            for _ in range(n):
                b = api.wait_end(api.submit(["true"], cpus=0.5, mem=256))
                assert b["state"] == "succeeded", b
                hist = {h["state"]: h["at"] for h in b["history"]}
                out.append(hist["running"] - b["created_at"])
            return median(out)

        m, lo = to_running(mapi), to_running(local)
    finally:
        mapi.close()
        stop_farm(mfarm)
        master.stop()
    say(f"  Mesos double {m:.3f} s, local backend {lo:.3f} s")
    return Figure(key="mesos-running", name=f"submit -> running through the Mesos double, median of {n}",
                  value=m, unit="s", baseline=lo, baseline_what="local backend", ratio=m / lo,
                  target="none (informational)", ok=None, shown=f"{m:.3f} s",
                  baseline_shown=f"local backend: {lo:.3f} s")


def bench_mesos_offers(n_builds: int, n_agents: int) -> Figure:
    """n_builds queued builds, n_agents simulated agents, tasks that end at once: the framework's
    offer handling (MesosBackend + core) with a recording driver, against declining everything."""
    from buildfarm.backends.mesos import MesosBackend, MesosOptions
    from buildfarm.spec import BuildSpec

    say(f"mesos-offers: {n_builds:,} queued builds, {n_agents} simulated agents, a recording driver")

    class Driver:
        def __init__(self, *a, **k):
            self.accepted = self.declined = 0

        def start(self):
            pass

        def launchTasks(self, ids, tasks, filters):
            self.accepted += len(ids)

        def declineOffer(self, ids, filters):
            self.declined += len(ids)

        def reviveOffers(self):
            pass

        def suppressOffers(self):
            pass

        def stop(self, failover=False):
            pass

    class R:
        def get(self, k):
            return None

        def set(self, k, v):
            pass

    def offer(i: int, r: int) -> dict:
        return {"id": {"value": f"o{r}-{i}"}, "agent_id": {"value": f"a{i}"}, "hostname": f"h{i}",
                "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 4}},
                              {"name": "mem", "type": "SCALAR", "scalar": {"value": 8192}}],
                "attributes": [{"name": "arch", "type": "TEXT", "text": {"value": "x86_64"}}]}

    specs = {f"b{i}": BuildSpec(repo="git://127.0.0.1/x.git", image="img", command=["true"],
                                resources={"cpus": [1, 2, 3, 4][i % 4], "mem": 1024}) for i in range(n_builds)}
    # No reconciliation and no heartbeats: the simulated master sends neither.
    options = MesosOptions(master="127.0.0.1:1", reconcile_interval=1e9, heartbeat_timeout=1e9)
    b = MesosBackend(options, R(), "http://127.0.0.1:1", lambda ev: None, lambda why: None, list,
                     driver_factory=Driver)
    b.connected.set()
    queue = list(specs)
    answered, rounds = 0, 0
    t = time.perf_counter()
    while queue:
        rounds += 1
        b.offers_arrived([offer(i, rounds) for i in range(n_agents)])
        pending = [PendingBuild(bid, Resources(specs[bid].resources.cpus, specs[bid].resources.mem), (), 1, j)
                   for j, bid in enumerate(queue)]
        p = plan(b.agents(), b.offers(), pending)
        for launch in p.launches:
            b.launch(launch.build_id, 1, specs[launch.build_id], "token", launch.agent_id)
        placed = {x.build_id for x in p.launches}
        assert not p.impossible, p.impossible
        queue = [q for q in queue if q not in placed]
        b.settle(len(queue))
        answered += n_agents
        for bid in placed:  # tasks end at once
            b.cleanup(bid)
    rate = answered / (time.perf_counter() - t)
    t = time.perf_counter()
    d = Driver()
    for r in range(rounds):  # baseline: a framework that only declines what it is offered
        for o in [offer(i, r) for i in range(n_agents)]:
            d.declineOffer([o["id"]], {"refuse_seconds": 5})
    base = answered / (time.perf_counter() - t)
    used = b.driver.accepted / max(1, b.driver.accepted + b.driver.declined)
    b.close()
    say(f"  {fmt(rate)} offers answered/s over {rounds} rounds ({used:.0%} used); declining all: {fmt(base)}/s")
    return Figure(key="mesos-offers", name=f"Mesos, {n_builds:,} queued builds on {n_agents} simulated agents",
                  value=rate, unit="offers/s", baseline=base, baseline_what="a framework declining every offer",
                  ratio=rate / base, target="none (informational)", ok=None,
                  shown=f"{fmt(rate)} offers answered/s; {used:.0%} used, {1 - used:.0%} declined",
                  details={"rounds": rounds, "used": used})
