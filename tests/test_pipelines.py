"""Pipelines without a farm process: parsing and validation (every error points at file:line and
the field), matrix expansion, parameters, the engine's DAG order and conditions on a real Farm
object and Redis (the test plays the builds' side), and cron schedules with an injected clock."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from buildfarm.pipelines.catalog import Catalog
from buildfarm.cli.pipeline import pipeline as pipeline_cli
from buildfarm.pipelines.daemon import engine_for
from buildfarm.pipelines.model import PipelineInvalid, expand_matrix, parse, parse_file, run_plan
from buildfarm.pipelines.store import RunStore
from buildfarm.pipelines.ticker import ScheduleTicker
from buildfarm.service import Conflict
from buildfarm.states import State


ROOT = Path(__file__).resolve().parent.parent
ZURICH = ZoneInfo("Europe/Zurich")


def problems(text: str) -> list[str]:
    with pytest.raises(PipelineInvalid) as e:
        parse(text, "p.yaml")
    return [str(p) for p in e.value.problems]


def one(text: str, *needles: str) -> str:
    found = [p for p in problems(text) if all(n in p for n in needles)]
    assert found, f"no problem with {needles}: {problems(text)}"
    return found[0]


GOOD = """\
name: demo
repo: "${{ params.repo }}"
image: img
parameters:
  repo: git://127.0.0.1/x.git
jobs:
  build:
    steps: [make]
  test:
    needs: [build]
    steps: [make test]
