"""The farm keeps itself alive (issue 11): one farm per data directory, a supervised embedded
Redis, 503s (never 500s) while Redis is away, and a clean stop that leaves no warm container
behind even when Redis does not answer. Real processes throughout: `buildfarm up`, its
redis-server, Docker."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from .conftest import BUILDFARM, IMAGE, wait_until

pytestmark = pytest.mark.docker


def redis_pid(farm) -> int:
    return int((farm.data_dir / "redis" / "redis.pid").read_text())


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def warm_containers(farm_id: str) -> list[str]:
    flt = ["--filter", f"label=buildfarm.farm={farm_id}", "--filter", "name=buildfarm-warm-"]
    return subprocess.run(["docker", "ps", "-aq", *flt], capture_output=True, text=True).stdout.split()


def test_second_up_on_the_same_data_dir_fails_at_once_and_the_first_farm_keeps_working(fresh_farm, git_server):
    farm = fresh_farm()
    repo = git_server.make_repo("alive-lock", {"README": "x\n"})
    pid_before = redis_pid(farm)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "BUILDFARM_URL")}
    second = subprocess.run([BUILDFARM, "up", "--data-dir", str(farm.data_dir), "--port", str(farm.port)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert second.returncode != 0
    assert f"a farm (pid {farm.proc.pid}, {farm.url}) already runs on {farm.data_dir}" in second.stderr, second.stderr
    # On another port too: the lock is the data directory's, not the port's.
    other = subprocess.run([BUILDFARM, "up", "--data-dir", str(farm.data_dir), "--port", "1"],
                           capture_output=True, text=True, timeout=60, env=env)
    assert other.returncode != 0 and "already runs on" in other.stderr, other.stderr
    assert alive(pid_before) and redis_pid(farm) == pid_before  # its Redis was not touched
    assert farm.api("GET", "/readyz").status_code == 200
    out = farm.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "echo", "still-here")
    assert out.returncode == 0, out.stderr.decode()
    assert "Traceback" not in farm.up_log()


def test_the_lock_dies_with_the_farm(fresh_farm):
    farm = fresh_farm()
    farm.kill9()
    farm.start()  # no stale lock after SIGKILL: the same data directory starts at once
    assert farm.api("GET", "/readyz").status_code == 200


def test_redis_killed_during_a_build_comes_back_and_the_build_ends_whole(fresh_farm, git_server, counter):
    # The build holds between its two steps until the test opens the gate, once Redis is back.
    repo = git_server.make_repo("alive-redis", {"build.sh": f"#!/bin/sh\necho step-one\n{counter.wait_for_gate()}\n"
                                                            f"echo step-two\n"})
    farm = fresh_farm()
    bid = farm.submit(repo, "sh", "-c", f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID && ./build.sh")
    wait_until(lambda: counter.hits[bid] == 1, 90, what="the build to start")
    old = redis_pid(farm)
    os.kill(old, signal.SIGSTOP)  # held down: the window in which the farm is without Redis
    try:
        ready = farm.api("GET", "/readyz")
        assert ready.status_code == 503 and "Redis is not answering" in ready.json()["error"], ready.text
        assert ready.headers["Retry-After"]
        resp = farm.api("GET", f"/api/v1/builds/{bid}")
        assert resp.status_code == 503, resp.text
        assert resp.headers["Retry-After"] and "Redis is not answering" in resp.json()["error"]
        # A change too (its token is checked before its body is read, outside the routes): a 503, not a 500.
        resp = farm.api("POST", "/api/v1/builds", json={"repo": repo, "image": IMAGE, "command": ["true"]})
        assert resp.status_code == 503 and "Redis is not answering" in resp.json()["error"], resp.text
        # The CLI waits it out, saying so.
        env = {**os.environ, "BUILDFARM_TOKEN": farm.token}
        waiting = subprocess.Popen([BUILDFARM, "--server", farm.url, "status", bid], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        said = waiting.stderr.readline()
        assert b"is not available" in said and b"retrying" in said, said
    finally:
        os.kill(old, signal.SIGKILL)
    out, err = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, err.decode()
    wait_until(lambda: (farm.data_dir / "redis" / "redis.pid").exists() and redis_pid(farm) != old
               and alive(redis_pid(farm)), 15, what="the farm to start its Redis again")
    assert farm.build(bid)["state"] == "running"  # it outlived the outage
    counter.open_gate()
    record = farm.wait_done(bid, 120)
    assert record["state"] == "succeeded", record
    log = farm.log_text(bid)
    assert log.count(b"step-one") == 1 and log.count(b"step-two") == 1, log
    assert counter.hits[bid] == 1
    after = farm.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "true")
    assert after.returncode == 0, after.stderr.decode()
    text = farm.up_log()
    assert "Traceback" not in text, text
    # One warning with the cause (the end of redis.log), one line when it is back, nothing between.
    assert text.count("the embedded Redis (pid") == 1 and "The end of" in text, text
    assert text.count("the embedded Redis is back") == 1, text
    assert text.count("scheduler: Redis is not answering") == 1, text


def test_sigterm_with_redis_stopped_removes_the_warm_containers(fresh_farm, git_server):
    farm = fresh_farm()
    repo = git_server.make_repo("alive-stop", {"README": "x\n"})
    assert farm.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "true").returncode == 0
    farm_id = farm.redis_get("bf:farm-id")
    wait_until(lambda: warm_containers(farm_id), 60, what="the warm containers")
    pid = redis_pid(farm)
    os.kill(pid, signal.SIGSTOP)
    try:
        farm.proc.terminate()
        assert farm.proc.wait(60) == 0
        assert warm_containers(farm_id) == []
        assert "Traceback" not in farm.up_log(), farm.up_log()
    finally:
        os.kill(pid, signal.SIGKILL)
