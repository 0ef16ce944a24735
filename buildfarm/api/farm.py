"""The farm as a whole: agents, the queue, throughput, health checks and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .. import __version__, lease
from ..diskspace import dir_bytes, free_bytes
from ..service import Farm
from ..states import State
from ..stats import BUCKET_SECONDS
from .auth import require


def router(farm: Farm) -> APIRouter:
    api = APIRouter()
    viewer = Depends(require("viewer"))

    @api.get("/api/v1/agents", tags=["farm"], summary="Agents: capacity, what is in use, and their builds",
             dependencies=[viewer])
    def agents() -> dict[str, Any]:
        return {"agents": agents_in_use(farm)}

    @api.get("/api/v1/queue", tags=["farm"], summary="Queued builds by priority, next first",
             dependencies=[viewer])
    def queue(limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        pending = farm.queue.pending()[:limit]
        return {"depth": farm.queue.depth(), "builds": farm.builds.get_many(bid for _, bid in pending)}

    @api.get("/api/v1/stats/throughput", tags=["farm"], summary="Builds ended per 10 minutes",
             dependencies=[viewer])
    def throughput(hours: float = Query(6, gt=0, le=48)) -> dict[str, Any]:
        return {"bucket_seconds": BUCKET_SECONDS, "buckets": farm.stats.throughput(hours)}

    @api.get("/api/v1/schedulers", tags=["farm"], dependencies=[viewer],
             summary="The schedulers: who leads since when with which fencing token, and the standbys")
    def schedulers() -> dict[str, Any]:
        return lease.describe(farm.r, farm.settings.lease_ttl)

    @api.get("/healthz", tags=["farm"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", tags=["farm"], summary="Readiness: Redis answers")
    def readyz() -> dict[str, str]:
        """Ready when Redis answers within 2 s; when it does not, the API's one answer for Redis
        away (errors.redis_away: a 503 with Retry-After), as every other route gives."""
        farm.probe.ping()
        return {"status": "ready", "version": __version__}

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FarmCollector(farm))

    @api.get("/metrics", tags=["farm"], summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "the exposition format"}})
    def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return api


def agents_in_use(farm: Farm) -> list[dict[str, Any]]:
    """The published agents, each with what its running builds use and their ids."""
    agents = farm.builds.agents()
    by_agent: dict[str, list[dict]] = {}
    for b in farm.builds.get_many(farm.builds.active_ids()):
        if b["agent_id"] and b["state"] in ("launching", "running"):
            by_agent.setdefault(b["agent_id"], []).append(b)
    for a in agents:
        mine = by_agent.get(a["agent_id"], [])
        a["builds"] = [b["id"] for b in mine]
        a["used"] = {k: round(sum(b["spec"]["resources"].get(k, 0) for b in mine), 3) for k in ("cpus", "mem", "disk")}
    return sorted(agents, key=lambda a: a["agent_id"])


class FarmCollector:
    """Read from Redis at each scrape, so the figures are the farm's, whichever process serves them."""

    def __init__(self, farm: Farm):
        self.farm = farm

    def collect(self):
        farm = self.farm
        states = GaugeMetricFamily("buildfarm_builds", "Builds by state", labels=["state"])
        counts = farm.builds.count_by_state()
        for s in State:
            states.add_metric([s.value], counts.get(s.value, 0))
        yield states
        depth = GaugeMetricFamily("buildfarm_queue_depth", "Queued builds by priority", labels=["priority"])
        for p, n in farm.queue.depth().items():
            depth.add_metric([p], n)
        yield depth
        buckets, total, count = farm.stats.latency()
        hist = HistogramMetricFamily("buildfarm_submit_to_start_seconds",
                                     "Time from submit to the build's agent starting", unit="")
        hist.add_metric([], buckets, total)
        yield hist
        agents = agents_in_use(farm)
        yield GaugeMetricFamily("buildfarm_agents", "Agents the scheduler knows", value=len(agents))
        cap = GaugeMetricFamily("buildfarm_agent_capacity", "Agent capacity (cpus, mem MB, disk MB)",
                                labels=["agent", "resource"])
        used = GaugeMetricFamily("buildfarm_agent_used", "Resources used by running builds",
                                 labels=["agent", "resource"])
        for a in agents:
            for r in ("cpus", "mem", "disk"):
                cap.add_metric([a["agent_id"], r], a["capacity"].get(r, 0))
                used.add_metric([a["agent_id"], r], a["used"][r])
        yield cap
        yield used
        yield from team_counters(farm)
        yield from data_dir_use(farm)


def team_counters(farm: Farm):
    """What each team's builds held, summed over their ended attempts (team "" is builds without one)."""
    names = {"cpu_seconds": ("buildfarm_team_cpu_seconds", "CPU-seconds reserved by the team's ended attempts"),
             "mem_mb_seconds": ("buildfarm_team_memory_mb_seconds", "Memory MB-seconds reserved by them"),
             "attempts": ("buildfarm_team_attempts", "Attempts of the team's builds that ended"),
             "preemptions": ("buildfarm_team_preemptions", "Attempts of the team's builds that were preempted"),
             "measured_cpu_seconds": ("buildfarm_team_measured_cpu_seconds",
                                      "CPU time the team's ended builds' processes used, as their agents measured it")}
    use = farm.stats.team_use()
    for key, (name, doc) in names.items():
        counter = CounterMetricFamily(name, doc, labels=["team"])
        for team, figures in use.items():
            counter.add_metric([team], figures.get(key, 0.0))
        yield counter


def data_dir_use(farm: Farm):
    """What the farm's files take (walked at each scrape) and what their filesystems have free."""
    dirs = {"logs": farm.settings.logs_dir, "artifacts": farm.settings.artifacts_dir, "data": farm.settings.data_dir}
    held = GaugeMetricFamily("buildfarm_data_bytes", "Bytes of build logs and artifacts in the data directory",
                             labels=["kind"])
    free = GaugeMetricFamily("buildfarm_data_free_bytes", "Free bytes of the filesystem holding the data directory "
                             "(data), its logs and its artifacts", labels=["kind"])
    for kind, path in dirs.items():
        if kind != "data":
            held.add_metric([kind], dir_bytes(path))
        free.add_metric([kind], free_bytes(path))
    yield held
    yield free


__all__ = ["router", "agents_in_use"]
