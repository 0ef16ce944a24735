"""Direct loans between teams: guarantee moved from lender to borrower for a time, honoured by
the scheduler and ended on time; priced loans paid in the ledger; conflicting loans refused."""

from __future__ import annotations

import datetime
import threading
import time

import pytest

from buildfarm.backends.base import Exit
from buildfarm.loans import LOANS, Loan, parse_until, with_loans
from buildfarm.market import Entry
from buildfarm.placement import Resources, Team
from buildfarm.scheduler import Scheduler
from buildfarm.scopes import Origin
from buildfarm.spec import BuildSpec
from buildfarm.states import State
from buildfarm.teams import TeamError, TeamSpec, parse_amount
from tests.test_scheduler_loop import RecordingBackend

TEAMS = {"core": Team("core", Resources(16, 16384)), "reco": Team("reco", Resources(4, 4096))}


def loan(cpus, start=0, until=100, lender="core", borrower="reco", mem=0):
    return Loan(lender=lender, borrower=borrower, cpus=cpus, mem=mem, start=start, until=until)


@pytest.mark.parametrize("loans, now, core, reco", [
    ([], 50, 16, 4),
    ([loan(8)], 50, 8, 12),
    ([loan(8), loan(4)], 50, 4, 16),
    ([loan(8)], 100, 16, 4),  # ended on time
    ([loan(8, start=60)], 50, 16, 4),  # not begun
    ([loan(8, borrower="gone")], 50, 16, 4),  # a deleted team: nothing moves
])
def test_running_loans_move_guarantee_from_lender_to_borrower(loans, now, core, reco):
    got = with_loans(TEAMS, loans, now)
    assert (got["core"].guarantee.cpus, got["reco"].guarantee.cpus) == (core, reco)


def test_until_is_a_time_of_day_a_duration_or_epoch_seconds():
    now = datetime.datetime(2026, 12, 4, 17, 0).timestamp()
    assert parse_until("18:00", now) == now + 3600
    assert parse_until("16:00", now) == now + 23 * 3600  # the next 16:00: tomorrow
    assert parse_until("2h", now) == now + 7200
    assert parse_until("1900000000", now) == 1900000000
    with pytest.raises(ValueError, match="write a time of day"):
        parse_until("teatime", now)


@pytest.fixture
def farm(make_farm):
    f = make_farm(reclaim_grace=0)
    for name, g, member in (("core", "cpus=2,mem=2G", "alice"), ("reco", "cpus=0", "bob")):
        f.teams.create(TeamSpec(name=name, guarantee=parse_amount(g)))
        f.teams.add_member(name, member)
    return f


def test_conflicting_and_unpaid_loans_are_refused(farm):
    farm.loans.lend("core", "reco", 1.5, 0, until=2000, price=0, now=1000)
    with pytest.raises(TeamError, match="team core guarantees 2 cpus and lends 1.5 already: it cannot lend 1 more"):
        farm.loans.lend("core", "reco", 1, 0, until=2000, price=0, now=1000)
    with pytest.raises(TeamError, match="team reco has 0.00 credits, fewer than the loan's price of 5"):
        farm.loans.lend("core", "reco", 0.5, 0, until=2000, price=5, now=1000)
    with pytest.raises(TeamError, match="no team named 'nope'"):
        farm.loans.lend("core", "nope", 0.5, 0, until=2000, price=0, now=1000)
    with pytest.raises(TeamError, match="would end before it starts"):
        farm.loans.lend("core", "reco", 0.5, 0, until=900, price=0, now=1000)
    assert [x.cpus for x in farm.loans.all(now=1500)] == [1.5]
    assert farm.loans.all(now=2000) == []  # ended: gone
    farm.loans.lend("core", "reco", 2, 0, until=3000, price=0, now=2000)  # the guarantee is free again


def test_a_priced_loan_is_paid_in_the_ledger(farm):
    farm.ledger.append([Entry("issue", "reco", 10.0, 0)])
    farm.loans.lend("core", "reco", 1, 0, until=2000, price=4, now=1000)
    assert farm.ledger.balances() == {"reco": 6.0, "core": 4.0}
    assert [(e["kind"], e["amount"]) for e in farm.ledger.entries("core")] == [("loan", 4.0)]


def test_the_scheduler_honours_a_loan_and_ends_it_on_time(farm):
    backend = RecordingBackend()
    sched = Scheduler(farm, backend)
    bob = Origin.token("bob", "submitter")

    def submit():  # non-preemptible: it runs only within reco's guarantee (none of its own)
        return farm.submit(BuildSpec(repo="/r", image="i", steps=["true"], resources={"cpus": 1, "mem": 256},
                                     preemptible=False), bob)["id"]
    first = submit()
    sched.tick()
    assert backend.launched == [] and farm.builds.get(first)["reason"].startswith("waiting: a non-preemptible")
    made = farm.loans.lend("core", "reco", 1, 0, until=time.time() + 3600, price=0, now=time.time())
    sched.tick()
    assert backend.launched == [(first, 1)]
    farm.end(first, State.SUCCEEDED, "done")
    sched.on_exit(Exit(first, 1, 0, ""))
    farm.r.hset(LOANS, made["id"], Loan(**{**made, "until": time.time() - 1}).model_dump_json())  # it ended
    second = submit()  # with the loan still running, it would start: reco's guarantee is free
    sched.tick()
    assert backend.launched == [(first, 1)] and farm.builds.get(second)["state"] == "queued"


def test_lends_made_at_the_same_moment_never_lend_more_than_the_guarantee(farm, make_farm):
    """Eight members of core lend 1 cpu each at the same moment, from farms of their own (each with
    its own connections to the same Redis), round after round: core guarantees 2 cpus, so exactly
    two lends of each round are made and the others are refused saying why."""
    lenders = [make_farm(join=True) for _ in range(8)]
    start = threading.Barrier(len(lenders))
    for round_ in range(30):
        farm.r.delete(LOANS)
        made, refused = [], []

        def lend(f):
            start.wait()
            try:
                made.append(f.loans.lend("core", "reco", 1, 0, until=2000, price=0, now=1000))
            except TeamError as e:
                refused.append(str(e))

        threads = [threading.Thread(target=lend, args=(f,)) for f in lenders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lent = farm.loans.all(now=1500)
        assert sum(x.cpus for x in lent) <= 2, f"round {round_}: core lent {sum(x.cpus for x in lent):g} of 2 cpus"
        assert (len(made), len(lent)) == (2, 2)
        assert len(refused) == 6 and all("it cannot lend 1 more" in m for m in refused)
        assert sum(x.mem for x in lent) <= 2048
