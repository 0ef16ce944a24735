"""Counters kept in Redis, so every farm process (API, scheduler) adds to the same figures:
builds ended per 10-minute bucket and state (the dashboard's throughput chart), and the
submit-to-start latency histogram (Prometheus' `/metrics`)."""

from __future__ import annotations

import json
import time

import redis

from . import keys

BUCKET_SECONDS = 600
KEEP_SECONDS = 48 * 3600
ENDED, LATENCY = keys.STATS_ENDED, keys.STATS_LATENCY
TEAM_USE, TEAMS_SEEN, SHARES = keys.STATS_TEAM_USE, keys.STATS_TEAMS, keys.STATS_SHARES
LATENCY_BOUNDS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
SHARE_EVERY = 60  # seconds between samples
SHARES_KEPT = 24 * 3600 // SHARE_EVERY


class Stats:
    def __init__(self, r: redis.Redis):
        self.r = r

    def ended(self, state, at: float | None = None) -> None:
        bucket = int((at or time.time()) // BUCKET_SECONDS * BUCKET_SECONDS)
        pipe = self.r.pipeline()
        pipe.hincrby(f"{ENDED}{bucket}", state.value, 1)
        pipe.expire(f"{ENDED}{bucket}", KEEP_SECONDS)
        pipe.execute()

    def started(self, waited: float) -> None:
        """One build went from submitted to running in `waited` seconds (cumulative buckets)."""
        pipe = self.r.pipeline()
        for bound in LATENCY_BOUNDS:
            if waited <= bound:
                pipe.hincrby(LATENCY, _label(bound), 1)
        pipe.hincrby(LATENCY, "+Inf", 1)
        pipe.hincrbyfloat(LATENCY, "sum", max(waited, 0.0))
        pipe.hincrby(LATENCY, "count", 1)
        pipe.execute()

    def attempt_used(self, team: str | None, seconds: float, cpus: float, mem: int, preempted: bool) -> None:
        """One attempt of a build ended after holding cpus and mem MB for `seconds` (from its launch)."""
        key = TEAM_USE + (team or "")
        pipe = self.r.pipeline()
        pipe.sadd(TEAMS_SEEN, team or "")
        pipe.hincrbyfloat(key, "cpu_seconds", seconds * cpus)
        pipe.hincrbyfloat(key, "mem_mb_seconds", seconds * mem)
        pipe.hincrby(key, "attempts", 1)
        if preempted:
            pipe.hincrby(key, "preemptions", 1)
        pipe.execute()

    def measured(self, team: str | None, cpu_seconds: float) -> None:
        """A build of the team ended, its agent having measured the CPU time its processes used."""
        pipe = self.r.pipeline()
        pipe.sadd(TEAMS_SEEN, team or "")
        pipe.hincrbyfloat(TEAM_USE + (team or ""), "measured_cpu_seconds", cpu_seconds)
        pipe.execute()

    def sample_shares(self, now: float, shares: dict[str, float]) -> bool:
        """Keep the teams' dominant shares of the pool, at most once a minute (any scheduler)."""
        if not self.r.set(keys.STATS_SHARES_NEXT, "1", nx=True, ex=SHARE_EVERY):
            return False
        pipe = self.r.pipeline()
        pipe.rpush(SHARES, json.dumps({"at": now, "shares": shares}))
        pipe.ltrim(SHARES, -SHARES_KEPT, -1)
        pipe.execute()
        return True

    def shares(self, since: float) -> list[dict]:
        return [s for s in map(json.loads, self.r.lrange(SHARES, 0, -1)) if s["at"] >= since]

    def team_use(self) -> dict[str, dict[str, float]]:
        """team ("" for none) -> {cpu_seconds, mem_mb_seconds, attempts, preemptions}, since the farm began."""
        teams = sorted(self.r.smembers(TEAMS_SEEN))
        pipe = self.r.pipeline()
        for t in teams:
            pipe.hgetall(TEAM_USE + t)
        return {t: {k: float(v) for k, v in h.items()} for t, h in zip(teams, pipe.execute())}

    def throughput(self, hours: float, now: float | None = None) -> list[dict]:
        """Builds ended per bucket over the last `hours`, oldest first: succeeded, failed, other."""
        now = now or time.time()
        last = int(now // BUCKET_SECONDS * BUCKET_SECONDS)
        starts = list(range(last - int(hours * 3600) + BUCKET_SECONDS, last + 1, BUCKET_SECONDS))
        pipe = self.r.pipeline()
        for s in starts:
            pipe.hgetall(f"{ENDED}{s}")
        out = []
        for s, counts in zip(starts, pipe.execute()):
            counts = {k: int(v) for k, v in counts.items()}
            ok, failed = counts.pop("succeeded", 0), counts.pop("failed", 0)
            out.append({"start": s, "succeeded": ok, "failed": failed, "other": sum(counts.values())})
        return out

    def latency(self) -> tuple[list[tuple[str, int]], float, int]:
        """([(upper bound, cumulative count)...,("+Inf", n)], sum, count)."""
        h = self.r.hgetall(LATENCY)
        buckets = [(_label(b), int(h.get(_label(b), 0))) for b in LATENCY_BOUNDS]
        buckets.append(("+Inf", int(h.get("+Inf", 0))))
        return buckets, float(h.get("sum", 0.0)), int(h.get("count", 0))


def _label(bound: float) -> str:
    return f"{bound:g}"
