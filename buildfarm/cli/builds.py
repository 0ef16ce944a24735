"""`buildfarm submit`, `status`, `list`, `logs`, `cancel`, `rebuild`, `artifacts`: builds, read and
changed through the farm's API.

`--wait` and `--follow` learn of a build's end when it happens: the farm holds a status request
until the build's state changes (a long poll), and closes a followed log when the build has ended.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from ..client import Client, ClientError, write_stream
from ..states import TRIGGER_KINDS, State, exit_code_for
from .common import ago, call, client, duration, echo_json, fail, key_values, retention_text


def _build_duration(b: dict) -> str:
    if not b.get("started_at"):
        return "-"
    return duration((b.get("finished_at") or time.time()) - b["started_at"])


def _where(b: dict) -> str:
    s = b["spec"]
    at = s.get("ref") or (s.get("commit") or "")[:10] or "HEAD"
    return f"{s['repo']}@{at}"


# -- submit ------------------------------------------------------------------------------------

@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--repo", required=True, help="git URL or path of the repository to build.")
@click.option("--ref", help="Branch or tag [default: the repository's default branch].")
@click.option("--commit", help="Commit SHA to build (with --ref: must be on that ref).")
@click.option("--image", required=True, help="Docker image to build in (needs git and python3).")
@click.option("--cpus", type=float, default=1.0, show_default=True, help="CPU cores (a Docker limit).")
@click.option("--mem", type=int, default=1024, show_default=True, help="Memory in MB (a Docker limit).")
@click.option("--disk", type=int, default=0, show_default=True, help="Scratch disk in MB (placement).")
@click.option("--env", "env_pairs", multiple=True, metavar="K=V", help="Environment variable (repeatable).")
@click.option("--secret", "secrets", multiple=True, metavar="NAME",
              help="A farm secret given to the build as $NAME and masked in its log (repeatable; "
                   "`buildfarm secret set NAME` stores one).")
@click.option("--artifact", "artifacts", multiple=True, metavar="GLOB",
              help="Files to keep, relative to the checkout; ** matches directories (repeatable).")
@click.option("--constraint", "constraints", multiple=True, metavar="ATTR:VALUE",
              help="Agent attribute the build needs, e.g. arch:x86_64 (repeatable).")
@click.option("--timeout", type=int, default=3600, show_default=True, help="Seconds the build may run.")
@click.option("--priority", type=click.Choice(["high", "normal", "low"]), default="normal", show_default=True)
@click.option("--retries", type=int, default=0, show_default=True,
              help="Retries after infrastructure failures (never after the command's own failure).")
@click.option("--step", "steps", multiple=True, metavar="SHELL", help="A shell step (repeatable), instead of COMMAND.")
@click.option("--wait-for-capacity", is_flag=True, help="Queue even if no agent can run it yet.")
@click.option("--expire-in", metavar="DURATION|never",
              help="Keep the log and artifacts this long after the end (e.g. 7d) [default: the farm's].")
@click.option("--team", help="The team to charge (for a member of several) [default: the submitter's team].")
@click.option("--not-preemptible", is_flag=True,
              help="Never preempt it; it then runs only within its team's guarantee.")
@click.option("--wait", is_flag=True, help="Wait for the end; exit with the build's outcome.")
@click.option("--follow", "-f", is_flag=True, help="Stream the log while waiting (implies --wait).")
@click.option("--json", "as_json", is_flag=True, help="Print the build record as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def submit(ctx, repo, ref, commit, image, cpus, mem, disk, env_pairs, secrets, artifacts, constraints, timeout,
           priority, retries, steps, wait_for_capacity, expire_in, team, not_preemptible, wait, follow, as_json,
           command):
    """Submit a build; print its id. Put the command after `--`:

    \b
      buildfarm submit --repo git://127.0.0.1/app.git --image buildfarm/builder \\
          --artifact 'dist/*.tar.gz' --wait --follow -- make -j2 dist

    With --wait the exit code is the build's: 0 succeeded, the command's own code when it
    failed, 124 timed out, 125 infrastructure error, 130 cancelled.
    """
    env = key_values(env_pairs, "--env")
    if command and steps:
        raise click.UsageError("give a COMMAND after `--` or --step lines, not both")
    if not command and not steps:
        raise click.UsageError("nothing to run: put the command after `--`, e.g. `-- make test`, or use --step")
    trigger = {"kind": "cli"}  # the farm records the token's name as its user
    if os.environ.get("BUILD_URL") and os.environ.get("JOB_NAME"):
        trigger = {"kind": "jenkins", "url": os.environ["BUILD_URL"],
                   "detail": {"job": os.environ["JOB_NAME"], "number": os.environ.get("BUILD_NUMBER", "")}}
    spec = {
        "repo": repo, "ref": ref, "commit": commit, "image": image,
        "command": list(command) or None, "steps": list(steps) or None,
        "env": env, "secrets": list(secrets), "resources": {"cpus": cpus, "mem": mem, "disk": disk},
        "constraints": list(constraints), "timeout": timeout, "artifacts": list(artifacts),
        "priority": priority, "retries": retries, "wait_for_capacity": wait_for_capacity, "trigger": trigger,
        "expire_in": expire_in, "team": team, "preemptible": not not_preemptible,
    }
    farm = client(ctx)
    _queued(farm, call(farm.submit, spec), wait, follow, as_json)


def _queued(farm: Client, build: dict, wait: bool, follow: bool, as_json: bool, note: str = "") -> None:
    """Print a queued build's id (or record); with --wait/--follow, wait and exit with its outcome."""
    bid = build["id"]
    if not (wait or follow):
        echo_json(build) if as_json else click.echo(bid)
        if not as_json:
            click.echo(f"queued{note}; follow it with: buildfarm logs -f {bid}", err=True)
        return
    click.echo(f"build {bid} queued{note}", err=True)
    final = _wait_for(farm, bid, follow=follow, quiet=as_json)
    if as_json:
        echo_json(final)
    sys.exit(exit_code_for(final["state"], final.get("exit_code")))


