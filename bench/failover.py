"""Measured failover (issue 14): a stream of short builds through a retrying client while a fault
hits one part of a deployment-shaped farm on this machine (API replicas, two schedulers, Redis
plain or under Sentinel, all real processes on 127.0.0.1).

    python -m bench.failover [--only NAME[,NAME...]] [--seconds S] [--lease-ttl T]

Faults: leader-kill (SIGKILL of the leading scheduler, local backend), leader-kill-mesos (the same
on the Mesos double), leader-pause (SIGSTOP of the leader past its lease, then SIGCONT), api-kill
(SIGKILL of one of two API replicas), redis-primary-kill (SIGKILL of the Redis primary under
Sentinel). For each: seconds from the fault until the next build is placed, and builds lost,
run twice and stuck (each must be 0). Target: placement resumes within the lease TTL plus one
round (< 10 s). Each fault is a function of a Cluster, ready for the chaos suite's registry.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conftest import IMAGE, GitServer, RunCounter  # noqa: E402
from tests.ha_support import Cluster, RedisServer, SentinelRedis  # noqa: E402

from .common import say  # noqa: E402

TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "error"}
TARGET_SECONDS = 10.0


class RetryingClient:
    """Submits through any API replica: a refused connection or a 5xx tries the next one, as a
    load balancer with retries (or the CLI pointed at one) does."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.next = 0
        self.retries = 0

    def post_build(self, spec: dict, deadline: float = 60) -> str:
        end = time.monotonic() + deadline
        while True:
            i = self.next % len(self.cluster.ports)
            self.next += 1
            try:
                r = httpx.post(self.cluster.url(i) + "/api/v1/builds", json=spec, headers=self.cluster.headers,
                               timeout=10)
                if r.status_code < 500:
                    r.raise_for_status()
                    return r.json()["id"]
            except httpx.TransportError:
                pass
            self.retries += 1
            if time.monotonic() > end:
                raise RuntimeError("no API replica accepted the build within 60 s")
            time.sleep(0.2)


def run_stream(cluster: Cluster, repo: str, counter: RunCounter, fault: Callable[[], None], *, seconds: float,
               fault_after: float) -> dict:
    """Submit a build every half second for `seconds`, inject `fault` after `fault_after`; then wait
    for every build to end and count."""
    client = RetryingClient(cluster)
    spec = {"repo": repo, "image": IMAGE, "command": ["sh", "-c", f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID"],
            "resources": {"cpus": 0.2, "mem": 64}}
    ids: list[str] = []
    start = time.time()
    fault_at = None
    while time.time() - start < seconds:
        if fault_at is None and time.time() - start >= fault_after:
            fault_at = time.time()
            threading.Thread(target=fault, daemon=True).start()
        ids.append(client.post_build(spec))
        time.sleep(0.5)
    deadline = time.time() + 180
    records = {}
    while time.time() < deadline:
        for b in ids:
            if b not in records or records[b]["state"] not in TERMINAL:
                try:
                    records[b] = client_get(cluster, client, f"/api/v1/builds/{b}")
                except RuntimeError:
                    pass
        if all(b in records and records[b]["state"] in TERMINAL for b in ids):
            break
        time.sleep(0.5)
    placed = sorted(h["at"] for r in records.values() for h in r.get("history", [])
                    if h["reason"].startswith("placed on") and h["at"] >= fault_at)
    return {
        "builds": len(ids),
        "resume_seconds": round(placed[0] - fault_at, 2) if placed else None,
        "lost": sum(1 for b in ids if b not in records or counter.hits[b] == 0),
        "twice": sum(1 for b in ids if counter.hits[b] > 1),
        "stuck": sum(1 for b in ids if b in records and records[b]["state"] not in TERMINAL),
        "failed": sum(1 for r in records.values() if r["state"] != "succeeded"),
        "client_retries": client.retries,
    }


def client_get(cluster: Cluster, client: RetryingClient, path: str) -> dict:
    for _ in range(len(cluster.ports) * 5):
        i = client.next % len(cluster.ports)
        client.next += 1
        try:
            r = httpx.get(cluster.url(i) + path, headers=cluster.headers, timeout=10)
            if r.status_code < 500:
                return r.json()
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"GET {path}: no replica answered")


# -- the faults: each takes the cluster and returns what to do at the fault's moment -------------

