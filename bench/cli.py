"""What a person at a terminal (or a Jenkins `sh` step) feels: whole `buildfarm` processes, from
exec to exit, each run interleaved with its baseline (A B A B ...) so that the machine's load
weighs on both sides alike. Median and p90 of each side; the ratio is of the medians.

cli-start     `buildfarm --help` and `buildfarm status ID` vs `python3 -c pass` (the same interpreter)
cli-submit    `buildfarm submit --wait -- true` vs `docker run --rm IMAGE true`, with the timeline
              of one submit (CLI start, HTTP, queue, launch, agent, end, CLI exit)
cli-pipeline  `buildfarm pipeline run FILE --wait` of a 3-job chain vs three `docker run`s in turn
cli-mesos     `buildfarm submit --wait -- true` on a farm whose backend is the Mesos master double
              vs a bare pymesos framework (bench/bare_framework.py) running one Docker task on it
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import BUILDFARM, IMAGE, ROOT, FarmProcess

from .common import BENCH_LABEL, Api, Figure, median, quantile, say, stop_farm

CHAIN = """name: bench-chain
repo: "${{ params.repo }}"
image: %s
parameters: {repo: null}
jobs:
  one: {steps: ["true"], resources: {cpus: 0.5, mem: 256}}
  two: {steps: ["true"], needs: [one], resources: {cpus: 0.5, mem: 256}}
  three: {steps: ["true"], needs: [two], resources: {cpus: 0.5, mem: 256}}
""" % IMAGE


def run(argv: list[str], env: dict[str, str] | None = None, cpu: list[float] | None = None) -> float:
    """Seconds from exec to exit of one whole process; its CPU seconds (user + system, the process
    and its children) are appended to `cpu` when given."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    took = time.perf_counter() - t
    if p.returncode:
        raise RuntimeError(f"{' '.join(argv[:6])} ... exited {p.returncode}: {p.stderr.decode()[-1500:]}")
    if cpu is not None:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return took


def interleaved(a: Callable[[], float], b: Callable[[], float], n: int) -> tuple[list[float], list[float]]:
    a(), b()  # warm-up, not counted
    xs, ys = [], []
    for _ in range(n):
        xs.append(a())
        ys.append(b())
    return xs, ys


def figure(key: str, name: str, xs: list[float], ys: list[float], base_what: str, target: str,
           limit: float | None) -> Figure:
    m, mb = median(xs), median(ys)
    ratio = m / mb
    return Figure(key=key, name=f"{name}, median of {len(xs)}", value=m, unit="s", baseline=mb,
                  baseline_what=base_what, ratio=ratio, target=target,
                  ok=None if limit is None else ratio <= limit,
                  shown=f"{m:.3f} s (p90 {quantile(xs, 0.9):.3f})",
                  baseline_shown=f"{base_what}: {mb:.3f} s (p90 {quantile(ys, 0.9):.3f})",
                  details={"runs": xs, "baseline_runs": ys})


