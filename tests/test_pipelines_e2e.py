"""Pipelines end to end on a real farm (`buildfarm up`, Docker, Redis, `git daemon`), driven
through the `buildfarm pipeline` CLI and the API as a user would."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from buildfarm import samples

from .conftest import ROOT, FarmProcess, wait_until

pytestmark = pytest.mark.docker

SAMPLE = samples.RELEASE
BROKEN = {**SAMPLE, "core.py": "def add(a, b):\n    return a - b\n"}

CHAIN = """\
name: chain
repo: "${{ params.repo }}"
image: buildfarm/builder:latest
parameters: {repo: null}
jobs:
  build:
    resources: {cpus: 0.25, mem: 128}
    steps: ["mkdir -p out && git rev-parse HEAD > out/commit.txt"]
    artifacts: ["out/*"]
  test:
    needs: [build]
    resources: {cpus: 0.25, mem: 128}
    steps: ["cat out/commit.txt", "echo testing; exit 3"]
  deploy:
    needs: [test]
    resources: {cpus: 0.25, mem: 128}
    steps: ["echo deploying"]
  cleanup:
    needs: [build, test]
    when: always
    resources: {cpus: 0.25, mem: 128}
    steps: ["echo cleaning up after $(cat out/commit.txt)"]
"""

SLOW = """\
name: slow
repo: "${{ params.repo }}"
image: buildfarm/builder:latest
parameters: {repo: null}
jobs:
  long:
    resources: {cpus: 0.25, mem: 128}
    steps: ["echo started; sleep 120"]
  after:
    needs: [long]
    resources: {cpus: 0.25, mem: 128}
    steps: ["echo never"]
"""

YEARLY = """\
name: yearly
repo: git://127.0.0.1:1/none.git
image: buildfarm/builder:latest
schedule: {cron: "0 0 1 1 *", timezone: UTC}
jobs:
  x: {steps: ["true"]}