def _wait_for(farm: Client, bid: str, follow: bool, quiet: bool) -> dict:
    try:
        if follow:
            # The farm ends a followed log when the build has ended and its log is complete.
            write_stream(farm.log_chunks(bid, follow=True), sys.stderr.buffer if quiet else sys.stdout.buffer)
            b = farm.wait(bid)
        else:
            b = _wait(farm, bid)
    except ClientError as e:
        fail(e)
    line = f"build {bid} {b['state']}: {b.get('reason', '')}"
    if b.get("exit_code") is not None and b["state"] == "failed":
        line += f" (exit {b['exit_code']})"
    click.echo(line, err=True)
    return b


def _wait(farm: Client, bid: str) -> dict:
    """Wait for the end, showing each state and since when on a terminal."""
    if not sys.stderr.isatty():
        return farm.wait(bid)
    start = time.monotonic()

    def show(b: dict) -> None:
        click.echo(f"\r\033[K{bid} {b['state']} {duration(time.monotonic() - start)}  {b.get('reason', '')[:60]}",
                   nl=False, err=True)

    b = farm.wait(bid, on_change=show)
    click.echo("\r\033[K", nl=False, err=True)
    return b


# -- reading back ---------------------------------------------------------------------------------

@click.command()
@click.argument("build_id")
@click.option("--json", "as_json", is_flag=True, help="Print the build record as JSON.")
@click.option("--wait", is_flag=True, help="Wait for the end and exit with the build's outcome.")
@click.pass_context
def status(ctx, build_id, as_json, wait):
    """Show a build: state, reason, where it ran, its history and artifacts."""
    farm = client(ctx)
    b = call(_wait, farm, build_id) if wait else call(farm.get, build_id)
    if as_json:
        echo_json(b)
    else:
        s = b["spec"]
        click.echo(f"build    {b['id']} (#{b['number']})")
        click.echo(f"state    {b['state']}: {b['reason']}"
                   + (f" (exit {b['exit_code']})" if b.get("exit_code") is not None else ""))
        click.echo(f"source   {_where(b)}" + (f" at {b['commit'][:12]}" if b.get("commit") else ""))
        click.echo(f"image    {s['image']}  cpus {s['resources']['cpus']:g}  mem {s['resources']['mem']} MB")
        click.echo(f"agent    {b.get('agent_id') or '-'}  attempt {b['attempt']}")
        t = s.get("trigger") or {}
        click.echo(f"trigger  {_trigger(b)}" + (f"  {t['url']}" if t.get("url") else "")
                   + "".join(f"  {k}={v}" for k, v in (t.get("detail") or {}).items()))
        click.echo(f"queued   {ago(b['created_at'])}  duration {_build_duration(b)}")
        click.echo(f"files    {retention_text(b.get('retention') or {})}")
        for h in b.get("history", []):
            click.echo(f"  {time.strftime('%H:%M:%S', time.localtime(h['at']))}  {h['state']:<10} {h['reason']}")
        for a in b.get("artifacts", []):
            click.echo(f"  artifact {a['path']}  {a['size']} bytes  sha256 {a['sha256'][:16]}")
    if wait:
        sys.exit(exit_code_for(b["state"], b.get("exit_code")))


