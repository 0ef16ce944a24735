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
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from .keys import BALANCES, CREDITS_ISSUED, LEDGER, SETTLED_AT, TEAM_LEDGER
from .placement import Resources, Team

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


def issue(teams: Mapping[str, Team], period_seconds: float, at: float) -> list[Entry]:
    """One period's credits: each team's guaranteed cpus x the period's hours."""
    return [Entry("issue", name, round(t.guarantee.cpus * period_seconds / 3600 * CREDITS_PER_CPU_HOUR, 6), at,
                  f"credits for {period_seconds / 3600:g} h of a {t.guarantee.cpus:g}-cpu guarantee")
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


class Ledger:
    def __init__(self, r: redis.Redis):
        self.r = r

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        pipe = self.r.pipeline()  # MULTI: the entries and the balances they change, together
        self.queue(pipe, entries)
        pipe.execute()

    @staticmethod
    def queue(pipe: redis.client.Pipeline, entries: list[Entry]) -> None:
        """Add the writes of `entries` (and of the balances they change) to a transaction."""
        for e in entries:
            raw = json.dumps(asdict(e))
            pipe.rpush(LEDGER, raw)
            pipe.rpush(TEAM_LEDGER + e.team, raw)
            pipe.hincrbyfloat(BALANCES, e.team, e.amount)

    def issue_once(self, teams: Mapping[str, Team], period_seconds: float, now: float) -> bool:
        """Issue the current period's credits unless they were (any scheduler, once per period)."""
        period = int(now // period_seconds)
        if not self.r.set(CREDITS_ISSUED + str(period), "1", nx=True, ex=int(period_seconds * 48)):
            return False
        self.append(issue(teams, period_seconds, period * period_seconds))
        return True

    def settle_since_last(self, teams: Mapping[str, Team], used: Mapping[str | None, Resources], pool: Resources,
                          now: float) -> list[Entry]:
        """Charge the borrowing from the last settlement to `now` (at the usage seen now)."""
        last = self.r.getset(SETTLED_AT, now)
        # at most a minute at a time: after a pause (a restart) the usage seen now says little
        entries = settle(teams, used, pool, min(now - float(last), 60.0), now) if last else []
        self.append(entries)
        return entries

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
