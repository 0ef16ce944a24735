"""A build's agent token dies with its build, and the build's own commands cannot read it
(a real farm, real Docker, real HTTP). Tests that need a token in hand create the build record
themselves (records.BuildStore.create returns its token) and play its agent over HTTP."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading

import httpx
import pytest

from buildfarm.records import BuildStore, build_key
from buildfarm.spec import BuildSpec
from buildfarm.states import State

from .conftest import IMAGE, wait_until

pytestmark = pytest.mark.docker

# Everything a build's commands could try to find its token with; what they find goes to the log.
HUNT = r"""
echo "uid=$(id -u) home=$HOME"
env
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do echo "== $f"; tr '\0' '\n' < "$f" 2>&1; done
ls -la /buildfarm/assignment 2>&1
find / -path /proc -prune -o -path /sys -prune -o -name 'assignment*' -print 2>/dev/null | while read -r f; do
  echo "== $f"; cat "$f" 2>&1; done
grep -rs -I -e BUILDFARM_TOKEN= -e '"token":' /buildfarm /tmp /workspace /etc /home 2>/dev/null | head -50
echo hunt-done
"""


def _redis(farm):
    import redis

    return redis.Redis.from_url(farm.redis_url(), decode_responses=True)


def _token_in(text: bytes, digest: str) -> bool:
    """Whether any word of `text` is the token whose sha256 is `digest` (the test never sees the
    token of a build the farm launched: only its digest, which the record keeps)."""
    words = set(re.findall(rb"[A-Za-z0-9_\-]{20,}", text))
    return any(hashlib.sha256(w).hexdigest() == digest for w in words)


@pytest.fixture(scope="module")
def repo(git_server):
    return git_server.make_repo("tokenhunt", {"README": "x\n"})


def _hunt(farm, repo) -> tuple[dict, bytes]:
    out = farm.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--json", "--", "sh", "-c", HUNT)
    record = json.loads(out.stdout)
    assert record["state"] == "succeeded", out.stderr
    return record, farm.log_text(record["id"])


def _warm_ready(farm) -> bool:
    farm_id = farm.redis_get("bf:farm-id")
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=buildfarm.farm={farm_id}",
                          "--filter", "label=buildfarm.warm=1"], capture_output=True, text=True)
    return bool(out.stdout.split())


def test_a_build_in_a_cold_container_cannot_find_its_token(fresh_farm, repo):
    farm = fresh_farm("--warm", "0")
    record, log = _hunt(farm, repo)
    digest = _redis(farm).hget(build_key(record["id"]), "ended_token_sha")
    assert digest and not _token_in(log, digest)
    assert b"hunt-done" in log and b"uid=1000 home=/home/builder" in log
    assert b"running in a warm container" not in log
    assert b"/proc/1/environ: Permission denied" in log


def test_a_build_in_a_warm_container_cannot_find_its_token(farm, repo):
    assert farm.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "true").returncode == 0
    wait_until(lambda: _warm_ready(farm), 60, what="a warm container")
    record, log = _hunt(farm, repo)
    digest = _redis(farm).hget(build_key(record["id"]), "ended_token_sha")
    assert digest and not _token_in(log, digest)
    assert b"running in a warm container" in log and b"hunt-done" in log
    assert b"uid=1000" in log
    assert b"'/buildfarm/assignment': Permission denied" in log


def test_a_build_on_mesos_cannot_find_its_token(tmp_path, docker_engine, redis_binary, repo):
    from .test_mesos_e2e import X86, MesosFarm

    m = MesosFarm(tmp_path, [X86])
    try:
        record, log = _hunt(m.farm, repo)
        digest = _redis(m.farm).hget(build_key(record["id"]), "ended_token_sha")
        assert digest and not _token_in(log, digest)
        assert b"hunt-done" in log and b"uid=1000" in log and b"/proc/1/environ: Permission denied" in log
    finally:
        m.stop()


def test_process_isolation_drops_privileges_when_the_farm_is_root(fresh_farm, repo):
    import os

    farm = fresh_farm("--isolation", "process")
    # the agent is the parent of the step's shell, which runs this one
    script = ("id -un; agent=$(cut -d' ' -f4 /proc/$PPID/stat); tr '\\0' '\\n' < /proc/$agent/environ; "
              "git log --oneline | wc -l; echo hunt-done")
    out = farm.cli("submit", "--repo", repo, "--image", "ignored", "--wait", "--json", "--", "sh", "-c", script)
    record = json.loads(out.stdout)
    log = farm.log_text(record["id"])
    assert record["state"] == "succeeded", log
    digest = _redis(farm).hget(build_key(record["id"]), "ended_token_sha")
    if os.geteuid() == 0:
        assert not _token_in(log, digest)
        assert b"nobody\n" in log and b"Permission denied" in log and b"\n1\nhunt-done" in log
    else:  # the limit the README states: the build runs as the farm's user, and the log says so
        assert b"could read the build's token" in log


def test_the_build_user_owns_its_workspace_and_home_and_git_works(farm, repo):
    script = ("id -un; touch made-by-build; mkdir -p $HOME/.cache && echo ok > $HOME/.cache/x; "
              "git status --short | head -3; git rev-parse HEAD; mkdir -p out; echo art > out/a.txt")
    out = farm.cli("submit", "--repo", repo, "--image", IMAGE, "--artifact", "out/*", "--wait", "--json", "--",
                   "sh", "-c", script)
    record = json.loads(out.stdout)
    assert record["state"] == "succeeded", farm.log_text(record["id"])
    log = farm.log_text(record["id"])
    assert b"builder\n" in log and record["commit"].encode() in log
    assert "dubious ownership" not in log.decode()
    assert [a["path"] for a in json.loads(farm.cli("artifacts", record["id"], "--json").stdout)] == ["out/a.txt"]


# -- a token after its build ended --------------------------------------------------------------

class FakeAgent:
    """The agent's side of the API, over HTTP, with a build record the test created."""

    def __init__(self, farm, repo: str, steps=("true",)):
        self.farm = farm
        self.store = BuildStore(_redis(farm))
        rec, self.token = self.store.create(BuildSpec(repo=repo, image=IMAGE, steps=list(steps)), "tester")
        self.id = rec["id"]
        assert self.store.transition(self.id, State.LAUNCHING, "placed by the test")
        self.base = f"{farm.url}/api/v1/agent/builds/{self.id}"
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def call(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, self.base + path, headers={**self.headers, **kw.pop("headers", {})},
                             timeout=30, **kw)

    def put(self, path: str, data: bytes) -> httpx.Response:
        return self.call("PUT", f"/artifacts/{path}", content=data,
                         headers={"X-Checksum-Sha256": hashlib.sha256(data).hexdigest()})

    def every_route(self) -> list[httpx.Response]:
        """Each agent route once, as a token that outlived its build would try it."""
        return [
            self.call("POST", "/start", json={"host": "forger"}),
            self.call("POST", "/log?seq=2", content=b"[buildfarm] build succeeded: forged\n"),
            self.call("POST", "/log?seq=1", content=b"forged again\n"),
            self.call("POST", "/heartbeat"),
            self.call("POST", "/progress", json={"commit": "f" * 40}),
            self.put("out/a.txt", b"forged content\n"),
            self.put("out/new.txt", b"forged content\n"),
            self.call("POST", "/finish", json={"outcome": "succeeded", "exit_code": 0, "commit": "e" * 40}),
            self.call("GET", "/inputs"),
            self.call("GET", f"/inputs/{self.id}/out/a.txt"),
        ]

    def seen(self) -> tuple:
        """What a user sees of the build: record, log, artifacts and their content."""
        b = self.farm.api("GET", f"/api/v1/builds/{self.id}").json()
        arts = b.pop("artifacts")
        content = {a["path"]: self.farm.api("GET", f"/api/v1/builds/{self.id}/artifacts/{a['path']}").content
                   for a in arts}
        return ({k: b[k] for k in ("state", "reason", "exit_code", "commit", "finished_at", "history")},
                self.farm.log_text(self.id), arts, content)