def cli_env(farm: FarmProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BUILD_URL", "JOB_NAME")}
    env.update(BUILDFARM_URL=farm.url, BUILDFARM_TOKEN=farm.token)
    return env


def submit_argv(repo: str) -> list[str]:
    return [BUILDFARM, "submit", "--repo", repo, "--image", IMAGE, "--cpus", "0.5", "--mem", "256", "--wait",
            "--", "true"]


def bare_docker(n: int = 1) -> Callable[[], float]:
    """n bare `docker run`s in turn, on the host's network as the farm's builds are."""
    argv = ["docker", "run", "--rm", "--network", "host", "--label", BENCH_LABEL, IMAGE, "true"]
    return lambda: sum(run(argv) for _ in range(n))


def bench_cli_start(api: Api, n: int) -> list[Figure]:
    env = cli_env(api.farm)
    bid = api.submit(["true"])
    api.wait_end(bid)
    cpu: dict[str, list[float]] = {"help": [], "status": [], "python": []}
    # The interpreter `buildfarm` runs on: a `python3` found on PATH may be a version manager's shim.
    py = lambda: run([sys.executable, "-c", "pass"], cpu=cpu["python"])  # noqa: E731
    say(f"cli-start: `buildfarm --help` and `buildfarm status ID`, {n} each, interleaved with `python3 -c pass`")
    h, hb = interleaved(lambda: run([BUILDFARM, "--help"], env, cpu["help"]), py, n)
    s, sb = interleaved(lambda: run([BUILDFARM, "status", bid], env, cpu["status"]), py, n)
    cpu_note = ("CPU seconds, median: --help {:.3f}, status {:.3f}, python3 -c pass {:.3f} (wall exceeds CPU when "
                "the machine is busy)").format(*(median(v) for v in cpu.values()))
    say(f"  --help {median(h):.3f} s, status {median(s):.3f} s; python3 -c pass {median(hb + sb):.3f} s; {cpu_note}")
    figs = [figure("cli-start", "`buildfarm --help`", h, hb, "`python3 -c pass`", "< 0.150 s on an idle machine",
                   None),
            figure("cli-start", "`buildfarm status ID`", s, sb, "`python3 -c pass`",
                   "< 0.150 s on an idle machine", None)]
    for f, k in zip(figs, ("help", "status")):
        f.details["cpu"], f.details["baseline_cpu"] = cpu[k], cpu["python"]
    figs[-1].notes.append(cpu_note)
    return figs


def bench_cli_submit(api: Api, n: int) -> Figure:
    env = cli_env(api.farm)
    say(f"cli-submit: {n} x `buildfarm submit --wait -- true`, interleaved with `docker run --rm {IMAGE} true`")

    cpu: list[float] = []

    def farm() -> float:
        api.quiesce()  # the previous build's container is gone; warm containers are ready
        return run(submit_argv(api.repo), env, cpu)

    xs, ys = interleaved(farm, bare_docker(), n)
    fig = figure("cli-submit", "`buildfarm submit --wait -- true`, whole process", xs, ys,
                 f"`docker run --rm --network host {IMAGE} true`", "<= 1.3x (moonshot < 1.0x)", 1.3)
    fig.details["timeline"] = timeline(api, env)
    fig.details["cli_cpu"] = cpu
    fig.notes.append("one submit: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in fig.details["timeline"].items())
                     + f"; the CLI's own CPU, median {median(cpu) * 1000:.0f} ms")
    say(f"  buildfarm {median(xs):.3f} s, docker run {median(ys):.3f} s")
    return fig


def timeline(api: Api, env: dict[str, str], quiesce: bool = True) -> dict[str, float]:
    """Where one `submit --wait` spends its time, from the CLI's exec to its exit, with the farm's
    recorded state changes in between (one clock: this machine's)."""
    if quiesce:
        api.quiesce()
    t = time.perf_counter()  # the farm's side of a submit (checks, record, queue), through a warm connection
    bid = api.submit(["true"], cpus=0.5, mem=256)
    post = time.perf_counter() - t
    api.wait_end(bid)
    if quiesce:
        api.quiesce()
    t0 = time.time()
    p = subprocess.run(submit_argv(api.repo), env=env, capture_output=True)
    t_exit = time.time()
    bid = p.stderr.decode().split()[1]  # "build ID queued"
    b = api.get(bid)
    at = {h["state"]: h["at"] for h in b["history"]}
    marks = [("CLI start + POST + submit checks", b["created_at"]), ("queue -> launch", at.get("launching")),
             ("launch -> agent started", at.get("running")), ("agent: checkout, command, report", b["finished_at"]),
             ("end -> CLI exit", t_exit)]
    out, prev = {}, t0
    for name, t in marks:
        if t:
            out[name] = t - prev
            prev = t
    out["total"] = t_exit - t0
    out["of which the POST alone (another submit)"] = post
    return out


def bench_cli_pipeline(api: Api, n: int, tmp: Path) -> Figure:
    env = cli_env(api.farm)
    f = tmp / "bench-chain.yaml"
    f.write_text(CHAIN)
    argv = [BUILDFARM, "pipeline", "run", str(f), "-p", f"repo={api.repo}", "--wait"]
    say(f"cli-pipeline: {n} x `buildfarm pipeline run` of a 3-job chain --wait, interleaved with three "
        f"`docker run`s in turn")

    def farm() -> float:
        api.quiesce()
        return run(argv, env)

    xs, ys = interleaved(farm, bare_docker(3), n)
    say(f"  buildfarm {median(xs):.3f} s, three docker runs {median(ys):.3f} s")
    return figure("cli-pipeline", "`buildfarm pipeline run --wait`, a 3-job chain", xs, ys,
                  "three `docker run --rm --network host IMAGE true` in turn", "none (informational)", None)


def bench_cli_mesos(local: Api, n: int, tmp: Path) -> Figure:
    from tests.doubles.mesos import AgentSpec, MesosDouble

    say(f"cli-mesos: {n} x `buildfarm submit --wait -- true` on the Mesos double, interleaved with a bare "
        f"pymesos framework running one Docker task on the same double")
    master = MesosDouble([AgentSpec("S0", cpus=2, mem=8192)], heartbeat_seconds=5).start()
    mfarm = FarmProcess(tmp / "mesos-cli-data", "--backend", "mesos", "--master", master.address,
                        "--mesos-cache-path", str(tmp / "mesos-cli-cache"))
    env = cli_env(mfarm)
    bare = [sys.executable, "-m", "bench.bare_framework", master.address, IMAGE]
    bare_env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    mapi = Api(mfarm, local.repo)
    try:
        xs, ys = interleaved(lambda: run(submit_argv(local.repo), env), lambda: run(bare, bare_env), n)
        steps = timeline(mapi, env, quiesce=False)
    finally:
        mapi.close()
        stop_farm(mfarm)
        master.stop()
    say(f"  buildfarm {median(xs):.3f} s, bare framework {median(ys):.3f} s")
    fig = figure("cli-mesos", "`buildfarm submit --wait -- true` through the Mesos double", xs, ys,
                 "a bare pymesos framework, one Docker task", "<= 1.2x", 1.2)
    fig.details["timeline"] = steps
    fig.notes.append("one submit: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in steps.items()))
    return fig

