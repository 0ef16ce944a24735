"""No single point of failure, with real processes on 127.0.0.1: two `buildfarm api` replicas on
one data directory, two `buildfarm scheduler`s of which one leads, real Docker builds."""

from __future__ import annotations

import signal

import httpx
import pytest

from .conftest import wait_until
from .ha_support import Cluster

pytestmark = pytest.mark.docker


@pytest.fixture
def cluster(tmp_path, redis_url, docker_engine):
    c = Cluster(tmp_path, redis_url)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def repo(git_server):
    return git_server.make_repo("ha", {"f": "x\n"})


def gated(counter, *after: str) -> tuple[str, ...]:
    """A build command that counts its start, says so, holds until the gate opens, then runs `after`."""
    script = f'curl -fsS {counter.url}/hit/$BUILDFARM_BUILD_ID && echo started && {counter.wait_for_gate()}'
    return ("sh", "-c", " && ".join([script, *after]))


def test_a_log_written_through_one_replica_is_followed_live_through_another(cluster, repo, counter):
    cluster.add_api()
    cluster.add_api()
    cluster.add_scheduler()
    # The agent reports to replica 0 (--agent-api-url); the user follows and downloads through replica 1.
    bid = cluster.submit(repo, *gated(counter, "echo finished", "mkdir -p out", "echo payload-42 > out/a.txt"),
                         options=("--artifact", "out/*"))
    seen = b""
    with httpx.stream("GET", cluster.url(1) + f"/api/v1/builds/{bid}/log?follow=true", headers=cluster.headers,
                      timeout=60) as stream:
        chunks = stream.iter_bytes()
        while b"started" not in seen:
            seen += next(chunks)
        assert cluster.build(bid, 1)["state"] == "running"  # live: the build has not ended
        counter.open_gate()
        for chunk in chunks:
            seen += chunk
    assert b"finished" in seen and seen.index(b"started") < seen.index(b"finished")
    assert cluster.wait_done(bid)["state"] == "succeeded"
    got = cluster.api("GET", f"/api/v1/builds/{bid}/artifacts/out/a.txt", 1)
    assert got.status_code == 200 and got.content == b"payload-42\n"


def test_one_scheduler_leads_and_a_standby_takes_over_after_sigkill(cluster, repo, counter):
    cluster.add_api()
    first, second = cluster.add_scheduler(), cluster.add_scheduler()
    leader = cluster.leading_role()
    standby = second if leader is first else first
    view = wait_until(lambda: (v := cluster.api("GET", "/api/v1/schedulers").json())["standbys"] and v, 15,
                      what="the standby's heartbeat")
    assert [s["pid"] for s in view["standbys"]] == [standby.pid]
    fence = view["leader"]["fence"]

    running = [cluster.submit(repo, *gated(counter)) for _ in range(3)]
    wait_until(lambda: all(counter.hits[b] == 1 for b in running), 90, what="three builds to start")
    leader.signal(signal.SIGKILL)
    later = [cluster.submit(repo, *gated(counter)) for _ in range(2)]
    wait_until(lambda: (lead := cluster.leader()) and lead["fence"] > fence, 30, 0.2, what="a new leader")
    new = cluster.leading_role()
    assert new is standby
    # It reconciles first: the three builds still running are adopted, not run again.
    wait_until(lambda: all(f"adopting build {b}" in standby.log() for b in running), 60, what="the adoptions")
    counter.open_gate()
    records = [cluster.wait_done(b) for b in running + later]
    assert [r["state"] for r in records] == ["succeeded"] * 5, [(r["id"], r["reason"]) for r in records]
    assert all(counter.hits[b] == 1 for b in running + later), counter.hits  # none ran twice
    assert [r["attempt"] for r in records[:3]] == [1, 1, 1]  # adopted by the new leader, not re-run


