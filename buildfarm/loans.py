"""Direct loans between teams: `buildfarm team lend core --to reco --cpus 8 --until 18:00 [--price N]`
moves part of a team's guarantee to another until a time (memory with the cpus in the lender's
proportion, unless `--mem` says how much). The scheduler sees the moved guarantees
while a loan runs (`with_loans`, pure) and the original ones once it ended. A loan with a price
is paid when it is made: the borrower's credits to the lender, as `loan` entries in the ledger.
A loan the lender's guarantee cannot cover next to its other loans, or one the borrower cannot
pay for, is refused.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field

from .keys import BALANCES, LOANS, TEAMS
from .market import Entry, Ledger
from .placement import Resources, Team
from .teams import TeamError, TeamStore



class Loan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lender: str
    borrower: str
    cpus: float = Field(..., gt=0, le=1_000_000)
    mem: int = Field(0, ge=0, description="MB")
    start: float
    until: float
    price: float = Field(0.0, ge=0, description="credits the borrower pays the lender, once")
    id: str = ""

    def runs(self, now: float) -> bool:
        return self.start <= now < self.until


def with_loans(teams: Mapping[str, Team], loans: Iterable[Loan], now: float) -> dict[str, Team]:
    """The teams' guarantees with the loans running at `now` moved from lender to borrower. Pure."""
    delta: dict[str, Resources] = {}
    for loan in loans:
        if loan.runs(now) and loan.lender in teams and loan.borrower in teams:
            moved = Resources(loan.cpus, loan.mem)
            delta[loan.lender] = delta.get(loan.lender, Resources(0, 0)).minus(moved)
            delta[loan.borrower] = delta.get(loan.borrower, Resources(0, 0)).plus(moved)
    return {n: t if n not in delta else Team(t.name, t.guarantee.plus(delta[n]), t.limit, t.weight, t.may_borrow)
            for n, t in teams.items()}


def parse_until(text: str, now: float) -> float:
    """'18:00' (the next such local time), '2h' / '30m' / '1d' from now, or epoch seconds."""
    text = text.strip()
    if text.replace(".", "", 1).isdigit() and float(text) > 10**9:
        return float(text)
    unit = {"m": 60, "h": 3600, "d": 86400}.get(text[-1:])
    if unit and text[:-1].replace(".", "", 1).isdigit():
        return now + float(text[:-1]) * unit
    try:
        hh, mm = (int(x) for x in text.split(":"))
        at = datetime.datetime.fromtimestamp(now).replace(hour=hh, minute=mm, second=0, microsecond=0)
    except ValueError:
        raise ValueError(f"until {text!r}: write a time of day (18:00), a duration (2h, 30m, 1d) or "
                         f"epoch seconds") from None
    if at.timestamp() <= now:
        at += datetime.timedelta(days=1)
    return at.timestamp()


class LoanStore:
    def __init__(self, r: redis.Redis, teams: TeamStore, ledger: Ledger):
        self.r, self.teams, self.ledger = r, teams, ledger

    def all(self, now: float | None = None) -> list[Loan]:
        """Loans not ended yet (ended ones are dropped here)."""
        now = time.time() if now is None else now
        stored = self._stored()
        ended = [loan_id for loan_id, loan in stored.items() if loan.until <= now]
        if ended:
            self.r.hdel(LOANS, *ended)
        return _running(stored.values(), now)

    def _stored(self) -> dict[str, Loan]:
        return {loan_id: Loan.model_validate_json(raw) for loan_id, raw in self.r.hgetall(LOANS).items()}

    def lend(self, lender: str, borrower: str, cpus: float, mem: int, until: float, price: float,
             now: float) -> dict[str, Any]:
        """Make a loan, or refuse it saying why. The checks (the lender's guarantee next to its other
        loans, the borrower's credits) and the writes (the loan, its payment) are one transaction:
        it is made again from the start if a team, a loan or a balance changed meanwhile, so two
        lends at the same moment cannot together lend more than the guarantee."""
        if lender == borrower:
            raise TeamError("a team cannot lend to itself")

        def attempt(pipe: redis.client.Pipeline) -> Loan:
            # the keys are watched before this runs: a write to one after the reads fails the EXEC
            loan = self._checked(lender, borrower, cpus, mem, until, price, now)
            pipe.multi()
            pipe.hset(LOANS, loan.id, loan.model_dump_json())
            if price:
                note = f"loan {loan.id}: {cpus:g} cpus from {lender} to {borrower} until {time.ctime(until)}"
                self.ledger.queue(pipe, [Entry("loan", borrower, -price, now, note),
                                         Entry("loan", lender, price, now, note)])
            return loan

        loan = self.r.transaction(attempt, TEAMS, LOANS, BALANCES, value_from_callable=True)
        return json.loads(loan.model_dump_json())

    def _checked(self, lender: str, borrower: str, cpus: float, mem: int, until: float, price: float,
                 now: float) -> Loan:
        """The loan asked for, once the teams, the lender's other loans and the borrower's credits
        allow it (read inside `lend`'s transaction); TeamError saying why not."""
        own = self.teams.get(lender)
        self.teams.get(borrower)  # both must exist
        if until <= now:
            raise TeamError("the loan would end before it starts: give a later --until")
        guarantee = own["guarantee"]
        if not mem and guarantee.get("cpus") and guarantee.get("mem"):  # its share of the lender's memory
            mem = int(guarantee["mem"] * min(cpus / guarantee["cpus"], 1.0))
        others = [x for x in _running(self._stored().values(), now) if x.lender == lender]
        lent = sum(x.cpus for x in others)
        if lent + cpus > (guarantee.get("cpus") or 0) + 1e-9:
            raise TeamError(f"team {lender} guarantees {guarantee.get('cpus') or 0:g} cpus" +
                            (f" and lends {lent:g} already: it cannot lend {cpus:g} more until those loans end"
                             if lent else f": it cannot lend {cpus:g}"), 409)
        lent_mem = sum(x.mem for x in others)
        if mem and lent_mem + mem > (guarantee.get("mem") or 0):
            raise TeamError(f"team {lender} guarantees {guarantee.get('mem') or 0} MB" +
                            (f" and lends {lent_mem} MB already: it cannot lend {mem} MB more" if lent_mem
                             else f": it cannot lend {mem} MB"), 409)
        balance = self.ledger.balances().get(borrower, 0.0)
        if price and balance < price:
            raise TeamError(f"team {borrower} has {balance:.2f} credits, fewer than the loan's price of {price:g}", 409)
        return Loan(lender=lender, borrower=borrower, cpus=cpus, mem=mem, start=now, until=until, price=price,
                    id=uuid.uuid4().hex[:10])


def _running(loans: Iterable[Loan], now: float) -> list[Loan]:
    """The loans not ended yet at `now`, oldest first."""
    return sorted((x for x in loans if x.until > now), key=lambda x: (x.start, x.id))
