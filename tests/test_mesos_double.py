"""The Mesos master double (tests/doubles/mesos_master.py) against unmodified pymesos, and against
raw HTTP where pymesos cannot be made to send the call: it must answer the way the recorded Mesos
1.12 master does (shared/mesos-v1), and run Docker tasks for real.

Under CI=true, a missing Docker engine, image or pymesos fails these tests instead of skipping them.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from .conftest import ROOT, free_port, need, wait_until
from .doubles.mesos_master import LABEL, AgentSpec, MesosMasterDouble

BASE = "buildfarm/base:bookworm"
X86 = AgentSpec("a1", "host-1", cpus=2, mem=2048, disk=5000, attributes={"arch": "x86_64", "os": "el9"})
ARM = AgentSpec("a2", "host-2", cpus=1, mem=1024, disk=5000, attributes={"arch": "aarch64", "os": "el9"})
FRAMEWORK = {"user": "root", "name": "double-test", "failover_timeout": 60,
             "capabilities": [{"type": "TASK_KILLING_STATE"}, {"type": "PARTITION_AWARE"}]}


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def docker_client():
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.images.get(BASE)
    except Exception as e:  # noqa: BLE001 - any reason makes the same decision
        need(False, f"a Docker engine with {BASE} ({e})")
    return client


@pytest.fixture
def pymesos(monkeypatch):
    """pymesos, with its IO thread's last resort defused: on an exception it calls
    _thread.interrupt_main(), which would abort the whole pytest session; here it is recorded and
    the test fails instead."""
    try:
        import pymesos
        import pymesos.process
    except ImportError as e:
        need(False, f"pymesos (scripts/install-pymesos.sh): {e}")
    aborts: list = []
    monkeypatch.setattr(pymesos.process, "_exc_info", None)
    monkeypatch.setattr(pymesos.process.thread, "interrupt_main",
                        lambda *a: aborts.append(pymesos.process._exc_info))
    yield pymesos
    assert not aborts, f"pymesos' IO thread died: {aborts}"


class Harness:
    """A master double plus the pymesos drivers a test starts against it."""

    def __init__(self, pymesos, agents=(X86, ARM), **options):
        self.pm = pymesos
        options = {"kill_grace": 1.0, "update_retry_seconds": 1.0, **options}
        self.master = MesosMasterDouble(list(agents), **options).start()
        self.drivers = []

    def framework(self, info=None, **changes):
        info = {**FRAMEWORK, **(info or {}), **changes}
        rec = Recorder(self.pm.Scheduler)
        driver = self.pm.MesosSchedulerDriver(rec.scheduler, info, self.master.address)
        driver.start()
        self.drivers.append(driver)
        return driver, rec

    def close(self):
        for d in self.drivers:
            d.stop(failover=True)
        for d in self.drivers:
            d.join()
        self.master.stop()


@pytest.fixture
def mesos(pymesos):
    h = Harness(pymesos)
    yield h
    h.close()


@pytest.fixture
def mesos_docker(pymesos, docker_client):
    h = Harness(pymesos)
    yield h
    h.close()
    left = docker_client.api.containers(all=True, filters={"label": f"{LABEL}.master={h.master.master_id}"})
    assert not left, f"the double left containers behind: {[c['Names'] for c in left]}"


@pytest.fixture
def raw_master():
    m = MesosMasterDouble([X86], kill_grace=1.0, update_retry_seconds=1.0).start()
    yield m
    m.stop()


class Recorder:
    """What the framework observes through pymesos' Scheduler callbacks, in order."""

    def __init__(self, base):
        self.events: list[tuple[str, object, float]] = []
        self.wall: dict[int, float] = {}  # id(payload) -> when it was observed (time.time())
        self.lock = threading.Lock()
        rec = self

        class S(base):
            def registered(self, driver, framework_id, master_info):
                rec.add("registered", framework_id["value"])

            def reregistered(self, driver, master_info):
                rec.add("reregistered", master_info)

            def disconnected(self, driver):
                rec.add("disconnected", True)

            def resourceOffers(self, driver, offers):
                for o in offers:
                    rec.add("offer", o)

            def offerRescinded(self, driver, offer_id):
                rec.add("rescind", offer_id["value"])

            def statusUpdate(self, driver, status):
                rec.add("update", status)

            def slaveLost(self, driver, agent_id):
                rec.add("agent_lost", agent_id["value"])

            def error(self, driver, message):
                rec.add("error", message)

        self.scheduler = S()

    def add(self, kind, payload):
        with self.lock:
            self.events.append((kind, payload, time.monotonic()))
            self.wall[id(payload)] = time.time()

    def of(self, kind, since: float = 0.0) -> list:
        with self.lock:
            return [p for k, p, t in self.events if k == kind and t >= since]

    def wait(self, kind, pred=lambda p: True, timeout=30.0, since: float = 0.0):
        def found():
            return next((p for p in self.of(kind, since) if pred(p)), None)

        try:
            return wait_until(found, timeout, 0.02, what=f"{kind} event")
        except AssertionError:
            with self.lock:
                seen = [(k, p.get("state") if isinstance(p, dict) else p) for k, p, _ in self.events]
            raise AssertionError(f"no matching {kind} in {timeout} s; the framework saw {seen}") from None

    def offer(self, agent_id, pred=lambda o: True, since: float = 0.0, timeout=30.0):
        return self.wait("offer", lambda o: o["agent_id"]["value"] == agent_id and pred(o), timeout, since)

    def updates(self, task_id) -> list[dict]:
        return [s for s in self.of("update") if s["task_id"]["value"] == task_id]

    def states(self, task_id) -> list[str]:
        return [s["state"] for s in self.updates(task_id) if s.get("reason") != "REASON_RECONCILIATION"]

    def wait_state(self, task_id, state, timeout=30.0) -> dict:
        return self.wait("update", lambda s: s["task_id"]["value"] == task_id and s["state"] == state, timeout)


def scalar(offer, name):
    return sum(r["scalar"]["value"] for r in offer["resources"] if r["name"] == name)


