"""The Jenkins tests' parts: the Jenkins double as a fixture, `buildfarm jenkins-bridge` as a
process, label maps, and checks that nothing of the bridge is left. Loaded as a pytest plugin
(tests/conftest.py), so every Jenkins test file shares them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from buildfarm.states import TERMINAL_STATES
from tests.conftest import BUILDFARM, containers_of, need, wait_until
from tests.doubles.jenkins import JenkinsDouble

AGENT_IMAGE = "buildfarm/jenkins-agent:standin"
BIG_IMAGE = "buildfarm-test/jenkins-agent-big:latest"  # a second image (a tag of the stand-in)
TERMINAL = TERMINAL_STATES
JENKINS_ENV = {"BUILD_URL": "https://jenkins.example/job/app/42/", "JOB_NAME": "app", "BUILD_NUMBER": "42"}


# -- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def agent_image(docker_engine):
    have = subprocess.run(["docker", "image", "inspect", AGENT_IMAGE], capture_output=True).returncode == 0
    need(have, f"the image {AGENT_IMAGE} (make images)")
    subprocess.run(["docker", "tag", AGENT_IMAGE, BIG_IMAGE], check=True)
    yield AGENT_IMAGE
    subprocess.run(["docker", "rmi", BIG_IMAGE], capture_output=True)


@pytest.fixture
def double():
    d = JenkinsDouble().start()
    yield d
    d.stop()


def farm_env(farm) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("BUILD_URL", "JOB_NAME", "BUILD_NUMBER")}
    if getattr(farm, "token", None):
        env["BUILDFARM_TOKEN"] = farm.token
    return env


def farm_get(farm, path: str, **params) -> dict:
    headers = getattr(farm, "headers", None) or {}
    r = httpx.get(farm.url + path, params=params, headers=headers, timeout=30)
    r.raise_for_status()
    return r.json()


class BridgeProcess:
    """`buildfarm jenkins-bridge ... --json`, as an operator runs it; its events are collected."""

    def __init__(self, farm, double: JenkinsDouble, label_map: Path, *extra: str):
        self.args = [BUILDFARM, "--server", farm.url, "jenkins-bridge", "--url", double.url, "--user", double.user,
                     "--token", double.token, "--label-map", str(label_map), "--interval", "0.3", "--json", *extra]
        self.env = farm_env(farm)
        self.events: list[dict] = []
        self.output: list[str] = []
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=self.env)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        wait_until(lambda: self.of("started") or self.proc.poll() is not None, 30, what="the bridge to start")
        assert self.proc.poll() is None, "\n".join(self.output)

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.output.append(line.rstrip())
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def of(self, event: str, **match) -> list[dict]:
        return [e for e in list(self.events) if e["event"] == event and all(e.get(k) == v for k, v in match.items())]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def bridges():
    started: list[BridgeProcess] = []

    def make(*a, **kw) -> BridgeProcess:
        b = BridgeProcess(*a, **kw)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def write_label_map(path: Path, repo: str, labels: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"repo": repo, "labels": labels}))
    return path


def linux(max_agents: int = 2, **kw) -> dict:
    return {"image": AGENT_IMAGE, "cpus": 0.5, "mem": 256, "max_agents": max_agents, **kw}


def agent_builds(farm, double: JenkinsDouble) -> list[dict]:
    """Every buildfarm build of this bridge's agents (the farm's own records)."""
    builds = farm_get(farm, "/api/v1/builds", limit=500)["builds"]
    return [b for b in builds if (b["spec"].get("trigger") or {}).get("detail", {}).get("bridge")
            == double.url.rstrip("/")]


def assert_clean(farm, double: JenkinsDouble, timeout: float = 60) -> list[dict]:
    """No bridge node in Jenkins, every agent build ended, no container of them left."""
    wait_until(lambda: not [n for n in double.node_names() if n.startswith("bf-")], timeout,
               what=f"the bridge's nodes to be deleted (left: {double.node_names()})")
    wait_until(lambda: all(b["state"] in TERMINAL for b in agent_builds(farm, double)), timeout,
               what="every agent build to end")
    builds = agent_builds(farm, double)
    wait_until(lambda: not any(containers_of(b["id"]) for b in builds), 30, what="the agent containers to go")
    return builds


# -- Jenkins triggers buildfarm builds: a shell step ---------------------------------------------------

def shell_step(farm, tmp_path: Path, script: str, background: bool = False):
    """Run `script` as Jenkins runs a shell build step (`sh -xe SCRIPT`, BUILD_URL & co. set)."""
    f = tmp_path / f"jenkins{time.monotonic_ns()}.sh"
    f.write_text(f"export PATH={Path(BUILDFARM).parent}:$PATH\nexport BUILDFARM_URL={farm.url}\n{script}\n")
    env = {**farm_env(farm), **JENKINS_ENV}
    if background:
        return subprocess.Popen(["sh", "-xe", str(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    return subprocess.run(["sh", "-xe", str(f)], capture_output=True, timeout=120, env=env)


def build_id_from(stderr: bytes) -> str:
    for line in stderr.decode().splitlines():
        if line.startswith("build ") and line.endswith(" queued"):
            return line.split()[1]
    raise AssertionError(f"no build id in: {stderr.decode()[-2000:]}")


def assert_jenkins_trigger(farm, build_id: str) -> None:
    t = farm.build(build_id)["spec"]["trigger"]
    assert t["kind"] == "jenkins"
    assert t["url"] == JENKINS_ENV["BUILD_URL"]
    assert t["detail"] == {"job": "app", "number": "42"}