def test_a_paused_former_leader_launches_nothing_when_it_wakes(cluster, repo, counter):
    cluster.add_api()
    cluster.add_scheduler()
    cluster.add_scheduler()
    paused = cluster.leading_role()
    fence = cluster.leader()["fence"]
    paused.signal(signal.SIGSTOP)  # longer than its lease: the other takes over
    wait_until(lambda: (lead := cluster.leader()) and lead["fence"] > fence, 30, 0.2, what="a new leader")
    new = cluster.leading_role()
    assert new is not paused
    # Builds wait in the queue while both are alive; each wake-up may reach the paused one first.
    ids = [cluster.submit(repo, *gated(counter)) for _ in range(3)]
    wait_until(lambda: all(counter.hits[b] == 1 for b in ids), 90, what="the new leader to start them")
    paused.signal(signal.SIGCONT)
    more = [cluster.submit(repo, *gated(counter)) for _ in range(3)]
    counter.open_gate()
    records = [cluster.wait_done(b) for b in ids + more]
    assert [r["state"] for r in records] == ["succeeded"] * 6, [(r["id"], r["reason"]) for r in records]
    assert all(counter.hits[b] == 1 for b in ids + more), counter.hits
    assert all(r["attempt"] == 1 for r in records)
    for r in records:  # placed once each, by the new leader
        assert [h["reason"] for h in r["history"]].count("placed on " + r["agent_id"]) == 1
    wait_until(lambda: paused.pid in [s["pid"] for s in cluster.api("GET", "/api/v1/schedulers").json()["standbys"]],
               15, what="the woken scheduler to stand by")
    assert "is no longer the leader" in paused.log()
    assert "leads (fence" in new.log()


@pytest.fixture
def mesos_cluster(cluster, tmp_path):
    from .doubles.mesos import AgentSpec, MesosDouble

    master = MesosDouble([AgentSpec("agent-x86", "x86-host", cpus=2, mem=4096)], heartbeat_seconds=5, kill_grace=1,
                         update_retry_seconds=2).start()
    cluster.add_api()
    options = ("--backend", "mesos", "--master", master.address, "--mesos-cache-path", str(tmp_path / "cache"))
    cluster.add_scheduler(*options)
    cluster.add_scheduler(*options)
    yield cluster, master
    cluster.stop()
    master.stop()


def test_on_mesos_only_the_leader_subscribes_and_a_successor_keeps_the_tasks(mesos_cluster, repo, counter):
    cluster, master = mesos_cluster
    leader = cluster.leading_role()
    running = [cluster.submit(repo, *gated(counter)) for _ in range(2)]
    wait_until(lambda: all(counter.hits[b] == 1 for b in running), 90, what="two builds to start")
    assert len(master.calls_of("SUBSCRIBE")) == 1  # the standby did not subscribe
    framework = master.calls_of("SUBSCRIBE")[0]
    fence = cluster.leader()["fence"]
    leader.signal(signal.SIGKILL)
    wait_until(lambda: (lead := cluster.leader()) and lead["fence"] > fence, 30, 0.2, what="a new leader")
    new = cluster.leading_role()
    assert new is not leader
    wait_until(lambda: len(master.calls_of("SUBSCRIBE")) == 2, 30, what="the new leader to subscribe")
    again = master.calls_of("SUBSCRIBE")[1]
    # with the framework id the first leader registered: the same framework, its tasks still running
    assert again["framework_id"]["value"] == master.state()["frameworks"][0]["id"]
    assert "framework_id" not in framework or framework["framework_id"] == again["framework_id"]
    assert {master.task_states()[f"{b}-1"] for b in running} == {"TASK_RUNNING"}
    later = cluster.submit(repo, *gated(counter))
    counter.open_gate()
    records = [cluster.wait_done(b) for b in running + [later]]
    assert [r["state"] for r in records] == ["succeeded"] * 3, [(r["id"], r["reason"]) for r in records]
    assert all(counter.hits[b] == 1 for b in running + [later]) and [r["attempt"] for r in records] == [1, 1, 1]
    assert "leads (fence" in new.log()


def test_on_mesos_a_paused_leader_that_wakes_does_not_subscribe_again(mesos_cluster, repo, counter):
    cluster, master = mesos_cluster
    paused = cluster.leading_role()
    wait_until(lambda: len(master.calls_of("SUBSCRIBE")) == 1, 30, what="the leader to subscribe")
    fence = cluster.leader()["fence"]
    paused.signal(signal.SIGSTOP)
    wait_until(lambda: (lead := cluster.leader()) and lead["fence"] > fence, 30, 0.2, what="a new leader")
    assert cluster.leading_role() is not paused
    wait_until(lambda: len(master.calls_of("SUBSCRIBE")) == 2, 30, what="the new leader to subscribe")
    paused.signal(signal.SIGCONT)
    counter.open_gate()
    ids = [cluster.submit(repo, *gated(counter)) for _ in range(2)]
    records = [cluster.wait_done(b) for b in ids]
    assert [r["state"] for r in records] == ["succeeded"] * 2, [(r["id"], r["reason"]) for r in records]
    wait_until(lambda: "is no longer the leader" in paused.log(), 15, what="the woken one to stand down")
    assert len(master.calls_of("SUBSCRIBE")) == 2, master.calls_of("SUBSCRIBE")
    assert [f["connected"] for f in master.state()["frameworks"]] == [True]