def docker_task(tid, offer, script, image=BASE, cpus=0.1, mem=64, **extra):
    """A Docker TaskInfo running `script` with /bin/sh; `extra` is merged into it, one level deep."""
    task = {"name": tid, "task_id": {"value": tid}, "agent_id": offer["agent_id"],
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}}],
            "command": {"shell": True, "value": script},
            "container": {"type": "DOCKER", "docker": {"image": image, "network": "HOST"}}}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(task.get(key), dict):
            task[key] = {**task[key], **value}
        else:
            task[key] = value
    return task


def containers_of(client, task_id) -> list[dict]:
    """The task's containers (the low-level list: the high-level one races with removals)."""
    return client.api.containers(all=True, filters={"label": f"mesos.task-id={task_id}"})


# -- pymesos -------------------------------------------------------------------------------------

def test_pymesos_subscribes_and_is_offered_each_agent_once(mesos):
    _driver, rec = mesos.framework()
    fid = rec.wait("registered")
    assert fid.startswith(mesos.master.master_id)
    x86, arm = rec.offer("a1"), rec.offer("a2")
    assert (scalar(x86, "cpus"), scalar(x86, "mem"), scalar(x86, "disk")) == (2, 2048, 5000)
    assert (scalar(arm, "cpus"), scalar(arm, "mem")) == (1, 1024)
    ports = next(r for r in x86["resources"] if r["name"] == "ports")
    assert ports["type"] == "RANGES" and ports["ranges"]["range"] == [{"begin": 31000, "end": 32000}]
    assert {a["name"]: a["text"]["value"] for a in x86["attributes"]} == {"arch": "x86_64", "os": "el9"}
    assert x86["hostname"] == "host-1" and x86["framework_id"]["value"] == fid
    subscribe = mesos.master.calls_of("SUBSCRIBE")
    assert len(subscribe) == 1 and "framework_id" not in subscribe[0]
    assert subscribe[0]["subscribe"]["framework_info"]["name"] == "double-test"
    time.sleep(0.5)  # an outstanding offer is not offered again
    assert len(rec.of("offer")) == 2


def test_a_docker_task_reports_starting_running_finished(mesos_docker, docker_client):
    driver, rec = mesos_docker.framework()
    offer = rec.offer("a1")
    driver.launchTasks(offer["id"], [docker_task("hello", offer, "echo hi")], {"refuse_seconds": 60})
    done = rec.wait_state("hello", "TASK_FINISHED")
    ups = rec.updates("hello")
    assert [u["state"] for u in ups] == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    assert {u["source"] for u in ups} == {"SOURCE_EXECUTOR"}
    assert done["message"] == "Container exited with status 0" and "reason" not in done
    inspect = json.loads(base64.b64decode(ups[1]["data"]))
    assert inspect[0]["Config"]["Image"] == BASE and inspect[0]["HostConfig"]["NetworkMode"] == "host"
    # pymesos acknowledged every update (implicitly), by uuid
    wait_until(lambda: len(mesos_docker.master.calls_of("ACKNOWLEDGE")) == 3, 10, what="three ACKNOWLEDGEs")
    assert [c["acknowledge"]["uuid"] for c in mesos_docker.master.calls_of("ACKNOWLEDGE")] == [u["uuid"] for u in ups]
    # the output is in the sandbox, the container is gone
    task = mesos_docker.master.tasks["hello"]
    assert (Path(task.sandbox) / "stdout").read_text() == "hi\n"
    wait_until(lambda: not containers_of(docker_client, "hello"), 10, what="the container to be removed")
    # The unused 1.9 cpus were refused for 60 s; the task's 0.1 coming back makes a new offer of all 2.
    again = rec.offer("a1", lambda o: o["id"] != offer["id"])
    assert scalar(again, "cpus") == 2 and scalar(again, "mem") == 2048


def test_exit_3_is_task_failed_with_the_recorded_message(mesos_docker):
    driver, rec = mesos_docker.framework()
    offer = rec.offer("a1")
    driver.launchTasks(offer["id"], [docker_task("three", offer, "echo failing; exit 3")])
    failed = rec.wait_state("three", "TASK_FAILED")
    assert rec.states("three") == ["TASK_STARTING", "TASK_RUNNING", "TASK_FAILED"]
    assert failed["message"] == "Container exited with status 3"
    assert failed["source"] == "SOURCE_EXECUTOR" and "reason" not in failed


def test_a_missing_image_fails_the_launch_from_the_agent(mesos_docker, docker_client):
    driver, rec = mesos_docker.framework()
    offer = rec.offer("a1")
    driver.launchTasks(offer["id"], [docker_task("noimage", offer, "true", image="buildfarm/no-such-image:nope")])
    failed = rec.wait_state("noimage", "TASK_FAILED")
    assert rec.states("noimage") == ["TASK_FAILED"]  # no TASK_STARTING: the executor never ran
    assert failed["reason"] == "REASON_CONTAINER_LAUNCH_FAILED" and failed["source"] == "SOURCE_AGENT"
    assert failed["message"].startswith("Failed to launch container: Failed to run '")
    assert "pull buildfarm/no-such-image:nope" in failed["message"]
    assert not containers_of(docker_client, "noimage")


def test_reconcile_answers_running_and_unknown_tasks(mesos_docker):
    driver, rec = mesos_docker.framework()
    offer = rec.offer("a1")
    driver.launchTasks(offer["id"], [docker_task("long", offer, "sleep 30"), docker_task("quick", offer, "true")])
    rec.wait_state("long", "TASK_RUNNING")
    rec.wait_state("quick", "TASK_FINISHED")
    wait_until(lambda: not mesos_docker.master.tasks["quick"].pending, 10, what="quick's updates acknowledged")
    acks = len(mesos_docker.master.calls_of("ACKNOWLEDGE"))

    driver.reconcileTasks([{"task_id": {"value": "long"}}, {"task_id": {"value": "unknown-task-xyz"}}])
    running = rec.wait("update", lambda s: s["task_id"]["value"] == "long" and s.get("reason") == "REASON_RECONCILIATION")
    assert running["state"] == "TASK_RUNNING" and running["source"] == "SOURCE_MASTER"
    assert running["message"] == "Reconciliation: Latest task state" and "uuid" not in running
    unknown = rec.wait("update", lambda s: s["task_id"]["value"] == "unknown-task-xyz")
    assert unknown["state"] == "TASK_UNKNOWN" and unknown["reason"] == "REASON_RECONCILIATION"
    assert unknown["message"] == "Reconciliation: Task is unknown" and unknown["source"] == "SOURCE_MASTER"

    # Implicit: every task the master still knows: the running one, not the acknowledged finished one.
    since = time.monotonic()
    driver.reconcileTasks([])
    rec.wait("update", lambda s: s["task_id"]["value"] == "long" and s.get("reason") == "REASON_RECONCILIATION",
             since=since)
    time.sleep(0.3)
    assert [s["task_id"]["value"] for s in rec.of("update", since)] == ["long"]
    assert len(mesos_docker.master.calls_of("ACKNOWLEDGE")) == acks  # nothing to acknowledge: no uuid


