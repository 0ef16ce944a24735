"""The market for capacity: credits issued to teams, borrowing paid for, and the ledger that holds it.

Each team is issued credits every period in proportion to its guarantee (one credit per cpu-hour
of guarantee). Running beyond one's guarantee on capacity another team lent (its idle
guarantee) costs credits at a price that rises with the pool's use: `price(use)` credits per
borrowed cpu-hour, 1 when the pool is idle, 10 when it is full. What the borrowers pay, the
lenders earn, in proportion to what each borrowed and lent. A team whose balance is used up runs
only within its guarantee. Capacity no team is guaranteed is free to borrow.

The ledger is append-only: entries of kind issue, charge or payment, each with its team, amount
and time; a balance is the sum of the team's entries (kept as a running sum written in the same
step as the entry). Charges and payments of a settlement sum to zero, so the credits in the farm
are exactly those issued.

Issuing and settling are the leading scheduler's: its ledger is fenced (`Ledger.fenced`), and
each issue or settlement checks the schedulers' lease in the same transaction as its writes, so a
leader paused past its lease writes nothing when it wakes. Each is a transaction over what it read
(whether the period was issued; when the last settlement ended), so two writers at once (a
deposed leader's late round next to its successor's) issue a period once and charge each second
of borrowing once: the settlement's clock only moves forward.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from .keys import BALANCES, CREDITS_ISSUED, LEDGER, SETTLED_AT, TEAM_LEDGER
from .placement import Resources, Team
from .records import Fence

log = logging.getLogger("buildfarm.market")

CREDITS_PER_CPU_HOUR = 1.0


@dataclass(frozen=True)
class Entry:
    kind: str  # issue | charge | payment
    team: str
    amount: float  # positive to the team, negative from it
    at: float
    note: str = ""


def price(pool_use: float) -> float:
    """Credits per borrowed cpu-hour: 1 when the pool is idle, rising to 10 when it is full."""
    u = min(max(pool_use, 0.0), 1.0)
    return 1.0 + 9.0 * u * u


def issue(teams: Mapping[str, Team], seconds: float, at: float) -> list[Entry]:
    """Credits for `seconds` of each team's guarantee (a period's, or what is left of it for a team
    created in its middle): its guaranteed cpus x those hours."""
    return [Entry("issue", name, round(t.guarantee.cpus * seconds / 3600 * CREDITS_PER_CPU_HOUR, 6), at,
                  f"credits for {seconds / 3600:.4g} h of a {t.guarantee.cpus:g}-cpu guarantee")
            for name, t in sorted(teams.items()) if t.guarantee.cpus > 0]


def _positions(teams: Mapping[str, Team], used: Mapping[str | None, Resources]):
    """(borrowers: cpus beyond their guarantee, lenders: cpus of idle guarantee, cpus lent: what the
    lenders' idle guarantee covers of the borrowing; the rest is capacity no team is guaranteed)."""
    borrowed = {n: used.get(n, Resources(0, 0)).cpus - t.guarantee.cpus for n, t in teams.items()}
    borrowers = {n: b for n, b in borrowed.items() if b > 1e-9}
    lenders = {n: -b for n, b in borrowed.items() if b < -1e-9}
    return borrowers, lenders, min(sum(borrowers.values()), sum(lenders.values()))


def lending(teams: Mapping[str, Team], used: Mapping[str | None, Resources]) -> list[dict[str, Any]]:
    """Who borrows from whom now: each borrower's cpus beyond its guarantee, split over the lenders
    in proportion to their idle guarantee (what the market charges and pays for). Pure."""
    borrowers, lenders, lent = _positions(teams, used)
    total_b, total_l = sum(borrowers.values()), sum(lenders.values())
    return [{"borrower": b, "lender": n, "cpus": round(lent * cpus / total_b * idle / total_l, 3)}
            for b, cpus in sorted(borrowers.items()) for n, idle in sorted(lenders.items()) if lent > 0]


def settle(teams: Mapping[str, Team], used: Mapping[str | None, Resources], pool: Resources, seconds: float,
           at: float) -> list[Entry]:
    """What borrowing cost over the last `seconds`: the borrowers' charges and the lenders'
    payments (they sum to zero). Pure."""
    borrowers, lenders, lent = _positions(teams, used)
    if lent <= 0 or seconds <= 0:
        return []
    pool_use = sum(r.cpus for r in used.values()) / pool.cpus if pool.cpus else 1.0
    cost = lent * seconds / 3600 * price(pool_use)
    entries = []
    total_b, total_l = sum(borrowers.values()), sum(lenders.values())
    for n, b in sorted(borrowers.items()):
        entries.append(Entry("charge", n, -round(cost * b / total_b, 9), at,
                             f"borrowed {b:g} cpus for {seconds:.0f} s at {price(pool_use):.2f}/cpu-hour"))
    for n, idle in sorted(lenders.items()):
        entries.append(Entry("payment", n, round(cost * idle / total_l, 9), at,
                             f"lent {round(lent * idle / total_l, 3):g} cpus of its idle guarantee for {seconds:.0f} s"))
    drift = sum(e.amount for e in entries)  # rounding: the last entry takes it, so the sum is exactly zero
    last = entries[-1]
    entries[-1] = Entry(last.kind, last.team, last.amount - drift, last.at, last.note)
    return entries


class _Deposed(Exception):
    """The fenced writer's lease is not its own any more."""


class Ledger:
    def __init__(self, r: redis.Redis, fence: Fence | None = None):
        self.r = r
        self.fence = fence

    def fenced(self, fence: Fence) -> Ledger:
        """The same ledger, for the leading scheduler: issues and settlements write nothing once
        `fence` no longer holds the schedulers' lease."""
        return Ledger(self.r, fence)

    def _transaction(self, step: Callable[[redis.client.Pipeline], Any], *watched: str) -> Any:
        """`step(pipe)` as one transaction: it reads (the `watched` keys are watched first), then
        queues its writes after `pipe.multi()`; made again if a watched key changed meanwhile.
        Fenced, the lease is watched and checked too: None, with nothing written, once it is not ours."""
        fence = self.fence

        def checked(pipe: redis.client.Pipeline) -> Any:
            if fence is not None and (fence.value is None or pipe.get(fence.key) != fence.value):
                raise _Deposed
            return step(pipe)

        try:
            return self.r.transaction(checked, *watched, *([fence.key] if fence else []), value_from_callable=True)
        except _Deposed:
            log.warning("the market's round wrote nothing: this scheduler no longer holds the lease")
            return None

    def append(self, entries: list[Entry]) -> None:
        """Write the entries and the balances they change, together (fenced: once its lease is gone, nothing)."""
        if entries:
            self._transaction(lambda pipe: (pipe.multi(), self.queue(pipe, entries)))

    @staticmethod
    def queue(pipe: redis.client.Pipeline, entries: list[Entry]) -> None:
        """Add the writes of `entries` (and of the balances they change) to a transaction."""
        for e in entries:
            raw = json.dumps(asdict(e))
            pipe.rpush(LEDGER, raw)
            pipe.rpush(TEAM_LEDGER + e.team, raw)
            pipe.hincrbyfloat(BALANCES, e.team, e.amount)

    def issue_once(self, teams: Mapping[str, Team], period_seconds: float, now: float) -> bool:
        """Issue the current period's credits to each team that has not had them (any scheduler, once
        per period and team): the whole period's to the teams there at the period's first round,
        what is left of the period to a team created later in it (so a new team need not wait up to
        a period before it can borrow). Returns whether anything was issued."""
        period = int(now // period_seconds)
        issued = CREDITS_ISSUED + str(period)
        start, end = period * period_seconds, (period + 1) * period_seconds

        def step(pipe: redis.client.Pipeline) -> bool:
            if pipe.type(issued) == "string":  # marked by an earlier version: the whole period is issued
                return False
            done = set(pipe.hkeys(issued))
            new = {name: t for name, t in teams.items() if name not in done}
            if not new:
                return False
            entries = issue(new, period_seconds, start) if not done else issue(new, max(0.0, end - now), now)
            pipe.multi()
            pipe.hset(issued, mapping={name: "1" for name in new})
            pipe.expire(issued, int(period_seconds * 48))
            self.queue(pipe, entries)
            return True

        return bool(self._transaction(step, issued))

    def settle_since_last(self, teams: Mapping[str, Team], used: Mapping[str | None, Resources], pool: Resources,
                          now: float) -> list[Entry]:
        """Charge the borrowing from the last settlement to `now` (at the usage seen now). Nothing
        when a settlement reached `now` already (another writer's clock ran ahead)."""

        def step(pipe: redis.client.Pipeline) -> list[Entry]:
            last = pipe.get(SETTLED_AT)
            if last is not None and float(last) >= now:
                return []
            # at most a minute at a time: after a pause (a restart) the usage seen now says little
            entries = settle(teams, used, pool, min(now - float(last), 60.0), now) if last else []
            pipe.multi()
            pipe.set(SETTLED_AT, repr(now))
            self.queue(pipe, entries)
            return entries

        return self._transaction(step, SETTLED_AT) or []

    def balances(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.r.hgetall(BALANCES).items()}

    def entries(self, team: str, since: float = 0.0, limit: int = 500) -> list[dict[str, Any]]:
        """The team's newest entries (at most `limit`), oldest first, from `since`."""
        raw = self.r.lrange(TEAM_LEDGER + team, -limit, -1)
        return [e for e in map(json.loads, raw) if e["at"] >= since]

    def may_borrow(self, teams: Mapping[str, Team]) -> dict[str, Team]:
        """The teams as the core sees them, with `may_borrow` False for those out of credits."""
        balance = self.balances()
        return {n: Team(t.name, t.guarantee, t.limit, t.weight, balance.get(n, 0.0) > 0) for n, t in teams.items()}
