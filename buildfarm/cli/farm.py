"""`buildfarm up`, `buildfarm api` and `buildfarm scheduler`: the commands that run a farm (or one
of its roles) in this process, rather than talk to one. The server's modules are imported when they run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..states import EXIT_INFRA_ERROR


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
        click.option("--mesos-team-roles", is_flag=True,
                     help="Subscribe with MULTI_ROLE and one role per team (ROLE/TEAM, buildfarm/TEAM when --role "
                          "is *), so the cluster's own quotas and weights apply to each team as well."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _settings(data_dir, backend, master, framework_name, role, principal, secret, failover_timeout,
              mesos_network, mesos_cache_path, mesos_heartbeat_timeout, mesos_team_roles, **kw):
    from ..config import Settings, default_data_dir

    mesos = None
    if backend == "mesos":
        from ..backends.mesos import MesosOptions

        if not master:
            raise click.UsageError("--backend mesos needs --master HOST:PORT")
        mesos = MesosOptions(master=master, name=framework_name, role=role, principal=principal, secret=secret,
                             failover_timeout=failover_timeout, network=mesos_network,
                             cache_host_path=mesos_cache_path, heartbeat_timeout=mesos_heartbeat_timeout,
                             team_roles=mesos_team_roles)
    return Settings(data_dir=(data_dir or default_data_dir()).resolve(), backend=backend, mesos=mesos, **kw)


def _logging() -> None:
    """A daemon's log: the farm's own events (runs started, builds adopted, task states) and others'
    warnings."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("buildfarm").setLevel(logging.INFO)


def _daemon_failed(e: Exception) -> None:
    """`up`, `api` or `scheduler` cannot go on: say why and exit 125 at once. Its own cleanup has run; the
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
        from ..spec import NEVER, parse_duration

        if value is None or isinstance(value, int):
            return value
        if value.strip().lower() == NEVER:
            return None
        seconds = parse_duration(value)
        if seconds is None:
            self.fail(f"{value!r} is not a duration; write e.g. 30d, 12h, 2w, or 'never'", param, ctx)
        return seconds


KEEP = _Keep()


@click.command()
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
@click.option("--reclaim-grace", type=click.FloatRange(min=0), default=180, show_default=True,
              help="Seconds a team below its guarantee waits before builds borrowing it are preempted.")
@click.option("--max-preemptions", type=click.IntRange(min=0), default=2, show_default=True,
              help="Times one build may be preempted (then it runs to its end).")
@click.option("--credit-period", type=click.FloatRange(min=0), default=3600, show_default=True,
              help="Seconds between issues of credits to teams (one per cpu-hour of guarantee); 0: no market.")
@mesos_options
def up(port, host, data_dir, backend, isolation, cpus, mem, network, warm, agent_api_url, no_repo_check,
       allow_repos, start_timeout, heartbeat_timeout, keep_logs, keep_artifacts, gc_interval, reclaim_grace,
       max_preemptions, credit_period, **mesos):
    """Start a farm: Redis (a private one unless REDIS_URL is set), the API and the scheduler."""
    from ..server import run_up

    _logging()
    settings = _settings(data_dir, backend, host=host, port=port, isolation=isolation, cpus=cpus, mem=mem,
                         network=network, warm=warm, agent_api_url=agent_api_url, check_repos=not no_repo_check,
                         allow_repos=tuple(allow_repos), start_timeout=start_timeout, heartbeat_timeout=heartbeat_timeout,
                         keep_logs=keep_logs, keep_artifacts=keep_artifacts, gc_interval=gc_interval,
                         reclaim_grace=reclaim_grace, max_preemptions=max_preemptions, credit_period=credit_period,
                         **mesos)
    try:
        run_up(settings)
    except Exception as e:
        _daemon_failed(e)


@click.command()
@click.option("--port", default=8080, show_default=True, help="API port (on --host).")
@click.option("--host", default="127.0.0.1", show_default=True, help="API address.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="BUILDFARM_DATA",
              help="Logs, artifacts and the secrets key, shared by every replica and scheduler.")
@click.option("--no-repo-check", is_flag=True, help="Do not `git ls-remote` repositories at submit time.")
@click.option("--allow-repo", "allow_repos", multiple=True, metavar="PREFIX",
              help="Build only repositories whose URL starts with PREFIX (repeatable) [default: any].")
def api(port, host, data_dir, no_repo_check, allow_repos):
    """Run one API replica against REDIS_URL: the REST API, dashboard, log streams and webhooks,
    with no scheduler (run any number behind a load balancer; `buildfarm scheduler` places builds)."""
    from ..config import Settings, default_data_dir
    from ..server import run_api

    _logging()
    settings = Settings(data_dir=(data_dir or default_data_dir()).resolve(), host=host, port=port,
                        check_repos=not no_repo_check, allow_repos=tuple(allow_repos))
    try:
        run_api(settings)
    except Exception as e:
        _daemon_failed(e)


@click.command()
@click.option("--backend", type=click.Choice(["local", "mesos"]), default="mesos", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="BUILDFARM_DATA",
              help="Logs, artifacts and the agent bundle (shared with the API).")
@click.option("--agent-api-url", required=True, envvar="BUILDFARM_AGENT_API_URL",
              help="The farm's API as build tasks reach it, e.g. http://buildfarm.example:8080.")
@click.option("--isolation", type=click.Choice(["docker", "process"]), default="docker", show_default=True,
              help="With --backend local: one container per build, or plain processes.")
@click.option("--lease-ttl", type=click.FloatRange(min=1), default=5, show_default=True,
              help="Seconds a leader's lease lasts unrenewed: a standby takes over this long after the "
                   "leader dies.")
@click.option("--teardown", is_flag=True, help="Tear the Mesos framework down (its tasks are killed) and exit.")
@mesos_options
def scheduler(backend, data_dir, agent_api_url, isolation, lease_ttl, teardown, **mesos):
    """Run a scheduler against REDIS_URL (the API runs elsewhere): `buildfarm scheduler --backend mesos
    --master HOST:5050 --agent-api-url URL`. Run two or more: one leads, the others stand by and
    take over when it stops renewing its lease. `--teardown` ends the Mesos framework."""
    from ..server import run_scheduler

    _logging()
    settings = _settings(data_dir, backend, agent_api_url=agent_api_url, isolation=isolation,
                         lease_ttl=lease_ttl, **mesos)
    try:
        run_scheduler(settings, teardown=teardown)
    except Exception as e:
        _daemon_failed(e)
