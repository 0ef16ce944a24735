"""`make bench`: buildfarm's figures, each as a ratio to a baseline measured in the same run.

    python -m bench [--quick] [--only NAME[,NAME...]] [--no-extras] [--keep] [--output FILE]
    python -m bench --chaos [--rounds N] ...   (the chaos suite: bench/chaos.py)

Figures: first-line, throughput, core, sharing (a simulated week of teams sharing the pool), log, oversized,
cli-start, cli-submit, cli-pipeline; extras: cli-mesos (needs pymesos), and informational: mesos-running,
mesos-offers, jenkins-agent.
Results are printed, written to bench/results/latest.json, and summed up in a Markdown table
that can be pasted into the README.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python -m bench` from elsewhere
    sys.path.insert(0, str(ROOT))

import buildfarm
from tests.conftest import IMAGE, FarmProcess, GitServer

from .common import Api, Figure, remove_bench_containers, say, stop_farm

REQUIRED = ["first-line", "throughput", "core", "sharing", "log", "oversized", "cli-start", "cli-submit",
            "cli-pipeline"]
EXTRAS = ["cli-mesos", "mesos-running", "mesos-offers", "jenkins-agent"]
FARM_FIGURES = {"first-line", "throughput", "log", "oversized", "mesos-running", "jenkins-agent", "cli-start",
                "cli-submit", "cli-pipeline", "cli-mesos"}


def sizes(quick: bool) -> dict:
    if quick:
        return {"first-line": 5, "throughput": 5, "log": 100_000_000, "core": (2_000, 200, 3), "sharing": (1, 1_000),
                "oversized": 10, "cli-start": 5, "cli-submit": 5, "cli-pipeline": 3, "cli-mesos": 3,
                "mesos-running": 5, "mesos-offers": (200, 20),
                "jenkins-agent": 5}
    return {"first-line": 20, "throughput": 50, "log": 1_000_000_000, "core": (10_000, 1_000, 5), "sharing": (7, 1_000),
            "oversized": 100,
            "cli-start": 10, "cli-submit": 10, "cli-pipeline": 5, "cli-mesos": 10,
            "mesos-running": 20, "mesos-offers": (1_000, 100),
            "jenkins-agent": 20}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small counts for a fast check: 5 builds, a 100 MB log, 2,000 x 200 for the core")
    ap.add_argument("--only", action="append", metavar="NAME",
                    help=f"run only these figures (repeatable, or comma-separated): {', '.join(REQUIRED + EXTRAS)}")
    ap.add_argument("--no-extras", action="store_true", help="skip the informational Mesos extras")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (farm data, logs)")
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.json",
                    help="where the JSON results go [default: bench/results/latest.json]")
    args = ap.parse_args(argv)
    if args.only:
        names = [n.strip() for part in args.only for n in part.split(",") if n.strip()]
        unknown = [n for n in names if n not in REQUIRED + EXTRAS]
        if unknown:
            ap.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(REQUIRED + EXTRAS)}")
        args.selected = [n for n in REQUIRED + EXTRAS if n in names]
    else:
        args.selected = REQUIRED + ([] if args.no_extras else EXTRAS)
    return args


def git_head() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=False)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "")


def table(figures: list[Figure]) -> str:
    rows = ["| figure | buildfarm | baseline (same run) | ratio | target |", "|---|---|---|---|---|"]
    for f in figures:
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}x"
        verdict = "" if f.ok is None else (" (met)" if f.ok else " (missed)")
        rows.append(f"| {f.name} | {f.value_text()} | {f.baseline_text()} | {ratio} | {f.target}{verdict} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--chaos" in argv:  # the chaos suite has options of its own
        from .chaos import main as chaos

        return chaos([a for a in argv if a != "--chaos"])
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C does, so the farm, the git daemon and their containers are
    # still cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    n = sizes(args.quick)
    mode = "quick" if args.quick else "full"
    started = time.time()
    meta = {"mode": mode, "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": git_head(), "cpus": os.cpu_count(), "python": platform.python_version(), "image": IMAGE,
            "selected": args.selected, "buildfarm_from": str(Path(buildfarm.__file__).parent)}
    say(f"buildfarm bench ({mode}): {', '.join(args.selected)}; commit {meta['commit']}, {os.cpu_count()} cpus, "
        f"image {IMAGE}")
    if Path(meta["buildfarm_from"]) != ROOT / "buildfarm":
        say(f"(buildfarm imported from {meta['buildfarm_from']}, not this checkout)")
    figures: list[Figure] = []
    errors: list[dict] = []

    def run(key: str, fn, *a) -> None:
        say()
        t = time.perf_counter()
        load0 = os.getloadavg()[0]
        try:
            out = fn(*a)
        except Exception as e:  # noqa: BLE001  (one figure failing must not stop the others)
            traceback.print_exc()
            errors.append({"key": key, "error": f"{type(e).__name__}: {e}"})
            say(f"{key}: FAILED ({type(e).__name__}: {e})")
            return
        for fig in out if isinstance(out, list) else [out]:  # a function may give several figures
            fig.details["loadavg_1m"] = [load0, os.getloadavg()[0]]
            figures.append(fig)
            if fig.details.get("lossless") is False:
                errors.append({"key": key, "error": "the farm's log lost or changed bytes"})
            say(f"=> {fig.line()}  ({time.perf_counter() - t:.0f} s; load average {load0:.1f} -> "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")
            for note in fig.notes:
                say(f"   {note}")

    # Pure figures first, while no farm runs.
    if "core" in args.selected:
        from .core import bench_core

        run("core", bench_core, *n["core"])
    if "sharing" in args.selected:
        from .sharing import bench_sharing

        run("sharing", bench_sharing, *n["sharing"])
    if "mesos-offers" in args.selected:
        from .mesos import bench_mesos_offers

        run("mesos-offers", bench_mesos_offers, *n["mesos-offers"])

    if FARM_FIGURES & set(args.selected):
        tmp = Path(tempfile.mkdtemp(prefix="buildfarm-bench-"))
        git = farm = api = None
        farm_id = "?"
        try:
            git = GitServer(tmp / "git")
            repo = git.make_repo("bench", {"README": "bench\n"})
            farm = FarmProcess(tmp / "data")
            api = Api(farm, repo)
            farm_id = api.farm_id()
            say(f"\nfarm: `buildfarm up` pid {farm.proc.pid} on {farm.url}, data in {tmp / 'data'}; "
                f"git daemon on 127.0.0.1:{git.port}")
            from .builds import bench_first_line, bench_throughput

            if "first-line" in args.selected:
                run("first-line", bench_first_line, api, n["first-line"])
            if "throughput" in args.selected:
                run("throughput", bench_throughput, api, n["throughput"])
            from .cli import bench_cli_mesos, bench_cli_pipeline, bench_cli_start, bench_cli_submit

            if "cli-start" in args.selected:
                run("cli-start", bench_cli_start, api, n["cli-start"])
            if "cli-submit" in args.selected:
                run("cli-submit", bench_cli_submit, api, n["cli-submit"])
            if "cli-pipeline" in args.selected:
                run("cli-pipeline", bench_cli_pipeline, api, n["cli-pipeline"], tmp)
            if "cli-mesos" in args.selected:
                run("cli-mesos", bench_cli_mesos, api, n["cli-mesos"], tmp)
            if "mesos-running" in args.selected:
                from .mesos import bench_mesos_running

                run("mesos-running", bench_mesos_running, api, n["mesos-running"], tmp)
            if "jenkins-agent" in args.selected:
                from .jenkins import bench_jenkins_agent

                run("jenkins-agent", bench_jenkins_agent, api, n["jenkins-agent"])
            if "log" in args.selected:
                from .logingest import bench_log

                run("log", bench_log, api, n["log"])
            if "oversized" in args.selected:
                from .oversized import bench_oversized

                run("oversized", bench_oversized, api, n["oversized"])
        except Exception as e:  # noqa: BLE001  (reported; the cleanup below still runs)
            traceback.print_exc()
            errors.append({"key": "farm", "error": f"{type(e).__name__}: {e}"})
            if farm is not None:
                say(f"the farm's log (tail):\n{farm.up_log()}")
        finally:
            if api is not None:
                api.close()
            if farm is not None:
                stop_farm(farm)
            if git is not None:
                git.stop()
            remove_bench_containers()
            left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=buildfarm.farm={farm_id}"],
                                  capture_output=True, text=True, check=False).stdout.split()
            if args.keep:
                say(f"\nkept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
            say(f"\ncleanup: farm stopped, git daemon stopped, {len(left)} container(s) of the bench's farm left"
                + (f": {left}" if left else ""))
            if left:
                errors.append({"key": "cleanup", "error": f"containers left behind: {left}"})

    order = {k: i for i, k in enumerate(REQUIRED + EXTRAS)}
    figures.sort(key=lambda f: order.get(f.key, 99))
    meta["seconds"] = round(time.time() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"meta": meta, "figures": [f.to_json() for f in figures], "errors": errors},
                                      indent=2) + "\n")
    say(f"\nResults ({mode}, {meta['seconds']:.0f} s, written to {args.output}):\n")
    for f in figures:
        say(f.line())
    say("\n" + table(figures))
    for e in errors:
        say(f"\nERROR in {e['key']}: {e['error']}")
    missed = [f.key for f in figures if f.ok is False]
    if missed:
        say(f"\nmissed targets: {', '.join(missed)}")
    # A failed extra is reported but does not fail `make bench`; a failed figure, a lost log
    # byte or a container left behind does.
    return 1 if [e for e in errors if e["key"] not in EXTRAS] else 0


if __name__ == "__main__":
    sys.exit(main())
