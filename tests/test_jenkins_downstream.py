"""`buildfarm jenkins-bridge --on-pipeline-end JOB` end to end: real pipeline runs on a real farm
(`buildfarm up`, Docker, `git daemon`), the bridge run as an operator runs it, and the Jenkins double
(tests/doubles/jenkins.py) receiving `POST /job/JOB/buildWithParameters` from python-jenkins.

Each run that ends triggers JOB once, with the run's id, outcome and pipeline; runs that ended
before the bridge first started do not; with --pipeline-state, runs that ended while the bridge was
down are reported when it comes back, and nothing twice.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import BUILDFARM, wait_until
from tests.jenkins_support import farm_env, linux, write_label_map

pytestmark = pytest.mark.docker

JOB = "after-pipeline"

PIPELINE = """\
name: {name}
repo: {repo}
image: buildfarm/builder:latest
jobs:
  build:
    resources: {{cpus: 0.25, mem: 128}}
    steps: ["echo built > built.txt"]
  test:
    needs: [build]
    resources: {{cpus: 0.25, mem: 128}}
    steps: ["{test}"]
"""


@pytest.fixture(scope="module")
def repo(git_server):
    return git_server.make_repo("downstream", {"README": "pipelines whose ends Jenkins hears of\n"})


def start(farm, repo: str, passes: bool) -> str:
    name, test = ("smoke", "echo fine") if passes else ("regress", "echo broken; exit 1")
    r = farm.api("POST", "/api/v1/pipeline-runs", json={"source": PIPELINE.format(name=name, repo=repo, test=test)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def ended(farm, run_id: str) -> str:
    def state():
        s = farm.api("GET", f"/api/v1/pipeline-runs/{run_id}").json()["state"]
        return s != "running" and s

    return wait_until(state, 90, 0.3, what=f"pipeline run {run_id} to end")


def expected(run_id: str, outcome: str) -> dict:
    pipeline = "smoke" if outcome == "succeeded" else "regress"
    return {"job": JOB, "params": {"BUILDFARM_PIPELINE_RUN": run_id, "BUILDFARM_PIPELINE_OUTCOME": outcome,
                                   "BUILDFARM_PIPELINE": pipeline}}


def reported(bridge, run_id: str) -> dict:
    """Wait for the bridge to say it triggered JOB for `run_id` (said after its state file is written)."""
    (event,) = wait_until(lambda: bridge.of("downstream-triggered", run=run_id), 30, 0.3,
                          what=f"the bridge to report run {run_id}")
    return event


def test_each_ended_run_triggers_the_job_once_across_a_restart(farm, double, repo, tmp_path, bridges):
    before = start(farm, repo, passes=True)
    assert ended(farm, before) == "succeeded"
    labels = write_label_map(tmp_path / "labels.yaml", repo, {"linux": linux()})
    state = tmp_path / "downstream.json"
    args = (farm, double, labels, "--on-pipeline-end", JOB, "--pipeline-state", str(state))
    bridge = bridges(*args)
    assert bridge.of("started", on_pipeline_end=JOB)
    # Its first look at the farm: what had ended already is its baseline, not reported.
    wait_until(state.exists, 30, 0.2, what="the bridge's first look at the runs")
    assert before in json.loads(state.read_text())["handled"]

    ok, bad = start(farm, repo, passes=True), start(farm, repo, passes=False)
    assert (ended(farm, ok), ended(farm, bad)) == ("succeeded", "failed")
    assert reported(bridge, ok)["outcome"] == "succeeded" and reported(bridge, bad)["outcome"] == "failed"

    # Two runs end while the bridge is down; its restart reports them (from its state file).
    bridge.stop()
    assert bridge.of("stopped")
    ok2, bad2 = start(farm, repo, passes=True), start(farm, repo, passes=False)
    assert (ended(farm, ok2), ended(farm, bad2)) == ("succeeded", "failed")
    restarted = bridges(*args)
    reported(restarted, ok2)
    reported(restarted, bad2)

    # One more run, reported by a later look: by then every earlier run was looked at again.
    last = start(farm, repo, passes=False)
    assert ended(farm, last) == "failed"
    reported(restarted, last)
    outcomes = {ok: "succeeded", bad: "failed", ok2: "succeeded", bad2: "failed", last: "failed"}
    got = sorted(([{k: t[k] for k in ("job", "params")} for t in double.triggered]),
                 key=lambda t: t["params"]["BUILDFARM_PIPELINE_RUN"])
    want = sorted((expected(r, o) for r, o in outcomes.items()), key=lambda t: t["params"]["BUILDFARM_PIPELINE_RUN"])
    assert got == want  # each run once, with its outcome; `before` never
    assert not restarted.of("downstream-triggered", run=ok) and not restarted.of("downstream-triggered", run=bad)
    # Jenkins answered each trigger with its queue item, which the bridge reports.
    items = {t["params"]["BUILDFARM_PIPELINE_RUN"]: t["item"] for t in double.triggered}
    assert reported(restarted, last)["queue_item"] == items[last]


def test_bad_pipeline_state_gets_a_clear_message(farm, double, repo, tmp_path):
    labels = write_label_map(tmp_path / "labels.yaml", repo, {"linux": linux()})
    base = [BUILDFARM, "--server", farm.url, "jenkins-bridge", "--url", double.url, "--user", double.user,
            "--token", double.token, "--label-map", str(labels)]
    state = tmp_path / "state.json"
    state.write_text("not json\n")
    for extra, says in (
            (["--on-pipeline-end", JOB, "--pipeline-state", str(state)], "is not a state file of the bridge"),
            (["--pipeline-state", str(state)], "give that too"),
            (["--on-pipeline-end", JOB, "--pipeline-state", str(tmp_path / "no" / "s.json")], "does not exist")):
        out = subprocess.run(base + extra, capture_output=True, text=True, timeout=60, env=farm_env(farm))
        assert out.returncode == 2 and says in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    assert not double.triggered
