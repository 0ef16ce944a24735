"""buildfarm as a Mesos framework: unmodified pymesos, talking HTTP to a master double that speaks
the v1 scheduler API (tests/doubles/mesos.py), whose agents run the tasks as real containers."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import httpx
import pytest

from .conftest import BUILDFARM, IMAGE, FarmProcess, free_port, wait_until
from .doubles.mesos import AgentSpec, MesosDouble

pytestmark = pytest.mark.docker

X86 = AgentSpec("agent-x86", "x86-host", cpus=2, mem=4096, attributes={"arch": "x86_64", "os": "el9"})
ARM = AgentSpec("agent-arm", "arm-host", cpus=2, mem=4096, attributes={"arch": "aarch64", "os": "el9"})
EL8 = AgentSpec("agent-el8", "el8-host", cpus=1, mem=2048, attributes={"arch": "x86_64", "os": "el8"})


class MesosFarm:
    def __init__(self, tmp_path, agents, heartbeat_seconds: float = 5, *extra: str, update_retry_seconds: float = 2):
        self.master = MesosDouble(agents, heartbeat_seconds=heartbeat_seconds, kill_grace=1,
                                  update_retry_seconds=update_retry_seconds).start()
        self.tmp = tmp_path
        self.farm = FarmProcess(tmp_path / "data", "--backend", "mesos", "--master", self.master.address,
                                "--mesos-cache-path", str(tmp_path / "cache"), *extra)

    def stop(self):
        self.farm.stop()
        self.master.stop()


@pytest.fixture
def mesos_farm(tmp_path, docker_engine, redis_binary):
    made = []

    def make(agents=(X86,), heartbeat_seconds: float = 5, *extra: str, update_retry_seconds: float = 2):
        m = MesosFarm(tmp_path, list(agents), heartbeat_seconds, *extra, update_retry_seconds=update_retry_seconds)
        made.append(m)
        return m

    yield make
    for m in made:
        m.stop()


@pytest.fixture(scope="module")
def repo(git_server):
    return git_server.make_repo("mesos-app", {"Makefile": "all:\n\t@echo built on $$(hostname)\n"
                                                          "\t@mkdir -p out && echo result > out/r.txt\n"})


def test_a_build_runs_end_to_end_through_pymesos_the_master_and_docker(mesos_farm, repo, tmp_path):
    m = mesos_farm()
    f = m.farm
    out = f.cli("submit", "--repo", repo, "--image", IMAGE, "--artifact", "out/*", "--wait", "--follow", "--json",
                "--", "make")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["state"] == "succeeded" and record["agent_id"] == "agent-x86"
    assert b"built on" in out.stderr  # --json sends the followed log to stderr
    assert [a["path"] for a in json.loads(f.cli("artifacts", record["id"], "--json").stdout)] == ["out/r.txt"]
    # The task was a Docker task with the build's resources and labels, and its updates were acknowledged.
    accept = m.master.calls_of("ACCEPT")[-1]["accept"]
    task = accept["operations"][0]["launch"]["task_infos"][0]
    assert task["container"]["type"] == "DOCKER" and task["container"]["docker"]["image"] == IMAGE
    assert task["container"]["docker"]["network"] == "HOST"
    assert {"key": "buildfarm.build-id", "value": record["id"]} in task["labels"]["labels"]
    assert task["command"]["uris"][0]["value"].endswith("/api/v1/agent/bundle.tar.gz")
    acked = {c["acknowledge"]["task_id"]["value"] for c in m.master.calls_of("ACKNOWLEDGE")}
    assert f"{record['id']}-1" in acked
    # the command's own exit code comes back too
    fail = f.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "sh", "-c", "exit 3")
    assert fail.returncode == 3


def test_constraints_place_builds_on_matching_agents_or_say_why_not(mesos_farm, repo):
    m = mesos_farm([X86, ARM, EL8])
    f = m.farm
    wait_until(lambda: len(f.api("GET", "/api/v1/agents").json()["agents"]) == 3, 30, what="three agents")
    placed = {}
    for constraint, expected in (("arch:aarch64", "agent-arm"), ("os:el8", "agent-el8"), ("os!=el8", None)):
        out = f.cli("submit", "--repo", repo, "--image", IMAGE, "--constraint", constraint, "--wait", "--json", "--",
                    "true")
        assert out.returncode == 0, out.stderr
        placed[constraint] = json.loads(out.stdout)["agent_id"]
        if expected:
            assert placed[constraint] == expected
    assert placed["os!=el8"] in ("agent-x86", "agent-arm")
    never = f.cli("submit", "--repo", repo, "--image", IMAGE, "--constraint", "arch:ppc64le", "--", "true")
    assert never.returncode == 2 and b"no agent has the attributes arch:ppc64le" in never.stderr
    waiting = f.submit(repo, "true", options=("--constraint", "arch:ppc64le", "--wait-for-capacity"))
    wait_until(lambda: "waiting for capacity: no agent has the attributes arch:ppc64le" in f.build(waiting)["reason"],
               30, what="the waiting reason")
    assert f.build(waiting)["state"] == "queued"
    f.cli("cancel", waiting)


def test_an_agent_lost_mid_build_is_retried_on_another_agent(mesos_farm, repo, counter):
    m = mesos_farm([X86, AgentSpec("agent-x86-b", "x86-b", cpus=2, mem=4096, attributes={"arch": "x86_64"})])
    f = m.farm
    bid = f.submit(repo, "sh", "-c", f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID; sleep 4; echo finished",
                   options=("--retries", "1"))
    wait_until(lambda: counter.hits[bid] == 1, 60, what="the build to start")
    first_agent = f.build(bid)["agent_id"]
    m.master.lose_agent(first_agent)
    record = f.wait_done(bid, 120)
    assert record["state"] == "succeeded", record
    assert record["attempt"] == 2 and record["agent_id"] != first_agent
    assert any("retrying" in h["reason"] and "TASK_UNREACHABLE" in h["reason"] for h in record["history"])
    assert counter.hits[bid] == 2  # it ran again on the other agent, as the user asked (--retries 1)
    # without retries, a lost agent ends the build with the reason
    bid2 = f.submit(repo, "sh", "-c", f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID; sleep 30")
    wait_until(lambda: counter.hits[bid2] == 1, 60, what="the second build to start")
    m.master.lose_agent(f.build(bid2)["agent_id"])
    record2 = f.wait_done(bid2, 60)
    assert record2["state"] == "error" and "lost" in record2["reason"]


def test_scheduler_sigkill_mid_five_builds_resubscribes_and_each_finishes_once(mesos_farm, repo, counter):
    m = mesos_farm([X86, AgentSpec("agent-x86-b", "x86-b", cpus=2, mem=4096, attributes={"arch": "x86_64"})])
    f = m.farm
    # long enough to be still running when the restarted scheduler reconciles, even on a busy machine
    ids = [f.submit(repo, "sh", "-c", f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID; sleep 15; echo done-once",
                    options=("--cpus", "0.5", "--mem", "128")) for _ in range(5)]
    wait_until(lambda: all(counter.hits[b] == 1 for b in ids), 90, what="five builds to start")
    framework_id = m.master.calls_of("SUBSCRIBE")[0].get("framework_id")  # None: first subscription
    assert framework_id is None
    f.kill9()
    f.start()
    records = [f.wait_done(b, 120) for b in ids]
    assert [r["state"] for r in records] == ["succeeded"] * 5, [(r["id"], r["reason"]) for r in records]
    assert all(counter.hits[b] == 1 for b in ids), counter.hits
    for b in ids:
        assert f.log_text(b).count(b"\ndone-once\n") == 1
    subscribes = m.master.calls_of("SUBSCRIBE")
    assert len(m.master.frameworks) == 1
    assert subscribes[-1]["framework_id"]["value"] == next(iter(m.master.frameworks))
    # it reconciled the builds it believed running
    reconciled = {t["task_id"]["value"] for c in m.master.calls_of("RECONCILE") for t in c["reconcile"]["tasks"]}
    assert {f"{b}-1" for b in ids} <= reconciled


def test_a_farm_sigkilled_while_mesos_fetches_its_agent_queues_the_build_again(mesos_farm, repo, counter):
    # The agent re-sends its update ("Failed to fetch ...") only on its backoff (10 s doubling to
    # 10 min in Mesos): the restarted farm's reconciliation is answered first, without the cause.
    m = mesos_farm(update_retry_seconds=600)
    f = m.farm
    fetching, farm_gone = threading.Event(), threading.Event()
    fetch = m.master._fetch

    def fetch_once_the_farm_is_gone(uri, sandbox):
        fetching.set()
        farm_gone.wait(60)
        fetch(uri, sandbox)

    m.master._fetch = fetch_once_the_farm_is_gone
    bid = f.submit(repo, "sh", "-c", f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID; echo built")
    wait_until(fetching.is_set, 60, what="the Mesos fetcher to start on the agent bundle")
    f.kill9()
    farm_gone.set()
    wait_until(lambda: m.master.task_states().get(f"{bid}-1") == "TASK_FAILED", 30, what="the fetch to fail")
    m.master._fetch = fetch
    f.start()
    record = f.wait_done(bid, 120)
    assert record["state"] == "succeeded", record
    assert record["attempt"] == 2 and counter.hits[bid] == 1
    assert any("retrying: the task ended (TASK_FAILED)" in h["reason"] for h in record["history"]), record["history"]


def test_offers_are_suppressed_when_idle_revived_on_submit_and_declined_with_filters(mesos_farm, repo):
    m = mesos_farm()
    f = m.farm
    wait_until(lambda: m.master.calls_of("SUPPRESS"), 30, what="SUPPRESS with an empty queue")
    declines = m.master.calls_of("DECLINE")
    assert declines and all(d["decline"]["filters"]["refuse_seconds"] > 0 for d in declines)
    revives_before = len(m.master.calls_of("REVIVE"))
    out = f.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "true")
    assert out.returncode == 0
    assert len(m.master.calls_of("REVIVE")) > revives_before
    wait_until(lambda: m.master.frameworks[next(iter(m.master.frameworks))].suppressed, 30,
               what="suppressed again once the queue is empty")
    assert not m.master.offers  # no offer is held


def test_a_master_restart_drops_the_stream_and_the_scheduler_carries_on(mesos_farm, repo, counter):
    m = mesos_farm()
    f = m.farm
    running = f.submit(repo, "sh", "-c", f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID; sleep 4")
    wait_until(lambda: counter.hits[running] == 1, 60, what="the build to start")
    subscribes = len(m.master.calls_of("SUBSCRIBE"))
    m.master.drop_streams()
    wait_until(lambda: len(m.master.calls_of("SUBSCRIBE")) > subscribes, 60, what="a new SUBSCRIBE")
    assert f.wait_done(running, 60)["state"] == "succeeded"
    after = f.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "true")
    assert after.returncode == 0
    assert counter.hits[running] == 1


def test_a_silent_connection_is_noticed_by_its_missing_heartbeats_and_replaced(mesos_farm, repo, counter):
    m = mesos_farm((X86,), 1, "--mesos-heartbeat-timeout", "3")  # a HEARTBEAT every second
    f = m.farm
    running = f.submit(repo, "sh", "-c", f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID; sleep 5")
    wait_until(lambda: counter.hits[running] == 1, 60, what="the build to start")
    first = m.master.calls_of("SUBSCRIBE")
    m.master.stall_streams()  # open, but silent: no FIN, no more events
    wait_until(lambda: len(m.master.calls_of("SUBSCRIBE")) > len(first), 30, what="a new SUBSCRIBE")
    again = m.master.calls_of("SUBSCRIBE")[-1]
    assert again["framework_id"] == {"value": f.redis_get("bf:mesos:framework-id")}  # the same framework
    assert "no HEARTBEAT from the Mesos master" in f.up_log()
    assert f.wait_done(running, 60)["state"] == "succeeded"
    after = f.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "true")
    assert after.returncode == 0, after.stderr.decode()
    assert counter.hits[running] == 1


def test_a_master_electing_a_leader_is_asked_again_with_backoff_not_in_a_loop(mesos_farm, repo):
    m = mesos_farm()
    f = m.farm
    subscribes = len(m.master.calls_of("SUBSCRIBE"))
    m.master.unavailable(4)  # 503 "Master has not finished recovery" to every call for 4 s
    wait_until(lambda: len(m.master.calls_of("SUBSCRIBE")) > subscribes, 40, what="a SUBSCRIBE after the recovery")
    # 0, 0.5, 1, 2 s apart: a handful of attempts in 4 s (pymesos alone re-sends at once, hundreds a second).
    assert 1 <= m.master.unavailable_replies <= 8, m.master.unavailable_replies
    assert "no subscription with the Mesos master after" in f.up_log()
    out = f.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "true")
    assert out.returncode == 0, out.stderr.decode()


def test_cancel_and_timeout_kill_the_task(mesos_farm, repo, counter):
    m = mesos_farm()
    f = m.farm
    bid = f.submit(repo, "sh", "-c", f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID; sleep 120")
    wait_until(lambda: counter.hits[bid] == 1, 60, what="the build to start")
    assert f.cli("cancel", bid).returncode == 0
    wait_until(lambda: m.master.task_states().get(f"{bid}-1") == "TASK_KILLED", 30, what="the task to be killed")
    assert f.build(bid)["state"] == "cancelled"
    out = f.cli("submit", "--repo", repo, "--image", IMAGE, "--timeout", "2", "--wait", "--json", "--", "sleep", "60")
    assert out.returncode == 124
    timed = json.loads(out.stdout)["id"]
    wait_until(lambda: m.master.task_states().get(f"{timed}-1") == "TASK_KILLED", 30, what="the timed-out task killed")


def test_a_missing_image_ends_the_build_with_the_agents_reason(mesos_farm, repo):
    f = mesos_farm().farm
    out = f.cli("submit", "--repo", repo, "--image", "no/such-image:1", "--wait", "--json", "--", "true")
    assert out.returncode == 125
    reason = json.loads(out.stdout)["reason"]
    assert "could not start" in reason and "no/such-image:1" in reason


def test_teardown_ends_the_framework(mesos_farm, repo, tmp_path):
    m = mesos_farm()
    f = m.farm
    assert f.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "true").returncode == 0
    framework_id = f.redis_get("bf:mesos:framework-id")
    assert framework_id in m.master.frameworks
    f.kill9()  # the farm's own scheduler is gone; its Redis stays
    env = dict(os.environ, REDIS_URL=f.redis_url())
    out = subprocess.run([BUILDFARM, "scheduler", "--backend", "mesos", "--master", m.master.address,
                          "--agent-api-url", f.url, "--data-dir", str(tmp_path / "sched"), "--teardown"],
                         capture_output=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert m.master.calls_of("TEARDOWN")
    assert framework_id not in m.master.frameworks
    assert f.redis_get("bf:mesos:framework-id") is None


def test_a_framework_removed_by_the_operator_registers_anew_without_a_subscribe_storm(mesos_farm, repo, counter):
    m = mesos_farm()
    f = m.farm
    bid = f.submit(repo, "sh", "-c", f"curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID; sleep 60")
    wait_until(lambda: counter.hits[bid] == 1, 60, what="the build to start")
    old = f.redis_get("bf:mesos:framework-id")
    subscribes = len(m.master.calls_of("SUBSCRIBE"))
    r = httpx.post(f"http://{m.master.address}/master/teardown", data={"frameworkId": old}, timeout=10)
    assert r.status_code == 200
    # The build's task died with the framework: the build ends with a reason, never stays "running".
    record = f.wait_done(bid, 90)
    assert record["state"] == "error", record
    wait_until(lambda: f.redis_get("bf:mesos:framework-id") not in (None, old), 60, what="a new framework id")
    assert len(m.master.calls_of("SUBSCRIBE")) - subscribes < 10  # pymesos alone would loop on the dead id
    out = f.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "true")
    assert out.returncode == 0, out.stderr.decode()


def test_credentials_the_master_refuses_stop_the_farm_with_a_clear_message(tmp_path, docker_engine, redis_binary):
    master = MesosDouble([X86]).start()
    master.credentials = ("buildfarm", "right-secret")
    scheduler = ["scheduler", "--agent-api-url", "http://127.0.0.1:9"]
    try:
        for n, command in enumerate((["up", "--port", str(free_port())], scheduler, [*scheduler, "--teardown"])):
            env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
            if command[0] == "scheduler":
                up = FarmProcess(tmp_path / f"data-ok-{n}")  # the scheduler alone needs a farm's Redis,
                env["REDIS_URL"] = up.redis_url()
                up.kill9()  # and to lead it: with `up`'s own scheduler gone, it takes the lease
            out = subprocess.run([BUILDFARM, *command, "--backend", "mesos", "--master", master.address,
                                  "--principal", "buildfarm", "--secret", "wrong-secret",
                                  "--data-dir", str(tmp_path / f"data-{n}")],
                                 capture_output=True, text=True, timeout=90, env=env)
            if command[0] == "scheduler":
                up.stop()
            assert out.returncode == 125, out.stderr[-2000:]
            last = out.stderr.strip().splitlines()[-1]
            assert last.startswith("error: the connection to the Mesos master") and "HTTP 401" in last, last
            assert "check --principal and --secret" in last
            assert "Traceback" not in out.stderr and "scheduler round failed" not in out.stderr, out.stderr[-3000:]
    finally:
        master.stop()


def test_a_refused_subscription_reaches_the_farm_through_its_backend_never_as_an_interrupt(redis_url, monkeypatch):
    """pymesos ends its connection for good by raising its error in the main thread, through
    _thread.interrupt_main(), wherever that thread is. In `buildfarm up` that was uvicorn, which took
    it for a second Ctrl-C when the scheduler thread had already stopped the server for the same
    failure, and printed the app's lifespan cancelled, with a CancelledError traceback. The backend
    hears of the end from pymesos and wakes the scheduler loop, which stops the farm; the main thread
    runs on undisturbed."""
    import pymesos.process
    import redis

    from buildfarm.backends.mesos import MesosBackend, MesosOptions

    monkeypatch.setattr(pymesos.process, "thread", pymesos.process.thread)  # restored: the backend replaces it
    master = MesosDouble([X86]).start()
    master.credentials = ("buildfarm", "right-secret")
    woken = []
    try:
        backend = MesosBackend(MesosOptions(master.address, principal="buildfarm", secret="wrong-secret"),
                               redis.Redis.from_url(redis_url, decode_responses=True), "http://127.0.0.1:9",
                               lambda ev: None, woken.append, lambda: [])
        ended = threading.Thread(target=backend.driver.join, daemon=True)  # pymesos' connection thread, after
        ended.start()  # it would have interrupted the main thread: the interruption runs at the next line
        ended.join(60)
        assert not ended.is_alive(), "pymesos' connection thread did not end"
        assert backend.fatal.startswith(f"the connection to the Mesos master {master.address} ended")
        assert "HTTP 401" in backend.fatal and backend.fatal.endswith("check --principal and --secret "
                                                                      "(BUILDFARM_MESOS_SECRET)")
        assert woken == ["mesos-ended"]  # the scheduler loop stops now, not at its next round
        assert pymesos.process._exc_info is None  # a later Ctrl-C is a KeyboardInterrupt, not this error
        backend.close()
    finally:
        master.stop()


def test_team_roles_each_teams_build_runs_on_its_roles_offers(mesos_farm, repo):
    second = AgentSpec("agent-x86-b", "x86-b", cpus=2, mem=4096, attributes={"arch": "x86_64"})
    m = mesos_farm([X86, second], 5, "--mesos-team-roles")
    f = m.farm
    fw = wait_until(lambda: next(iter(m.master.frameworks.values()), None), 30, what="the framework")
    assert "MULTI_ROLE" in fw.capabilities and fw.roles == ["*"]
    for team in ("alpha", "beta"):  # teams created while the farm runs: UPDATE_FRAMEWORK adds their roles
        out = f.cli("team", "create", team, "--guarantee", "cpus=1,mem=1G")
        assert out.returncode == 0, out.stderr
    out = f.cli("submit", "--repo", repo, "--image", IMAGE, "--wait", "--", "true")  # a build without a team
    assert out.returncode == 0, out.stderr
    assert fw.roles == ["*", "buildfarm/alpha", "buildfarm/beta"]
    assert m.master.calls_of("UPDATE_FRAMEWORK")
    ids = {}
    for team in ("alpha", "beta", "alpha", "beta"):
        out = f.cli("submit", "--repo", repo, "--image", IMAGE, "--team", team, "--", "true")
        assert out.returncode == 0, out.stderr
        ids[out.stdout.decode().strip()] = team
    for bid, team in ids.items():
        assert f.wait_done(bid, 120)["state"] == "succeeded"
    tasks = m.master.tasks
    for bid, team in ids.items():
        task = tasks[f"{bid}-1"]
        assert task.roles == {f"buildfarm/{team}"}
    # every launch used offers made to its role (the double refuses others as TASK_ERROR)
    assert not [t for t in m.master.all_tasks if t.state == "TASK_ERROR"]


def test_without_team_roles_the_framework_subscribes_with_its_one_role(mesos_farm, repo):
    m = mesos_farm()
    f = m.farm
    assert f.cli("team", "create", "alpha", "--guarantee", "cpus=1,mem=1G").returncode == 0
    out = f.cli("submit", "--repo", repo, "--image", IMAGE, "--team", "alpha", "--wait", "--", "true")
    assert out.returncode == 0, out.stderr
    subscribe = m.master.calls_of("SUBSCRIBE")[0]["subscribe"]["framework_info"]
    assert subscribe["role"] == "*" and "roles" not in subscribe
    assert "MULTI_ROLE" not in {c["type"] for c in subscribe["capabilities"]}
    assert not m.master.calls_of("UPDATE_FRAMEWORK")