def test_kill_reports_killing_then_killed_and_the_container_had_the_tasks_limits(mesos_docker, docker_client):
    driver, rec = mesos_docker.framework()
    offer = rec.offer("a1")
    driver.launchTasks(offer["id"], [docker_task("victim", offer, "sleep 30", cpus=0.5, mem=96)])
    rec.wait_state("victim", "TASK_RUNNING")
    [listed] = containers_of(docker_client, "victim")
    c = docker_client.api.inspect_container(listed["Id"])
    labels = c["Config"]["Labels"]
    assert labels[LABEL] == "1" and labels[f"{LABEL}.master"] == mesos_docker.master.master_id
    host = c["HostConfig"]
    assert host["CpuShares"] == 512 and host["Memory"] == 96 * 1024 * 1024 and host["NetworkMode"] == "host"
    assert host["CpuQuota"] == 50000 and host["CpuPeriod"] == 100000
    assert "MESOS_SANDBOX=/mnt/mesos/sandbox" in c["Config"]["Env"]

    driver.killTask({"value": "victim"})
    killing = rec.wait_state("victim", "TASK_KILLING")
    killed = rec.wait_state("victim", "TASK_KILLED")
    assert rec.states("victim") == ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_KILLED"]
    assert killing["source"] == killed["source"] == "SOURCE_EXECUTOR"
    assert killed["message"] == "Container exited with status 137"  # sh as pid 1 ignores SIGTERM
    assert killed["timestamp"] - killing["timestamp"] >= 0.9  # the 1 s grace period was given
    wait_until(lambda: not containers_of(docker_client, "victim"), 10, what="the container to be removed")


class _Files(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self):
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


