"""Cron schedules in an explicit time zone: which ticks fall in a window of time.

Five-field cron expressions (minute hour day month weekday) or @hourly/@daily/@weekly/
@monthly/@yearly, evaluated in an IANA time zone (croniter, with the zone's daylight saving
rules: a tick in a skipped hour moves to the hour after it, as croniter does)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

_NAMED = {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}


def cron_problem(expr: str) -> str | None:
    """Why `expr` is not a usable cron expression, or None."""
    if not isinstance(expr, str) or not expr.strip():
        return "a cron expression is a string such as \"0 11 * * *\" (minute hour day month weekday)"
    expr = expr.strip()
    if expr.startswith("@"):
        return None if expr in _NAMED else f"{expr!r} is not a cron shortcut; use one of {', '.join(sorted(_NAMED))}"
    fields = expr.split()
    if len(fields) != 5:
        return (f"{expr!r} has {len(fields)} fields; a cron expression has 5: minute hour day month weekday, "
                f"e.g. \"0 11 * * *\" for 11:00 every day")
    try:
        croniter(expr)
    except (ValueError, KeyError) as e:
        return f"{expr!r} is not a valid cron expression ({e}); e.g. \"0 11 * * *\" for 11:00 every day"
    return None


def zone_problem(name: str) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return "give the time zone, an IANA name such as Europe/Zurich or UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not a known time zone; use an IANA name such as Europe/Zurich or UTC"
    return None


@dataclass(frozen=True)
class Schedule:
    crons: tuple[str, ...]
    timezone: str

    def ticks(self, after: float, until: float, limit: int = 1000) -> list[float]:
        """Epoch times of every tick t with after < t <= until (merged over the expressions,
        at most `limit`, the earliest first)."""
        zone = ZoneInfo(self.timezone)
        start = datetime.fromtimestamp(after, zone)
        out: set[float] = set()
        for expr in self.crons:
            it = croniter(expr, start)
            while len(out) < limit * len(self.crons):
                t = it.get_next(datetime).timestamp()
                if t > until:
                    break
                if t > after:
                    out.add(t)
        return sorted(out)[:limit]

    def next_tick(self, after: float) -> float:
        zone = ZoneInfo(self.timezone)
        start = datetime.fromtimestamp(after, zone)
        return min(croniter(e, start).get_next(datetime).timestamp() for e in self.crons)

    def describe(self) -> list[str]:
        return [f"{c} {self.timezone}" for c in self.crons]
