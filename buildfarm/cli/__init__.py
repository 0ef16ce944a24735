"""The `buildfarm` command line: one module per group of commands, sharing `common` (client,
exit codes, output). The commands talk to the farm only through `Client`'s public methods, except
`up`, `api` and `scheduler` (farm.py), which start one.

Start-up time is a feature: `buildfarm --help` or `status` must not pay for the server's modules.
Every module here imports only click, `common` and the client at the top; whatever is heavy
(pydantic models, redis, the server, GitPython, the pipeline model, python-jenkins) is imported
inside the command that needs it. tests/test_cli_startup.py guards this.
"""

from __future__ import annotations

import click

from .. import __version__
from . import access, builds, farm, hook, jenkins, pipeline, retention, teams


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


for command in (farm.up, farm.api, farm.scheduler, builds.submit, builds.status, builds.list_, builds.logs, builds.cancel,
                builds.rebuild, builds.artifacts, retention.pin, retention.unpin, retention.gc, access.token, access.secret, access.whoami, hook.hook,
                pipeline.pipeline, jenkins.jenkins_bridge, teams.team, teams.usage):
    main.add_command(command)

__all__ = ["main"]
