"""Teams end to end, with real Docker: two teams share a 2-cpu farm; one floods it, the other's
build starts in the next round, a reclaim preempts a borrower which runs again once and
succeeds; `buildfarm usage` matches the builds' run times. Through the CLI, as users run it."""

from __future__ import annotations

import json

from tests.conftest import wait_until


def test_two_teams_share_the_farm_and_a_borrower_is_preempted_then_succeeds(fresh_farm, git_server):
    farm = fresh_farm("--cpus", "2", "--mem", "4096", "--reclaim-grace", "0", "--warm", "0")
    repo = git_server.make_repo("teams", {"README": "teams\n"})

    def ok(*args, env=None):
        out = farm.cli(*args, env=env)
        assert out.returncode == 0, out.stderr.decode()
        return out

    tokens = {}
    for user in ("fl", "pr"):
        tokens[user] = {"BUILDFARM_TOKEN": json.loads(ok("token", "create", user, "--role", "submitter",
                                                         "--json").stdout)["token"]}
    for team, user in (("flood", "fl"), ("reviews", "pr")):
        ok("team", "create", team, "--guarantee", "cpus=1,mem=2G", "--limit", "cpus=2")
        ok("team", "add-member", team, user)
    listed = ok("team", "list").stdout.decode()
    assert "flood" in listed and "members fl" in listed

    too_big = farm.cli("submit", "--repo", repo, "--image", "buildfarm/builder", "--cpus", "3", "--", "true",
                       env=tokens["fl"])
    assert too_big.returncode == 2 and "more than team flood's limit of cpus=2" in too_big.stderr.decode()
    unknown = farm.cli("submit", "--repo", repo, "--image", "buildfarm/builder", "--team", "nope", "--", "true",
                       env=tokens["fl"])
    assert unknown.returncode == 2 and "no team named 'nope'" in unknown.stderr.decode()

    def submit(user, *command):
        out = ok("submit", "--repo", repo, "--image", "buildfarm/builder", "--cpus", "1", "--mem", "512", "--",
                 *command, env=tokens[user])
        return out.stdout.decode().strip()

    # flood takes the whole farm, borrowing reviews' idle guarantee
    floods = [submit("fl", "sh", "-c", "sleep 15; echo flood done") for _ in range(2)]
    try:
        wait_until(lambda: all(farm.build(b)["state"] == "running" for b in floods), 180, 0.5, what="flood running")
    except AssertionError:
        raise AssertionError(f"flood's builds: {[(b['state'], b['reason']) for b in map(farm.build, floods)]}")
    review = submit("pr", "python3", "-c", "sum(range(20_000_000)); print('review done')")  # burns CPU
    done = farm.wait_done(review, 180)
    assert done["state"] == "succeeded" and done["team"] == "reviews"
    # it did not wait for flood's builds: one of them was preempted for it
    preempted = [b for b in floods if farm.build(b)["preemptions"] == 1]
    assert len(preempted) == 1
    first_flood = next(b for b in floods if b not in preempted)
    assert done["started_at"] < farm.wait_done(first_flood, 180)["finished_at"]
    again = farm.wait_done(preempted[0], 180)
    assert (again["state"], again["attempt"], again["preemptions"]) == ("succeeded", 2, 1)
    assert "preempted: capacity returned to team reviews" in [h["reason"] for h in again["history"]]
    assert b"flood done" in farm.log_text(preempted[0])

    # usage: each attempt's time from its launch to its end (the preempted one's too), x 1 cpu, x 512 MB
    usage = json.loads(ok("usage", "--by", "team", "--json").stdout)
    rows = {r["team"]: r for r in usage["rows"]}
    for team, ids in (("flood", floods), ("reviews", [review])):
        held = sum(attempts_held(farm.build(b)["history"]) for b in ids)
        assert rows[team]["builds"] == len(ids)
        assert abs(rows[team]["cpu_seconds"] - held) < 0.5  # the farm's clock read a moment after the record's
        assert abs(rows[team]["mem_mb_seconds"] - 512 * held) < 256
    # measured: the agent's account of the CPU its processes used (the review's loop, well above nothing)
    assert 0.2 < rows["reviews"]["measured_cpu_seconds"] <= rows["reviews"]["cpu_seconds"]
    metrics = farm.api("GET", "/metrics").text
    assert 'buildfarm_team_preemptions_total{team="flood"} 1.0' in metrics
    assert 'buildfarm_team_attempts_total{team="reviews"} 1.0' in metrics


def attempts_held(history: list[dict]) -> float:
    """Seconds a build's attempts held their request: from each launch to the next state change
    that ended the attempt (queued again, or a final state), as the state history shows them."""
    held, since = 0.0, None
    for h in history:
        if h["state"] == "launching":
            since = h["at"]
        elif since is not None and h["state"] != "running":
            held += h["at"] - since
            since = None
    return held


