"""Teams in the pure placement core: a team's limit and guarantee as feasibility, weighted DRF as
the ranking, one reservation per team, and reclaim's kills next to the launches. Table tests."""

from __future__ import annotations

import pytest

from buildfarm.placement import Agent, Offer, PendingBuild, Policy, Resources, Running, Team, plan
from buildfarm.placement.feasible import beyond_limit, team_holds
from buildfarm.placement.rank import FairOrder, dominant_share
from buildfarm.placement.reclaim import borrowed

POOL = Resources(16, 16384)


def R(cpus, mem=1024):
    return Resources(cpus, mem)


def build(bid, team=None, cpus=1, mem=1024, priority=1, seq=0, queued_at=0.0, preemptible=True):
    return PendingBuild(bid, R(cpus, mem), (), priority, seq, team=team, queued_at=queued_at, preemptible=preemptible)


def run(bid, team, agent="a0", cpus=1, mem=1024, started=0.0, preemptible=True, preemptions=0):
    return Running(bid, agent, R(cpus, mem), team, started, preemptible, preemptions)


def agents(n=1, cpus=4, mem=4096):
    return [Agent(f"a{i}", f"a{i}", R(cpus, mem)) for i in range(n)]


def offers_left(agent_list, running=()):
    used = {}
    for r in running:
        used[r.agent_id] = used.get(r.agent_id, Resources(0, 0)).plus(r.request)
    return [Offer(a.agent_id, a.capacity.minus(used.get(a.agent_id, Resources(0, 0)))) for a in agent_list]


# -- feasibility: a team's limit and guarantee --------------------------------------------------

TEAM = Team("reco", guarantee=R(4, 4096), limit=R(8, 8192))


@pytest.mark.parametrize("team, used, b, expect", [
    (TEAM, R(0, 0), build("b", cpus=4), None),  # within guarantee
    (TEAM, R(4, 4096), build("b", cpus=4), None),  # borrows up to its limit
    (TEAM, R(6, 2048), build("b", cpus=4), "team reco is at its limit of cpus=8,mem=8192M"),
    (TEAM, R(2, 1024), build("b", cpus=2, preemptible=False), None),
    (TEAM, R(3, 1024), build("b", cpus=2, preemptible=False), "a non-preemptible build runs only within team reco"),
    (Team("reco", R(4, 4096), may_borrow=False), R(4, 1024), build("b"), "team reco is out of credits"),
    (Team("reco", R(4, 4096), may_borrow=False), R(3, 1024), build("b"), None),
])
def test_team_holds_a_build_for_its_limit_and_guarantee(team, used, b, expect):
    got = team_holds(team, used, b)
    assert (got is None and expect is None) or (got and expect and got.startswith(expect)), got


def test_a_build_larger_than_its_teams_limit_can_never_run_and_the_limit_is_named():
    assert beyond_limit(TEAM, build("b", cpus=12)) == \
        "the build asks for cpus=12,mem=1024M, more than team reco's limit of cpus=8,mem=8192M"
    assert beyond_limit(TEAM, build("b", cpus=8)) is None
    assert beyond_limit(Team("free"), build("b", cpus=999)) is None


# -- ranking: weighted DRF across teams, priority and FIFO within ---------------------------------

def test_dominant_share_is_the_larger_fraction():
    assert dominant_share(R(4, 1024), POOL) == 0.25
    assert dominant_share(R(1, 8192), POOL) == 0.5


@pytest.mark.parametrize("teams, used, pending, expect", [
    # equal weights, nothing used: the teams alternate (ties by name)
    ({}, {}, [build("a1", "a", seq=1), build("a2", "a", seq=2), build("b1", "b", seq=3)], ["a1", "b1", "a2"]),
    # unequal sizes: after a's 4-cpu build, b's three 1-cpu builds go before a's next
    ({}, {}, [build("a1", "a", cpus=4, seq=1), build("a2", "a", seq=2)] + [build(f"b{i}", "b", seq=3 + i)
                                                                         for i in range(4)],
     ["a1", "b0", "b1", "b2", "b3", "a2"]),
    # the team using less goes first
    ({}, {"a": R(4)}, [build("a1", "a", seq=1), build("b1", "b", seq=2)], ["b1", "a1"]),
    # weight 2: a team holding twice as much ranks the same as one holding half with weight 1
    ({"a": Team("a", weight=2)}, {"a": R(4), "b": R(2)},
     [build("a1", "a", seq=1), build("b1", "b", seq=2)], ["a1", "b1"]),
    # a team below its guarantee goes before a team with less share that is above its own
    ({"g": Team("g", guarantee=R(8, 8192))}, {"g": R(4), "b": R(1)},
     [build("b1", "b", seq=1), build("g1", "g", seq=2)], ["g1", "b1"]),
    # within a team: priority, then FIFO
    ({}, {}, [build("n2", "a", seq=5), build("hi", "a", priority=0, seq=9), build("n1", "a", seq=3)],
     ["hi", "n1", "n2"]),
])
def test_fair_order(teams, used, pending, expect):
    order = FairOrder(pending, teams, used, POOL)
    got = []
    for b in order:
        got.append(b.build_id)
        order.placed(b)
    assert got == expect


