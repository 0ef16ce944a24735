"""Figure 4: log ingest. One build prints SIZE bytes of 80-byte lines; MB/s from submit to its end,
the farm process's RSS (VmRSS every 100 ms) before and at its peak, and, read back through the
API, the proof that nothing was lost: the log is exactly the SIZE bytes plus the farm's own lines."""

from __future__ import annotations

import os
import time

import httpx

from tests.conftest import IMAGE

from .common import TERMINAL, Api, Figure, RssSampler, docker_run, fmt, median, quantile, say

LINE = b"buildfarm bench: an 80-byte line of build output, repeated until the size is met"
LINE = (LINE + b"." * 79)[:79]  # 79 characters and a newline: 80 bytes
LINE_NL = LINE + b"\n"
FARM_PREFIX = b"[buildfarm] "


def command(size: int, sink: str = "") -> list[str]:
    return ["sh", "-c", f"yes '{LINE.decode()}' | head -c {size}{sink}"]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def read_back(api: Api, bid: str) -> dict:
    """Stream the whole log from the API and account for every byte: the build's lines (each
    exactly LINE), the farm's own `[buildfarm] ...` lines, anything else (there must be none)."""
    payload_lines, farm_lines, other, carry, total = 0, [], [], b"", 0
    t = time.perf_counter()
    with api.http.stream("GET", f"/api/v1/builds/{bid}/log", timeout=httpx.Timeout(60, read=300)) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_raw():
            total += len(chunk)
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            part, carry = data[:cut], data[cut:]
            k = part.count(LINE_NL)
            if k * len(LINE_NL) == len(part):  # the occurrences tile the whole part: all payload
                payload_lines += k
                continue
            for ln in part.split(b"\n")[:-1]:
                if ln == LINE:
                    payload_lines += 1
                elif ln.startswith(FARM_PREFIX):
                    farm_lines.append(ln + b"\n")
                else:
                    other.append(ln[:200])
    if carry:
        other.append(carry[:200])
    return {"read_bytes": total, "payload_bytes": payload_lines * len(LINE_NL), "farm_lines": farm_lines,
            "farm_bytes": sum(len(x) for x in farm_lines), "other_lines": len(other), "other_sample": other[:5],
            "read_s": time.perf_counter() - t}


def bench_log(api: Api, size: int) -> Figure:
    pid = api.farm.proc.pid
    say(f"log: one build printing {size:,} bytes (`yes '<79 chars>' | head -c {size}`, cpus 2), "
        f"the farm's VmRSS (pid {pid}) every 100 ms; then the same command in a bare `docker run` to /dev/null")
    api.wait_end(api.submit(["true"]))  # warm-up (mirror cache), not measured
    api.quiesce()
    sampler = RssSampler(pid).start()
    try:
        return _measure(api, size, pid, sampler)
    finally:
        sampler.stop()


def _measure(api: Api, size: int, pid: int, sampler: RssSampler) -> Figure:
    time.sleep(1.0)
    before = sampler.samples[-1][2]
    cpu0 = cpu_seconds(pid)
    sampler.mark("ingest")
    t0 = time.perf_counter()
    bid = api.submit(command(size), cpus=2.0, mem=512)
    latencies = []  # of the API's GET /builds/ID while the log pours in: is the API still responsive?
    while True:
        t = time.perf_counter()
        b = api.get(bid)
        latencies.append(time.perf_counter() - t)
        if b["state"] in TERMINAL:
            break
        if time.perf_counter() - t0 > 60 + size / 1e6:  # slower than 1 MB/s: something is stuck
            raise TimeoutError(f"the log build is still {b['state']} after {time.perf_counter() - t0:.0f} s")
        time.sleep(0.1)
    elapsed = time.perf_counter() - t0
    farm_cpu = cpu_seconds(pid) - cpu0
    sampler.mark("read-back")
    assert b["state"] == "succeeded", f"the log build ended {b['state']}: {b['reason']}"
    log_bytes = b["log_bytes"]
    check = read_back(api, bid)
    sampler.mark("after")
    peak, peak_read = sampler.peak("ingest"), sampler.peak("read-back")
    rate = size / elapsed / 1e6
    api.quiesce()
    base_s = docker_run(*command(size, " > /dev/null"))
    base = size / base_s / 1e6
    lossless = (check["payload_bytes"] == size and check["other_lines"] == 0
                and log_bytes == size + check["farm_bytes"] == check["read_bytes"])
    say(f"  farm: {size / 1e6:,.0f} MB in {elapsed:.1f} s = {rate:.1f} MB/s; the farm process used "
        f"{farm_cpu:.1f} s of CPU ({farm_cpu / elapsed:.0%} of one core); bare docker run to /dev/null: "
        f"{base_s:.2f} s = {base:.0f} MB/s")
    say(f"  the API during ingest: GET /api/v1/builds/ID took median {median(latencies) * 1000:.0f} ms, "
        f"p90 {quantile(latencies, .9) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms ({len(latencies)} calls)")
    say(f"  farm RSS: {before / 1024:.0f} MB before, peak {peak / 1024:.0f} MB during ingest "
        f"({sampler.count('ingest')} samples), peak {peak_read / 1024:.0f} MB while "
        f"{check['read_bytes'] / 1e6:,.0f} MB were read back through the API "
        f"({check['read_bytes'] / check['read_s'] / 1e6:.0f} MB/s)")
    say(f"  log on the farm: {log_bytes:,} bytes = {check['payload_bytes']:,} of the build's output + "
        f"{check['farm_bytes']:,} in {len(check['farm_lines'])} lines of the farm's own; other bytes: "
        f"{check['other_lines']} lines -> {'nothing lost' if lossless else 'MISMATCH'}")
    for ln in check["farm_lines"]:
        say(f"    {ln.decode(errors='replace').rstrip()[:150]}")
    if not lossless:
        say(f"  LOSS: expected {size:,} bytes of output, found {check['payload_bytes']:,}; "
            f"unexpected lines: {check['other_sample']}")
    return Figure(
        key="log", name=f"log ingest, one build printing {size / 1e6:,.0f} MB", value=rate, unit="MB/s",
        baseline=base, baseline_what="the same command to /dev/null in a bare `docker run`", ratio=rate / base,
        target="lose nothing; farm RSS bounded (peak < before + 256 MB); throughput informational",
        ok=lossless and peak - before < 256 * 1024,
        shown=(f"{rate:.1f} MB/s; farm RSS {before / 1024:.0f} -> peak {peak / 1024:.0f} MB; log "
               f"{log_bytes:,} B = {size:,} + {check['farm_bytes']:,} farm's own, "
               f"{'nothing lost' if lossless else 'BYTES LOST'}"),
        baseline_shown=f"same command to /dev/null in a bare `docker run`: {fmt(base)} MB/s",
        details={"size": size, "elapsed_s": elapsed, "rss_before_kb": before, "rss_peak_ingest_kb": peak,
                 "rss_peak_readback_kb": peak_read, "farm_cpu_s": farm_cpu, "log_bytes": log_bytes,
                 "payload_bytes": check["payload_bytes"], "farm_bytes": check["farm_bytes"],
                 "farm_lines": [x.decode(errors="replace") for x in check["farm_lines"]],
                 "other_lines": check["other_lines"], "lossless": lossless, "baseline_s": base_s,
                 "readback_mb_s": check["read_bytes"] / check["read_s"] / 1e6, "image": IMAGE,
                 "api_get_latency_s": latencies,
                 "rss_samples_kb": [(round(t - sampler.samples[0][0], 2), p, kb) for t, p, kb in sampler.samples]})
