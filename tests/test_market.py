"""The market: credits issued in proportion to guarantees, borrowing charged at a price rising
with the pool's use and paid to the lenders, an append-only ledger whose balances are sums, and a
team out of credits kept within its guarantee by the scheduler."""

from __future__ import annotations

import pytest

from buildfarm.market import Entry, Ledger, issue, price, settle
from buildfarm.placement import Resources, Team
from buildfarm.scheduler import Scheduler
from buildfarm.scopes import Origin
from buildfarm.spec import BuildSpec
from buildfarm.teams import TeamSpec, parse_amount
from tests.test_scheduler_loop import RecordingBackend

POOL = Resources(100, 100_000)
TEAMS = {"core": Team("core", Resources(40, 40_000)), "reco": Team("reco", Resources(20, 20_000)),
         "sim": Team("sim", Resources(10, 10_000))}


def test_the_price_rises_with_the_pools_use():
    assert [price(u) for u in (0, 0.5, 1, 2)] == [1.0, 3.25, 10.0, 10.0]


def test_credits_are_issued_in_proportion_to_guarantees():
    assert [(e.team, e.amount) for e in issue(TEAMS, 1800, at=0)] == [("core", 20.0), ("reco", 10.0), ("sim", 5.0)]


@pytest.mark.parametrize("used, want", [
    # nobody beyond its guarantee: nothing to pay
    ({"core": Resources(40, 0), "reco": Resources(5, 0)}, {}),
    # reco borrows 10 cpus for an hour at 50% use (3.25/cpu-hour); core and sim lent 40 and 10 idle cpus
    ({"reco": Resources(30, 0), "core": Resources(0, 0), "sim": Resources(0, 0)} | {None: Resources(20, 0)},
     {"reco": -32.5, "core": 26.0, "sim": 6.5}),
    # two borrowers share the cost by what each borrowed (40 and 30 cpus); only the 40 core lent is paid for, at 10
    ({"reco": Resources(60, 0), "sim": Resources(40, 0)}, {"reco": -1600 / 7, "sim": -1200 / 7, "core": 400.0}),
])
def test_borrowing_is_charged_and_paid_to_the_lenders_summing_to_zero(used, want):
    entries = settle(TEAMS, used, POOL, 3600, at=1)
    got = {e.team: e.amount for e in entries}
    assert got.keys() == want.keys()
    for team, amount in want.items():
        assert got[team] == pytest.approx(amount)
    assert sum(got.values()) == 0  # exactly: credits are conserved
    assert all(e.kind == ("charge" if e.amount < 0 else "payment") for e in entries)


@pytest.fixture
def farm(make_farm):
    return make_farm(reclaim_grace=0)


def test_the_ledger_is_append_only_and_balances_are_its_sums(farm):
    ledger = Ledger(farm.r)
    assert ledger.issue_once(TEAMS, 3600, now=7300) and not ledger.issue_once(TEAMS, 3600, now=7900)
    ledger.append(settle(TEAMS, {"reco": Resources(30, 0)}, POOL, 600, at=7400))
    for team in TEAMS:
        entries = ledger.entries(team)
        assert ledger.balances()[team] == pytest.approx(sum(e["amount"] for e in entries))
        assert entries[0]["kind"] == "issue" and entries[0]["at"] == 7200
    assert sum(ledger.balances().values()) == pytest.approx(40 + 20 + 10)  # what was issued, no more


def test_a_team_out_of_credits_runs_only_within_its_guarantee(farm):
    backend = RecordingBackend()  # 2 cpus
    sched = Scheduler(farm, backend)
    for name, member in (("core", "alice"), ("idle", "bob")):
        farm.teams.create(TeamSpec(name=name, guarantee=parse_amount("cpus=1,mem=1G")))
        farm.teams.add_member(name, member)
    farm.ledger.issue_once(farm.teams.core_teams(), 3600, now=farm.r.time()[0])  # this period's credits, spent:
    farm.ledger.append([Entry("charge", "core", -5.0, 0.0, "spent earlier")])
    alice = Origin.token("alice", "submitter")
    ids = [farm.submit(BuildSpec(repo="/r", image="i", steps=["true"], resources={"cpus": 1, "mem": 256}), alice)["id"]
           for _ in range(2)]
    sched.tick()
    assert [b for b, _ in backend.launched] == ids[:1]
    assert farm.builds.get(ids[1])["reason"] == \
        "waiting: team core is out of credits and runs only within its guarantee, which is in use"


def test_who_borrows_from_whom_splits_each_borrowing_over_the_lenders():
    from buildfarm.market import lending

    used = {"reco": Resources(60, 0), "sim": Resources(40, 0)}  # core lends its 40 idle cpus to both
    assert lending(TEAMS, used) == [{"borrower": "reco", "lender": "core", "cpus": 22.857},
                                    {"borrower": "sim", "lender": "core", "cpus": 17.143}]
    assert lending(TEAMS, {"reco": Resources(20, 0)}) == []
