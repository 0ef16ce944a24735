"""Figures 1 and 2: a build's latency to its first line of output, and the throughput of trivial
builds, each against bare `docker run`s of the same image measured in the same run."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import IMAGE

from .common import TERMINAL, Api, Figure, docker_run, fmt, median, phases, quantile, say

# The build prints MARKER; its command line does not contain it (the shell computes the 42), so
# the farm's own "[buildfarm] $ sh -c ..." line can never be mistaken for the build's output.
MARKER = b"first-line-42"
MARKER_CMD = ["sh", "-c", "echo first-line-$((6 * 7))"]


WARM_LINE = b"running in a warm container"


def _first_line(api: Api, bid_box: list) -> float:
    """Submit, follow the log, return the seconds from before the POST to the chunk with the marker."""
    t0 = time.perf_counter()
    bid = api.submit(MARKER_CMD, cpus=1.0, mem=512)
    bid_box.append(bid)
    seen = b""
    with api.http.stream("GET", f"/api/v1/builds/{bid}/log", params={"follow": "true"},
                         timeout=httpx.Timeout(60, read=120)) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_raw():
            seen += chunk
            if any(line == MARKER for line in seen.split(b"\n")):
                took = time.perf_counter() - t0
                bid_box.append(WARM_LINE in seen)
                return took
    raise RuntimeError(f"build {bid}: the log ended without {MARKER!r}: {seen[-2000:]!r}")


def bench_first_line(api: Api, n: int) -> Figure:
    say(f"first-line: {n} builds of `{' '.join(MARKER_CMD)}`, each alone on an idle farm, interleaved with "
        f"{n} bare `docker run --rm {IMAGE} true`")
    # Warm-up, not measured: the mirror cache gets the repository, the image's layers are hot.
    api.wait_end(api.submit(["true"]))
    docker_run("true")
    docker_run("true", network="host")
    farm, bare, bare_host, breakdown, warm = [], [], [], [], []
    for i in range(n):
        api.quiesce()
        box: list = []
        t_wall = time.time()
        farm.append(_first_line(api, box))
        t_marker = t_wall + farm[-1]
        warm.append(box[1])
        b = api.wait_end(box[0])
        assert b["state"] == "succeeded", b
        ph = phases(b)
        hist = {h["state"]: h["at"] for h in b["history"]}
        breakdown.append({"submit_call": b["created_at"] - t_wall, "queued": ph.get("queued", 0),
                          "launching": ph.get("launching", 0),
                          "running_to_marker": t_marker - hist.get("running", t_marker),
                          "marker_to_end": (b["finished_at"] or t_marker) - t_marker})
        api.quiesce()
        bare.append(docker_run("true"))
        bare_host.append(docker_run("true", network="host"))
    m, base, base_host = median(farm), median(bare), median(bare_host)
    parts = {k: median([x[k] for x in breakdown]) for k in breakdown[0]}
    say(f"  farm: median {m:.3f} s (p10 {quantile(farm, .1):.3f}, p90 {quantile(farm, .9):.3f}); "
        f"bare docker run: median {base:.3f} s (p10 {quantile(bare, .1):.3f}, p90 {quantile(bare, .9):.3f}); "
        f"with --network host (as the farm runs builds): {base_host:.3f} s; {sum(warm)} of {n} builds ran in "
        f"a pre-started (warm) container")
    say("  where the farm's time goes (medians, from the build's recorded history): "
        f"POST until recorded {parts['submit_call'] * 1000:.0f} ms, queued {parts['queued'] * 1000:.0f} ms, "
        f"launching (container create+start, agent up) {parts['launching'] * 1000:.0f} ms, "
        f"agent start -> marker seen by the client {parts['running_to_marker'] * 1000:.0f} ms")
    ratio = m / base
    return Figure(
        key="first-line", name=f"submit -> first log line, median of {n}", value=m, unit="s", baseline=base,
        baseline_what=f"bare `docker run --rm {IMAGE} true`", ratio=ratio, target="< 1.5x", ok=ratio < 1.5,
        shown=f"{m:.3f} s", baseline_shown=f"bare `docker run --rm {IMAGE} true`: {base:.3f} s",
        details={"farm_s": farm, "bare_s": bare, "bare_network_host_s": bare_host,
                 "ratio_vs_network_host": m / base_host, "breakdown_median_s": parts, "breakdown": breakdown,
                 "warm_builds": sum(warm)},
        notes=[(f"vs `docker run --rm --network host` (the farm's network mode): {base_host:.3f} s = "
                f"{m / base_host:.2f}x")])


def bench_throughput(api: Api, n: int) -> Figure:
    say(f"throughput: {n} builds of `true` (cpus 0.25, mem 256) submitted at once, until all ended; "
        f"then {n} bare `docker run --rm {IMAGE} true` in a loop")
    api.wait_end(api.submit(["true"]))  # warm-up
    api.quiesce()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(n, 10)) as pool:
        ids = list(pool.map(lambda _: api.submit(["true"], cpus=0.25, mem=256), range(n)))
    t_submitted = time.perf_counter() - t0
    want = set(ids)
    deadline = time.monotonic() + 60 + 10 * n
    held = []  # cpus the farm still holds for builds that have already ended (until their cleanup)
    while True:
        states = {k: v for k, v in api.states(limit=max(100, 2 * n)).items() if k in want}
        agents = api.http.get("/api/v1/agents").json()["agents"]
        if agents and agents[0].get("free"):
            allocated = agents[0]["capacity"]["cpus"] - agents[0]["free"]["cpus"]
            active = sum(1 for v in states.values() if v in ("launching", "running"))
            held.append(max(0.0, allocated - 0.25 * active))
        if len(states) == n and all(s in TERMINAL for s in states.values()):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"builds still not ended: {[k for k, v in states.items() if v not in TERMINAL]}")
        time.sleep(0.1)
    elapsed = time.perf_counter() - t0
    t_cleaned = api.quiesce(120) + elapsed
    failed = {k: v for k, v in states.items() if v != "succeeded"}
    assert not failed, f"builds that did not succeed: {failed}"
    farm_rate = n / elapsed * 60
    builds = [api.get(b) for b in ids]
    # How many ran at once: from each build's launching..finished interval on the farm's clock.
    events = []
    for b in builds:
        hist = {h["state"]: h["at"] for h in b["history"]}
        events += [(hist["launching"], 1), (b["finished_at"], -1)]
    live = peak = 0
    for _, d in sorted(events):
        live += d
        peak = max(peak, live)
    durations = [phases(b) for b in builds]
    t = time.perf_counter()
    for _ in range(n):
        docker_run("true")
    base_elapsed = time.perf_counter() - t
    base_rate = n / base_elapsed * 60
    ratio = farm_rate / base_rate
    say(f"  farm: {n} builds in {elapsed:.2f} s = {fmt(farm_rate)} builds/min (all submitted after "
        f"{t_submitted:.2f} s; containers all removed after {t_cleaned:.2f} s); at most {peak} at once; "
        f"per build median launching {median([d.get('launching', 0) for d in durations]):.2f} s, "
        f"running {median([d.get('running', 0) for d in durations]):.2f} s")
    held_avg = sum(held) / len(held) if held else 0.0
    say(f"  capacity held for builds already ended (their containers not yet cleaned up): average "
        f"{held_avg:.2f} cpus, at most {max(held, default=0):.2f} of {api.capacity_cpus():g} "
        f"({len(held)} samples)")
    say(f"  bare: {n} sequential docker runs in {base_elapsed:.2f} s = {fmt(base_rate)}/min")
    return Figure(
        key="throughput", name=f"{n} trivial builds end to end", value=farm_rate, unit="builds/min",
        baseline=base_rate, baseline_what=f"{n} bare `docker run`s in a loop", ratio=ratio, target=">= 0.8x",
        ok=ratio >= 0.8,
        details={"elapsed_s": elapsed, "submitted_after_s": t_submitted, "containers_removed_after_s": t_cleaned,
                 "max_concurrent": peak, "baseline_elapsed_s": base_elapsed,
                 "cpus_held_by_ended_builds": held,
                 "launching_s": [d.get("launching") for d in durations],
                 "running_s": [d.get("running") for d in durations],
                 "queued_s": [d.get("queued") for d in durations]})
