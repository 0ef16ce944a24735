"""`buildfarm hook`: build on every push into a bare repository, with a post-receive hook.

The hook reads the pushed commit's .buildfarm.yml in the repository itself and submits through
the farm's API; what it prints reaches the pusher as `remote: buildfarm: ...` lines. It never
fails a push: an unreachable farm or a broken build file is a warning.
"""

from __future__ import annotations

import getpass
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from ..client import Client, ClientError
from .buildfile import FILENAME, ZERO, BuildFileError, Event
from .dispatch import UNFINISHED, Refused, Skipped, dispatch
from .gitrepo import GitError, GitRepo

MARKER = "# buildfarm post-receive hook"
TOKEN_FILE = "buildfarm.token"


class ClientSink:
    """Submits and cancels through the farm's API (the hook's side of `dispatch`)."""

    def __init__(self, client: Client):
        self.client = client

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.client.submit(spec)
        except ClientError as e:
            if e.status == 403 and e.field == "secrets":  # a secret it asks for is not for this branch
                raise Skipped(str(e)) from None
            if e.infrastructure or e.status in (401, 403):
                raise
            raise Refused(str(e)) from None

    def unfinished(self, repo: str) -> list[dict[str, Any]]:
        return [b for state in UNFINISHED for b in self.client.list(limit=500, state=state, repo=repo)]

    def cancel(self, build_id: str, who: str) -> None:
        try:
            self.client.cancel(build_id)
        except ClientError as e:
            if e.status != 409:
                raise
            raise Refused(str(e)) from None


def _client(server: str, token: str | None) -> Client:
    client = Client(server, token=token)
    if not token:  # the hook uses its own token only, never a token file of the git server's user
        client.http.headers.pop("Authorization", None)
    return client


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def hook() -> None:
    """Build on pushes: a git post-receive hook that submits what the pushed commit's
    .buildfarm.yml asks for.

    \b
      buildfarm hook install /srv/git/app.git --server http://buildfarm:8080 \\
          --token "$(buildfarm token create git-hook --role submitter)" \\
          --repo-url git://git.example/app.git
      git push   # remote: buildfarm: queued build 3f9c0a1b2c4d (unit) for main at 1a2b3c4d5e6f

    For GitHub, GitLab or Gitea, point a webhook at the farm instead: /hooks/github,
    /hooks/gitlab, /hooks/gitea (see the README).
    """


@hook.command()
@click.argument("repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--server", envvar="BUILDFARM_URL", help="The farm's API [default: buildfarm --server].")
@click.option("--token", envvar="BUILDFARM_TOKEN",
              help="API token the hook submits with (role submitter; env BUILDFARM_TOKEN). Kept in "
                   f"hooks/{TOKEN_FILE}, mode 0600, not in the hook script.")
@click.option("--repo-url", required=True,
              help="The URL build containers clone this repository from, e.g. git://git.example/app.git "
                   "(a path on this host does not work inside a container).")
@click.option("--force", is_flag=True, help="Replace a post-receive hook that buildfarm did not write.")
@click.pass_context
def install(ctx: click.Context, repository: Path, server: str | None, token: str | None, repo_url: str,
            force: bool) -> None:
    """Install the post-receive hook into REPOSITORY (usually a bare repository: app.git)."""
    server = server or (ctx.find_root().obj or {}).get("server") or "http://127.0.0.1:8080"
    try:
        repo = GitRepo(repository)
    except GitError as e:
        raise click.UsageError(f"{e}; give the path of the repository people push to") from None
    if "://" not in repo_url and not repo_url.startswith("git@"):
        raise click.UsageError(f"--repo-url {repo_url!r}: give a URL build containers can clone, "
                               "e.g. git://HOST/app.git or https://HOST/app.git")
    hooks = Path(repo.repo.git_dir).resolve() / "hooks"
    hooks.mkdir(exist_ok=True)
    script = hooks / "post-receive"
    if script.exists() and MARKER not in script.read_text(errors="replace") and not force:
        raise click.UsageError(f"{script} exists and was not written by buildfarm; move it away or pass --force")
    token_path = hooks / TOKEN_FILE
    if token:
        fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token.strip() + "\n")
        os.chmod(token_path, 0o600)
    else:
        token_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "buildfarm.triggers.cli", "post-receive", "--server", server,
               "--repo-url", repo_url]
    script.write_text(f"#!/bin/sh\n{MARKER} (written by `buildfarm hook install`; run it again to change it)\n"
                      f"exec {shlex.join(command)} --token-file \"$(dirname \"$0\")/{TOKEN_FILE}\"\n")
    script.chmod(0o755)
    click.echo(f"installed {script}: pushes build on {server}, cloning {repo_url}")
    _check_token(server, token)


