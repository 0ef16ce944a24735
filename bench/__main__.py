"""`make bench`: buildfarm's figures, each as a ratio to a baseline measured in the same run.

    python -m bench [--quick] [--only NAME ...]

Results are printed and written to bench/results/latest.json; the Markdown table at the end is
what the README shows.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from buildfarm.scheduler import Agent, Offer, PendingBuild, Resources, plan  # noqa: E402
from tests.conftest import IMAGE, FarmProcess, GitServer  # noqa: E402

RESULTS: list[dict] = []


def report(name: str, value: float, unit: str, baseline: float, baseline_what: str, ratio: float, target: str,
           ok: bool | None = None, extra: str = "") -> None:
    RESULTS.append({"name": name, "value": value, "unit": unit, "baseline": baseline, "baseline_what": baseline_what,
                    "ratio": ratio, "target": target, "ok": ok, "extra": extra})
    verdict = "" if ok is None else ("  OK" if ok else "  MISSED")
    print(f"{name}: {value:.3f} {unit} vs {baseline_what} {baseline:.3f} {unit} = {ratio:.2f}x "
          f"(target {target}){verdict} {extra}", flush=True)


def docker_true() -> float:
    t = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", "--network", "host", IMAGE, "true"], check=True, capture_output=True)
    return time.perf_counter() - t


def submit(client: httpx.Client, repo: str, command: list[str], **extra) -> str:
    spec = {"repo": repo, "image": IMAGE, "command": command, "resources": {"cpus": extra.pop("cpus", 1.0),
                                                                            "mem": extra.pop("mem", 512)}}
    spec.update(extra)
    r = client.post("/api/v1/builds", json=spec)
    r.raise_for_status()
    return r.json()["id"]


def wait_end(client: httpx.Client, bid: str, timeout: float = 600) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        b = client.get(f"/api/v1/builds/{bid}").json()
        if b["state"] in ("succeeded", "failed", "timed_out", "cancelled", "error"):
            return b
        time.sleep(0.05)
    raise TimeoutError(bid)


# -- 1: submit -> first log line -------------------------------------------------------------------

def bench_first_line(farm: FarmProcess, repo: str, n: int) -> None:
    client = httpx.Client(base_url=farm.url, timeout=60)
    wait_end(client, submit(client, repo, ["true"]))  # warm the mirror cache, as a busy farm has it
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        bid = submit(client, repo, ["echo", "ready-marker"])
        with client.stream("GET", f"/api/v1/builds/{bid}/log", params={"follow": "true"},
                           timeout=httpx.Timeout(60, read=None)) as resp:
            seen = b""
            for chunk in resp.iter_raw():
                seen += chunk
                if b"\nready-marker" in seen:
                    samples.append(time.perf_counter() - t)
                    break
        wait_end(client, bid)
    base = [docker_true() for _ in range(n)]
    m, b = statistics.median(samples), statistics.median(base)
    report("submit -> first log line (median)", m, "s", b, "bare `docker run --rm` (median)", m / b, "< 1.5x",
           m / b < 1.5)


# -- 2: throughput ------------------------------------------------------------------------------------

def bench_throughput(farm: FarmProcess, repo: str, n: int) -> None:
    client = httpx.Client(base_url=farm.url, timeout=60)
    t = time.perf_counter()
    ids = [submit(client, repo, ["true"], cpus=0.5, mem=256) for _ in range(n)]
    states = [wait_end(client, b)["state"] for b in ids]
    farm_rate = n / (time.perf_counter() - t) * 60
    assert states == ["succeeded"] * n, states
    t = time.perf_counter()
    for _ in range(n):
        docker_true()
    base_rate = n / (time.perf_counter() - t) * 60
    report(f"{n} trivial builds end to end", farm_rate, "builds/min", base_rate, f"{n} bare `docker run`s in a loop",
           farm_rate / base_rate, ">= 0.8x", farm_rate / base_rate >= 0.8)


# -- 3: the scheduler core ------------------------------------------------------------------------

def bench_core(n_builds: int, n_agents: int) -> None:
    rng = random.Random(7)
    archs = ["x86_64", "aarch64", "ppc64le"]
    agents = [Agent(f"a{i}", f"h{i}", Resources(rng.choice([8, 16, 32, 64]), rng.choice([16384, 65536, 131072])),
                    {"arch": archs[i % 3], "os": "el9" if i % 2 else "el8"}) for i in range(n_agents)]
    offers = [Offer(a.agent_id, a.capacity) for a in agents]
    pending = []
    for i in range(n_builds):
        cons = ()
        if i % 4 == 1:
            cons = (("arch", "==", archs[i % 3]),)
        elif i % 4 == 2:
            cons = (("os", "==", "el9"), ("arch", "!=", "ppc64le"))
        pending.append(PendingBuild(f"b{i}", Resources(rng.choice([1, 2, 4, 8]), rng.choice([2048, 4096, 8192])),
                                    cons, rng.choice([0, 1, 1, 2]), i))
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        p = plan(agents, offers, pending)
        runs.append(time.perf_counter() - t)
    rate = n_builds / min(runs)
    report(f"scheduler core: {n_builds} pending on {n_agents} agents", rate, "decisions/s", 20000,
           "the target", rate / 20000, ">= 1.0x (20,000/s)", rate >= 20000, f"({len(p.launches)} placed)")


# -- 4: log ingest ----------------------------------------------------------------------------------

def rss_kb(pid: int) -> int:
    total = 0
    for p in [pid] + children(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except FileNotFoundError:
        return []


def bench_log_ingest(farm: FarmProcess, repo: str, size: int) -> None:
    client = httpx.Client(base_url=farm.url, timeout=60)
    line = "x" * 79
    cmd = ["sh", "-c", f"yes {line} | head -c {size}"]
    before = rss_kb(farm.proc.pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            peak[0] = max(peak[0], rss_kb(farm.proc.pid))

    threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    bid = submit(client, repo, cmd, cpus=1.0, mem=512)
    b = wait_end(client, bid, 1200)
    elapsed = time.perf_counter() - t
    done.set()
    assert b["state"] == "succeeded", b
    logged = client.get(f"/api/v1/builds/{bid}").json()["log_bytes"]
    rate = size / elapsed / 1e6
    t = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", IMAGE, "sh", "-c", f"yes {line} | head -c {size} > /dev/null"], check=True)
    base = size / (time.perf_counter() - t) / 1e6
    report(f"log ingest of {size / 1e6:.0f} MB from one build", rate, "MB/s", base,
           "the same output to /dev/null in a bare `docker run`", rate / base, "informational", None,
           f"(farm RSS {before / 1024:.0f} MB before, peak {peak[0] / 1024:.0f} MB; log {logged} bytes, "
           f"{logged - size} of them the farm's own lines)")


# -- 5: Mesos -----------------------------------------------------------------------------------

def bench_mesos_running(local: FarmProcess, repo: str, n: int, tmp: Path) -> None:
    from tests.doubles.mesos import AgentSpec, MesosDouble

    master = MesosDouble([AgentSpec("S0", cpus=2, mem=8192)], heartbeat_seconds=5).start()
    mfarm = FarmProcess(tmp / "mesos-data", "--backend", "mesos", "--master", master.address,
                        "--mesos-cache-path", str(tmp / "mesos-cache"))
    try:
        def to_running(farm: FarmProcess) -> float:
            client = httpx.Client(base_url=farm.url, timeout=60)
            wait_end(client, submit(client, repo, ["true"]))
            out = []
            for _ in range(n):
                bid = submit(client, repo, ["true"], cpus=0.5, mem=256)
                b = wait_end(client, bid)
                hist = {h["state"]: h["at"] for h in b["history"]}
                out.append(hist["running"] - b["created_at"])
            return statistics.median(out)
        m, lo = to_running(mfarm), to_running(local)
        report("submit -> running through the Mesos double (median)", m, "s", lo, "local backend (median)", m / lo,
               "informational")
    finally:
        mfarm.stop()
        master.stop()


def bench_mesos_offers(n_builds: int, n_agents: int) -> None:
    """1,000 queued builds, 100 simulated agents, tasks that end at once: the framework's offer
    handling (MesosBackend + core) with a recording driver, against a framework that declines all."""
    from buildfarm.backends.mesos import MesosBackend, MesosOptions
    from buildfarm.spec import BuildSpec

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

    spec = BuildSpec(repo="git://127.0.0.1/x.git", image="img", command=["true"],
                     resources={"cpus": 1 + 0, "mem": 1024})
    specs = {f"b{i}": BuildSpec(**{**spec.model_dump(), "resources": {"cpus": [1, 2, 3, 4][i % 4], "mem": 1024}})
             for i in range(n_builds)}
    b = MesosBackend(MesosOptions(master="127.0.0.1:1", reconcile_interval=1e9), R(), "http://127.0.0.1:1",
                     lambda ev: None, lambda why: None, lambda: [], driver_factory=Driver)
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
    elapsed = time.perf_counter() - t
    rate = answered / elapsed
    t = time.perf_counter()
    d = Driver()
    for r in range(rounds):  # baseline: a framework that only declines what it is offered
        offers = [offer(i, r) for i in range(n_agents)]
        for o in offers:
            d.declineOffer([o["id"]], {"refuse_seconds": 5})
    base = answered / (time.perf_counter() - t)
    used = b.driver.accepted / max(1, b.driver.accepted + b.driver.declined)
    report(f"Mesos: {n_builds} queued builds on {n_agents} simulated agents", rate, "offers/s", base,
           "declining every offer", rate / base, "informational", None,
           f"({rounds} rounds; {used:.0%} of offers used, {1 - used:.0%} declined)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts, for a fast check")
    ap.add_argument("--only", nargs="*", choices=["first-line", "throughput", "core", "log", "mesos", "mesos-offers"])
    args = ap.parse_args()
    only = set(args.only or ["first-line", "throughput", "core", "log", "mesos", "mesos-offers"])
    q = args.quick
    if "core" in only:
        bench_core(2000 if q else 10000, 200 if q else 1000)
    if "mesos-offers" in only:
        bench_mesos_offers(200 if q else 1000, 20 if q else 100)
    needs_farm = only & {"first-line", "throughput", "log", "mesos"}
    if needs_farm:
        with tempfile.TemporaryDirectory(prefix="buildfarm-bench-") as tmp:
            tmp = Path(tmp)
            git = GitServer(tmp / "git")
            repo = git.make_repo("bench", {"README": "bench\n"})
            farm = FarmProcess(tmp / "data")
            try:
                if "first-line" in only:
                    bench_first_line(farm, repo, 5 if q else 20)
                if "throughput" in only:
                    bench_throughput(farm, repo, 10 if q else 50)
                if "mesos" in only:
                    bench_mesos_running(farm, repo, 5 if q else 20, tmp)
                if "log" in only:
                    bench_log_ingest(farm, repo, 100_000_000 if q else 1_000_000_000)
            finally:
                farm.stop()
                git.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(RESULTS, indent=2))
    print("\n| figure | buildfarm | baseline | ratio | target |\n|---|---|---|---|---|")
    for r in RESULTS:
        print(f"| {r['name']} | {r['value']:.3g} {r['unit']} | {r['baseline']:.3g} {r['unit']} ({r['baseline_what']}) "
              f"| {r['ratio']:.2f}x | {r['target']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