"""


# -- parsing and validation -----------------------------------------------------------------------

def test_example_pipelines_are_valid_and_expand():
    nightly = parse_file(ROOT / "pipelines" / "nightly-ib.yaml")
    assert nightly.schedule.crons == ("0 11 * * *", "0 23 * * *")
    assert nightly.schedule.timezone == "Europe/Zurich"
    jobs = {j.name: j for j in run_plan(nightly, {"repo": "git://127.0.0.1/r.git"}, commit="a" * 40).jobs}
    assert len(jobs) == 2 + 2 + 6 + 1
    assert jobs["relval[el9_aarch64_gcc13,3]"].needs == ["build[el9_aarch64_gcc13]"]
    assert jobs["unit-tests[el9_amd64_gcc13]"].needs == ["build[el9_amd64_gcc13]"]
    assert len(jobs["publish"].needs) == 10
    assert jobs["build[el9_amd64_gcc13]"].spec["commit"] == "a" * 40
    assert jobs["build[el9_amd64_gcc13]"].spec["env"]["SCRAM_ARCH"] == "el9_amd64_gcc13"
    assert jobs["build[el9_amd64_gcc13]"].spec.get("constraints", []) == []  # placement defaults to none
    for name in ("pr-test", "release"):
        parse_file(ROOT / "pipelines" / f"{name}.yaml")


def test_unknown_key_points_at_its_line_and_suggests():
    text = GOOD.replace("    needs: [build]", "    need: [build]")
    p = one(text, "jobs.test.need:")
    assert p.startswith("p.yaml:10: ") and "did you mean 'needs'?" in p and "expected one of" in p
    assert one("foo: 1\n" + GOOD, "foo").startswith("p.yaml:1: foo: unknown key in the pipeline")


def test_needs_cycle_and_missing_job():
    text = GOOD.replace("    steps: [make]\n", "    steps: [make]\n    needs: [test]\n", 1)
    p = one(text, "needs cycle")
    assert "build -> test -> build" in p and p.startswith("p.yaml:9: jobs.build.needs")
    p = one(GOOD.replace("needs: [build]", "needs: [build, deploy]"), "deploy")
    assert p.startswith("p.yaml:10: jobs.test.needs[1]: ") and "does not exist" in p and "jobs are: build, test" in p
    assert "cannot need itself" in one(GOOD.replace("needs: [build]", "needs: [test]"), "cycle")


def test_bad_cron_and_time_zone():
    sched = "schedule:\n  cron: [\"0 11 * * *\", \"0 25 * * *\", \"* * * *\"]\n  timezone: Mars/Olympus\n"
    text = GOOD + sched
    assert "out of range" in one(text, "schedule.cron[1]")
    assert "has 4 fields; a cron expression has 5" in one(text, "schedule.cron[2]")
    p = one(text, "schedule.timezone")
    assert p.startswith("p.yaml:14: ") and "IANA name such as Europe/Zurich" in p
    assert "required" in one(GOOD + "schedule:\n  cron: \"0 11 * * *\"\n", "schedule.timezone")
    # An unquoted cron starting with '*' is a YAML alias: the message says to quote it.
    p = one(GOOD + "schedule:\n  cron: * * * * *\n  timezone: UTC\n", "YAML syntax")
    assert p.startswith("p.yaml:13: ") and "quote cron expressions" in p


def test_templates_conditions_matrix_and_fields_are_checked():
    text = GOOD.replace("steps: [make test]", "steps: [\"make ${{ params.nope }} ${{ matrix.arch }}\"]\n"
                                              "    when: sometimes\n    retries: 99")
    assert "parameter 'nope' is not declared" in one(text, "jobs.test.steps[0]")
    assert "only known inside a job with a matrix" in one(text, "matrix.arch")
    assert "use one of: on_success, on_failure, always" in one(text, "jobs.test.when")
    assert "0 to 10" in one(text, "jobs.test.retries")
    matrix = GOOD.replace("steps: [make test]", "steps: [make]\n    matrix:\n      arch: [a, b]\n"
                                                "      exclude:\n        - {arch: c}\n        - {os: x}")
    assert "'c' is not a value of arch (a, b)" in one(matrix, "exclude[0].arch")
    assert "unknown axis 'os'" in one(matrix, "exclude[1].os")
    everything = GOOD.replace("steps: [make test]", "steps: [make]\n    matrix:\n      arch: [a]\n"
                                                    "      exclude: [{arch: a}]")
    assert "every combination is excluded" in one(everything, "matrix.exclude")
    # Build fields are checked as the farm would, with the line of the field.
    p = one(GOOD.replace("steps: [make test]", "steps: [make]\n    resources: {cpus: -1}"), "cpus")
    assert p.startswith("p.yaml:12: jobs.test.resources.cpus: test: ") and "greater than 0" in p
    assert "name" in one(GOOD.replace("name: demo\n", ""), "required")
    assert "30m" in one(GOOD.replace("steps: [make test]", "steps: [make]\n    timeout: soon"), "timeout")


def test_cli_validate_prints_file_line_field_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("needs: [build]", "needs: [biuld]"))
    result = CliRunner().invoke(pipeline_cli, ["validate", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:10: jobs.test.needs[0]: job 'test' needs 'biuld', which does not exist; did you mean 'build'?" \
        in result.output
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    result = CliRunner().invoke(pipeline_cli, ["validate", str(good)])
    assert result.exit_code == 0 and "ok: pipeline demo, 2 jobs (2 builds per run)" in result.output


# -- expansion ---------------------------------------------------------------------------------------

def test_matrix_expansion_with_exclude_and_needs_between_instances():
    assert expand_matrix({"arch": ["a", "b"], "shard": ["1", "2", "3"]}, [{"arch": "b", "shard": "3"}, {"shard": "1"}]) \
        == [{"arch": "a", "shard": "2"}, {"arch": "a", "shard": "3"}, {"arch": "b", "shard": "2"}]
    text = GOOD.replace("  build:\n    steps: [make]", "  build:\n    steps: [\"make ARCH=${{ matrix.arch }}\"]\n"
                                                        "    matrix: {arch: [amd64, arm64]}")
    text = text.replace("steps: [make test]", "steps: [\"test ${{ matrix.arch }} ${{ matrix.shard }}\"]\n"
                                              "    matrix:\n      arch: [amd64, arm64]\n      shard: [1, 2]\n"
                                              "      exclude: [{arch: arm64, shard: 2}]\n"
                                              "  publish:\n    needs: [test]\n    steps: [publish]\n")
    jobs = {j.name: j for j in run_plan(parse(text), {}, commit=None).jobs}
    assert list(jobs) == ["build[amd64]", "build[arm64]", "test[amd64,1]", "test[amd64,2]", "test[arm64,1]", "publish"]
    assert jobs["test[arm64,1]"].needs == ["build[arm64]"]  # the shared axis picks its build
    assert jobs["test[arm64,1]"].spec["steps"] == ["test arm64 1"]
    assert jobs["test[arm64,1]"].matrix == {"arch": "arm64", "shard": "1"}
    assert jobs["publish"].needs == ["test[amd64,1]", "test[amd64,2]", "test[arm64,1]"]  # no shared axis: all


def test_parameters_are_substituted_checked_and_may_use_the_matrix():
    text = GOOD.replace("  repo: git://127.0.0.1/x.git", "  repo: git://127.0.0.1/x.git\n  where: \"\"\n  queue: {}")
    text = text.replace("steps: [make test]", "steps: [\"make ${{ params.queue }}\"]\n"
                                              "    constraints: [\"${{ params.where }}\"]\n    matrix: {arch: [a, b]}")
    p = parse(text)
    with pytest.raises(ValueError, match="needs a value for queue: pass -p queue=VALUE"):
        run_plan(p, {}, commit=None)
    with pytest.raises(ValueError, match="has no parameter 'qeue'; did you mean 'queue'"):
        run_plan(p, {"qeue": "x"}, commit=None)
    jobs = {j.name: j for j in run_plan(p, {"queue": "Q1"}, commit=None).jobs}
    assert jobs["test[a]"].spec["steps"] == ["make Q1"] and "constraints" not in jobs["test[a]"].spec  # "" dropped
    jobs = {j.name: j for j in run_plan(p, {"queue": "Q", "where": "cmsarch:${{ matrix.arch }}"}, commit=None).jobs}
    assert jobs["test[b]"].spec["constraints"] == ["cmsarch:b"]


def test_expire_in_of_the_pipeline_and_of_a_job_reaches_the_builds_and_is_checked():
    text = GOOD.replace("image: img\n", "image: img\nexpire_in: 7d\n").replace(
        "    steps: [make]\n", "    steps: [make]\n    expire_in: never   # a release keeps its artifacts\n")
    jobs = {j.name: j for j in run_plan(parse(text), {}, commit=None).jobs}
    assert jobs["build"].spec["expire_in"] == "never" and jobs["test"].spec["expire_in"] == "7d"
    assert "not a duration; write e.g. 2h, 7d, 4w" in one(text.replace("expire_in: 7d", "expire_in: soon"),
                                                        "expire_in")


# -- the engine: DAG order and conditions on a real Farm and Redis --------------------------------------

@pytest.fixture
def farm(make_farm):
    return make_farm()


@pytest.fixture
def repo(git_server) -> str:
    return git_server.make_repo("engine", {"x": "x"})


DIAMOND = """\
name: diamond
repo: "${{ params.repo }}"
image: img
parameters: {repo: null}
jobs:
  a: {steps: [a], artifacts: ["out/*"]}
  b: {needs: [a], steps: [b]}
  c: {needs: [a], steps: [c], retries: 1}
  d: {needs: [b, c], steps: [d]}
  always: {needs: [d], steps: [x], when: always}
  on-failure: {needs: [d], steps: [x], when: on_failure}
