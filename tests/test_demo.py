"""`make run` as a new user meets it: scripts/demo.py starts a farm, builds the demo repository with
its log streamed, leaves the farm up with working example pipelines, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading

import pytest
import redis
import yaml

from .conftest import BUILDFARM, ROOT, free_port, wait_until

pytestmark = pytest.mark.docker


def test_make_run_builds_the_demo_and_leaves_a_working_farm(tmp_path, docker_engine, redis_binary):
    data, port = tmp_path / "data", free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "demo.py"), "--port", str(port),
                             "--data-dir", str(data)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    farm_id = None
    try:
        wait_until(lambda: any("Ctrl-C stops the farm" in line for line in lines) or proc.poll() is not None, 240,
                   what="the demo build")
        out = "".join(lines)
        assert "== the demo build exited 0 ==" in out, out[-3000:]
        assert "hello from a buildfarm build" in out and "artifact dist/hello.tar.gz" in out, out
        token = (data / "admin.token").read_text().strip()
        env = {"BUILDFARM_URL": f"http://127.0.0.1:{port}", "BUILDFARM_TOKEN": token, "PATH": "/usr/bin:/bin"}
        listed = subprocess.run([BUILDFARM, "list", "--json"], capture_output=True, text=True, env=env, check=True)
        [demo] = [b for b in json.loads(listed.stdout) if b["spec"]["trigger"]["kind"] == "cli"]
        assert demo["state"] == "succeeded" and demo["spec"]["run"] == "make dist"  # a list shows a summary

        # The example pipelines the farm schedules point at a repository the demo serves.
        pipes = subprocess.run([BUILDFARM, "pipeline", "list", "--json"], capture_output=True, text=True, env=env,
                               check=True)
        assert "nightly-ib" in {p["name"] for p in json.loads(pipes.stdout)["pipelines"]}
        repo = yaml.safe_load((data / "pipelines" / "nightly-ib.yaml").read_text())["parameters"]["repo"]["default"]
        assert re.fullmatch(r"git://127\.0\.0\.1:\d+/cmssw\.git", repo), repo
        heads = subprocess.run(["git", "ls-remote", repo, "main"], capture_output=True, text=True, check=True)
        assert heads.stdout.strip().endswith("refs/heads/main")
        rd = data / "redis"
        farm_id = redis.Redis(host="127.0.0.1", port=int((rd / "port").read_text()),
                              password=(rd / "password").read_text().strip(), decode_responses=True).get("bf:farm-id")
    finally:
        proc.terminate()  # what `kill` or systemd sends; Ctrl-C goes the same way
        code = proc.wait(60)
    assert code == 0, "".join(lines)[-3000:]
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=buildfarm.farm={farm_id}"],
                          capture_output=True, text=True).stdout.split()
    assert farm_id and left == []  # no warm or build container outlives the farm