def test_fair_order_counts_what_was_placed():
    order = FairOrder([build(f"a{i}", "a", seq=i) for i in range(3)] + [build(f"b{i}", "b", seq=10 + i)
                                                                      for i in range(3)], {}, {}, POOL)
    got = []
    for b in order:
        got.append(b.build_id)
        if b.team == "a":
            order.placed(b)  # only a's builds are placed: b keeps the lower share and goes first
    assert got == ["a0", "b0", "b1", "b2", "a1", "a2"]


# -- selection with teams --------------------------------------------------------------------------

def test_a_flooding_team_does_not_starve_a_team_that_arrives_later():
    pool = agents(1, cpus=4)
    pending = [build(f"flood{i}", "flood", seq=i) for i in range(100)] + [build("pr", "pr", seq=1000)]
    fifo = plan(pool, offers_left(pool), pending)
    fair = plan(pool, offers_left(pool), pending, teams={})
    assert "pr" not in [l.build_id for l in fifo.launches]
    assert [l.build_id for l in fair.launches] == ["flood0", "pr", "flood1", "flood2"]


def test_held_builds_wait_with_their_reason_and_builds_beyond_the_limit_are_impossible():
    pool = agents(2, cpus=8, mem=16384)
    teams = {"reco": Team("reco", R(2), limit=R(4, 8192))}
    pending = [build(f"r{i}", "reco", cpus=2, seq=i) for i in range(3)] + [build("huge", "reco", cpus=6, seq=9)]
    p = plan(pool, offers_left(pool), pending, teams=teams)
    assert [l.build_id for l in p.launches] == ["r0", "r1"]
    assert p.held == {"r2": "team reco is at its limit of cpus=4,mem=8192M"}
    assert "more than team reco's limit" in p.impossible["huge"]


def test_each_team_holds_at_most_one_reservation():
    pool = agents(4, cpus=4)
    running = [run(f"x{i}", "x", agent=f"a{i}", cpus=2) for i in range(4)]
    pending = [build(f"big{i}", "big", cpus=4, seq=i) for i in range(4)] + [build("small", "pr", cpus=2, seq=9)]
    p = plan(pool, offers_left(pool, running), pending, teams={}, running=running)
    assert list(p.reserved.values()) == ["big0"]
    assert [l.build_id for l in p.launches] == ["small"]
    without_teams = plan(pool, offers_left(pool, running), pending)  # as before teams: each one reserves
    assert len(without_teams.reserved) == 4 and without_teams.launches == []


# -- reclaim ---------------------------------------------------------------------------------------

OWNER = Team("core", guarantee=R(4, 4096))
BORROWER = Team("reco", guarantee=R(2, 2048))
TEAMS = {"core": OWNER, "reco": BORROWER}
FULL = [run("old", "reco", "a0", cpus=2, started=10), run("old2", "reco", "a0", cpus=2, started=20),
        run("mid", "reco", "a1", cpus=2, started=30), run("new", "reco", "a1", cpus=2, started=40)]


