"""`buildfarm pipeline ...`: validate pipeline files, start runs and watch their jobs, list,
show and cancel runs.

Exit codes of `run --wait` and `status --wait`: 0 the run succeeded, 1 it failed, 130 it was
cancelled, 125 the farm could not be reached or every failed job failed for infrastructure
reasons (state `error`); 2 for a bad command line or an invalid pipeline.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import click

from ..client import LONG_POLL, Client, ClientError
from ..states import EXIT_CANCELLED, EXIT_INFRA_ERROR, JOB_FAILED, JOB_FINAL, RUN_FINAL
from .common import EXIT_USAGE, call, client, duration, echo_json, key_values

# The pipeline model (YAML, croniter, pydantic) is imported by the commands that need it, so
# every other `buildfarm` command starts fast.


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"


def _took(run: dict) -> str:
    return duration((run.get("finished_at") or time.time()) - run["created_at"])


def exit_code(run: dict) -> int:
    """What `run --wait` and `status --wait` exit with (the module's docstring)."""
    if run["state"] == "succeeded":
        return 0
    if run["state"] == "cancelled":
        return EXIT_CANCELLED
    failed = [j for j in run.get("jobs", []) if j["state"] in JOB_FAILED]
    if failed and all(j["state"] == "error" for j in failed):
        return EXIT_INFRA_ERROR
    return 1


@click.group()
def pipeline() -> None:
    """Pipelines: chains of builds (a DAG of jobs) from YAML files, run on demand or on a schedule.

    \b
    Check a file:                  buildfarm pipeline validate pipelines/nightly-ib.yaml
    Run one and watch its jobs:    buildfarm pipeline run nightly-ib -p release_queue=main --wait
    Run a file of your own:        buildfarm pipeline run my.yaml --wait --follow
    """


# -- validate ------------------------------------------------------------------------------------

@pipeline.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the problems (or the jobs) as JSON.")
def validate(files, as_json):
    """Check pipeline files: every problem is shown as FILE:LINE: FIELD: what is expected.
    Exits 2 when a file is not valid."""
    from ..pipelines.model import PipelineInvalid, parse_file, run_plan

    bad = False
    report = []
    for f in files:
        try:
            p = parse_file(f)
            jobs = run_plan(p, {}, commit=None, _check=True).jobs
        except PipelineInvalid as e:
            bad = True
            report.append({"file": str(f), "valid": False, "problems": [vars(x) for x in e.problems]})
            if not as_json:
                for x in e.problems:
                    click.echo(str(x), err=True)
            continue
        report.append({"file": str(f), "valid": True, "pipeline": p.name,
                       "jobs": [{"name": j.name, "needs": j.needs} for j in jobs]})
        if not as_json:
            sched = f", schedule {'; '.join(p.schedule.describe())}" if p.schedule else ""
            click.echo(f"{f}: ok: pipeline {p.name}, {len(p.jobs)} jobs ({len(jobs)} builds per run){sched}")
    if as_json:
        echo_json(report)
    sys.exit(EXIT_USAGE if bad else 0)


# -- run -------------------------------------------------------------------------------------------

@pipeline.command()
@click.argument("what", metavar="NAME|FILE")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE", help="A parameter (repeatable).")
@click.option("--wait", is_flag=True, help="Show the jobs' progress until the run ends; exit with its outcome.")
@click.option("--follow", "-f", is_flag=True, help="Also print each job's log when it ends (implies --wait).")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON (at the end with --wait).")
@click.pass_context
def run(ctx, what, pairs, wait, follow, as_json):
    """Start a run of the farm's pipeline NAME, or of the pipeline FILE (sent to the farm).

    \b
      buildfarm pipeline run nightly-ib -p release_queue=CMSSW_15_0_X --wait
      buildfarm pipeline run pipelines/release.yaml -p repo=URL -p version=v1.0 --wait --follow
    """
    params = key_values(pairs, "-p")
    body: dict = {"parameters": params}
    path = Path(what)
    if path.is_file() or what.endswith((".yaml", ".yml")):
        from ..pipelines.model import PipelineInvalid, parse_file, run_plan

        try:
            p = parse_file(path)
            run_plan(p, params, commit=None)  # parameters checked here, with the file's lines
        except PipelineInvalid as e:
            click.echo(str(e), err=True)
            sys.exit(EXIT_USAGE)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        body.update(pipeline=p.name, source=p.source, file=path.name)
    else:
        body["pipeline"] = what
    farm = client(ctx)
    r = call(farm.start_run, body)
    if not (wait or follow):
        echo_json(r) if as_json else click.echo(r["id"])
        if not as_json:
            click.echo(f"started; watch it with: buildfarm pipeline status {r['id']} --wait", err=True)
        return
    click.echo(f"run {r['id']} of {r['pipeline']} started at {(r.get('commit') or '')[:12]}", err=True)
    final = _watch(farm, r["id"], follow=follow, quiet=as_json)
    if as_json:
        echo_json(final)
    sys.exit(exit_code(final))


def _depths(jobs: list[dict]) -> dict[str, int]:
    by = {j["name"]: j for j in jobs}
    memo: dict[str, int] = {}

    def depth(n: str) -> int:
        if n not in memo:
            memo[n] = 1 + max((depth(m) for m in by[n]["needs"]), default=-1)
        return memo[n]

    return {j["name"]: depth(j["name"]) for j in jobs}


def render(run: dict) -> list[str]:
    """The run's DAG as lines: each job indented by its depth, its state, build and reason."""
    jobs = run["jobs"]
    depths = _depths(jobs)
    width = max((len(j["name"]) + 2 * depths[j["name"]] for j in jobs), default=10)
    lines = [f"run {run['id']} {run['pipeline']} {run['state']}  {_took(run)}  {run.get('reason', '')}"]
    for j in sorted(jobs, key=lambda x: depths[x["name"]]):
        name = "  " * depths[j["name"]] + j["name"]
        extra = f" (attempt {j['attempt']})" if (j.get("attempt") or 0) > 1 else ""
        lines.append(f"  {name:<{width}}  {j['state']:<10} {j.get('build_id') or '-':<13} "
                     f"{(j.get('reason') or '')[:60]}{extra}")
    tag = run.get("tag")
    if tag:
        lines.append(f"  tag {tag['name']}: {tag.get('state')}" + (f" ({tag['detail']})" if tag.get("detail") else ""))
    return lines


def _watch(farm: Client, run_id: str, follow: bool, quiet: bool) -> dict:
    """Follow the run until it ends: a live view on a terminal, a line per change otherwise. The farm
    answers each long poll when the run changes, so the end is seen when it happens."""
    err = sys.stderr
    live = err.isatty() and not follow
    shown: dict[str, str] = {}
    printed_logs: set[str] = set()
    drawn = 0
    run = call(farm.run, run_id)
    while True:
        if live:
            lines = render(run)
            if drawn:
                err.write(f"\033[{drawn}F")
            for ln in lines:
                err.write(f"\033[K{ln}\n")
            err.flush()
            drawn = len(lines)
        else:
            for j in run["jobs"]:
                if shown.get(j["name"]) != j["state"]:
                    shown[j["name"]] = j["state"]
                    click.echo(f"{time.strftime('%H:%M:%S')} {j['name']} {j['state']}"
                               + (f" ({j['build_id']})" if j.get("build_id") else "")
                               + (f": {j['reason']}" if j["state"] in JOB_FINAL and j.get("reason") else ""),
                               err=True)
                if follow and j["state"] in JOB_FINAL and j.get("build_id") and j["name"] not in printed_logs:
                    printed_logs.add(j["name"])
                    _print_log(farm, j, quiet)
        if run["state"] in RUN_FINAL:
            if not live:
                for ln in render(run):
                    click.echo(ln, err=True)
            return run
        # A live view redraws its clock once a second; otherwise only a change matters.
        run = call(farm.run, run_id, wait=1.0 if live else LONG_POLL, version_not=run.get("version", 0))


def _print_log(client: Client, job: dict, quiet: bool) -> None:
    out = sys.stderr if quiet else sys.stdout
    out.write(f"----- {job['name']} ({job['build_id']}) {job['state']} -----\n")
    try:
        for chunk in client.log_chunks(job["build_id"], follow=False):
            out.write(chunk.decode("utf-8", "replace"))
    except ClientError as e:
        out.write(f"(log unavailable: {e})\n")
    out.flush()


# -- reading back ---------------------------------------------------------------------------------

@pipeline.command(name="list")
@click.option("--runs", "limit", default=10, show_default=True, help="How many recent runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print pipelines, recent runs and missed ticks as JSON.")
@click.pass_context
def list_(ctx, limit, as_json):
    """The farm's pipelines (schedule, next tick, last run, missed ticks) and recent runs."""
    farm = client(ctx)
    pipes = call(farm.pipelines)
    runs = call(farm.runs, limit)
    if as_json:
        echo_json({**pipes, "runs": runs})
        return
    if not pipes["pipelines"]:
        click.echo(f"no pipelines in {pipes.get('directory')}", err=True)
    else:
        click.echo(f"{'PIPELINE':<16} {'SCHEDULE':<34} {'NEXT':<17} {'MISSED':<7} LAST RUN")
        for p in pipes["pipelines"]:
            last = p.get("last_run")
            sched = "; ".join(p["schedule"]) or "on demand"
            click.echo(f"{p['name']:<16} {sched[:34]:<34} {_when(p.get('next_tick')):<17} "
                       f"{len(p.get('missed') or []):<7} "
                       + (f"{last['id']} {last['state']} {_when(last['created_at'])}" if last else "-"))
    for bad in pipes.get("invalid", []):
        for x in bad["problems"]:
            click.echo(f"invalid: {x['file']}:{x['line']}: {x['field']}: {x['message']}", err=True)
    missed = [(p["name"], m) for p in pipes["pipelines"] for m in p.get("missed") or []]
    if missed:
        click.echo("\nmissed ticks (the farm was not running):")
        for name, m in sorted(missed, key=lambda x: -x[1]["tick"])[:20]:
            click.echo(f"  {name:<16} {m['tick_local']}  {m.get('reason', '')}")
    if runs:
        click.echo(f"\n{'RUN':<11} {'PIPELINE':<16} {'STATE':<10} {'STARTED':<17} {'TOOK':<7} JOBS")
        for r in runs:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(r["counts"].items()))
            click.echo(f"{r['id']:<11} {r['pipeline']:<16} {r['state']:<10} {_when(r['created_at']):<17} "
                       f"{_took(r):<7} {counts}")


@pipeline.command()
@click.argument("run_id", metavar="RUN")
@click.option("--wait", is_flag=True, help="Watch it until it ends; exit with its outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def status(ctx, run_id, wait, as_json):
    """A run: its jobs as a graph (indented by depth), their states and builds."""
    farm = client(ctx)
    run = _watch(farm, run_id, follow=False, quiet=as_json) if wait else call(farm.run, run_id)
    if as_json:
        echo_json(run)
    elif not wait:
        for ln in render(run):
            click.echo(ln)
    if wait:
        sys.exit(exit_code(run))


@pipeline.command()
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def cancel(ctx, run_id, as_json):
    """Cancel a run: its queued and running builds are cancelled, jobs not started become cancelled."""
    run = call(client(ctx).cancel_run, run_id)
    echo_json(run) if as_json else click.echo(f"run {run_id} {run['state']}: {run.get('reason', '')}")