def test_a_team_with_builds_in_flight_is_deleted_only_with_force(fresh_farm, git_server):
    """`buildfarm team delete` refuses while the team has builds queued or running, naming them;
    with --force its queued build is cancelled ("team ops deleted") and its running one goes on."""
    farm = fresh_farm("--cpus", "1", "--mem", "2048", "--warm", "0")
    repo = git_server.make_repo("team-delete", {"README": "x\n"})
    assert farm.cli("team", "create", "ops", "--guarantee", "cpus=1,mem=1G").returncode == 0

    def submit():
        out = farm.cli("submit", "--repo", repo, "--image", "buildfarm/builder", "--cpus", "1", "--mem", "256",
                       "--team", "ops", "--", "sleep", "300")
        assert out.returncode == 0, out.stderr.decode()
        return out.stdout.decode().strip()

    running = submit()
    wait_until(lambda: farm.build(running)["state"] in ("launching", "running"), 60, 0.3, what="the first build placed")
    queued = submit()  # the farm's one cpu is taken: it waits

    refused = farm.cli("team", "delete", "ops")
    assert refused.returncode == 2
    assert refused.stderr.decode() == (
        f"error: team ops has builds in flight, 1 queued ({queued}) and 1 running ({running}): cancel them "
        f"(`buildfarm cancel ID`), or delete the team with --force, which cancels its queued builds and lets the "
        f"running ones end\n")
    assert "ops" in farm.cli("team", "list").stdout.decode()

    forced = farm.cli("team", "delete", "ops", "--force", "--json")
    assert forced.returncode == 0, forced.stderr.decode()
    assert json.loads(forced.stdout) == {"deleted": "ops", "cancelled": [queued], "running": [running]}
    gone = farm.build(queued)
    assert (gone["state"], gone["reason"]) == ("cancelled", "team ops deleted")
    assert farm.build(running)["state"] in ("launching", "running")
    assert json.loads(farm.cli("team", "list", "--json").stdout) == []
    assert farm.cli("cancel", running).returncode == 0


BAD_INPUT = [  # (the command, what its error says); each exits 2 with no traceback
    (("team", "create", "x1", "--guarantee", "cpus=lots"), "Invalid value for '--guarantee': cpus='lots' is not a number"),
    (("team", "create", "x2", "--guarantee", "cpus=-1"),
     "Invalid value for '--guarantee': cpus=-1: input should be greater than or equal to 0"),
    (("team", "create", "x3", "--guarantee", "gpus=1"), "'gpus=1': write cpus=N and/or mem=SIZE, e.g. cpus=16,mem=64G"),
    (("team", "create", "x4", "--guarantee", "mem=12Q"), "mem='12Q' is not a size; write e.g. 4096 (MB), 64G or 512M"),
    (("team", "create", "x5", "--guarantee", "cpus=4", "--limit", "cpus=2"),
     "error: team x5's limit (cpus=2) is below its guarantee (cpus=4); raise the limit or lower the guarantee"),
    (("team", "create", "Bad", "--guarantee", "cpus=1"), "'Bad' is not a team name"),
    (("team", "create", "core", "--guarantee", "cpus=1"), "error: team core exists already"),
    (("team", "add-member", "nope", "alice"), "error: no team named 'nope' (teams: core, reco)"),
    (("team", "remove-member", "core", "zed"), "error: zed is not a member of team core"),
    (("team", "delete", "nope"), "error: no team named 'nope' (teams: core, reco)"),
    (("team", "ledger", "nope"), "error: no team named 'nope'"),
    (("usage", "--team", "nope"), "error: no team named 'nope'"),
    (("team", "lend", "core", "--to", "nope", "--cpus", "1", "--until", "2h"), "error: no team named 'nope'"),
    (("team", "lend", "core", "--to", "reco", "--cpus", "5", "--until", "2h"),
     "error: team core guarantees 2 cpus: it cannot lend 5\n"),
    (("team", "lend", "core", "--to", "reco", "--cpus", "1", "--until", "teatime"),
     "Invalid value for '--until': until 'teatime': write a time of day (18:00), a duration (2h, 30m, 1d) or "
     "epoch seconds"),
    (("team", "lend", "core", "--to", "reco", "--cpus", "1", "--until", "1500000000"),
     "Invalid value for '--until': 1500000000 is 2017-07-"),  # 14 02:40 UTC, shown in local time
    (("team", "lend", "core", "--to", "reco", "--cpus", "1", "--until", "1500000000"), "in the past: give a later time"),
    (("team", "lend", "core", "--to", "reco", "--cpus", "1", "--until", "2h", "--price", "500"),
     "credits, fewer than the loan's price of 500"),
    (("team", "lend", "core", "--to", "core", "--cpus", "1", "--until", "2h"), "error: a team cannot lend to itself"),
]


def test_team_commands_say_what_is_wrong_with_bad_input_and_answer_json(farm):
    def json_of(*args):
        out = farm.cli(*args, "--json")
        assert out.returncode == 0, out.stderr.decode()
        return json.loads(out.stdout)

    assert json_of("team", "create", "core", "--guarantee", "cpus=2,mem=4G")["guarantee"] == {"cpus": 2, "mem": 4096}
    assert json_of("team", "create", "reco", "--guarantee", "cpus=1")["name"] == "reco"
    assert json_of("team", "add-member", "core", "alice")["members"] == ["alice"]
    for args, says in BAD_INPUT:
        out = farm.cli(*args)
        err = out.stderr.decode()
        assert (out.returncode, "Traceback" in err) == (2, False), (args, err)
        assert says in err, (args, err)
    loan = json_of("team", "lend", "core", "--to", "reco", "--cpus", "1", "--until", "2h")
    assert (loan["lender"], loan["borrower"], loan["cpus"], loan["mem"]) == ("core", "reco", 1, 2048)
    again = farm.cli("team", "lend", "core", "--to", "reco", "--cpus", "2", "--until", "2h")
    assert "error: team core guarantees 2 cpus and lends 1 already: it cannot lend 2 more until those loans end" \
        in again.stderr.decode()
    ledger = json_of("team", "ledger", "reco")  # what is left of this hour's credit, once a round issued it
    assert ledger["balance"] == sum(e["amount"] for e in ledger["entries"] if e["kind"] == "issue")
    assert 0.0 <= ledger["balance"] <= 1.0
    assert json_of("team", "remove-member", "core", "alice")["members"] == []
    assert [t["name"] for t in json_of("team", "list")] == ["core", "reco"]
    assert json_of("team", "delete", "reco") == {"deleted": "reco", "cancelled": [], "running": []}
