"""The `buildfarm` command line. It talks to the API only (--server or BUILDFARM_URL), except
`buildfarm up`, which starts a farm.

Exit codes of `submit --wait` (and `status --exit-code`), so a Jenkins shell step can act:
0 succeeded, the build command's own code when it failed, 124 timed out, 125 infrastructure
error (including an unreachable farm), 130 cancelled; 2 for a bad command line or spec; 77 when
the API token is missing, invalid, or its role does not allow the command.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import sys
import time
from pathlib import Path

import click

from . import __version__
from .client import TERMINAL_STATES, Client, ClientError, write_stream
from .spec import NEVER, TRIGGER_KINDS, parse_duration, parse_env_pairs
from .states import EXIT_INFRA_ERROR, exit_code_for

EXIT_USAGE = 2
EXIT_NOPERM = 77  # sysexits' EX_NOPERM


def _client(ctx: click.Context) -> Client:
    return Client(ctx.obj["server"], ctx.obj.get("token"))


def _fail(e: ClientError) -> None:
    click.echo(f"error: {e}", err=True)
    if e.infrastructure:
        sys.exit(EXIT_INFRA_ERROR)
    if e.status in (401, 403):
        sys.exit(EXIT_NOPERM)
    sys.exit(EXIT_USAGE if e.status in (400, 404, 409, 422) else 1)


def _api(call, *args, **kwargs):
    """One API call; a ClientError ends the command with its message and exit code."""
    try:
        return call(*args, **kwargs)
    except ClientError as e:
        _fail(e)


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    return _duration(time.time() - t) + " ago"


def _duration(secs: float | None) -> str:
    if secs is None:
        return "-"
    secs = int(secs)
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"


def _build_duration(b: dict) -> str:
    if not b.get("started_at"):
        return "-"
    return _duration((b.get("finished_at") or time.time()) - b["started_at"])


def _where(b: dict) -> str:
    s = b["spec"]
    at = s.get("ref") or (s.get("commit") or "")[:10] or "HEAD"
    return f"{s['repo']}@{at}"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--server", envvar="BUILDFARM_URL", default="http://127.0.0.1:8080", show_default=True,
              help="The farm's API (env BUILDFARM_URL).")
@click.option("--token", envvar="BUILDFARM_TOKEN", metavar="TOKEN",
              help="API token (env BUILDFARM_TOKEN) [default: DATA_DIR/admin.token of a farm on this machine].")
@click.version_option(__version__, prog_name="buildfarm")
@click.pass_context
def main(ctx: click.Context, server: str, token: str | None) -> None:
    """buildfarm: run builds of git repositories in ephemeral containers, follow their logs,
    fetch their artifacts.

    \b
    Start a farm on this machine:   buildfarm up     (dashboard on http://127.0.0.1:8080/)
    Submit and follow a build:      buildfarm submit --repo URL --image IMG --wait --follow -- make test
    Give someone access:            buildfarm token create alice --role submitter
    """
    ctx.ensure_object(dict)
    ctx.obj["server"] = server
    ctx.obj["token"] = token


# -- up -----------------------------------------------------------------------------------------

def mesos_options(f):
    """Options shared by `up` and `scheduler` for the Mesos backend."""
    opts = [
        click.option("--master", envvar="BUILDFARM_MESOS_MASTER", help="Mesos master HOST:PORT or zk://... (mesos backend)."),
        click.option("--framework-name", default="buildfarm", show_default=True, help="Mesos framework name."),
        click.option("--role", default="*", show_default=True, help="Mesos role to accept offers for."),
        click.option("--principal", envvar="BUILDFARM_MESOS_PRINCIPAL", help="Mesos principal (with --secret)."),
        click.option("--secret", envvar="BUILDFARM_MESOS_SECRET", help="Mesos secret (env BUILDFARM_MESOS_SECRET)."),
        click.option("--failover-timeout", type=float, default=7 * 24 * 3600, show_default=True,
                     help="Seconds Mesos keeps the framework's tasks running while the scheduler is away."),
        click.option("--mesos-network", type=click.Choice(["HOST", "BRIDGE"]), default="HOST", show_default=True,
                     help="Docker network of build tasks on the agents."),
        click.option("--mesos-cache-path", default="/var/cache/buildfarm", show_default=True,
                     help="Host path on each agent for the git mirror cache volume."),
        click.option("--mesos-heartbeat-timeout", type=click.FloatRange(min=1), default=60, show_default=True,
                     help="Seconds without a HEARTBEAT from the master (one comes every 15 s) after which the "
                          "connection is taken for dead and the framework subscribes again."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _settings(data_dir, backend, master, framework_name, role, principal, secret, failover_timeout,
              mesos_network, mesos_cache_path, mesos_heartbeat_timeout, **kw):
    from .config import Settings, default_data_dir

    mesos = None
    if backend == "mesos":
        from .backends.mesos import MesosOptions

        if not master:
            raise click.UsageError("--backend mesos needs --master HOST:PORT")
        mesos = MesosOptions(master=master, name=framework_name, role=role, principal=principal, secret=secret,
                             failover_timeout=failover_timeout, network=mesos_network,
                             cache_host_path=mesos_cache_path, heartbeat_timeout=mesos_heartbeat_timeout)
    return Settings(data_dir=(data_dir or default_data_dir()).resolve(), backend=backend, mesos=mesos, **kw)


def _logging() -> None:
    """A daemon's log: the farm's own events (runs started, builds adopted, task states) and others'
    warnings."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("buildfarm").setLevel(logging.INFO)


def _daemon_failed(e: Exception) -> None:
    """`up` or `scheduler` cannot go on: say why and exit 125 at once. Its own cleanup has run; the
    threads a failed backend leaves behind (pymesos' among them) are not waited for, nor left to
    the interpreter's shutdown, which can abort the process while they still run."""
    click.echo(f"error: {e}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INFRA_ERROR)


class _Keep(click.ParamType):
    """A retention duration (30d, 12h, 2w) in seconds, or 'never' (None)."""

    name = "DURATION|never"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        if value.strip().lower() == NEVER:
            return None
        seconds = parse_duration(value)
        if seconds is None:
            self.fail(f"{value!r} is not a duration; write e.g. 30d, 12h, 2w, or 'never'", param, ctx)
        return seconds


KEEP = _Keep()


@main.command()
@click.option("--port", default=8080, show_default=True, help="API port (on --host).")
@click.option("--host", default="127.0.0.1", show_default=True, help="API address.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="BUILDFARM_DATA",
              help="Where Redis's persistence, logs, artifacts and caches live [default: ~/.buildfarm].")
@click.option("--backend", type=click.Choice(["local", "mesos"]), default="local", show_default=True,
              help="Where builds run: this host, or a Mesos cluster (--master).")
@click.option("--isolation", type=click.Choice(["docker", "process"]), default="docker", show_default=True,
              help="docker: one container per build; process: plain processes (no Docker engine needed, "
                   "no resource limits).")
@click.option("--cpus", type=float, help="CPUs this host offers to builds [default: all].")
@click.option("--mem", type=int, help="Memory in MB this host offers to builds [default: all but 512].")
@click.option("--network", default="host", show_default=True, help="Docker network mode of build containers.")
@click.option("--warm", type=int, default=2, show_default=True,
              help="Idle pre-started agent containers kept per image in use, so builds skip Docker's start "
                   "(0: none).")
@click.option("--agent-api-url", help="The API address as build containers reach it [default: http://HOST:PORT].")
@click.option("--no-repo-check", is_flag=True, help="Do not `git ls-remote` repositories at submit time.")
@click.option("--allow-repo", "allow_repos", multiple=True, metavar="PREFIX",
              help="Build only repositories whose URL starts with PREFIX (repeatable) [default: any].")
@click.option("--start-timeout", type=float, default=300, show_default=True,
              help="Seconds a build may take from launch to its agent starting.")
@click.option("--heartbeat-timeout", type=float, default=90, show_default=True,
              help="Seconds a running build may go without output or heartbeat.")
@click.option("--keep-logs", type=KEEP, default="90d", show_default=True,
              help="How long a build's log is kept after it ends (e.g. 30d, 12h; 'never' deletes none); "
                   "a build's expire_in comes first.")
@click.option("--keep-artifacts", type=KEEP, default="30d", show_default=True,
              help="How long a build's artifacts are kept after it ends.")
@click.option("--gc-interval", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds between the passes that delete expired logs and artifacts.")
@mesos_options
def up(port, host, data_dir, backend, isolation, cpus, mem, network, warm, agent_api_url, no_repo_check,
       allow_repos, start_timeout, heartbeat_timeout, keep_logs, keep_artifacts, gc_interval, **mesos):
    """Start a farm: Redis (a private one unless REDIS_URL is set), the API and the scheduler."""
    from .server import run_up

    _logging()
    settings = _settings(data_dir, backend, host=host, port=port, isolation=isolation, cpus=cpus, mem=mem,
                         network=network, warm=warm, agent_api_url=agent_api_url, check_repos=not no_repo_check,
                         allow_repos=tuple(allow_repos), start_timeout=start_timeout, heartbeat_timeout=heartbeat_timeout,
                         keep_logs=keep_logs, keep_artifacts=keep_artifacts, gc_interval=gc_interval, **mesos)
    try:
        run_up(settings)
    except Exception as e:
        _daemon_failed(e)


@main.command()
@click.option("--backend", type=click.Choice(["local", "mesos"]), default="mesos", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="BUILDFARM_DATA",
              help="Logs, artifacts and the agent bundle (shared with the API).")
@click.option("--agent-api-url", required=True, envvar="BUILDFARM_AGENT_API_URL",
              help="The farm's API as build tasks reach it, e.g. http://buildfarm.example:8080.")
@click.option("--teardown", is_flag=True, help="Tear the Mesos framework down (its tasks are killed) and exit.")
@mesos_options
def scheduler(backend, data_dir, agent_api_url, teardown, **mesos):
    """Run the scheduler alone against REDIS_URL (the API runs elsewhere): `buildfarm scheduler
    --backend mesos --master HOST:5050 --agent-api-url URL`. `--teardown` ends the framework."""
    from .server import run_scheduler

    _logging()
    settings = _settings(data_dir, backend, agent_api_url=agent_api_url, **mesos)
    try:
        run_scheduler(settings, teardown=teardown)
    except Exception as e:
        _daemon_failed(e)


# -- submit ------------------------------------------------------------------------------------

@main.command(context_settings={"ignore_unknown_options": False})
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
@click.option("--wait", is_flag=True, help="Wait for the end; exit with the build's outcome.")
@click.option("--follow", "-f", is_flag=True, help="Stream the log while waiting (implies --wait).")
@click.option("--json", "as_json", is_flag=True, help="Print the build record as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def submit(ctx, repo, ref, commit, image, cpus, mem, disk, env_pairs, secrets, artifacts, constraints, timeout,
           priority, retries, steps, wait_for_capacity, expire_in, wait, follow, as_json, command):
    """Submit a build; print its id. Put the command after `--`:

    \b
      buildfarm submit --repo git://127.0.0.1/app.git --image buildfarm/builder \\
          --artifact 'dist/*.tar.gz' --wait --follow -- make -j2 dist

    With --wait the exit code is the build's: 0 succeeded, the command's own code when it
    failed, 124 timed out, 125 infrastructure error, 130 cancelled.
    """
    try:
        env = parse_env_pairs(list(env_pairs))
    except ValueError as e:
        raise click.UsageError(str(e))
    if command and steps:
        raise click.UsageError("give a COMMAND after `--` or --step lines, not both")
    if not command and not steps:
        raise click.UsageError("nothing to run: put the command after `--`, e.g. `-- make test`, or use --step")
    import os

    trigger = {"kind": "cli", "user": os.environ.get("USER") or os.environ.get("LOGNAME")}
    if os.environ.get("BUILD_URL") and os.environ.get("JOB_NAME"):
        trigger = {"kind": "jenkins", "user": trigger["user"], "url": os.environ["BUILD_URL"],
                   "detail": {"job": os.environ["JOB_NAME"], "number": os.environ.get("BUILD_NUMBER", "")}}
    spec = {
        "repo": repo, "ref": ref, "commit": commit, "image": image,
        "command": list(command) or None, "steps": list(steps) or None,
        "env": env, "secrets": list(secrets), "resources": {"cpus": cpus, "mem": mem, "disk": disk},
        "constraints": list(constraints), "timeout": timeout, "artifacts": list(artifacts),
        "priority": priority, "retries": retries, "wait_for_capacity": wait_for_capacity, "trigger": trigger,
        "expire_in": expire_in,
    }
    client = _client(ctx)
    build = _api(client.submit, spec)
    _queued(client, build, wait, follow, as_json)


def _queued(client: Client, build: dict, wait: bool, follow: bool, as_json: bool, note: str = "") -> None:
    """Print a queued build's id (or record); with --wait/--follow, wait and exit with its outcome."""
    bid = build["id"]
    if not (wait or follow):
        click.echo(json.dumps(build, indent=2) if as_json else bid)
        if not as_json:
            click.echo(f"queued{note}; follow it with: buildfarm logs -f {bid}", err=True)
        return
    click.echo(f"build {bid} queued{note}", err=True)
    final = _wait_for(client, bid, follow=follow, quiet=as_json)
    if as_json:
        click.echo(json.dumps(final, indent=2))
    sys.exit(exit_code_for(final["state"], final.get("exit_code")))


def _wait_for(client: Client, bid: str, follow: bool, quiet: bool) -> dict:
    try:
        if follow:
            out = sys.stderr.buffer if quiet else sys.stdout.buffer
            write_stream(client.log_chunks(bid, follow=True), out)
            b = client.get(bid)
            while b["state"] not in TERMINAL_STATES:  # the log closed early (e.g. a farm restart)
                time.sleep(0.5)
                b = client.get(bid)
        else:
            b = _poll(client, bid)
    except ClientError as e:
        _fail(e)
    line = f"build {bid} {b['state']}: {b.get('reason', '')}"
    if b.get("exit_code") is not None and b["state"] == "failed":
        line += f" (exit {b['exit_code']})"
    click.echo(line, err=True)
    return b


def _poll(client: Client, bid: str) -> dict:
    """Wait, showing the state and elapsed time on a terminal."""
    tty = sys.stderr.isatty()
    start = time.monotonic()
    delay = 0.2
    while True:
        b = client.get(bid)
        if b["state"] in TERMINAL_STATES:
            if tty:
                click.echo("\r\033[K", nl=False, err=True)
            return b
        if tty:
            click.echo(f"\r\033[K{bid} {b['state']} {_duration(time.monotonic() - start)}  {b.get('reason', '')[:60]}",
                       nl=False, err=True)
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


# -- reading back ---------------------------------------------------------------------------------

@main.command()
@click.argument("build_id")
@click.option("--json", "as_json", is_flag=True, help="Print the build record as JSON.")
@click.option("--wait", is_flag=True, help="Wait for the end and exit with the build's outcome.")
@click.pass_context
def status(ctx, build_id, as_json, wait):
    """Show a build: state, reason, where it ran, its history and artifacts."""
    client = _client(ctx)
    try:
        b = _poll(client, build_id) if wait else client.get(build_id)
    except ClientError as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps(b, indent=2))
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
        click.echo(f"queued   {_ago(b['created_at'])}  duration {_build_duration(b)}")
        click.echo(f"files    {_retention(b.get('retention') or {})}")
        for h in b.get("history", []):
            click.echo(f"  {time.strftime('%H:%M:%S', time.localtime(h['at']))}  {h['state']:<10} {h['reason']}")
        for a in b.get("artifacts", []):
            click.echo(f"  artifact {a['path']}  {a['size']} bytes  sha256 {a['sha256'][:16]}")
    if wait:
        sys.exit(exit_code_for(b["state"], b.get("exit_code")))


@main.command(name="list")
@click.option("--state", type=click.Choice(sorted(TERMINAL_STATES | {"queued", "launching", "running"})))
@click.option("--repo", help="Only builds of this repository URL.")
@click.option("--trigger", type=click.Choice(TRIGGER_KINDS), help="Only builds started this way.")
@click.option("--user", help="Only builds this user submitted or pushed.")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the build records as JSON.")
@click.pass_context
def list_(ctx, state, repo, trigger, user, limit, as_json):
    """List builds, newest first."""
    builds = _api(_client(ctx).list, state=state, repo=repo, trigger=trigger, user=user, limit=limit)
    if as_json:
        click.echo(json.dumps(builds, indent=2))
        return
    if not builds:
        click.echo("no builds", err=True)
        return
    click.echo(f"{'ID':<13} {'STATE':<10} {'QUEUED':<12} {'DURATION':<9} {'TRIGGER':<16} {'IMAGE':<24} SOURCE")
    for b in builds:
        click.echo(f"{b['id']:<13} {b['state']:<10} {_ago(b['created_at']):<12} {_build_duration(b):<9} "
                   f"{_trigger(b)[:16]:<16} {b['spec']['image'][:24]:<24} {_where(b)}")


def _retention(r: dict) -> str:
    """What retention does with the build's log and artifacts, in a few words."""
    def one(what: str, due: float | None, gone: float | None) -> str:
        if gone:
            return f"{what} expired {time.strftime('%Y-%m-%d %H:%M', time.localtime(gone))}"
        return f"{what} until {time.strftime('%Y-%m-%d %H:%M', time.localtime(due))}" if due else f"{what} kept"

    if r.get("pinned_by"):
        return f"pinned by {r['pinned_by']} (log and artifacts kept)"
    return ", ".join((one("log", r.get("log_expires_at"), r.get("log_expired_at")),
                      one("artifacts", r.get("artifacts_expire_at"), r.get("artifacts_expired_at"))))


def _trigger(b: dict) -> str:
    t = b["spec"].get("trigger") or {}
    who = t.get("user") or b.get("submitted_by")
    return f"{t.get('kind', '?')}:{who}" if who else t.get("kind", "?")


@main.command()
@click.argument("build_id")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the build ends.")
@click.pass_context
def logs(ctx, build_id, follow):
    """Print a build's log (bytes as the build wrote them)."""
    try:
        write_stream(_client(ctx).log_chunks(build_id, follow=follow), sys.stdout.buffer)
    except ClientError as e:
        _fail(e)


@main.command()
@click.argument("build_id")
@click.option("--json", "as_json", is_flag=True, help="Print the build record as JSON.")
@click.pass_context
def cancel(ctx, build_id, as_json):
    """Cancel a queued or running build (its container is killed)."""
    b = _api(_client(ctx).cancel, build_id)
    click.echo(json.dumps(b, indent=2) if as_json else f"build {build_id} {b['state']}")


@main.command()
@click.argument("build_id")
@click.option("--wait", is_flag=True, help="Wait for the new build's end; exit with its outcome.")
@click.option("--follow", "-f", is_flag=True, help="Stream the new build's log while waiting (implies --wait).")
@click.option("--json", "as_json", is_flag=True, help="Print the new build record as JSON.")
@click.pass_context
def rebuild(ctx, build_id, wait, follow, as_json):
    """Submit a build's spec again (its branch resolved anew); print the new build's id."""
    client = _client(ctx)
    b = _api(client.rebuild, build_id)
    _queued(client, b, wait, follow, as_json, note=f" (rebuild of {build_id})")


@main.command()
@click.argument("build_id")
@click.option("--download", "dest", type=click.Path(file_okay=False, path_type=Path),
              help="Download them into this directory (sha256 checked).")
@click.option("--glob", "pattern", default=None, help="Only artifacts whose path matches, e.g. '*.xml'.")
@click.option("--json", "as_json", is_flag=True, help="Print the artifact list as JSON.")
@click.pass_context
def artifacts(ctx, build_id, dest, pattern, as_json):
    """List a build's artifacts, or download them."""
    client = _client(ctx)
    try:
        items = client.artifacts(build_id)
        if pattern:
            items = [a for a in items if fnmatch.fnmatch(a["path"], pattern)
                     or fnmatch.fnmatch(Path(a["path"]).name, pattern)]
        if dest:
            for i, a in enumerate(items, 1):
                path = client.download(build_id, a["path"], dest, a["sha256"])
                click.echo(f"[{i}/{len(items)}] {path} ({a['size']} bytes, sha256 ok)", err=True)
    except ClientError as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps(items, indent=2))
    elif not dest:
        if not items:
            click.echo("no artifacts", err=True)
        for a in items:
            click.echo(f"{a['size']:>12}  {a['sha256']}  {a['path']}")


from .cli_access import secret, token, whoami  # noqa: E402  (they use the helpers above)

main.add_command(token)
main.add_command(secret)
main.add_command(whoami)

from .cli_retention import gc, pin, unpin  # noqa: E402

main.add_command(pin)
main.add_command(unpin)
main.add_command(gc)

from .triggers.cli import hook  # noqa: E402

main.add_command(hook)

from .pipelines.cli import pipeline  # noqa: E402

main.add_command(pipeline)

from .jenkins.cli import jenkins_bridge  # noqa: E402  (a command of its own module)

main.add_command(jenkins_bridge)

if __name__ == "__main__":
    main()
