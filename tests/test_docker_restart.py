"""The Docker engine restarting under a running farm (dockerd killed with SIGKILL and started again),
on a private dockerd (tests/dockerd.py) so the machine's engine and other tests are left alone.

Without live-restore the engine's restart kills the build containers: a build ends `error` with
that reason, or runs again when its `retries` allow; the warm pool is started afresh. With
live-restore the containers run on and the farm goes on waiting for them: the build succeeds with
all its output, in its first attempt. The farm itself is never restarted."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import IMAGE, FarmProcess, wait_until
from .webui import GATE_PY

pytestmark = pytest.mark.docker


@pytest.fixture
def repo(git_server):
    return git_server.make_repo("dockerd-restart", {"gate.py": GATE_PY})


def gated(farm, repo, gate, name: str, *options: str) -> str:
    """A build that prints a line, waits until the test opens its gate, then prints another."""
    command = f"echo before-the-restart; python3 gate.py {gate.url(name)}; echo after-the-restart"
    return farm.submit(repo, "sh", "-c", command, options=("--cpus", "0.5", "--mem", "256", *options))


def warm_running(engine) -> int:
    """Idle warm containers (one handed a build keeps the label but takes the build's name)."""
    out = engine.docker("ps", "--format", "{{.Names}}", "--filter", "label=buildfarm.warm=1",
                        "--filter", "status=running")
    return sum(1 for name in out.stdout.split() if name.startswith("buildfarm-warm-"))


def started(farm, bid: str) -> bool:
    return b"before-the-restart" in farm.log_text(bid)


def test_without_live_restore_builds_end_error_or_are_retried_and_the_warm_pool_comes_back(
        private_dockerd, tmp_path, repo, gate):
    engine = private_dockerd
    engine.start(live_restore=False)
    farm = FarmProcess(tmp_path / "data", env=engine.env)
    try:
        once = gated(farm, repo, gate, "no-lr-once")
        retried = gated(farm, repo, gate, "no-lr-retried", "--retries", "1")
        wait_until(lambda: started(farm, once) and started(farm, retried), 90, what="both builds to start")
        wait_until(lambda: warm_running(engine) == 2, 60, what="the warm pool")

        engine.kill()
        engine.start(live_restore=False)

        rec = farm.wait_done(once, 90)
        assert rec["state"] == "error", rec
        assert rec["reason"].startswith("the Docker engine restarted during the build and its container ended")
        # The retried build runs again (attempt 2) and, its gate open, succeeds.
        wait_until(lambda: farm.build(retried)["attempt"] == 2, 90, what="the retry")
        history = farm.build(retried)["history"]
        assert any("Docker engine restarted" in h["reason"] and "retry 1 of 1" in h["reason"] for h in history)
        gate.open("no-lr-retried")
        assert farm.wait_done(retried, 90)["state"] == "succeeded"
        assert b"after-the-restart" in farm.log_text(retried)
        wait_until(lambda: warm_running(engine) == 2, 60, what="the warm pool to be started again")
        # The same farm process went on: a new build runs as usual.
        assert farm.proc.poll() is None
        gate.open("no-lr-new")
        new = gated(farm, repo, gate, "no-lr-new")
        assert farm.wait_done(new, 90)["state"] == "succeeded"
        assert "the Docker engine answers again" in farm.up_log()
    finally:
        farm.stop()


def test_with_live_restore_a_running_build_keeps_running_and_succeeds_with_all_its_output(
        private_dockerd, tmp_path, repo, gate):
    engine = private_dockerd
    engine.start(live_restore=True)
    farm = FarmProcess(tmp_path / "data", env=engine.env)
    try:
        bid = gated(farm, repo, gate, "lr")
        wait_until(lambda: started(farm, bid), 90, what="the build to start")

        engine.kill()
        engine.start(live_restore=True)
        gate.open("lr")

        rec = farm.wait_done(bid, 90)
        assert rec["state"] == "succeeded", rec
        assert rec["attempt"] == 1  # the same container, waited for again: not re-run
        lines = farm.log_text(bid).splitlines()  # the output lines (the echoed command holds both words too)
        assert lines.count(b"before-the-restart") == 1 and lines.count(b"after-the-restart") == 1
        assert lines.index(b"before-the-restart") < lines.index(b"after-the-restart")
    finally:
        farm.stop()


def test_the_private_engine_leaves_the_machines_docker_bridge_alone(private_dockerd):
    """A dockerd started without a bridge deletes docker0, which every engine on the machine shares:
    after the private engine started, killed and started again, the machine's own engine still
    runs a container on its default bridge network."""
    engine = private_dockerd
    engine.start(live_restore=False)
    engine.kill()
    engine.start(live_restore=False)
    out = subprocess.run(["docker", "run", "--rm", IMAGE, "true"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