def _check_token(server: str, token: str | None) -> None:
    """Warn now about what would make every push print a warning later."""
    create = "create one with `buildfarm token create git-hook --role submitter` and install again with --token"
    if not token:
        click.echo(f"warning: no --token: the farm will refuse the hook's builds; {create}", err=True)
        return
    try:
        me = _client(server, token).whoami()
    except ClientError as e:
        if e.infrastructure:
            click.echo(f"warning: the farm at {server} does not answer now; pushes will say so", err=True)
        else:
            click.echo(f"warning: the farm refuses this token ({e}); {create}", err=True)
        return
    if me.get("role") == "viewer":
        click.echo(f"warning: the token of {me['user']} is a viewer's and cannot submit; {create}", err=True)
    elif me.get("role") == "admin":
        click.echo(f"note: the token of {me['user']} is an admin's; a submitter token is enough for the hook", err=True)


def _say(text: str) -> None:
    click.echo(f"buildfarm: {text}")


@hook.command(name="post-receive")
@click.option("--server", required=True, help="The farm's API.")
@click.option("--repo-url", required=True, help="The URL builds clone.")
@click.option("--token-file", type=click.Path(path_type=Path), help="File holding the API token.")
@click.option("--git-dir", type=click.Path(path_type=Path), help="The repository [default: $GIT_DIR or .].")
def post_receive(server: str, repo_url: str, token_file: Path | None, git_dir: Path | None) -> None:
    """Run by git after a push (reads `OLD NEW REF` lines on stdin); not for people to call."""
    token = None
    if token_file and token_file.exists():
        token = token_file.read_text().strip() or None
    user = (os.environ.get("GL_USER") or os.environ.get("GL_USERNAME") or os.environ.get("USER")
            or getpass.getuser())
    try:
        repo = GitRepo(git_dir or os.environ.get("GIT_DIR") or ".")
    except GitError as e:
        _say(f"warning: {e}; nothing queued")
        return
    sink = ClientSink(_client(server, token))
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 3:
            continue
        old, new, ref = parts
        try:
            _one(repo, sink, repo_url, user, old, new, ref)
        except ClientError as e:
            problem = f"cannot reach the farm at {server}" if e.infrastructure and e.status is None else str(e)
            _say(f"warning: {problem}: nothing queued for {ref} (the push itself succeeded)")
        except Exception as e:  # never fail or garble a push
            _say(f"warning: {type(e).__name__}: {e}; nothing queued for {ref}")


def _one(repo: GitRepo, sink: ClientSink, repo_url: str, user: str, old: str, new: str, ref: str) -> None:
    if not ref.startswith("refs/heads/"):
        _say(f"{ref}: only branch pushes are built")
        return
    branch = ref.removeprefix("refs/heads/")
    if new == ZERO:
        _say(f"{ref} deleted: nothing to build")
        return
    detail = {"provider": "git", "event": "push", "branch": branch, "before": old, "after": new}
    ev = Event(repo=repo_url, commit=new, kind="hook", branch=branch, user=user, detail=detail,
               changed=repo.changed_paths(old, new))
    try:
        out = dispatch(repo.read(new, FILENAME), ev, sink)
    except BuildFileError as e:
        _say(f"nothing queued for {ref}: {e}")
        return
    for b in out.queued:
        _say(f"queued build {b['id']} ({b['name']}) for {branch} at {new[:12]}; follow it: buildfarm logs -f {b['id']}")
    for s in out.skipped if out.queued else []:
        _say(f"skipped {s['name']}: {s['reason']}")
    for r in out.refused:
        _say(f"refused {r['name']}: {r['reason']}")
    for c in out.cancelled:
        _say(f"cancelled build {c}: superseded by {new[:12]}")
    if not out.queued:
        _say(f"nothing to build for {ref}: {out.reason}")


if __name__ == "__main__":
    hook(prog_name="buildfarm hook")