"""


def states(run: dict) -> dict[str, str]:
    return {j["name"]: j["state"] for j in run["jobs"]}


def build_of(run: dict, job: str) -> str:
    return next(j["build_id"] for j in run["jobs"] if j["name"] == job)


def finish(farm, build_id: str, state: State, reason: str, **fields) -> None:
    """End a queued build with its agent's result, launched and started first (as a scheduler and
    an agent would: a build ends succeeded or failed only once it ran)."""
    assert farm.builds.transition(build_id, State.LAUNCHING, "placed by the test")
    assert farm.builds.transition(build_id, State.RUNNING, "started by the test")
    assert farm.end(build_id, state, reason, **fields)


def test_engine_respects_the_dag_under_parallelism(farm, repo):
    engine = engine_for(farm)
    run = engine.start(parse(DIAMOND), {"repo": repo}, {"kind": "api"})
    assert states(run) == {"a": "queued", "b": "pending", "c": "pending", "d": "pending", "always": "pending",
                           "on-failure": "pending"}
    spec = farm.builds.spec(build_of(run, "a"))
    assert spec.trigger.kind == "pipeline" and spec.trigger.detail["run"] == run["id"]
    assert spec.commit == run["commit"] and len(run["commit"]) == 40
    finish(farm, build_of(run, "a"), State.SUCCEEDED, "ok")
    assert farm.r.lrange("bf:pipeline-wakeup", 0, -1) == [run["id"]]  # the end listener woke the daemon
    run = engine.advance(run["id"])
    assert states(run)["b"] == states(run)["c"] == "queued"  # both at once
    assert farm.builds.spec(build_of(run, "b")).inputs[0].build == build_of(run, "a")  # a's artifacts go to b
    finish(farm, build_of(run, "c"), State.SUCCEEDED, "ok")
    run = engine.advance(run["id"])
    assert states(run)["d"] == "pending"  # b still runs
    finish(farm, build_of(run, "b"), State.SUCCEEDED, "ok")
    run = engine.advance(engine.advance(run["id"])["id"])  # advancing twice changes nothing
    assert states(run)["d"] == "queued" and farm.builds.list(limit=50)[1] == 4  # (records, total)
    finish(farm, build_of(run, "d"), State.SUCCEEDED, "ok")
    run = engine.advance(run["id"])
    assert states(run)["on-failure"] == "skipped" and states(run)["always"] == "queued"
    finish(farm, build_of(run, "always"), State.SUCCEEDED, "ok")
    run = engine.advance(run["id"])
    assert run["state"] == "succeeded" and run["finished_at"]


def test_failure_skips_dependants_runs_always_and_on_failure_and_retries(farm, repo):
    engine = engine_for(farm)
    run = engine.start(parse(DIAMOND), {"repo": repo}, {"kind": "api"})
    finish(farm, build_of(run, "a"), State.SUCCEEDED, "ok")
    run = engine.advance(run["id"])
    first_c = build_of(run, "c")
    finish(farm, first_c, State.FAILED, "a step exited with status 1", exit_code=1)
    run = engine.advance(run["id"])
    c = next(j for j in run["jobs"] if j["name"] == "c")
    assert c["state"] == "queued" and c["attempt"] == 2 and c["builds"][0] == first_c  # retried once
    finish(farm, build_of(run, "c"), State.FAILED, "again", exit_code=1)
    finish(farm, build_of(run, "b"), State.SUCCEEDED, "ok")
    run = engine.advance(run["id"])
    s = states(run)
    assert (s["c"], s["d"], s["always"], s["on-failure"]) == ("failed", "skipped", "queued", "queued")
    assert next(j for j in run["jobs"] if j["name"] == "d")["reason"] == "skipped: c failed"
    assert run["state"] == "running"
    finish(farm, build_of(run, "always"), State.SUCCEEDED, "ok")
    finish(farm, build_of(run, "on-failure"), State.SUCCEEDED, "ok")
    run = engine.advance(run["id"])
    assert run["state"] == "failed" and "c" in run["reason"]


def test_cancel_cancels_builds_and_pending_jobs(farm, repo):
    engine = engine_for(farm)
    run = engine.start(parse(DIAMOND), {"repo": repo}, {"kind": "api"})
    run = engine.cancel(run["id"], who="tester")
    assert run["state"] == "cancelled" and run["reason"] == "cancelled by tester"
    assert set(states(run).values()) == {"cancelled"}
    assert farm.builds.get(build_of(run, "a"))["state"] == "cancelled"
    with pytest.raises(Conflict):
        engine.cancel(run["id"])


# -- schedules, with an injected clock ------------------------------------------------------------------

SCHEDULED = GOOD + "schedule:\n  cron: [\"0 11 * * *\", \"0 23 * * *\"]\n  timezone: Europe/Zurich\n"


def at(*args) -> float:
    return datetime(*args, tzinfo=ZURICH).timestamp()


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_tick_fires_once_with_two_schedulers_on_one_redis(farm):
    pipeline = parse(SCHEDULED)
    started: list[tuple[str, float]] = []
    clock = Clock(at(2025, 6, 1, 10, 58))

    def start(p, tick):
        started.append((p.name, tick))
        return f"run{len(started)}"

    a, b = (ScheduleTicker(RunStore(farm.r), lambda: [pipeline], start, clock) for _ in range(2))
    a.tick()
    b.tick()
    assert started == []  # the first round only sets the cursor
    clock.t = at(2025, 6, 1, 11, 0, 20)
    events = a.tick() + b.tick() + a.tick()
    assert started == [("demo", at(2025, 6, 1, 11, 0))]
    assert [e["kind"] for e in events] == ["started"] and events[0]["run"] == "run1"
    clock.t = at(2025, 6, 1, 23, 1)
    b.tick()
    a.tick()
    assert started[1:] == [("demo", at(2025, 6, 1, 23, 0))]  # 23:00 Zurich, in summer UTC+2
    assert datetime.fromtimestamp(started[1][1], ZoneInfo("UTC")).hour == 21


def test_missed_ticks_are_reported_not_dropped_nor_run_late(farm):
    pipeline = parse(SCHEDULED)
    started = []
    clock = Clock(at(2025, 6, 1, 10, 0))
    ticker = ScheduleTicker(RunStore(farm.r), lambda: [pipeline], lambda p, t: started.append(t) or "r", clock)
    ticker.tick()
    clock.t = at(2025, 6, 3, 11, 2)  # the farm was down from the 1st 10:00 to the 3rd 11:02
    other = ScheduleTicker(RunStore(farm.r), lambda: [pipeline], lambda p, t: started.append(t) or "r", clock)
    events = other.tick()
    missed = [e["tick_local"] for e in events if e["kind"] == "missed"]
    assert missed == ["2025-06-01 11:00 CEST", "2025-06-01 23:00 CEST", "2025-06-02 11:00 CEST",
                      "2025-06-02 23:00 CEST"]
    assert started == [at(2025, 6, 3, 11, 0)]  # 2 minutes late is on time
    assert "was not running" in events[0]["reason"]
    recorded = RunStore(farm.r).events("demo", "missed")
    assert len(recorded) == 4 and ticker.tick() == []  # reported once


def test_a_schedule_event_when_the_run_cannot_start(farm):
    pipeline = parse(SCHEDULED)
    clock = Clock(at(2025, 6, 1, 10, 0))

    def start(p, t):
        raise ValueError("repository unreachable")

    ticker = ScheduleTicker(RunStore(farm.r), lambda: [pipeline], start, clock)
    ticker.tick()
    clock.t = at(2025, 6, 1, 11, 0, 5)
    (event,) = ticker.tick()
    assert event["kind"] == "error" and "repository unreachable" in event["reason"]


def test_catalog_lists_invalid_files_with_their_problems(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yml").write_text(GOOD.replace("name: demo", "name: other\nbogus: 1"))
    good, bad = Catalog(tmp_path).load()
    assert [p.name for p in good] == ["demo"]
    assert "bogus" in str(bad[0]) and str(tmp_path / "bad.yml") in str(bad[0])


def test_a_run_refuses_host_paths_for_its_repository_and_its_tag_push(farm, repo, tmp_path):
    engine = engine_for(farm)
    from buildfarm.pipelines.engine import StartError

    with pytest.raises(StartError, match="not a git, http.s. or ssh URL"):
        engine.start(parse(DIAMOND), {"repo": f"file://{tmp_path}"}, {"kind": "api"})
    release = parse_file(Path(__file__).resolve().parent.parent / "pipelines" / "release.yaml")
    with pytest.raises(StartError, match="never to a path on its host"):
        engine.start(release, {"repo": repo, "version": "v1", "push_url": str(tmp_path / "host.git")},
                     {"kind": "api"})


def test_builds_recorded_before_the_filter_index_are_indexed_once(farm):
    from buildfarm.spec import BuildSpec

    rec, _ = farm.builds.create(BuildSpec(repo="git://127.0.0.1/old.git", image="i", steps=["true"],
                                          trigger={"kind": "hook", "user": "ann"}))
    for key in farm.r.keys("bf:idx:*"):  # as a farm of the version before the index left it
        farm.r.delete(key)
    assert farm.builds.list(repo="git://127.0.0.1/old.git")[1] == 0
    assert farm.builds.backfill_index() == 1
    page, total = farm.builds.list(repo="git://127.0.0.1/old.git", trigger="hook", user="ann", state="queued")
    assert total == 1 and page[0]["id"] == rec["id"]
    assert farm.builds.backfill_index() == 0  # once


def test_pipeline_files_with_yaml_aliases_are_refused_before_they_expand(tmp_path):
    bomb = "\n".join(["name: bomb", "a: &a [x, x, x, x, x, x, x, x, x]"]
                     + [f"l{i}: &l{i} [{', '.join([f'*{p}'] * 9)}]" for i, p in enumerate(["a", "l0", "l1", "l2"])]
                     + ["jobs: {j: {image: i, steps: [x]}}"])
    with pytest.raises(PipelineInvalid) as e:
        parse(bomb)
    assert "anchors and aliases" in str(e.value)


def test_a_pipeline_and_its_jobs_name_the_team_their_builds_are_charged_to():
    text = GOOD.replace("image: img\n", "image: img\nteam: release\n").replace(
        "  test:\n", "  test:\n    team: reco\n")
    jobs = {j.name: j for j in run_plan(parse(text, "p.yaml"), {}, commit="a" * 40).jobs}
    assert jobs["build"].spec["team"] == "release"  # the pipeline's
    assert jobs["test"].spec["team"] == "reco"  # the job's own
