"""What every `buildfarm` command shares: the client built from --server and --token, how a failed
API call ends the command (message and exit code), JSON output, and how times are shown.

Exit codes (the README's table): 0 succeeded; a failed build's own code; 124 timed out; 125
infrastructure error, the farm unreachable included; 130 cancelled; 2 a bad command line or input
(EXIT_USAGE); 77 the token is missing, invalid, or its role does not allow the command.

Imports stay light here (click and the client only): every command imports this module.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, NoReturn

import click

from ..client import Client, ClientError
from ..states import EXIT_INFRA_ERROR

EXIT_USAGE = 2
EXIT_NOPERM = 77  # sysexits' EX_NOPERM


def client(ctx: click.Context) -> Client:
    """The client for the farm the top-level --server and --token name."""
    obj = ctx.find_root().obj or {}
    try:
        return Client(obj.get("server"), obj.get("token"))
    except ClientError as e:
        raise click.UsageError(str(e)) from None


def fail(e: ClientError) -> NoReturn:
    """End the command with the farm's message and the exit code that says what went wrong."""
    click.echo(f"error: {e}", err=True)
    if e.infrastructure:
        sys.exit(EXIT_INFRA_ERROR)
    if e.status in (401, 403):
        sys.exit(EXIT_NOPERM)
    sys.exit(EXIT_USAGE if e.status in (400, 404, 409, 422) else 1)


def call(method, *args, **kwargs):
    """One API call (a Client method); a ClientError ends the command with its message and exit code."""
    try:
        return method(*args, **kwargs)
    except ClientError as e:
        fail(e)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def confirm(value: Any, as_json: bool, message: str) -> None:
    """What a command that changes something prints: the farm's answer as JSON with --json (for
    scripts), otherwise one line saying what was done, on stderr."""
    if as_json:
        echo_json(value)
    else:
        click.echo(message, err=True)


def duration(secs: float | None) -> str:
    """12s, 3m04s, 2h05m; "-" when unknown."""
    if secs is None:
        return "-"
    secs = int(secs)
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"


def ago(t: float | None) -> str:
    return duration(time.time() - t) + " ago" if t else "-"


def key_values(pairs: tuple[str, ...] | list[str], option: str) -> dict[str, str]:
    """['K=V', ...] from repeated options into a dict; a pair without '=' is a usage error."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.UsageError(f"{option} {pair!r}: write KEY=VALUE")
        k, v = pair.split("=", 1)
        out[k.strip()] = v
    return out


def date(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def retention_text(r: dict) -> str:
    """What retention does with a build's log and artifacts (its record's `retention`), in a few words."""
    def one(what: str, due: float | None, gone: float | None) -> str:
        if gone:
            return f"{what} expired {date(gone)}"
        return f"{what} until {date(due)}" if due else f"{what} kept"

    if r.get("pinned_by"):
        return f"pinned by {r['pinned_by']} (log and artifacts kept)"
    return ", ".join((one("log", r.get("log_expires_at"), r.get("log_expired_at")),
                      one("artifacts", r.get("artifacts_expire_at"), r.get("artifacts_expired_at"))))
