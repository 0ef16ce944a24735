"""The market: credits issued in proportion to guarantees, borrowing charged at a price rising
with the pool's use and paid to the lenders, an append-only ledger whose balances are sums, and a
team out of credits kept within its guarantee by the scheduler."""

from __future__ import annotations

import threading
import time

import pytest

from buildfarm.keys import CREDITS_ISSUED, LEASE, LEDGER, SETTLED_AT
from buildfarm.lease import Lease
from buildfarm.leadership import ElectedScheduler
from buildfarm.market import Entry, Ledger, issue, price, settle
from buildfarm.placement import Resources, Team
from buildfarm.scheduler import Scheduler
from buildfarm.scopes import Origin
from buildfarm.spec import BuildSpec
from buildfarm.teams import TeamSpec, parse_amount
from tests.conftest import wait_until
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


def test_a_team_created_in_the_middle_of_a_period_gets_what_is_left_of_it_once(farm):
    ledger = Ledger(farm.r)
    first = {"core": TEAMS["core"]}
    assert ledger.issue_once(first, 3600, now=7300)  # core: the whole period from 7200, 40 cpu-hours
    assert ledger.issue_once(TEAMS, 3600, now=9900)  # reco and sim came at 9900: 900 s of the period left
    assert not ledger.issue_once(TEAMS, 3600, now=10000)  # once per period and team
    assert ledger.balances() == pytest.approx({"core": 40.0, "reco": 20 * 0.25, "sim": 10 * 0.25})
    assert [(e["at"], e["amount"]) for e in ledger.entries("reco")] == [(9900, 5.0)]
    assert ledger.issue_once(TEAMS, 3600, now=10800)  # the next period: everyone's whole credits
    assert ledger.balances()["reco"] == pytest.approx(25.0)


def test_a_period_an_earlier_version_issued_is_not_issued_again(farm):
    farm.r.set(CREDITS_ISSUED + "2", "1")  # how the marker was kept before it named the teams
    ledger = Ledger(farm.r)
    assert not ledger.issue_once(TEAMS, 3600, now=7300) and ledger.balances() == {}
    assert ledger.issue_once(TEAMS, 3600, now=10800)


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


def market_rounds(farm, nows, start):
    """What each scheduler's round does to the market, at the given times: issue the period's
    credits (once per period), then charge the borrowing since the last settlement."""
    start.wait()
    used = {"reco": Resources(30, 0), "core": Resources(0, 0), "sim": Resources(0, 0)}
    for now in nows:
        farm.ledger.issue_once(TEAMS, 3600, now)
        farm.ledger.settle_since_last(TEAMS, used, POOL, now)