def test_uris_env_and_volumes_reach_the_container(mesos_docker, tmp_path):
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        data = b"from the archive\n"
        info = tarfile.TarInfo("payload/hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    _Files.files = {"/bundle.tar.gz": payload.getvalue(), "/script.sh": b"echo from the script\n"}
    files = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{files.server_address[1]}"
    out = tmp_path / "out"
    try:
        driver, rec = mesos_docker.framework()
        offer = rec.offer("a1")
        task = docker_task(
            "fetching", offer,
            'cat "$MESOS_SANDBOX/payload/hello.txt" > /out/result && echo "$FOO $MESOS_SANDBOX $PWD" >> /out/result'
            ' && sh "$MESOS_SANDBOX/script.sh" >> /out/result',
            command={"uris": [{"value": f"{url}/bundle.tar.gz", "extract": True},
                              {"value": f"{url}/script.sh", "extract": False}],
                     "environment": {"variables": [{"name": "FOO", "value": "bar"}]}},
            container={"volumes": [{"host_path": str(out), "container_path": "/out", "mode": "RW"}]})
        broken = docker_task("badfetch", offer, "true", command={"uris": [{"value": f"{url}/missing.tar.gz"}]})
        driver.launchTasks(offer["id"], [task, broken])
        rec.wait_state("fetching", "TASK_FINISHED")
        assert (out / "result").read_text() == ("from the archive\nbar /mnt/mesos/sandbox /mnt/mesos/sandbox\n"
                                                "from the script\n")
        failed = rec.wait_state("badfetch", "TASK_FAILED")
        assert failed["reason"] == "REASON_CONTAINER_LAUNCH_FAILED" and failed["source"] == "SOURCE_AGENT"
        assert "Failed to fetch all URIs" in failed["message"]
    finally:
        files.shutdown()


def test_decline_keeps_the_agent_away_for_refuse_seconds(mesos):
    driver, rec = mesos.framework()
    offer = rec.offer("a1")
    rec.offer("a2")
    declined_at = time.monotonic()
    driver.declineOffer(offer["id"], {"refuse_seconds": 2})
    again = rec.offer("a1", since=declined_at, timeout=10)
    waited = next(t for k, p, t in rec.events if p is again) - declined_at
    assert 1.9 <= waited < 3.5, waited
    assert again["id"] != offer["id"] and scalar(again, "cpus") == 2
    [decline] = mesos.master.calls_of("DECLINE")
    assert decline["decline"] == {"offer_ids": [offer["id"]], "filters": {"refuse_seconds": 2}}
    assert len([o for o in rec.of("offer") if o["agent_id"]["value"] == "a2"]) == 1  # still held


def test_suppress_stops_offers_and_revive_brings_them_at_once(mesos):
    driver, rec = mesos.framework()
    held = [rec.offer("a1"), rec.offer("a2")]
    driver.suppressOffers()
    driver.declineOffer([o["id"] for o in held], {"refuse_seconds": 0.1})
    quiet_from = time.monotonic()
    time.sleep(1.2)
    assert rec.of("offer", quiet_from) == []
    revived_at = time.monotonic()
    driver.reviveOffers()
    rec.offer("a1", since=revived_at, timeout=0.5)
    rec.offer("a2", since=revived_at, timeout=0.5)
    assert [c["type"] for c in mesos.master.calls if c["type"] in ("SUPPRESS", "DECLINE", "REVIVE")] == \
        ["SUPPRESS", "DECLINE", "REVIVE"]
    # REVIVE also clears filters: a 60 s decline does not keep the agent away after it
    again = rec.offer("a1", since=revived_at)
    driver.declineOffer(again["id"], {"refuse_seconds": 60})
    revived_at = time.monotonic()
    driver.reviveOffers()
    rec.offer("a1", since=revived_at, timeout=0.5)


@pytest.mark.parametrize("partition_aware", [True, False], ids=["partition-aware", "not-partition-aware"])
def test_a_lost_agent_takes_its_tasks_and_offers_with_it(mesos_docker, docker_client, partition_aware):
    caps = [{"type": "TASK_KILLING_STATE"}] + ([{"type": "PARTITION_AWARE"}] if partition_aware else [])
    driver, rec = mesos_docker.framework(capabilities=caps)
    offer = rec.offer("a1")
    driver.launchTasks(offer["id"], [docker_task("stranded", offer, "sleep 30")], {"refuse_seconds": 0})
    rec.wait_state("stranded", "TASK_RUNNING")
    held = rec.offer("a1", lambda o: o["id"] != offer["id"])  # what is left of a1, offered again
    assert scalar(held, "cpus") == 1.9
    lost_at = time.time()

    mesos_docker.master.lose_agent("a1")
    expected = "TASK_UNREACHABLE" if partition_aware else "TASK_LOST"
    status = rec.wait_state("stranded", expected)
    assert status["reason"] == "REASON_AGENT_REMOVED" and status["source"] == "SOURCE_MASTER"
    assert status["message"] == "health check timed out" and "uuid" not in status
    if partition_aware:
        assert status["unreachable_time"]["nanoseconds"] >= int(lost_at * 1e9) - 10**9
    assert rec.wait("rescind") == held["id"]["value"]
    assert rec.wait("agent_lost") == "a1"
    wait_until(lambda: not containers_of(docker_client, "stranded"), 10, what="the agent's container to die")
    # pymesos reconciles by task id only (it drops agent_id): the master no longer knows the task
    driver.reconcileTasks([{"task_id": {"value": "stranded"}, "agent_id": {"value": "a1"}}])
    answer = rec.wait("update", lambda s: s["task_id"]["value"] == "stranded" and
                      s.get("reason") == "REASON_RECONCILIATION")
    assert answer["state"] == ("TASK_UNKNOWN" if partition_aware else "TASK_LOST")
    # a new agent is offered at once; the lost one never again
    mesos_docker.master.add_agent(AgentSpec("a3", "host-3", cpus=1, mem=512))
    rec.offer("a3")
    assert [o for o in rec.of("offer") if o["agent_id"]["value"] == "a1"] == [offer, held]


def test_dropped_streams_bring_pymesos_back_with_the_same_framework_id(mesos):
    _driver, rec = mesos.framework()
    fid = rec.wait("registered")
    rec.offer("a1")
    dropped_at = time.monotonic()
    mesos.master.drop_streams()
    rec.wait("disconnected", since=dropped_at, timeout=5)
    rec.wait("reregistered", since=dropped_at, timeout=10)
    again = mesos.master.calls_of("SUBSCRIBE")[-1]
    assert again["framework_id"] == {"value": fid} and again["subscribe"]["framework_info"]["id"] == {"value": fid}
    assert list(mesos.master.frameworks) == [fid]
    offer = rec.offer("a1", since=dropped_at)  # the old offer was void; a new one comes
    assert offer["framework_id"]["value"] == fid


def test_a_master_restart_redelivers_what_happened_while_it_was_down(mesos_docker):
    driver, rec = mesos_docker.framework()
    fid = rec.wait("registered")
    offer = rec.offer("a1")
    driver.launchTasks(offer["id"], [docker_task("brief", offer, "sleep 0.8")])
    rec.wait_state("brief", "TASK_RUNNING")
    wait_until(lambda: not mesos_docker.master.tasks["brief"].pending, 10, what="RUNNING acknowledged")
    restarted_at = time.monotonic()
    mesos_docker.master.restart(down_seconds=1.0)
    rec.wait("disconnected", since=restarted_at, timeout=5)
    back = rec.wait("reregistered", since=restarted_at, timeout=20)  # pymesos retries after 1.5-2.5 s
    finished = rec.wait_state("brief", "TASK_FINISHED", timeout=10)
    assert finished["timestamp"] < rec.wall[id(back)]  # it ended while the framework was away
    assert mesos_docker.master.calls_of("SUBSCRIBE")[-1]["framework_id"] == {"value": fid}
    wait_until(lambda: any(c["acknowledge"]["uuid"] == finished["uuid"]
                           for c in mesos_docker.master.calls_of("ACKNOWLEDGE")), 10, what="FINISHED acknowledged")


def test_a_new_scheduler_fails_over_to_the_same_framework_and_teardown_ends_it(mesos_docker, docker_client):
    first, rec1 = mesos_docker.framework()
    fid = rec1.wait("registered")
    offer = rec1.offer("a1")
    first.launchTasks(offer["id"], [docker_task("survivor", offer, "sleep 30")], {"refuse_seconds": 0})
    rec1.wait_state("survivor", "TASK_RUNNING")
    first.stop(failover=True)
    first.join()
    assert not mesos_docker.master.calls_of("TEARDOWN")

    second, rec2 = mesos_docker.framework(id={"value": fid})
    rec2.wait("reregistered")  # pymesos says "re" when it was given an id
    assert mesos_docker.master.calls_of("SUBSCRIBE")[-1]["framework_id"] == {"value": fid}
    second.reconcileTasks([{"task_id": {"value": "survivor"}}])
    assert rec2.wait("update", lambda s: s["task_id"]["value"] == "survivor")["state"] == "TASK_RUNNING"
    rec2.offer("a1")  # offers resume (a filter would have survived the failover: hence refuse_seconds 0)

    second.stop()  # failover=False: pymesos sends TEARDOWN, and Mesos kills the framework's tasks
    second.join()
    assert mesos_docker.master.calls_of("TEARDOWN")[-1]["framework_id"] == {"value": fid}
    assert fid not in mesos_docker.master.frameworks and fid in mesos_docker.master.removed_frameworks
    wait_until(lambda: not containers_of(docker_client, "survivor"), 10, what="the torn-down task's container to go")
    stream = RawStream(mesos_docker.master, framework_id=fid)
    assert stream.wait_for(lambda e: True, "ERROR") == {"type": "ERROR",
                                                       "error": {"message": "Framework has been removed"}}


def test_a_standby_master_redirects_pymesos_to_the_leader(pymesos):
    leader = MesosMasterDouble([X86]).start()
    standby = MesosMasterDouble([], redirect_to=leader.address).start()
    rec = Recorder(pymesos.Scheduler)
    driver = pymesos.MesosSchedulerDriver(rec.scheduler, dict(FRAMEWORK), standby.address)
    try:
        driver.start()
        rec.wait("registered", timeout=15)
        rec.offer("a1")
        assert leader.calls_of("SUBSCRIBE") and not standby.calls
    finally:
        driver.stop(failover=True)
        driver.join()
        standby.stop()
        leader.stop()


# -- raw HTTP, for what pymesos cannot be made to send ---------------------------------------------

class RawStream:
    """A SUBSCRIBE over plain http.client; reads RecordIO records in a thread."""

    def __init__(self, master, framework_id=None, info=None, headers=None, auto_ack=False):
        self.master = master
        self.auto_ack = auto_ack
        self.conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=30)
        self.conn.connect()
        self.sock = self.conn.sock
        info = {**FRAMEWORK, "name": "raw", **(info or {})}
        body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        if framework_id:
            body["framework_id"] = {"value": framework_id}
            info["id"] = {"value": framework_id}
        self.conn.request("POST", "/api/v1/scheduler", json.dumps(body),
                          {"Content-Type": "application/json", "Accept": "application/json", "Connection": "close",
                           **(headers or {})})
        self.resp = self.conn.getresponse()
        self.stream_id = self.resp.getheader("Mesos-Stream-Id")
        self.events: list[dict] = []
        self.lengths: list[tuple[int, int]] = []  # (prefix, bytes read)
        self.acks: list[tuple] = []  # the answers to the automatic ACKNOWLEDGEs
        self.ended = threading.Event()
        if self.resp.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    return
                data = self.resp.read(int(line))
                self.lengths.append((int(line), len(data)))
                event = json.loads(data)
                self.events.append(event)
                status = event.get("update", {}).get("status", {})
                if self.auto_ack and "uuid" in status:  # as pymesos does, before reading on
                    fid = self.events[0]["subscribed"]["framework_id"]
                    ack = {"type": "ACKNOWLEDGE", "framework_id": fid, "acknowledge": {
                        "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]}}
                    self.acks.append(call(self.master, ack, self.stream_id))
        except (ValueError, OSError, AttributeError, http.client.HTTPException):
            return
        finally:
            self.ended.set()

    def wait_for(self, pred, what, timeout=15.0):
        return wait_until(lambda: next((e for e in list(self.events) if pred(e)), None), timeout, 0.02, what=what)

    def framework_id(self):
        return self.wait_for(lambda e: e["type"] == "SUBSCRIBED", "SUBSCRIBED")["subscribed"]["framework_id"]

    def updates(self, task_id):
        return [e["update"]["status"] for e in list(self.events)
                if e["type"] == "UPDATE" and e["update"]["status"]["task_id"]["value"] == task_id]

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def call(master, body, stream_id=None, content_type="application/json", method="POST"):
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=10)
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if stream_id:
        headers["Mesos-Stream-Id"] = stream_id
    conn.request(method, "/api/v1/scheduler", json.dumps(body) if body is not None else None, headers)
    r = conn.getresponse()
    out = (r.status, r.getheader("Content-Type"), r.read().decode())
    conn.close()
    return out


def test_subscribe_opens_a_chunked_recordio_stream_like_mesos_1_12():
    m = MesosMasterDouble([X86], heartbeat_seconds=0.3).start()
    try:
        s = RawStream(m)
        assert s.resp.status == 200
        assert s.resp.getheader("Transfer-Encoding") == "chunked"
        assert s.resp.getheader("Content-Type") == "application/json"
        assert s.resp.getheader("Content-Length") is None and len(s.stream_id) == 36
        s.wait_for(lambda e: e["type"] == "OFFERS", "OFFERS")
        kinds = [e["type"] for e in s.events]
        assert kinds[:3] == ["SUBSCRIBED", "HEARTBEAT", "OFFERS"]
        sub = s.events[0]["subscribed"]
        assert sub["heartbeat_interval_seconds"] == 0.3 and sub["master_info"]["version"] == "1.12.0"
        assert sub["master_info"]["address"] == {"hostname": "localhost", "ip": "127.0.0.1", "port": m.port}
        offer = s.events[2]["offers"]["offers"][0]
        assert offer["allocation_info"] == {"role": "*"}
        assert [r["name"] for r in offer["resources"]] == ["ports", "cpus", "mem", "disk"]
        wait_until(lambda: [e["type"] for e in s.events].count("HEARTBEAT") >= 3, 3, what="heartbeats")
        assert all(prefix == got for prefix, got in s.lengths)  # the RecordIO prefix is the record's length
        s.close()
    finally:
        m.stop()


def test_bad_calls_get_the_masters_plain_text_reasons(raw_master):
    s = RawStream(raw_master)
    fid = s.framework_id()
    sid = s.stream_id
    ok = call(raw_master, {"type": "SUPPRESS", "framework_id": fid}, sid)
    assert ok == (202, None, "")
    status, ctype, text = call(raw_master, {"type": "DECLINE", "framework_id": fid,
                                            "decline": {"offer_ids": [{"value": "x"}]}}, "not-the-stream-id")
    assert (status, ctype) == (400, "text/plain; charset=utf-8")
    assert text == ("The stream ID 'not-the-stream-id' included in this request didn't match the stream ID "
                    f"currently associated with framework ID {fid['value']}")
    expect = {
        json.dumps({"type": "BOGUS", "framework_id": fid}): "Failed to validate scheduler::Call: Expecting 'type' to be present",
        json.dumps({"type": "ACCEPT"}): "Failed to validate scheduler::Call: Expecting 'framework_id' to be present",
        json.dumps({"type": "KILL", "framework_id": fid}): "Failed to validate scheduler::Call: Expecting 'kill' to be present",
        json.dumps({"type": "ACKNOWLEDGE", "framework_id": fid, "acknowledge": {
            "agent_id": {"value": "a1"}, "task_id": {"value": "t"}, "uuid": "bm90LWEtdXVpZA=="}}):
            "Failed to validate scheduler::Call: Not a valid UUID",
        json.dumps({"type": "REVIVE", "framework_id": {"value": "nobody"}}): "Framework cannot be found",
    }
    for body, message in expect.items():
        assert call(raw_master, json.loads(body), sid) == (400, "text/plain; charset=utf-8", message), body
    assert call(raw_master, {"type": "REVIVE", "framework_id": fid}, None)[2] == \
        "All non-subscribe calls should include the 'Mesos-Stream-Id' header"
    assert call(raw_master, {"type": "REVIVE", "framework_id": fid}, sid, content_type=None)[:3:2] == \
        (400, "Expecting 'Content-Type' to be present")
    assert call(raw_master, None, sid, method="GET")[0] == 405
    refused = RawStream(raw_master, headers={"Mesos-Stream-Id": sid})
    assert refused.resp.status == 400
    assert refused.resp.read().decode() == "Subscribe calls should not include the 'Mesos-Stream-Id' header"
    assert len(raw_master.rejected) == 8 and [c["type"] for c in raw_master.calls] == ["SUBSCRIBE", "SUPPRESS"]
    s.close()
    wait_until(lambda: not raw_master.frameworks[fid["value"]].connected, 5, what="the master to see the close")
    assert call(raw_master, {"type": "REVIVE", "framework_id": fid}, sid)[:3:2] == (403, "Framework is not subscribed")


def test_updates_are_resent_until_acknowledged(raw_master, docker_client):
    s = RawStream(raw_master)
    fid = s.framework_id()
    offer = s.wait_for(lambda e: e["type"] == "OFFERS", "OFFERS")["offers"]["offers"][0]
    accept = {"type": "ACCEPT", "framework_id": fid, "accept": {
        "offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
            docker_task("patient", offer, "echo hi")]}}], "filters": {"refuse_seconds": 1}}}
    assert call(raw_master, accept, s.stream_id)[0] == 202
    wait_until(lambda: len(s.updates("patient")) >= 3, 10, what="STARTING sent again")
    starting = s.updates("patient")
    assert {u["state"] for u in starting} == {"TASK_STARTING"}  # and not RUNNING, until acknowledged
    assert len({u["uuid"] for u in starting}) == 1

    def ack(status):
        body = {"type": "ACKNOWLEDGE", "framework_id": fid, "acknowledge": {
            "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]}}
        assert call(raw_master, body, s.stream_id) == (202, None, "")

    ack(starting[0])
    for state in ("TASK_RUNNING", "TASK_FINISHED"):
        status = s.wait_for(lambda e, state=state: e["type"] == "UPDATE" and e["update"]["status"]["state"] == state,
                            state)
        ack(status["update"]["status"])
    seen = len(s.updates("patient"))
    time.sleep(1.5)
    assert len(s.updates("patient")) == seen  # everything acknowledged: nothing more is sent
    assert [u["state"] for u in s.updates("patient")][-2:] == ["TASK_RUNNING", "TASK_FINISHED"]
    s.close()


def test_reconciling_a_task_whose_end_is_not_acknowledged_gives_its_state_without_the_cause(raw_master):
    # As the master does (apache/mesos src/master/master.cpp, Master::reconcile, case 1): the state
    # of the task's latest update, from SOURCE_MASTER, and nothing of why; only the agent's update says.
    s = RawStream(raw_master)
    fid = s.framework_id()
    offer = s.wait_for(lambda e: e["type"] == "OFFERS", "OFFERS")["offers"]["offers"][0]
    nobody = f"http://127.0.0.1:{free_port()}/api/v1/agent/bundle.tar.gz"  # nothing listens there
    task = docker_task("unfetched", offer, "true", command={"uris": [{"value": nobody, "extract": True}]})
    accept = {"type": "ACCEPT", "framework_id": fid, "accept": {
        "offer_ids": [offer["id"]], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}]}}
    assert call(raw_master, accept, s.stream_id)[0] == 202
    failed = s.wait_for(lambda e: e["type"] == "UPDATE" and e["update"]["status"]["state"] == "TASK_FAILED",
                        "TASK_FAILED")["update"]["status"]
    assert failed["reason"] == "REASON_CONTAINER_LAUNCH_FAILED" and "Failed to fetch" in failed["message"]
    assert "uuid" in failed  # not acknowledged here: the master keeps the task
    reconcile = {"type": "RECONCILE", "framework_id": fid, "reconcile": {"tasks": [
        {"task_id": {"value": "unfetched"}, "agent_id": offer["agent_id"]}]}}
    assert call(raw_master, reconcile, s.stream_id)[0] == 202
    answer = s.wait_for(lambda e: e["type"] == "UPDATE" and "uuid" not in e["update"]["status"],
                        "the reconciliation's answer")["update"]["status"]
    assert answer["reason"] == "REASON_RECONCILIATION"
    assert (answer["state"], answer["source"]) == ("TASK_FAILED", "SOURCE_MASTER")
    assert answer["message"] == "Reconciliation: Latest task state" and "uuid" not in answer
    s.close()


