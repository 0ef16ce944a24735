"""Teams in the farm, in process: a real Redis and Farm, the recording backend of
test_scheduler_loop. Which team a build is charged to, and the refusals at submit; the scheduler
loop giving a team its guarantee back by preempting a borrower, which runs again later."""

from __future__ import annotations

import pytest

from buildfarm.backends.base import Exit
from buildfarm.scheduler import Scheduler
from buildfarm.scopes import Origin
from buildfarm.service import SubmitError
from buildfarm.spec import BuildSpec
from buildfarm.states import State
from buildfarm.teams import TeamError, TeamSpec, parse_amount
from buildfarm.usage import summarize
from tests.test_scheduler_loop import RecordingBackend


@pytest.fixture
def farm(make_farm):
    return make_farm(reclaim_grace=0)


def spec(cpus=1.0, **kw):
    return BuildSpec(repo="/tmp/r", image="img", steps=["true"], resources={"cpus": cpus, "mem": 256}, **kw)


def team(farm, name, cpus, limit=None, members=()):
    farm.teams.create(TeamSpec(name=name, guarantee=parse_amount(f"cpus={cpus},mem=1G"),
                               limit=parse_amount(limit) if limit else None))
    for m in members:
        farm.teams.add_member(name, m)


def alice():
    return Origin.token("alice", "submitter")


# -- charging a build to a team ----------------------------------------------------------------------

def test_a_farm_without_teams_runs_builds_without_one(farm):
    assert farm.submit(spec(), alice())["team"] is None


@pytest.mark.parametrize("teams, asked, origin, charged, refused", [
    ([("core", ["alice"])], None, alice(), "core", None),
    ([("core", ["alice"]), ("reco", ["alice"])], None, alice(), None,
     "alice is a member of teams core, reco: name the one to charge with --team"),
    ([("core", ["alice"]), ("reco", ["alice"])], "reco", alice(), "reco", None),
    ([("core", ["alice"]), ("reco", ["bob"])], "reco", alice(), None,
     "alice is not a member of team reco (their teams: core); an admin adds them with "
     "`buildfarm team add-member reco alice`"),
    ([("core", [])], "nope", alice(), None, "no team named 'nope' (teams: core)"),
    ([("core", [])], "core", Origin.token("root", "admin"), "core", None),  # an admin may charge any team
    ([("core", [])], None, alice(), None, None),  # in no team: no team, as before
])
def test_which_team_a_build_is_charged_to(farm, teams, asked, origin, charged, refused):
    for name, members in teams:
        team(farm, name, 2, members=members)
    if refused:
        with pytest.raises(SubmitError) as e:
            farm.submit(spec(team=asked), origin)
        assert str(e.value).startswith(refused) and e.value.field == "team"
    else:
        assert farm.submit(spec(team=asked), origin)["team"] == charged


def test_a_build_larger_than_its_teams_limit_is_refused_with_the_limit_named(farm):
    team(farm, "core", 1, limit="cpus=2,mem=2G", members=["alice"])
    with pytest.raises(SubmitError, match=r"more than team core's limit of cpus=2,mem=2G"):
        farm.submit(spec(cpus=3), alice())
    assert farm.submit(spec(cpus=2), alice())["team"] == "core"


def test_a_limit_below_the_guarantee_is_refused(farm):
    with pytest.raises(ValueError, match="limit .* is below its guarantee"):
        team(farm, "core", 4, limit="cpus=2")


# -- the loop: fair share and reclaim -------------------------------------------------------------

def test_a_team_gets_its_guarantee_back_and_the_borrower_runs_again(farm):
    """One agent of 2 cpus; `flood` and `pr` are guaranteed 1 cpu each. flood fills the agent
    while pr is idle; pr's build preempts flood's newest, starts next round, and the preempted
    build runs again once there is room, with its retries untouched."""
    backend = RecordingBackend()
    sched = Scheduler(farm, backend)
    team(farm, "flood", 1, members=["fl"])
    team(farm, "pr", 1, members=["alice"])
    floods = [farm.submit(spec(), Origin.token("fl", "submitter"))["id"] for _ in range(3)]
    sched.tick()
    assert [b for b, _ in backend.launched] == floods[:2]  # flood borrows pr's idle guarantee
    pr = farm.submit(spec(), alice())["id"]
    sched.tick()  # the pool is full: pr's build waits (grace 0), flood's newest is preempted
    assert backend.killed == [floods[1]]
    rec = farm.builds.get(floods[1])
    assert (rec["state"], rec["reason"], rec["preemptions"]) == \
        ("queued", "preempted: capacity returned to team pr", 1)
    assert "retries_used" not in farm.builds.raw(floods[1])
    assert farm.builds.get(pr)["state"] == "queued"
    sched.on_exit(Exit(floods[1], 1, 137, "killed"))  # the preempted container ends
    sched.tick()
    assert backend.launched[-1] == (pr, 1)  # pr starts in the next round, before flood's third
    for bid in (floods[0], pr):  # both end: the preempted build runs again, its second attempt
        farm.end(bid, State.SUCCEEDED, "done")
        sched.on_exit(Exit(bid, 1, 0, ""))
    sched.tick()
    assert (floods[1], 2) in backend.launched
    # the preempted attempt's use is charged: to the build and to its team's counters
    assert farm.builds.get(floods[1])["reserved"]["cpu_seconds"] > 0
    listed = farm.builds.get_many([floods[1]])[0]  # what lists and `buildfarm usage` read
    assert (listed["reserved"], listed["preemptions"]) == (farm.builds.get(floods[1])["reserved"], 1)
    use = farm.stats.team_use()
    assert use["flood"]["preemptions"] == 1 and use["flood"]["attempts"] == 2  # floods[0] ended, floods[1] preempted
    assert use["pr"]["attempts"] == 1 and "preemptions" not in use["pr"]


