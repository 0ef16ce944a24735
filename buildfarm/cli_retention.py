"""`buildfarm pin`, `unpin` and `gc`: keeping a build's log and artifacts past their expiry, and
deleting (or listing) what expired. `gc` needs an admin token."""

from __future__ import annotations

import json
import time

import click

from .cli import _api, _client, _retention


def _date(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@click.command()
@click.argument("build_id")
@click.pass_context
def pin(ctx, build_id):
    """Keep a build's log and artifacts until it is unpinned (e.g. a release's)."""
    b = _api(_client(ctx).pin, build_id)
    click.echo(f"build {build_id}: {_retention(b['retention'])}")


@click.command()
@click.argument("build_id")
@click.pass_context
def unpin(ctx, build_id):
    """Let a pinned build's files expire again at their times."""
    b = _api(_client(ctx).unpin, build_id)
    click.echo(f"build {build_id}: {_retention(b['retention'])}")


@click.command()
@click.option("--dry-run", is_flag=True, help="List what expired without deleting it.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def gc(ctx, dry_run, as_json):
    """Delete the logs and artifacts that expired now (the farm also does it every --gc-interval).
    Build records and their history stay."""
    result = _api(_client(ctx).gc, dry_run)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for i in result["items"]:
        click.echo(f"{i['build']:<13} {i['what']:<10} {i['bytes']:>12} bytes  expired {_date(i['due'])}")
    click.echo(result["summary"] if result["items"] else "gc: nothing has expired", err=True)