def _run_until_ended(agent: FakeAgent, how: str) -> None:
    assert agent.call("POST", "/start", json={"host": "test"}).status_code == 200
    assert agent.call("POST", "/log?seq=1", content=b"real output\n").json() == {"result": "appended"}
    assert agent.call("POST", "/progress", json={"commit": "a" * 40}).status_code == 200
    assert agent.put("out/a.txt", b"real content\n").status_code == 200
    if how == "cancelled":
        assert agent.farm.api("POST", f"/api/v1/builds/{agent.id}/cancel").status_code == 200
        return
    exit_code = 0 if how == "succeeded" else 2
    r = agent.call("POST", "/finish", json={"outcome": how, "exit_code": exit_code, "commit": "a" * 40})
    assert r.status_code == 200 and r.json()["state"] == how


@pytest.mark.parametrize("how", ["failed", "cancelled", "succeeded"])
def test_a_token_used_after_its_build_ended_changes_nothing(farm, repo, how):
    agent = FakeAgent(farm, repo)
    _run_until_ended(agent, how)
    before = agent.seen()
    assert before[0]["state"] == how and before[0]["commit"] == "a" * 40
    assert before[3] == {"out/a.txt": b"real content\n"}
    for r in agent.every_route():
        assert r.status_code == 409, (r.request.url, r.text)
        assert r.json()["error"] == f"build {agent.id} has ended"
    assert agent.seen() == before
    assert b"forged" not in farm.log_text(agent.id)
    # another token is still told it is not valid, not that the build ended
    r = httpx.post(f"{agent.base}/heartbeat", headers={"Authorization": "Bearer not-the-token"})
    assert r.status_code == 401


