"""`buildfarm hook`: build on every push into a bare repository, with a post-receive hook
(`install` writes it; git runs `post-receive`, whose work is triggers/postreceive.py)."""

from __future__ import annotations

import getpass
import os
import shlex
import sys
from pathlib import Path

import click

from ..client import Client, ClientError

MARKER = "# buildfarm post-receive hook"
TOKEN_FILE = "buildfarm.token"


def _client(server: str, token: str | None) -> Client:
    # The hook uses its own token only, never a token file of the git server's user.
    return Client(server, token=token, local_token=False, retry_seconds=0)  # a push never waits for the farm


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def hook() -> None:
    """Build on pushes: a git post-receive hook that submits what the pushed commit's
    .buildfarm.yml asks for.

    \b
      buildfarm hook install /srv/git/app.git --server http://buildfarm:8080 \\
          --token "$(buildfarm token create git-hook --role submitter --hook)" \\
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
    from ..triggers.gitrepo import GitError, GitRepo

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
    command = [sys.executable, "-m", "buildfarm", "hook", "post-receive", "--server", server, "--repo-url", repo_url]
    script.write_text(f"#!/bin/sh\n{MARKER} (written by `buildfarm hook install`; run it again to change it)\n"
                      f"exec {shlex.join(command)} --token-file \"$(dirname \"$0\")/{TOKEN_FILE}\"\n")
    script.chmod(0o755)
    click.echo(f"installed {script}: pushes build on {server}, cloning {repo_url}")
    _check_token(server, token)


def _check_token(server: str, token: str | None) -> None:
    """Warn now about what would make every push print a warning later."""
    create = ("create one with `buildfarm token create git-hook --role submitter --hook` and install again "
              "with --token")
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
    elif not me.get("hook"):
        click.echo(f"warning: the token of {me['user']} was not made for a hook (--hook) and cannot record "
                   f"pushes; {create}", err=True)
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
    from ..triggers.gitrepo import GitError, GitRepo
    from ..triggers.postreceive import handle_push

    token = None
    if token_file and token_file.exists():
        token = token_file.read_text().strip() or None
    user = (os.environ.get("GL_USER") or os.environ.get("GL_USERNAME") or os.environ.get("USER")
            or getpass.getuser())
    try:
        repo = GitRepo(git_dir or os.environ.get("GIT_DIR") or ".")
        farm = _client(server, token)
    except (GitError, ClientError) as e:
        _say(f"warning: {e}; nothing queued")
        return
    handle_push(repo, farm, sys.stdin, repo_url, user, server, _say)