@click.command(name="list")
@click.option("--state", type=click.Choice(sorted(s.value for s in State)))
@click.option("--repo", help="Only builds of this repository URL.")
@click.option("--trigger", type=click.Choice(TRIGGER_KINDS), help="Only builds started this way.")
@click.option("--user", help="Only builds this user submitted or pushed.")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the build records as JSON.")
@click.pass_context
def list_(ctx, state, repo, trigger, user, limit, as_json):
    """List builds, newest first."""
    builds = call(client(ctx).list, state=state, repo=repo, trigger=trigger, user=user, limit=limit)
    if as_json:
        echo_json(builds)
        return
    if not builds:
        click.echo("no builds", err=True)
        return
    click.echo(f"{'ID':<13} {'STATE':<10} {'QUEUED':<12} {'DURATION':<9} {'TRIGGER':<16} {'IMAGE':<24} SOURCE")
    for b in builds:
        click.echo(f"{b['id']:<13} {b['state']:<10} {ago(b['created_at']):<12} {_build_duration(b):<9} "
                   f"{_trigger(b)[:16]:<16} {b['spec']['image'][:24]:<24} {_where(b)}")


def _trigger(b: dict) -> str:
    t = b["spec"].get("trigger") or {}
    who = t.get("user") or b.get("submitted_by")
    return f"{t.get('kind', '?')}:{who}" if who else t.get("kind", "?")


@click.command()
@click.argument("build_id")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the build ends.")
@click.pass_context
def logs(ctx, build_id, follow):
    """Print a build's log (bytes as the build wrote them)."""
    call(write_stream, client(ctx).log_chunks(build_id, follow=follow), sys.stdout.buffer)


@click.command()
@click.argument("build_id")
@click.option("--json", "as_json", is_flag=True, help="Print the build record as JSON.")
@click.pass_context
def cancel(ctx, build_id, as_json):
    """Cancel a queued or running build (its container is killed)."""
    b = call(client(ctx).cancel, build_id)
    echo_json(b) if as_json else click.echo(f"build {build_id} {b['state']}")


@click.command()
@click.argument("build_id")
@click.option("--wait", is_flag=True, help="Wait for the new build's end; exit with its outcome.")
@click.option("--follow", "-f", is_flag=True, help="Stream the new build's log while waiting (implies --wait).")
@click.option("--json", "as_json", is_flag=True, help="Print the new build record as JSON.")
@click.pass_context
def rebuild(ctx, build_id, wait, follow, as_json):
    """Submit a build's spec again (its branch resolved anew); print the new build's id."""
    farm = client(ctx)
    _queued(farm, call(farm.rebuild, build_id), wait, follow, as_json, note=f" (rebuild of {build_id})")


@click.command()
@click.argument("build_id")
@click.option("--download", "dest", type=click.Path(file_okay=False, path_type=Path),
              help="Download them into this directory (sha256 checked).")
@click.option("--glob", "pattern", default=None, help="Only artifacts whose path matches, e.g. '*.xml'.")
@click.option("--json", "as_json", is_flag=True, help="Print the artifact list as JSON.")
@click.pass_context
def artifacts(ctx, build_id, dest, pattern, as_json):
    """List a build's artifacts, or download them."""
    import fnmatch

    farm = client(ctx)
    try:
        items = farm.artifacts(build_id)
        if pattern:
            items = [a for a in items if fnmatch.fnmatch(a["path"], pattern)
                     or fnmatch.fnmatch(Path(a["path"]).name, pattern)]
        if dest:
            for i, a in enumerate(items, 1):
                path = farm.download(build_id, a["path"], dest, a["sha256"])
                click.echo(f"[{i}/{len(items)}] {path} ({a['size']} bytes, sha256 ok)", err=True)
    except ClientError as e:
        fail(e)
    if as_json:
        echo_json(items)
    elif not dest:
        if not items:
            click.echo("no artifacts", err=True)
        for a in items:
            click.echo(f"{a['size']:>12}  {a['sha256']}  {a['path']}")
