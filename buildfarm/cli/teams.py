"""`buildfarm team` and `buildfarm usage`: who shares the pool, and what builds used.
Managing teams needs an admin token; reading them and the usage, a viewer's."""

from __future__ import annotations

import click

from ..usage import BY
from .common import call, client, confirm, date, echo_json


def _amount(ctx, param, value):
    if value is None:
        return None
    from ..teams import parse_amount

    try:
        return parse_amount(value).model_dump(exclude_none=True)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _shown(amount: dict | None) -> str:
    """An amount as cpus=N,mem=SIZE; an unset part is left out."""
    if not amount:
        return "none"
    parts = ([f"cpus={amount['cpus']:g}"] if amount.get("cpus") is not None else []) + \
            ([f"mem={amount['mem']}M"] if amount.get("mem") is not None else [])
    return ",".join(parts) or "none"


@click.group()
def team():
    """Teams share the farm: each has a guarantee (its own share of the pool, lent to others while
    idle, taken back when its builds arrive), an optional limit, a weight in fair share, and
    members (API token names). Every build is charged to a team.

    \b
      buildfarm team create reco --guarantee cpus=16,mem=64G --limit cpus=64 --weight 2
      buildfarm team add-member reco alice
    """


@team.command("create")
@click.argument("name")
@click.option("--guarantee", callback=_amount, required=True, metavar="cpus=N,mem=SIZE",
              help="Its own share of the pool, e.g. cpus=16,mem=64G.")
@click.option("--limit", callback=_amount, metavar="cpus=N,mem=SIZE",
              help="The most it may hold, loans included [default: the whole pool].")
@click.option("--weight", type=click.FloatRange(min=0, min_open=True, max=1000), default=1.0, show_default=True,
              help="Its weight in fair share.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def team_create(ctx, name, guarantee, limit, weight, as_json):
    """Create team NAME."""
    made = call(client(ctx).create_team, {"name": name, "guarantee": guarantee, "limit": limit, "weight": weight})
    confirm(made, as_json, f"team {made['name']} created")


@team.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True,
              help="Delete it although builds are charged to it: its queued builds are cancelled, its running "
                   "ones run to their end.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def team_delete(ctx, name, force, as_json):
    """Delete team NAME. Refused while it has queued or running builds (they are named), unless
    --force."""
    done = call(client(ctx).delete_team, name, force)
    confirm(done, as_json, f"team {name} deleted")
    if as_json:
        return
    if done["cancelled"]:
        click.echo(f"its queued builds were cancelled: {', '.join(done['cancelled'])}", err=True)
    if done["running"]:
        click.echo(f"its running builds run to their end: {', '.join(done['running'])}", err=True)


@team.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def team_list(ctx, as_json):
    """List the teams with their guarantee, limit, weight and members."""
    items = call(client(ctx).teams)
    if as_json:
        echo_json(items)
        return
    for t in items:
        click.echo(f"{t['name']:<16} guarantee {_shown(t['guarantee'])}  limit {_shown(t['limit'])}  weight {t['weight']:g}  "
                   f"members {', '.join(t['members']) or '-'}")


@team.command("add-member")
@click.argument("name")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print the team as it is now.")
@click.pass_context
def team_add_member(ctx, name, user, as_json):
    """Add USER (an API token's name) to team NAME."""
    got = call(client(ctx).add_member, name, user)
    confirm(got, as_json, f"{user} is a member of team {name}")


@team.command("remove-member")
@click.argument("name")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print the team as it is now.")
@click.pass_context
def team_remove_member(ctx, name, user, as_json):
    """Remove USER from team NAME."""
    got = call(client(ctx).remove_member, name, user)
    confirm(got, as_json, f"{user} is no longer a member of team {name}")


@team.command("lend")
@click.argument("name")
@click.option("--to", "borrower", required=True, help="The team that borrows.")
@click.option("--cpus", type=click.FloatRange(min=0, min_open=True), required=True, help="Cpus of guarantee lent.")
@click.option("--mem", "mem_size", metavar="SIZE", help="Memory of guarantee lent with them, e.g. 32G [default: the lender's memory per cpu].")
@click.option("--until", required=True, help="When it ends: a time of day (18:00), a duration (2h) or epoch seconds.")
@click.option("--price", type=click.FloatRange(min=0), default=0, help="Credits the borrower pays, once.")
@click.option("--json", "as_json", is_flag=True, help="Print the loan made.")
@click.pass_context
def team_lend(ctx, name, borrower, cpus, mem_size, until, price, as_json):
    """Lend part of team NAME's guarantee to another team until a time."""
    import time

    from ..loans import parse_until
    from ..teams import parse_amount

    now = time.time()
    try:
        ends = parse_until(until, now)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--until'") from None
    if ends <= now:
        raise click.BadParameter(f"{until} is {date(ends)}, in the past: give a later time", param_hint="'--until'")
    try:
        mem = parse_amount(f"mem={mem_size}").mem if mem_size else 0
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--mem'") from None
    loan = call(client(ctx).lend, name, {"to": borrower, "cpus": cpus, "mem": mem, "until": ends, "price": price})
    confirm(loan, as_json, f"team {name} lends {cpus:g} cpus to {borrower} until {date(loan['until'])} (loan {loan['id']})")


@team.command("ledger")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def team_ledger(ctx, name, as_json):
    """Team NAME's credits: its balance and its ledger (issues, charges for borrowing, payments
    for lending)."""
    got = call(client(ctx).ledger, name)
    if as_json:
        echo_json(got)
        return
    for e in got["entries"]:
        click.echo(f"{date(e['at'])}  {e['kind']:<8} {e['amount']:>+12.3f}  {e['note']}")
    click.echo(f"balance {got['balance']:.3f} credits")


@click.command()
@click.option("--team", help="Only this team's builds.")
@click.option("--since", default="7d", show_default=True, help="How far back: 30m, 12h, 7d, 2w.")
@click.option("--by", type=click.Choice(BY), default="team", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def usage(ctx, team, since, by, as_json):
    """What builds used: reserved cpu-hours and memory (GB-hours), summed by team, user, pipeline
    or trigger."""
    got = call(client(ctx).usage, since, by, team)
    if as_json:
        echo_json(got)
        return
    click.echo(f"{by:<20} {'builds':>7} {'hours':>9} {'cpu-hours':>10} {'GB-hours':>10}")
    for r in got["rows"]:
        click.echo(f"{r[by]:<20} {r['builds']:>7} {r['seconds'] / 3600:>9.2f} {r['cpu_seconds'] / 3600:>10.2f} "
                   f"{r['mem_mb_seconds'] / 1024 / 3600:>10.2f}")
