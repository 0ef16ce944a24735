"""`buildfarm pin`, `unpin` and `gc`: keeping a build's log and artifacts past their expiry, and
deleting (or listing) what expired. `gc` needs an admin token."""

from __future__ import annotations

import click

from .common import call, client, date, echo_json, retention_text


@click.command()
@click.argument("build_id")
@click.pass_context
def pin(ctx, build_id):
    """Keep a build's log and artifacts until it is unpinned (e.g. a release's)."""
    b = call(client(ctx).pin, build_id)
    click.echo(f"build {build_id}: {retention_text(b['retention'])}")


@click.command()
@click.argument("build_id")
@click.pass_context
def unpin(ctx, build_id):
    """Let a pinned build's files expire again at their times."""
    b = call(client(ctx).unpin, build_id)
    click.echo(f"build {build_id}: {retention_text(b['retention'])}")


@click.command()
@click.option("--dry-run", is_flag=True, help="List what expired without deleting it.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def gc(ctx, dry_run, as_json):
    """Delete the logs and artifacts that expired now (the farm also does it every --gc-interval).
    Build records and their history stay."""
    result = call(client(ctx).gc, dry_run)
    if as_json:
        echo_json(result)
        return
    for i in result["items"]:
        click.echo(f"{i['build']:<13} {i['what']:<10} {i['bytes']:>12} bytes  expired {date(i['due'])}")
    click.echo(result["summary"] if result["items"] else "gc: nothing has expired", err=True)