"""


@pytest.fixture(scope="module")
def pipelines_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipelines")
    for f in (ROOT / "pipelines").glob("*.yaml"):
        shutil.copy(f, d / f.name)
    (d / "chain.yaml").write_text(CHAIN)
    (d / "slow.yaml").write_text(SLOW)
    return d


@pytest.fixture(scope="module")
def pfarm(tmp_path_factory, docker_engine, redis_binary, pipelines_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BUILDFARM_PIPELINES", str(pipelines_dir))
        f = FarmProcess(tmp_path_factory.mktemp("pfarm") / "data", "--cpus", "2")
    yield f
    f.stop()


@pytest.fixture(scope="module")
def sample(git_server):
    return git_server.make_repo("cmssw", SAMPLE)


def run_json(farm: FarmProcess, *args: str, timeout: float = 150) -> tuple[int, dict, str]:
    out = farm.cli("pipeline", "run", *args, "--wait", "--json", timeout=timeout)
    stderr = out.stderr.decode()
    assert out.stdout, f"no output (exit {out.returncode}): {stderr}\n{farm.up_log()}"
    return out.returncode, json.loads(out.stdout), stderr


def get(farm: FarmProcess, path: str) -> dict:
    """GET from the farm's API (with the admin token once the farm has access control)."""
    resp = farm.api("GET", path) if hasattr(farm, "api") else httpx.get(farm.url + path, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def jobs(run: dict) -> dict[str, dict]:
    return {j["name"]: j for j in run["jobs"]}


def test_nightly_ib_runs_to_completion_through_the_cli(pfarm, sample, git_server):
    machine = platform.machine()
    out = pfarm.cli("pipeline", "run", "nightly-ib", "-p", f"repo={sample}", "-p", f"placement=arch:{machine}",
                    "--wait", timeout=170)
    progress = out.stderr.decode()
    assert out.returncode == 0, progress + pfarm.up_log()
    assert "publish succeeded" in progress and "relval[el9_aarch64_gcc13,3] succeeded" in progress
    run_id = progress.split()[1]
    run = json.loads(pfarm.cli("pipeline", "status", run_id, "--json").stdout)
    assert run["state"] == "succeeded" and run["commit"] == git_server.head("cmssw")
    assert len(run["jobs"]) == 11 and {j["state"] for j in run["jobs"]} == {"succeeded"}
    builds = {name: get(pfarm, f"/api/v1/builds/{j['build_id']}") for name, j in jobs(run).items()}
    # The DAG's order held while jobs ran side by side: nothing started before what it needs ended.
    for name, j in jobs(run).items():
        for need in j["needs"]:
            assert builds[name]["started_at"] >= builds[need]["finished_at"], (name, need)
        spec = builds[name]["spec"]
        assert spec["trigger"]["kind"] == "pipeline"
        assert spec["trigger"]["detail"] == {"run": run_id, "job": name, "pipeline": "nightly-ib"}
        if name != "publish":  # publish runs anywhere
            assert spec["constraints"] == [f"arch:{machine}"]
    # Artifacts travelled: publish got both architectures' builds and every shard's report.
    published = {a["path"] for a in builds["publish"]["artifacts"]}
    assert {"ib/el9_amd64_gcc13.tar.gz", "ib/el9_aarch64_gcc13.tar.gz", "ib/SHA256SUMS",
            "ib/unit-el9_amd64_gcc13.txt", "ib/relval-el9_aarch64_gcc13-3.txt"} <= published
    log = pfarm.log_text(jobs(run)["relval[el9_amd64_gcc13,2]"]["build_id"]).decode()
    assert "input build[el9_amd64_gcc13]" in log and "el9_amd64_gcc13.tar.gz: OK" in log
    assert "relval workflow 2: 4" in log and "relval workflow 5: 10" in log  # shard 2 of 3: wf2, wf5
    listing = pfarm.cli("pipeline", "list").stdout.decode()
    assert "nightly-ib" in listing and "0 11 * * * Europe/Zurich" in listing and f"{run_id} succeeded" in listing


def test_a_failed_job_stops_its_dependants_and_always_jobs_still_run(pfarm, sample):
    out = pfarm.cli("pipeline", "run", "chain", "-p", f"repo={sample}", "--follow", timeout=150)
    assert out.returncode == 1, out.stderr.decode()
    logs = out.stdout.decode()  # --follow prints each job's log as it ends
    assert "----- test (" in logs and "testing" in logs and "step exited with status 3" in logs
    assert logs.index("----- build (") < logs.index("----- test (") < logs.index("----- cleanup (")
    run_id = out.stderr.decode().split()[1]
    run = json.loads(pfarm.cli("pipeline", "status", run_id, "--json").stdout)
    j = jobs(run)
    assert (j["build"]["state"], j["test"]["state"], j["deploy"]["state"], j["cleanup"]["state"]) == \
        ("succeeded", "failed", "skipped", "succeeded")
    assert j["deploy"]["reason"] == "skipped: test failed" and j["deploy"]["build_id"] is None
    assert j["test"]["exit_code"] == 3
    assert run["state"] == "failed" and "test" in run["reason"]
    # test got build's artifact; cleanup (when: always) too, although test failed
    assert run["commit"].encode() in pfarm.log_text(j["test"]["build_id"])
    assert b"cleaning up after " + run["commit"].encode() in pfarm.log_text(j["cleanup"]["build_id"])


def test_cancel_a_run(pfarm, sample):
    out = pfarm.cli("pipeline", "run", "slow", "-p", f"repo={sample}")
    assert out.returncode == 0, out.stderr.decode()
    run_id = out.stdout.decode().strip()

    def running():
        r = json.loads(pfarm.cli("pipeline", "status", run_id, "--json").stdout)
        return jobs(r)["long"]["state"] == "running" and r

    run = wait_until(running, 60, 0.5, what="the long job to run")
    with ThreadPoolExecutor(1) as pool:  # a watcher's long poll, held until the run changes
        held = pool.submit(pfarm.api, "GET", f"/api/v1/pipeline-runs/{run_id}",
                           params={"wait": 60, "version_not": run["version"]}, timeout=90)
        out = pfarm.cli("pipeline", "cancel", run_id)
        changed = held.result().json()
    assert out.returncode == 0 and f"run {run_id} cancelled" in out.stdout.decode()
    assert changed["version"] > run["version"] and changed["reason"].startswith("cancelled by")
    out = pfarm.cli("pipeline", "status", run_id, "--wait")
    assert out.returncode == 130
    run = json.loads(pfarm.cli("pipeline", "status", run_id, "--json").stdout)
    assert jobs(run)["long"]["state"] == "cancelled" and jobs(run)["after"]["state"] == "cancelled"
    assert pfarm.build(jobs(run)["long"]["build_id"])["state"] == "cancelled"
    again = pfarm.cli("pipeline", "cancel", run_id)
    assert again.returncode == 2 and "already ended" in again.stderr.decode()


def _tag(git_server, repo: str, tag: str) -> str | None:
    out = subprocess.run(["git", "-C", str(git_server.repos / f"{repo}.git"), "rev-parse", "--verify", "-q",
                          f"refs/tags/{tag}^{{commit}}"], capture_output=True, text=True)
    return out.stdout.strip() or None


def test_release_is_tagged_only_when_every_job_passed(pfarm, git_server):
    good = git_server.make_repo("rel-good", SAMPLE)
    bad = git_server.make_repo("rel-bad", BROKEN)
    for name, url in (("rel-good", good), ("rel-bad", bad)):
        push = git_server.allow_push(name)
        code, run, stderr = run_json(pfarm, str(ROOT / "pipelines" / "release.yaml"), "-p", f"repo={url}",
                                     "-p", "version=CMSSW_15_0_1", "-p", f"push_url={push}")
        if name == "rel-good":
            assert code == 0, stderr
            assert run["tag"]["state"] == "created" and run["tag"]["name"] == "CMSSW_15_0_1"
            assert _tag(git_server, name, "CMSSW_15_0_1") == run["commit"] == git_server.head(name)
        else:
            assert code == 1 and jobs(run)["test"]["state"] == "failed"
            assert run["tag"]["state"] == "not created"
            assert _tag(git_server, name, "CMSSW_15_0_1") is None


def test_bad_input_gets_clear_messages(pfarm, sample, tmp_path):
    out = pfarm.cli("pipeline", "run", "nightly-ib", "-p", "release_queue=no-such-branch", "-p", f"repo={sample}")
    assert out.returncode == 2 and "ref 'no-such-branch' not found" in out.stderr.decode()
    out = pfarm.cli("pipeline", "run", "nightly", "-p", f"repo={sample}")
    assert out.returncode == 2 and "no pipeline 'nightly'" in out.stderr.decode() and "nightly-ib" in \
        out.stderr.decode()
    out = pfarm.cli("pipeline", "run", "nightly-ib", "-p", "queue=x")
    assert out.returncode == 2 and "has no parameter 'queue'" in out.stderr.decode()
    bad = tmp_path / "bad.yaml"
    bad.write_text(CHAIN.replace("needs: [test]", "needs: [tset]"))
    out = pfarm.cli("pipeline", "run", str(bad), "-p", f"repo={sample}")
    assert out.returncode == 2 and f"{bad}:15: jobs.deploy.needs[0]: " in out.stderr.decode()
    out = pfarm.cli("pipeline", "status", "nope")
    assert out.returncode == 2 and "no pipeline run 'nope'" in out.stderr.decode()


def test_missed_ticks_show_in_pipeline_list(pfarm, pipelines_dir):
    d = pfarm.data_dir / "redis"
    r = redis.Redis(port=int((d / "port").read_text()), password=(d / "password").read_text().strip(),
                    decode_responses=True)
    # The farm last checked this schedule two and a half years ago (it was down since).
    r.hset("bf:pipeline-cursor", "yearly", time.time() - 2.5 * 365 * 86400)
    (pipelines_dir / "yearly.yaml").write_text(YEARLY)

    def listed():
        out = pfarm.cli("pipeline", "list")
        text = out.stdout.decode()
        return "missed ticks" in text and text

    text = wait_until(listed, 30, 0.5, what="missed ticks in `pipeline list`")
    assert "yearly" in text and "-01-01 00:00 UTC" in text and "was not running" in text
    listing = json.loads(pfarm.cli("pipeline", "list", "--json").stdout)
    yearly = next(p for p in listing["pipelines"] if p["name"] == "yearly")
    assert len(yearly["missed"]) in (2, 3) and yearly["last_run"] is None