def test_an_upload_streaming_while_its_build_is_cancelled_is_not_kept(farm, repo):
    agent = FakeAgent(farm, repo)
    assert agent.call("POST", "/start", json={"host": "test"}).status_code == 200
    assert agent.put("out/a.txt", b"first\n").status_code == 200
    release = threading.Event()
    body = [b"x" * 65536, b"late half\n"]

    def chunks():
        yield body[0]
        release.wait(60)
        yield body[1]

    got = {}
    sha = hashlib.sha256(b"".join(body)).hexdigest()
    t = threading.Thread(target=lambda: got.setdefault("r", agent.call(
        "PUT", "/artifacts/out/a.txt", content=chunks(), headers={"X-Checksum-Sha256": sha})))
    t.start()
    staging = farm.data_dir / "artifacts" / agent.id / "out"
    wait_until(lambda: any(p.name.startswith(".upload-") for p in staging.iterdir()), 30,
               what="the upload to be streaming (its checks passed)")
    assert farm.api("POST", f"/api/v1/builds/{agent.id}/cancel").status_code == 200
    release.set()
    t.join(60)
    assert got["r"].status_code == 409 and "has ended" in got["r"].text
    assert farm.api("GET", f"/api/v1/builds/{agent.id}/artifacts/out/a.txt").content == b"first\n"
    assert [a["sha256"] for a in farm.api("GET", f"/api/v1/builds/{agent.id}/artifacts").json()["artifacts"]] \
        == [hashlib.sha256(b"first\n").hexdigest()]
    assert not any(p.name.startswith(".upload-") for p in staging.iterdir())


def test_a_finish_sent_again_after_a_lost_reply_is_told_the_build_ended(farm, repo):
    agent = FakeAgent(farm, repo)
    assert agent.call("POST", "/start", json={"host": "test"}).status_code == 200
    first = agent.call("POST", "/finish", json={"outcome": "succeeded", "exit_code": 0})
    again = agent.call("POST", "/finish", json={"outcome": "error", "reason": "retried"})
    assert first.status_code == 200 and again.status_code == 409
    assert farm.build(agent.id)["state"] == "succeeded"


def test_the_agent_stops_when_the_farm_says_its_build_ended(farm, repo, tmp_path):
    """The real agent, in a container the farm does not kill: after a cancel it stops the
    build's commands and exits 0 at its next report instead of retrying."""
    from buildfarm.agent_bundle import build_bundle

    bundle = build_bundle(tmp_path / "agent")
    agent = FakeAgent(farm, repo, steps=["echo started; sleep 300"])
    name = f"bf-test-agent-{agent.id}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--network", "host", "-v", f"{bundle}:/agent:ro",
                    "-e", "PYTHONPATH=/agent", "-e", f"BUILDFARM_API={farm.url}", "-e", f"BUILDFARM_BUILD_ID={agent.id}",
                    "-e", f"BUILDFARM_TOKEN={agent.token}", "-e", "BUILDFARM_HEARTBEAT=1", IMAGE,
                    "python3", "/agent/buildfarm_agent.py"], check=True, capture_output=True)
    try:
        wait_until(lambda: b"started" in farm.log_text(agent.id), 60, what="the build to start")
        assert farm.api("POST", f"/api/v1/builds/{agent.id}/cancel").status_code == 200
        code = subprocess.run(["docker", "wait", name], capture_output=True, text=True, timeout=120).stdout.strip()
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
        assert code == "0", logs
        assert "the farm says the build has ended" in logs
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