def test_two_farms_settling_at_once_charge_each_second_once_and_conserve_credits(farm, make_farm):
    """Two farms (their own connections to one Redis) run market rounds at the same moments, as two
    schedulers would: every second of borrowing is charged once, each payment matches its charge,
    and each period's credits are issued once."""
    other = make_farm(join=True)
    t0 = 3600 * 1000 - 700  # the rounds cross into a new period
    nows = [t0 + i for i in range(1500)]
    start = threading.Barrier(2)
    threads = [threading.Thread(target=market_rounds, args=(f, nows, start)) for f in (farm, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    ledger = farm.ledger
    entries = [e for team in TEAMS for e in ledger.entries(team, limit=10_000)]
    issued = [e for e in entries if e["kind"] == "issue"]
    assert sorted((e["at"], e["team"]) for e in issued) == \
        sorted((p * 3600.0, team) for p in (999, 1000) for team in TEAMS)  # each period once
    moved = [e for e in entries if e["kind"] in ("charge", "payment")]
    assert sum(e["amount"] for e in moved) == pytest.approx(0, abs=1e-9)  # what reco paid, core and sim earned
    # reco borrowed 10 cpus (of core's and sim's 50 idle) at 30% use, from t0 to the last round: once
    per_second = 10 * price(0.3) / 3600
    charged = -sum(e["amount"] for e in moved if e["kind"] == "charge")
    assert charged == pytest.approx(per_second * (nows[-1] - nows[0]))
    for team in TEAMS:  # balances are the sums of the entries
        assert ledger.balances()[team] == pytest.approx(sum(e["amount"] for e in entries if e["team"] == team))


# -- the market's round is the leading scheduler's --------------------------------------------------

def test_a_deposed_leaders_market_round_issues_and_charges_nothing(farm):
    """Two schedulers on one Redis. The leader's rounds issue credits and charge core's borrowing;
    a standby takes the lease and charges from there; the former leader, paused past its lease and
    believing it still leads, wakes with its clock behind its successor's: its round writes nothing
    (before, it set the settlement's clock back, and its successor charged those seconds again)."""
    for name, user in (("core", "alice"), ("reco", "bob")):
        farm.teams.create(TeamSpec(name=name, guarantee=parse_amount("cpus=1,mem=1G")))
        farm.teams.add_member(name, user)
    old = Lease(farm.r, ttl=5)
    assert old.try_acquire()
    backend = RecordingBackend()  # 2 cpus
    a = Scheduler(farm, backend, old)
    a.tick()  # publishes the agent
    alice = Origin.token("alice", "submitter")
    for _ in range(2):  # core's: 2 cpus, one of them reco's idle guarantee
        farm.submit(BuildSpec(repo="/r", image="i", steps=["true"], resources={"cpus": 1, "mem": 256}), alice)
    a.tick()
    assert len(backend.launched) == 2
    t0 = (int(time.time() // 3600) + 10) * 3600 + 10  # later than any round's own clock so far
    a.teams_round(t0)
    a.teams_round(t0 + 30)

    farm.r.delete(LEASE)  # the TTL ran out while it was paused
    new = Lease(farm.r, ttl=5)
    assert new.try_acquire()
    b = Scheduler(farm, RecordingBackend(), new)
    b.teams_round(t0 + 60)
    old.deadline = time.monotonic() + 60  # its own clock says the lease is still good
    assert a.leading()
    written = farm.r.llen(LEDGER)
    a.teams_round(t0 + 45)
    a.teams_round(t0 + 3600)  # the next period's credits: not its to issue either
    assert farm.r.llen(LEDGER) == written
    b.teams_round(t0 + 90)

    charged = -sum(e["amount"] for e in farm.ledger.entries("core") if e["kind"] == "charge" and e["at"] > t0)
    assert charged == pytest.approx(90 * price(1.0) / 3600)  # 1 cpu borrowed for 90 s, once, the pool full
    paid = sum(e["amount"] for e in farm.ledger.entries("reco") if e["kind"] == "payment" and e["at"] > t0)
    assert paid == pytest.approx(charged)
    issued = [e["at"] for e in farm.ledger.entries("reco") if e["kind"] == "issue"]
    assert t0 - 10 in issued and t0 - 10 + 3600 not in issued


def test_a_standby_runs_no_market_round_and_takes_it_over_when_it_leads(make_farm):
    """Two elected schedulers, each with its farm (own connections) on one Redis: only the leader
    has a scheduling loop, so only it issues and settles; when it stops, the standby leads and the
    settlement goes on from its rounds."""
    farms = [make_farm(), make_farm(join=True)]
    farms[0].teams.create(TeamSpec(name="core", guarantee=parse_amount("cpus=1,mem=1G")))
    electeds = [ElectedScheduler(f, lambda *_: RecordingBackend(), lease_ttl=1) for f in farms]
    threads = [threading.Thread(target=e.run) for e in electeds]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: farms[0].r.get(SETTLED_AT), 15, what="a first market round")
        first, = [e for e in electeds if e.lease.held()]
        standby, = [e for e in electeds if e is not first]
        wait_until(lambda: first.scheduler is not None, 15, what="the leader's loop")
        assert standby.scheduler is None and not standby.lease.held()
        assert len(farms[0].ledger.entries("core")) == 1  # this period's credits, issued once
        first.stop()
        settled = float(farms[0].r.get(SETTLED_AT))
        wait_until(lambda: standby.scheduler is not None, 15, what="the standby leading")
        wait_until(lambda: float(farms[0].r.get(SETTLED_AT)) > settled, 15, what="the successor settling")
        assert len(farms[0].ledger.entries("core")) == 1
    finally:
        for e in electeds:
            e.stop()
        for t in threads:
            t.join(10)
