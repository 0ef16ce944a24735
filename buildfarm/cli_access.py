"""`buildfarm token`, `buildfarm secret` and `buildfarm whoami`: who may do what, and the
secrets builds may ask for. Managing tokens and secrets needs an admin token."""

from __future__ import annotations

import json
import sys
import time

import click

from .auth import ROLES
from .cli import _api, _client


@click.command()
@click.pass_context
def whoami(ctx):
    """Show the user and role of the token in use."""
    me = _api(_client(ctx).whoami)
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
@click.option("--json", "as_json", is_flag=True, help="Print {user, role, token} as JSON.")
@click.pass_context
def token_create(ctx, user, role, as_json):
    """Create a token for USER and print it (the only time it is shown)."""
    made = _api(_client(ctx).create_token, user, role)
    if as_json:
        click.echo(json.dumps(made, indent=2))
        return
    click.echo(made["token"])
    click.echo(f"token for {user} ({role}); it is not shown again: keep it now", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_list(ctx, as_json):
    """List token names and roles (never the tokens)."""
    items = _api(_client(ctx).tokens)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for t in items:
        click.echo(f"{t['user']:<24} {t['role']:<10} created {time.strftime('%Y-%m-%d %H:%M', time.localtime(t['created_at']))}")


@token.command("revoke")
@click.argument("user")
@click.pass_context
def token_revoke(ctx, user):
    """Revoke USER's token: it stops working at once."""
    _api(_client(ctx).revoke_token, user)
    click.echo(f"revoked {user}'s token", err=True)


@click.group()
def secret():
    """Secrets builds ask for by name (`submit --secret NAME`): given to the build as $NAME and
    masked in its log. The farm never shows a value again; it keeps it encrypted with its key
    (BUILDFARM_SECRETS_KEY, else DATA_DIR/secrets.key: back it up with the data directory).

    \b
      printf %s "$PASSWORD" | buildfarm secret set UPLOAD_PASSWORD
    """


@secret.command("set")
@click.argument("name")
@click.option("--value-from-stdin/--prompt", default=None,
              help="Read the value from standard input [default: stdin when it is not a terminal].")
@click.pass_context
def secret_set(ctx, name, value_from_stdin):
    """Store secret NAME (the value from stdin, or a hidden prompt on a terminal)."""
    if value_from_stdin or (value_from_stdin is None and not sys.stdin.isatty()):
        value = sys.stdin.read().rstrip("\n")
    else:
        value = click.prompt(f"value of {name}", hide_input=True)
    _api(_client(ctx).set_secret, name, value)
    click.echo(f"stored secret {name}", err=True)


@secret.command("list")
@click.pass_context
def secret_list(ctx):
    """List secret names."""
    for n in _api(_client(ctx).secrets):
        click.echo(n)


@secret.command("delete")
@click.argument("name")
@click.pass_context
def secret_delete(ctx, name):
    """Delete secret NAME."""
    _api(_client(ctx).delete_secret, name)
    click.echo(f"deleted secret {name}", err=True)