def test_a_non_preemptible_build_runs_only_within_its_teams_guarantee(farm):
    backend = RecordingBackend()
    sched = Scheduler(farm, backend)
    team(farm, "core", 1, members=["alice"])
    first = farm.submit(spec(preemptible=False), alice())["id"]
    second = farm.submit(spec(preemptible=False), alice())["id"]
    sched.tick()
    assert [b for b, _ in backend.launched] == [first]
    assert farm.builds.get(second)["reason"].startswith("waiting: a non-preemptible build runs only within team core")


# -- usage ------------------------------------------------------------------------------------------

def test_usage_sums_reserved_cpu_and_memory_seconds_by_team_and_user():
    def rec(team, user, cpus, held, state="succeeded", launched_at=None):
        return {"spec": {"team": team, "resources": {"cpus": cpus, "mem": 1024}, "trigger": {"kind": "cli"}},
                "submitted_by": user, "state": state, "launched_at": launched_at,
                "reserved": {"seconds": held, "cpu_seconds": held * cpus, "mem_mb_seconds": held * 1024}}
    records = [rec("core", "alice", 2, 60), rec("core", "bob", 1, 30),
               rec(None, "carol", 4, 0, "running", launched_at=5),  # holds its request from 5 to now
               {"spec": {"team": "core", "resources": {"cpus": 8}}, "state": "queued"}]  # never launched
    by_team = summarize(records, "team", now=10)
    assert by_team == [
        {"team": "core", "builds": 3, "seconds": 90.0, "cpu_seconds": 150.0, "mem_mb_seconds": 92160.0,
         "measured_cpu_seconds": 0.0},
        {"team": "(no team)", "builds": 1, "seconds": 5.0, "cpu_seconds": 20.0, "mem_mb_seconds": 5120.0,
         "measured_cpu_seconds": 0.0}]
    assert [r["user"] for r in summarize(records, "user", now=10)] == ["alice", "bob", "carol", "(nobody)"]


def test_a_jenkins_label_names_the_team_its_agents_are_charged_to():
    from buildfarm.jenkins.labelmap import LabelSettings

    spec = LabelSettings(image="agent", team="reco").spec("/tmp/r", {}, {"kind": "jenkins"})
    assert BuildSpec.model_validate(spec).team == "reco"
    assert "team" not in LabelSettings(image="agent").spec("/tmp/r", {}, {"kind": "jenkins"})


def test_a_webhook_build_is_not_charged_by_its_pushers_name(farm):
    team(farm, "core", 2, members=["alice"])  # a token user who happens to share the pusher's name
    rec = farm.submit(spec(), Origin("webhook", "alice", None, None, "main"))
    assert rec["team"] is None


# -- deleting a team with builds in flight ------------------------------------------------------------

def test_a_team_with_builds_in_flight_is_deleted_only_when_forced_and_its_queued_builds_are_cancelled(farm):
    """One agent of 2 cpus; core runs two builds and queues a third. Deleting core is refused,
    naming its builds; forced, its queued build is cancelled ("team core deleted") and its running
    ones go on; one of those that is queued again later (lost before its agent started) is
    cancelled by the scheduler rather than waiting for a team that is gone."""
    backend = RecordingBackend()
    sched = Scheduler(farm, backend)
    team(farm, "core", 2, members=["alice"])
    team(farm, "reco", 1, members=["bob"])
    ids = [farm.submit(spec(), alice())["id"] for _ in range(3)]
    sched.tick()
    assert [b for b, _ in backend.launched] == ids[:2]

    with pytest.raises(TeamError) as refused:
        farm.delete_team("core")
    assert refused.value.status == 409
    assert str(refused.value) == (
        f"team core has builds in flight, 1 queued ({ids[2]}) and 2 running ({ids[0]}, {ids[1]}): cancel them "
        f"(`buildfarm cancel ID`), or delete the team with --force, which cancels its queued builds and "
        f"lets the running ones end")
    assert [t["name"] for t in farm.teams.list()] == ["core", "reco"]

    done = farm.delete_team("core", force=True)
    assert done == {"deleted": "core", "cancelled": [ids[2]], "running": ids[:2]}  # oldest first
    rec = farm.builds.get(ids[2])
    assert (rec["state"], rec["reason"]) == ("cancelled", "team core deleted")
    assert [t["name"] for t in farm.teams.list()] == ["reco"]
    assert {farm.builds.get(b)["state"] for b in ids[:2]} == {"launching"}

    sched.on_exit(Exit(ids[0], 1, -1, "the agent was lost", kind="lost"))  # queued again: no team to run for
    sched.tick()
    rec = farm.builds.get(ids[0])
    assert (rec["state"], rec["reason"]) == ("cancelled", "team core deleted")
    assert [b for b, _ in backend.launched] == ids[:2]
    with pytest.raises(TeamError, match="no team named 'core'"):
        farm.delete_team("core")
    assert farm.delete_team("reco") == {"deleted": "reco", "cancelled": [], "running": []}
