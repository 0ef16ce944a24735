"""`buildfarm jenkins-bridge`: the command that runs the bridge (see jenkins/bridge.py)."""

from __future__ import annotations

import json
import signal
import sys
import time

import click

from ..states import EXIT_INFRA_ERROR
from .common import EXIT_USAGE, client


def _emitter(as_json: bool):
    def emit(event: str, **fields) -> None:
        if as_json:
            click.echo(json.dumps({"at": round(time.time(), 3), "event": event, **fields}))
        else:
            rest = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            click.echo(f"{time.strftime('%H:%M:%S')} {event} {rest}")
        sys.stdout.flush()

    return emit


@click.command("jenkins-bridge")
@click.option("--url", required=True, envvar="BUILDFARM_JENKINS_URL", metavar="URL",
              help="Jenkins, e.g. https://jenkins.example/ (env BUILDFARM_JENKINS_URL).")
@click.option("--user", required=True, envvar="BUILDFARM_JENKINS_USER",
              help="Jenkins user the bridge acts as (env BUILDFARM_JENKINS_USER); needs Agent/Create, "
                   "Agent/Delete, Agent/Connect, Agent/Disconnect and Overall/Read.")
@click.option("--token", required=True, envvar="BUILDFARM_JENKINS_TOKEN",
              help="That user's API token (env BUILDFARM_JENKINS_TOKEN; from USER > Security > API Token).")
@click.option("--label-map", "label_map", required=True, type=click.Path(dir_okay=False),
              help="YAML: the labels served, each with image, cpus, mem, max_agents, constraints.")
@click.option("--repo", help="Repository checked out into each agent's workspace, for labels without `repo:`.")
@click.option("--max-total", type=click.IntRange(1), default=10, show_default=True,
              help="Agents of all labels at once.")
@click.option("--connect-timeout", type=click.FloatRange(1), default=300, show_default=True,
              help="Seconds an agent may take to connect to Jenkins before it is cancelled.")
@click.option("--interval", type=click.FloatRange(0.1), default=1.0, show_default=True,
              help="Seconds between polls of Jenkins' queue.")
@click.option("--on-pipeline-end", "downstream_job", metavar="JOB",
              help="Trigger this Jenkins job (parameters BUILDFARM_PIPELINE_RUN, BUILDFARM_PIPELINE_OUTCOME, "
                   "BUILDFARM_PIPELINE) when a buildfarm pipeline run ends.")
@click.option("--pipeline-state", "pipeline_state", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --on-pipeline-end: remember in FILE the runs already reported, so that after a "
                   "restart the bridge also reports the runs that ended while it was down (without it, "
                   "those are missed).")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines.")
@click.pass_context
def jenkins_bridge(ctx, url, user, token, label_map, repo, max_total, connect_timeout, interval, downstream_job,
                   pipeline_state, as_json):
    """Give Jenkins ephemeral agents run by buildfarm: for each item in Jenkins' queue that waits for
    a label in the label map, create a one-shot node in Jenkins and run its agent
    (images/jenkins-agent) as a buildfarm build; delete the node after its one build.

    \b
      buildfarm jenkins-bridge --url https://jenkins.example/ --user buildfarm \\
          --token "$JENKINS_API_TOKEN" --label-map label-map.yaml --max-total 20

    Stopping the bridge leaves running agents alone; the next start adopts them (nodes named bf-*
    and their builds) and removes what is left over.
    """
    import jenkins

    from ..client import ClientError
    from ..jenkins.bridge import Bridge
    from ..jenkins.downstream import PipelineWatcher, StateFileError
    from ..jenkins.labelmap import LabelMapError, load_label_map

    try:
        lm = load_label_map(label_map, default_repo=repo)
    except LabelMapError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    if pipeline_state and not downstream_job:
        click.echo("error: --pipeline-state is the memory of --on-pipeline-end JOB; give that too", err=True)
        sys.exit(EXIT_USAGE)
    emit = _emitter(as_json)
    server, version = _connect(url, user, token)
    farm = client(ctx)
    try:
        watcher = PipelineWatcher(server, farm, downstream_job, emit, pipeline_state) if downstream_job else None
    except StateFileError as e:
        click.echo(f"error: --pipeline-state {e}", err=True)
        sys.exit(EXIT_USAGE)
    bridge = Bridge(server, farm, lm, max_total=max_total, connect_timeout=connect_timeout, emit=emit, user=user,
                    launch_server=jenkins.Jenkins(url, username=user, password=token, timeout=30))
    try:
        bridge.adopt()
    except ClientError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_INFRA_ERROR if e.infrastructure else 1)
    emit("started", jenkins=url, version=version, labels=",".join(lm.labels), max_total=max_total,
         adopted=len(bridge.agents), on_pipeline_end=downstream_job)

    _poll_until_stopped(bridge, watcher, interval, emit)
    bridge.close()
    emit("stopped", agents=len(bridge.agents), note="running agents are adopted by the next start")


def _connect(url: str, user: str, token: str):
    """A logged-in python-jenkins client and Jenkins' version; exits with a clear error when
    Jenkins refuses the credentials (usage) or cannot be reached (infrastructure)."""
    import jenkins
    import requests

    server = jenkins.Jenkins(url, username=user, password=token, timeout=30)
    try:
        server.get_queue_info()  # logs in (python-jenkins resolves the credentials on its first call)
        version = server.get_version()
    except jenkins.JenkinsException as e:
        first = str(e).splitlines()[0]
        if "401" in first or "403" in first:
            click.echo(f"error: Jenkins at {url} refused user {user!r} ({first}); check --user and --token "
                       f"(an API token, from the user's Security page)", err=True)
            sys.exit(EXIT_USAGE)
        click.echo(f"error: Jenkins at {url}: {first}", err=True)
        sys.exit(EXIT_INFRA_ERROR)
    except (requests.RequestException, KeyError) as e:
        click.echo(f"error: cannot reach Jenkins at {url} ({type(e).__name__}); check --url", err=True)
        sys.exit(EXIT_INFRA_ERROR)
    return server, version


def _poll_until_stopped(bridge, watcher, interval: float, emit) -> None:
    """Poll Jenkins (and the pipeline watcher every 5 s) until SIGTERM or ^C; a failed poll is
    reported and retried after a growing pause (up to 10 s)."""
    import jenkins

    from ..client import ClientError

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    failures = 0
    next_watch = 0.0
    try:
        while not stopping:
            t0 = time.monotonic()
            try:
                bridge.poll()
                if watcher and t0 >= next_watch:
                    watcher.check()
                    next_watch = t0 + 5
                failures = 0
            except (jenkins.JenkinsException, OSError, ClientError) as e:  # OSError: requests', a state file's
                failures += 1
                emit("poll-failed", message=str(e).splitlines()[0][:300], retry_in=min(interval * failures, 10))
                time.sleep(min(interval * failures, 10))
                continue
            time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    except KeyboardInterrupt:
        pass