@pytest.mark.parametrize("case, running, pending, now, policy, kills", [
    ("within the grace period: nothing yet", FULL, [build("c", "core", cpus=2, queued_at=100)], 200,
     Policy(reclaim_grace=180), []),
    ("after the grace period: the newest borrowed build goes", FULL, [build("c", "core", cpus=2, queued_at=100)],
     280, Policy(reclaim_grace=180), ["new"]),
    ("a team waits the grace period once: its later builds count from its oldest", FULL,
     [build("c1", "core", cpus=2, seq=1, queued_at=100), build("c2", "core", cpus=2, seq=2, queued_at=270)], 280,
     Policy(reclaim_grace=180), ["new", "old2"]),
    ("as many as needed, newest first", FULL, [build("c", "core", cpus=4, queued_at=0)], 500, Policy(), ["new", "mid"]),
    ("one per owed build, the newest first", FULL,
     [build("c1", "core", cpus=2, seq=1), build("c2", "core", cpus=2, seq=2)], 500, Policy(), ["new", "old2"]),
    ("never what the borrower runs within its own guarantee",
     FULL[:2] + [run("x", "other", "a1", cpus=4, preemptible=False)], [build("c", "core", cpus=4)], 500, Policy(), []),
    ("only within the owner's guarantee", FULL, [build("c", "core", cpus=2, queued_at=0)],
     500, Policy(), ["new"]),
    ("not beyond the owner's guarantee", FULL + [], [build("c", "core", cpus=6, queued_at=0)], 500, Policy(), []),
    ("a non-preemptible build is never taken", FULL[:3] + [run("new", "reco", "a1", cpus=2, started=40,
                                                                preemptible=False)],
     [build("c", "core", cpus=2)], 500, Policy(), ["mid"]),
    ("a build preempted the most times allowed is never taken again",
     FULL[:3] + [run("new", "reco", "a1", cpus=2, started=40, preemptions=2)],
     [build("c", "core", cpus=2)], 500, Policy(max_preemptions=2), ["mid"]),
    ("no reclaim when the policy says so", FULL, [build("c", "core", cpus=2)], 500, Policy(reclaim=False), []),
    ("builds without a team are all borrowed", [run("anon", None, "a0", cpus=2, started=5),
                                                run("x", "reco", "a0", cpus=2, started=1),
                                                run("anon2", None, "a1", cpus=2, started=6),
                                                run("anon3", None, "a1", cpus=2, started=7)],
     [build("c", "core", cpus=2)], 500, Policy(), ["anon3"]),
])
def test_reclaim(case, running, pending, now, policy, kills):
    pool = agents(2, cpus=4)
    p = plan(pool, offers_left(pool, running), pending, teams=TEAMS, running=running, now=now, policy=policy)
    assert p.launches == []
    assert [k.build_id for k in p.kills] == kills, case
    assert all(k.reason == "preempted: capacity returned to team core" for k in p.kills)
    if kills:  # the freed agent is held for the owner's build
        assert set(p.reserved) >= {k.agent_id for k in p.kills}


def test_the_owner_starts_on_the_freed_agent_in_the_next_round():
    pool = agents(2, cpus=4)
    pending = [build("c", "core", cpus=2)]
    first = plan(pool, offers_left(pool, FULL), pending, teams=TEAMS, running=FULL, now=500)
    left = [r for r in FULL if r.build_id not in {k.build_id for k in first.kills}]
    again = pending + [build("new", "reco", cpus=2, seq=5, queued_at=500)]  # the preempted build, queued again
    second = plan(pool, offers_left(pool, left), again, teams=TEAMS, running=left, now=501)
    assert [(l.build_id, l.agent_id) for l in second.launches] == [("c", "a1")]
    assert second.kills == []
    assert first.freed_for == {"a1": "c"}


def test_room_freed_for_a_build_is_held_for_it_in_the_next_round():
    """Another team below its guarantee, ranked first, must not take the room freed for c."""
    pool = agents(1, cpus=4)
    teams = {**TEAMS, "aaa": Team("aaa", guarantee=R(4, 4096))}
    running = [run("x", "reco", "a0", cpus=2, started=1)]
    pending = [build("c", "core", cpus=2, seq=2), build("thief", "aaa", cpus=2, seq=1)]
    assert plan(pool, offers_left(pool, running), pending, teams=teams, running=running, now=500).launches[0] \
        .build_id == "thief"  # nothing held: the first-ranked team takes the room
    p = plan(pool, offers_left(pool, running), pending, teams=teams, running=running, now=500, held={"a0": "c"})
    assert [l.build_id for l in p.launches] == ["c"]


def test_borrowed_builds_are_the_newest_beyond_the_guarantee():
    runs = [run("b", "t", cpus=2, started=2), run("a", "t", cpus=2, started=1), run("c", "t", cpus=1, started=3)]
    assert [r.build_id for r in borrowed(runs, R(3, 8192))] == ["b", "c"]
    assert borrowed(runs, R(5, 8192)) == []


# -- offers made for some teams only (Mesos roles per team) -----------------------------------------

def test_an_offer_made_for_one_team_serves_only_that_teams_builds():
    ags = agents(3)
    offers = [Offer("a0", R(1, 4096), frozenset({"reco"})), Offer("a1", R(4, 4096), frozenset({"ads"})),
              Offer("a2", R(4, 4096), frozenset({None}))]
    pending = [build("r1", "reco", seq=1), build("d1", "ads", seq=2), build("n1", None, seq=3),
               build("r2", "reco", seq=4)]
    got = plan(ags, offers, pending, teams={})
    assert {(x.build_id, x.agent_id) for x in got.launches} == {("r1", "a0"), ("d1", "a1"), ("n1", "a2")}
    # reco's second build does not take the room left on the other offers
    assert "r2" not in {x.build_id for x in got.launches}
    # offers for any build (teams None) serve every team, as before
    anyone = plan(ags, [Offer("a0", R(4, 4096))], [build("d1", "ads"), build("r1", "reco", seq=1)], teams={})
    assert {x.build_id for x in anyone.launches} == {"d1", "r1"}