def test_launches_with_stale_offers_or_too_much_are_refused_by_the_master(raw_master):
    s = RawStream(raw_master)
    fid = s.framework_id()
    offer = s.wait_for(lambda e: e["type"] == "OFFERS", "OFFERS")["offers"]["offers"][0]
    decline = {"type": "DECLINE", "framework_id": fid, "decline": {"offer_ids": [offer["id"]],
                                                                   "filters": {"refuse_seconds": 0}}}
    assert call(raw_master, decline, s.stream_id)[0] == 202
    fresh = s.wait_for(lambda e: e["type"] == "OFFERS" and e["offers"]["offers"][0]["id"] != offer["id"],
                       "a new offer")["offers"]["offers"][0]

    def launch(offer_id, task):
        body = {"type": "ACCEPT", "framework_id": fid, "accept": {
            "offer_ids": [offer_id], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}]}}
        assert call(raw_master, body, s.stream_id)[0] == 202

    launch(offer["id"], docker_task("stale", offer, "true"))
    dropped = s.wait_for(lambda e: e["type"] == "UPDATE", "TASK_DROPPED")["update"]["status"]
    assert dropped["state"] == "TASK_DROPPED" and dropped["reason"] == "REASON_INVALID_OFFERS"
    assert dropped["message"] == f"Task launched with invalid offers: Offer {offer['id']['value']} is no longer valid"
    assert dropped["source"] == "SOURCE_MASTER" and "uuid" not in dropped
    launch(fresh["id"], docker_task("greedy", fresh, "true", cpus=3))
    error = s.wait_for(lambda e: e["type"] == "UPDATE" and e["update"]["status"]["task_id"]["value"] == "greedy",
                       "TASK_ERROR")["update"]["status"]
    assert error["state"] == "TASK_ERROR" and error["reason"] == "REASON_TASK_INVALID"
    assert error["message"].startswith("Total resources cpus(allocated: *):3; mem(allocated: *):64 required by task")
    s.close()