def leader_kill(cluster: Cluster) -> Callable[[], None]:
    return lambda: cluster.leading_role().signal(signal.SIGKILL)


def leader_pause(cluster: Cluster) -> Callable[[], None]:
    def fault():
        role = cluster.leading_role()
        role.signal(signal.SIGSTOP)
        time.sleep(cluster.lease_ttl * 2 + 2)  # well past its lease
        role.signal(signal.SIGCONT)
    return fault


def api_kill(cluster: Cluster) -> Callable[[], None]:
    return lambda: cluster.apis[1].signal(signal.SIGKILL)


def primary_kill(sentinel: SentinelRedis) -> Callable[[], None]:
    return lambda: sentinel.kill_primary()


FAULTS = ["leader-kill", "leader-kill-mesos", "leader-pause", "api-kill", "redis-primary-kill"]


def measure(name: str, root: Path, git: GitServer, counter: RunCounter, args) -> dict:
    redis_bin = shutil.which("redis-server")
    sentinel = None
    master = None
    if name == "redis-primary-kill":
        sentinel = SentinelRedis(redis_bin, shutil.which("redis-sentinel"), root / "redis")
        url = sentinel.url
    else:
        server = RedisServer(redis_bin, root / "redis")
        url = f"redis://127.0.0.1:{server.port}/0"
    cluster = Cluster(root, url, args.lease_ttl)
    try:
        cluster.add_api()
        cluster.add_api()
        backend: tuple[str, ...] = ()
        if name == "leader-kill-mesos":
            from tests.doubles.mesos import AgentSpec, MesosDouble

            master = MesosDouble([AgentSpec("agent-x86", "x86-host", cpus=2, mem=4096)], heartbeat_seconds=5).start()
            backend = ("--backend", "mesos", "--master", master.address, "--mesos-cache-path", str(root / "cache"))
        cluster.add_scheduler(*backend)
        cluster.add_scheduler(*backend)
        cluster.leading_role()
        fault = {"leader-kill": leader_kill, "leader-kill-mesos": leader_kill, "leader-pause": leader_pause,
                 "api-kill": api_kill}.get(name)
        repo = git.make_repo(f"failover-{name}", {"f": "x\n"})
        result = run_stream(cluster, repo, counter, fault(cluster) if fault else primary_kill(sentinel),
                            seconds=args.seconds, fault_after=args.seconds / 3)
        result["lease_ttl"] = args.lease_ttl
        return result
    finally:
        cluster.stop()
        if master:
            master.stop()
        if sentinel:
            sentinel.stop()
        else:
            server.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", metavar="NAME", help=f"faults to run: {', '.join(FAULTS)}")
    ap.add_argument("--seconds", type=float, default=24, help="how long builds are submitted (fault at a third)")
    ap.add_argument("--lease-ttl", type=float, default=3, help="the schedulers' --lease-ttl")
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "failover.json")
    args = ap.parse_args(argv)
    names = [n for part in args.only or [] for n in part.split(",") if n] or FAULTS
    unknown = set(names) - set(FAULTS)
    if unknown:
        ap.error(f"unknown fault(s) {', '.join(sorted(unknown))}; choose from {', '.join(FAULTS)}")
    tmp = Path(tempfile.mkdtemp(prefix="bf-failover-"))
    git = GitServer(tmp / "git")
    counter = RunCounter()
    results = {}
    try:
        for name in names:
            say(f"-- {name}")
            results[name] = measure(name, tmp / name, git, counter, args)
            say(f"   {json.dumps(results[name])}")
    finally:
        git.stop()
        counter.close()
        shutil.rmtree(tmp, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    say("\n| fault | next build placed after | builds | lost | twice | stuck | client retries |")
    say("|---|---|---|---|---|---|---|")
    ok = True
    for name, r in results.items():
        resume = r["resume_seconds"]
        ok &= resume is not None and resume < TARGET_SECONDS and r["lost"] == r["twice"] == r["stuck"] == 0
        say(f"| {name} | {resume} s | {r['builds']} | {r['lost']} | {r['twice']} | {r['stuck']} | {r['client_retries']} |")
    say(f"\ntarget: placement resumes in < {TARGET_SECONDS:g} s, nothing lost, twice or stuck: "
        f"{'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
