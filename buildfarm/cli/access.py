"""`buildfarm token`, `buildfarm secret` and `buildfarm whoami`: who may do what, and the
secrets builds may ask for. Managing tokens and secrets needs an admin token."""

from __future__ import annotations

import sys
import time

import click

from ..states import ROLES
from .common import call, client, echo_json


@click.command()
@click.pass_context
def whoami(ctx):
    """Show the user and role of the token in use."""
    me = call(client(ctx).whoami)
    click.echo(f"{me['user']} ({me['role']})")


@click.group()
def token():
    """API tokens with roles: viewer (reads), submitter (also submits, cancels, rebuilds),
    admin (also manages tokens and secrets).

    \b
      buildfarm token create ci-jenkins --role submitter
      export BUILDFARM_TOKEN=...   # what the command printed, shown only once
    """


@token.command("create")
@click.argument("user")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the token may do.")
@click.option("--hook", is_flag=True, help="The token may record builds as triggered by a git push, with the "
                                          "pusher as their user: for `buildfarm hook install`.")
@click.option("--json", "as_json", is_flag=True, help="Print {user, role, hook, token} as JSON.")
@click.pass_context
def token_create(ctx, user, role, hook, as_json):
    """Create a token for USER and print it (the only time it is shown)."""
    made = call(client(ctx).create_token, user, role, hook)
    if as_json:
        echo_json(made)
        return
    click.echo(made["token"])
    click.echo(f"token for {user} ({role}{', records git pushes' if hook else ''}); it is not shown again: "
               f"keep it now", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_list(ctx, as_json):
    """List token names and roles (never the tokens)."""
    items = call(client(ctx).tokens)
    if as_json:
        echo_json(items)
        return
    for t in items:
        created = time.strftime('%Y-%m-%d %H:%M', time.localtime(t['created_at']))
        click.echo(f"{t['user']:<24} {t['role']:<10} created {created}{'  hook' if t.get('hook') else ''}")


@token.command("revoke")
@click.argument("user")
@click.pass_context
def token_revoke(ctx, user):
    """Revoke USER's token: it stops working at once."""
    call(client(ctx).revoke_token, user)
    click.echo(f"revoked {user}'s token", err=True)


@click.group()
def secret():
    """Secrets builds ask for by name (`submit --secret NAME`): given to the build as $NAME and
    masked in its log. The farm never shows a value again; it keeps it encrypted with its key
    (BUILDFARM_SECRETS_KEY, else DATA_DIR/secrets.key: back it up with the data directory).

    A secret's scope says which builds may use it: the repositories and branches they build, and
    who asks (pipelines, token roles, token users; admins always may ask). A build outside it is
    refused at submit; a webhook build of another branch is skipped. A secret with no scope is
    for admins' builds only.

    \b
      printf %s "$PASSWORD" | buildfarm secret set UPLOAD_PASSWORD \\
          --repo 'git://git.example/app*' --branch main --branch 'release/*' --pipeline release
      buildfarm secret scope UPLOAD_PASSWORD --repo 'git://git.example/app*' --user alice
    """


_DIMENSIONS = ("repos", "branches", "pipelines", "roles", "users")


def scope_options(f):
    """The scope flags of `secret set` and `secret scope`."""
    for opt, dest, meta, text in reversed((
            ("--repo", "repos", "GLOB", "a repository URL glob (fnmatch: * crosses /), e.g. 'git://git.example/app*'"),
            ("--branch", "branches", "GLOB", "a branch glob as in .buildfarm.yml (`*` one segment, `**` any, "
                                             "!excludes); builds must name a branch the farm verifies"),
            ("--pipeline", "pipelines", "NAME", "a pipeline (a file of the farm's pipelines directory)"),
            ("--role", "roles", "ROLE", f"a token role that may submit builds using it (and those above): "
                                        f"{', '.join(ROLES)}"),
            ("--user", "users", "NAME", "a token name that may submit builds using it"))):
        f = click.option(opt, dest, multiple=True, metavar=meta, help=f"{text} (repeatable).")(f)
    return f


def _scope(given: dict) -> dict[str, list[str]] | None:
    """The scope the flags give, or None when none was given."""
    scope = {k: list(given[k]) for k in _DIMENSIONS}
    return scope if any(scope.values()) else None


@secret.command("set")
@click.argument("name")
@click.option("--value-from-stdin/--prompt", default=None,
              help="Read the value from standard input [default: stdin when it is not a terminal].")
@scope_options
@click.pass_context
def secret_set(ctx, name, value_from_stdin, **scope):
    """Store secret NAME (the value from stdin, or a hidden prompt on a terminal), with the
    scope the flags give; without scope flags a secret keeps its scope (a new one has none)."""
    if value_from_stdin or (value_from_stdin is None and not sys.stdin.isatty()):
        value = sys.stdin.read().rstrip("\n")
    else:
        value = click.prompt(f"value of {name}", hide_input=True)
    stored = call(client(ctx).set_secret, name, value, _scope(scope))
    click.echo(f"stored secret {name}: usable {stored['usable']}", err=True)


@secret.command("scope")
@click.argument("name")
@scope_options
@click.option("--unscoped", is_flag=True, help="Remove the scope: then only admins' builds may use it.")
@click.pass_context
def secret_scope(ctx, name, unscoped, **scope):
    """Replace the scope of secret NAME (its value stays)."""
    given = _scope(scope)
    if bool(given) == unscoped:
        raise click.UsageError("give the scope (--repo, --branch, --pipeline, --role, --user) or --unscoped")
    stored = call(client(ctx).set_secret_scope, name, given or {})
    click.echo(f"secret {name}: usable {stored['usable']}", err=True)


@secret.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print [{name, scope, usable}] (never a value).")
@click.pass_context
def secret_list(ctx, as_json):
    """List secrets with their scopes (never their values)."""
    items = call(client(ctx).secrets)
    if as_json:
        echo_json(items)
        return
    for s in items:
        click.echo(f"{s['name']:<24} usable {s['usable']}")


@secret.command("delete")
@click.argument("name")
@click.pass_context
def secret_delete(ctx, name):
    """Delete secret NAME."""
    call(client(ctx).delete_secret, name)
    click.echo(f"deleted secret {name}", err=True)