def test_failover_and_teardown_like_the_recording(raw_master):
    first = RawStream(raw_master)
    fid = first.framework_id()
    first.close()
    again = RawStream(raw_master, framework_id=fid["value"])
    assert again.framework_id() == fid
    again.wait_for(lambda e: e["type"] == "OFFERS", "offers to resume")
    # A third connection while the second is open: the second is told, and ends.
    third = RawStream(raw_master, framework_id=fid["value"])
    assert third.framework_id() == fid
    assert again.wait_for(lambda e: e["type"] == "ERROR", "ERROR") == {"type": "ERROR", "error": {
        "message": "Framework failed over"}}
    assert again.ended.wait(5)
    assert call(raw_master, {"type": "TEARDOWN", "framework_id": fid}, again.stream_id)[0] == 400  # stale stream
    assert call(raw_master, {"type": "TEARDOWN", "framework_id": fid}, third.stream_id) == (202, None, "")
    assert third.ended.wait(5)
    assert fid["value"] in raw_master.removed_frameworks and fid["value"] not in raw_master.frameworks
    # Without a failover_timeout (Mesos' default is 0), a disconnected framework is removed at once.
    brief = RawStream(raw_master, info={"failover_timeout": 0})
    gone = brief.framework_id()["value"]
    brief.close()
    wait_until(lambda: gone in raw_master.removed_frameworks, 5, what="the framework to be removed")


