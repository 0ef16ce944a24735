"""Nothing lost: a farm killed with SIGKILL and started again finishes every build exactly once."""

from __future__ import annotations

import pytest

from .conftest import wait_until

pytestmark = pytest.mark.docker


def test_sigkill_during_five_builds_then_restart_finishes_each_exactly_once(fresh_farm, git_server, counter):
    # Each build holds at the gate until the farm has been killed and started again.
    script = f"#!/bin/sh\necho step-one\n{counter.wait_for_gate()}\necho step-two\n"
    repo = git_server.make_repo("restart", {"build.sh": script})
    farm = fresh_farm()
    command = f'curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID && ./build.sh'
    running = [farm.submit(repo, "sh", "-c", command, options=("--cpus", "0.3", "--mem", "128")) for _ in range(5)]
    wait_until(lambda: all(counter.hits[b] == 1 for b in running), 90, what="five builds to start")
    # Two more wait in the queue: they need a whole cpu each, which the five hold.
    queued = [farm.submit(repo, "sh", "-c", command, options=("--cpus", "1.5", "--mem", "128")) for _ in range(2)]
    assert {farm.build(b)["state"] for b in queued} == {"queued"}

    farm.kill9()
    farm.start()  # same data directory, same port: the same farm
    counter.open_gate()

    records = [farm.wait_done(b, 180) for b in running + queued]
    assert [r["state"] for r in records] == ["succeeded"] * 7, [(r["id"], r["state"], r["reason"]) for r in records]
    assert all(counter.hits[b] == 1 for b in running + queued), counter.hits
    for b in running + queued:
        log = farm.log_text(b)
        # the log is whole and in order even though the farm died in the middle of it
        assert log.count(b"step-one") == 1 and log.count(b"step-two") == 1, log
        assert log.index(b"step-one") < log.index(b"step-two")
    for r in records[:5]:
        assert r["attempt"] == 1  # adopted, not re-run


def test_sigkill_before_the_scheduler_starts_anything_keeps_queued_builds(fresh_farm, git_server, counter):
    repo = git_server.make_repo("restart2", {"f": "x\n"})
    farm = fresh_farm("--cpus", "1")
    ids = [farm.submit(repo, "sh", "-c", f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID",
                       options=("--cpus", "1", "--wait-for-capacity")) for _ in range(3)]
    farm.kill9()
    farm.start()
    records = [farm.wait_done(b, 120) for b in ids]
    assert [r["state"] for r in records] == ["succeeded"] * 3
    assert all(counter.hits[b] == 1 for b in ids)


def test_process_isolation_runs_builds_without_docker(fresh_farm, git_server):
    repo = git_server.make_repo("proc", {"hello.txt": "hello from the checkout\n"})
    farm = fresh_farm("--isolation", "process")
    out = farm.cli("submit", "--repo", repo, "--image", "ignored", "--artifact", "hello.txt", "--wait", "--follow",
                   "--", "cat", "hello.txt")
    assert out.returncode == 0, out.stderr
    assert b"hello from the checkout" in out.stdout
    fail = farm.cli("submit", "--repo", repo, "--image", "ignored", "--wait", "--", "sh", "-c", "exit 3")
    assert fail.returncode == 3
    timeout = farm.cli("submit", "--repo", repo, "--image", "ignored", "--timeout", "1", "--wait", "--", "sleep", "30")
    assert timeout.returncode == 124


def test_sigterm_stops_the_farm_with_its_warm_containers_and_redis(fresh_farm, git_server):
    import os
    import subprocess

    from .conftest import IMAGE

    f = fresh_farm()
    repo = git_server.make_repo("sigterm", {"README": "x\n"})
    assert f.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "true").returncode == 0
    farm_id = f.redis_get("bf:farm-id")

    def containers():
        out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=buildfarm.farm={farm_id}"],
                             capture_output=True, text=True)
        return out.stdout.split()

    wait_until(containers, 30, what="the warm containers of the image in use")
    redis_pid = int((f.data_dir / "redis" / "redis.pid").read_text())
    f.proc.terminate()  # what systemd or `kill` sends
    assert f.proc.wait(30) == 0
    assert containers() == []

    def redis_gone():
        try:
            os.kill(redis_pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(redis_gone, 10, what="the embedded Redis to stop")