def test_the_control_api_works_over_http(raw_master):
    s = RawStream(raw_master)
    s.framework_id()
    s.wait_for(lambda e: e["type"] == "OFFERS", "OFFERS")

    def control(method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", raw_master.port, timeout=10)
        conn.request(method, path, json.dumps(body) if body is not None else None)
        r = conn.getresponse()
        raw = r.read()
        out = (r.status, json.loads(raw) if r.getheader("Content-Type") == "application/json" else raw.decode())
        conn.close()
        return out

    status, added = control("POST", "/double/agents", {"id": "a9", "hostname": "h9", "cpus": 1, "mem": 512,
                                                       "attributes": {"arch": "x86_64"}})
    assert (status, added) == (200, {"agent_id": "a9"})
    nine = s.wait_for(lambda e: e["type"] == "OFFERS" and e["offers"]["offers"][0]["agent_id"]["value"] == "a9",
                      "an offer for the new agent")["offers"]["offers"][0]
    state = control("GET", "/double/state")[1]
    assert {a["id"]: a["state"] for a in state["agents"]} == {"a1": "active", "a9": "active"}
    assert len(state["offers"]) == 2 and state["frameworks"][0]["connected"]
    assert [c["type"] for c in control("GET", "/double/calls?type=SUBSCRIBE")[1]["calls"]] == ["SUBSCRIBE"]
    assert control("POST", "/double/agents/a9/lose", {"mode": "gone"}) == (200, {"lost": "a9"})
    assert s.wait_for(lambda e: e["type"] == "RESCIND", "RESCIND")["rescind"]["offer_id"] == nine["id"]
    assert s.wait_for(lambda e: e["type"] == "FAILURE", "FAILURE")["failure"] == {"agent_id": {"value": "a9"}}
    assert control("POST", "/double/offers/rescind") == (200, {"rescinded": 1})
    assert control("GET", "/double/tasks") == (200, {"tasks": []})
    assert control("POST", "/double/agents/nope/lose") == (404, "Unknown agent nope")
    assert control("POST", "/double/streams/drop") == (200, {"dropped": True})
    assert s.ended.wait(5)


def test_it_runs_as_a_program():
    port = free_port()
    agents = json.dumps([{"id": "p1", "hostname": "prog-host", "cpus": 1, "mem": 512, "attributes": {"os": "el9"}}])
    proc = subprocess.Popen([sys.executable, "-m", "tests.doubles.mesos_master", "--port", str(port),
                             "--agents", agents], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["address"] == f"127.0.0.1:{port}" and ready["agents"] == ["p1"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/version")
        assert json.loads(conn.getresponse().read())["version"] == "1.12.0"
        conn.request("GET", "/master/slaves")
        [slave] = json.loads(conn.getresponse().read())["slaves"]
        assert slave["hostname"] == "prog-host" and slave["attributes"] == {"os": "el9"}
        assert slave["resources"]["cpus"] == 1 and slave["resources"]["ports"] == "[31000-32000]"
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _recorded():
    # A copy of shared/mesos-v1 lives in tests/data, so a clone anywhere has it.
    path = os.environ.get("MESOS_TRANSCRIPT") or ROOT / "tests" / "data" / "mesos-v1" / "transcript-mesos-1.12.jsonl"
    need(os.path.exists(path), f"the recorded Mesos 1.12 exchange ({path})")
    with open(path) as f:
        return [json.loads(line) for line in f]


def _shape(status):
    return (status["state"], status["source"], status.get("reason")), frozenset(status)


def test_events_have_the_recorded_masters_shapes(docker_client):
    """Every kind of event and status update the recording shows, with the same fields."""
    recorded = _recorded()
    events = [r["body"] for r in recorded if r["kind"] == "event"]
    want = {}
    for e in events:
        if e["type"] == "UPDATE":
            kind, keys = _shape(e["update"]["status"])
            want[kind] = keys
    info = next(r["body"] for r in recorded if r["kind"] == "request")["subscribe"]["framework_info"]
    m = MesosMasterDouble([AgentSpec("S0", cpus=2, mem=2048)], kill_grace=1.0).start()
    try:
        s = RawStream(m, info=info, auto_ack=True)
        fid = s.framework_id()
        offer = s.wait_for(lambda e: e["type"] == "OFFERS", "OFFERS")["offers"]["offers"][0]
        tasks = [docker_task("ok", offer, "echo hello"), docker_task("fail", offer, "exit 3"),
                 docker_task("noimage", offer, "true", image="no-such-image-buildfarm"),
                 docker_task("long", offer, "sleep 30")]
        accept = {"type": "ACCEPT", "framework_id": fid, "accept": {"offer_ids": [offer["id"]], "operations": [
            {"type": "LAUNCH", "launch": {"task_infos": tasks}}], "filters": {"refuse_seconds": 1}}}
        assert call(m, accept, s.stream_id) == (202, None, "")
        for tid, state in (("ok", "TASK_FINISHED"), ("fail", "TASK_FAILED"), ("noimage", "TASK_FAILED"),
                           ("long", "TASK_RUNNING")):
            wait_until(lambda tid=tid, state=state: state in [u["state"] for u in s.updates(tid)], 30,
                       what=f"{tid} {state}")
        reconcile = {"type": "RECONCILE", "framework_id": fid, "reconcile": {"tasks": [
            {"task_id": {"value": "long"}, "agent_id": offer["agent_id"]}, {"task_id": {"value": "unknown-task-xyz"}}]}}
        assert call(m, reconcile, s.stream_id)[0] == 202
        kill = {"type": "KILL", "framework_id": fid, "kill": {"task_id": {"value": "long"}, "agent_id": offer["agent_id"]}}
        assert call(m, kill, s.stream_id)[0] == 202
        wait_until(lambda: "TASK_KILLED" in [u["state"] for u in s.updates("long")], 30, what="long killed")

        got = {}
        for e in list(s.events):
            if e["type"] == "UPDATE":
                kind, keys = _shape(e["update"]["status"])
                got.setdefault(kind, set()).add(keys)
        assert set(got) == set(want)  # the same kinds of update: state, source, reason
        for kind, keys in got.items():
            assert keys == {want[kind]}, kind  # each with exactly the recorded fields
        assert {a[0] for a in s.acks} == {202}
        mine = {e["type"]: e for e in reversed(s.events)}
        theirs = {e["type"]: e for e in reversed(events)}
        assert set(mine) == set(theirs) == {"SUBSCRIBED", "HEARTBEAT", "OFFERS", "UPDATE"}
        assert set(mine["SUBSCRIBED"]["subscribed"]) == set(theirs["SUBSCRIBED"]["subscribed"])
        assert set(mine["SUBSCRIBED"]["subscribed"]["master_info"]) == \
            set(theirs["SUBSCRIBED"]["subscribed"]["master_info"])
        mo, to = mine["OFFERS"]["offers"]["offers"][0], theirs["OFFERS"]["offers"]["offers"][0]
        assert set(mo) == set(to) and mo["url"].keys() == to["url"].keys()
        assert [(r["name"], set(r)) for r in mo["resources"]] == [(r["name"], set(r)) for r in to["resources"]]
        assert mine["HEARTBEAT"] == theirs["HEARTBEAT"] == {"type": "HEARTBEAT"}
        s.close()
    finally:
        m.stop()


# -- MULTI_ROLE ------------------------------------------------------------------------------------

def test_a_multi_role_framework_gets_offers_per_role_and_a_launch_must_use_the_offers_role(mesos):
    driver, rec = mesos.framework(roles=["dev", "ops"],
                                  capabilities=[{"type": "MULTI_ROLE"}, *FRAMEWORK["capabilities"]])
    first = rec.offer("a1")
    second = rec.offer("a2")
    roles = {o["allocation_info"]["role"] for o in (first, second)}
    assert roles == {"dev", "ops"}  # the roles take turns
    for o in (first, second):
        assert {r["allocation_info"]["role"] for r in o["resources"]} == {o["allocation_info"]["role"]}
    # A decline filters the agent for that role only: it is offered to the other role at once.
    dev = first if first["allocation_info"]["role"] == "dev" else second
    declined_at = time.monotonic()
    driver.declineOffer(dev["id"], {"refuse_seconds": 60})
    again = rec.offer(dev["agent_id"]["value"], since=declined_at, timeout=5)
    assert again["allocation_info"]["role"] == "ops"
    # A task whose resources are allocated to another role than the offer's is refused.
    task = docker_task("wrong-role", again, "true")
    for r in task["resources"]:
        r["allocation_info"] = {"role": "dev"}
    driver.launchTasks(again["id"], [task])
    error = rec.wait_state("wrong-role", "TASK_ERROR")
    assert error["reason"] == "REASON_TASK_INVALID" and "more than available" in error["message"]
    assert "(allocated: dev)" in error["message"] and "(allocated: ops)" in error["message"]
    # UPDATE_FRAMEWORK changes the roles (Mesos >= 1.9); the new role gets offers too.
    info = {**driver.framework, "id": {"value": driver.framework_id}, "roles": ["dev", "ops", "qa"]}
    updated_at = time.monotonic()
    driver._send({"type": "UPDATE_FRAMEWORK", "framework_id": {"value": driver.framework_id},
                  "update_framework": {"framework_info": info}})
    assert mesos.master.frameworks[driver.framework_id].roles == ["dev", "ops", "qa"]
    rec.wait("offer", lambda o: o["allocation_info"]["role"] == "qa", timeout=5, since=updated_at)


@pytest.mark.parametrize("info, message", [
    ({"roles": ["dev"]}, "'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE capable"),
    ({"role": "dev", "roles": ["dev"], "capabilities": [{"type": "MULTI_ROLE"}]},
     "'FrameworkInfo.role' must not be set when the framework is MULTI_ROLE capable"),
], ids=["roles-without-capability", "role-with-capability"])
def test_role_fields_the_master_refuses_end_the_subscription_with_an_error(mesos, info, message):
    driver, rec = mesos.framework(info)
    assert rec.wait("error", timeout=10) == message
