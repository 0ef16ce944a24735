"""The Mesos master double answers the way the recorded Mesos 1.12 master does (shared/mesos-v1):
the same status codes, headers, plain-text errors, RecordIO framing and task state sequences.
Raw HTTP here, for what pymesos cannot be made to send."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from .conftest import IMAGE, wait_until
from .doubles.mesos import AgentSpec, MesosDouble

pytestmark = pytest.mark.docker


class Stream:
    """A raw SUBSCRIBE: reads RecordIO records off the chunked stream in a thread."""

    def __init__(self, master: MesosDouble, framework_id: str | None = None):
        self.conn = http.client.HTTPConnection(*master.address.split(":"), timeout=30)
        body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {
            "user": "root", "name": "raw", "capabilities": [{"type": "TASK_KILLING_STATE"}]}}}
        if framework_id:
            body["framework_id"] = {"value": framework_id}
        self.conn.request("POST", "/api/v1/scheduler", json.dumps(body),
                          {"Content-Type": "application/json", "Accept": "application/json", "Connection": "close"})
        self.resp = self.conn.getresponse()
        self.events: list[dict] = []
        self.lengths: list[int] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    return
                n = int(line.strip())
                data = self.resp.read(n)
                self.lengths.append(n)
                self.events.append(json.loads(data))
        except (ValueError, OSError, AttributeError, http.client.HTTPException):
            return  # the test closed the connection

    def wait_for(self, pred, what):
        return wait_until(lambda: next((e for e in list(self.events) if pred(e)), None), 30, what=what)


def call(master, body, stream_id):
    conn = http.client.HTTPConnection(*master.address.split(":"), timeout=10)
    headers = {"Content-Type": "application/json"}
    if stream_id:
        headers["Mesos-Stream-Id"] = stream_id
    conn.request("POST", "/api/v1/scheduler", json.dumps(body), headers)
    r = conn.getresponse()
    return r.status, r.getheader("Content-Type"), r.read().decode()


@pytest.fixture
def master(docker_engine):
    m = MesosDouble([AgentSpec("S0", cpus=2, mem=2048)], heartbeat_seconds=15, kill_grace=1).start()
    yield m
    m.stop()


def test_subscribe_opens_a_recordio_stream_like_mesos_1_12(master):
    s = Stream(master)
    assert s.resp.status == 200
    assert s.resp.getheader("Transfer-Encoding") == "chunked"
    assert s.resp.getheader("Content-Type") == "application/json"
    assert s.resp.getheader("Mesos-Stream-Id")
    sub = s.wait_for(lambda e: e["type"] == "SUBSCRIBED", "SUBSCRIBED")
    assert sub["subscribed"]["heartbeat_interval_seconds"] == 15
    s.wait_for(lambda e: e["type"] == "HEARTBEAT", "HEARTBEAT")
    assert [e["type"] for e in s.events[:2]] == ["SUBSCRIBED", "HEARTBEAT"]
    offers = s.wait_for(lambda e: e["type"] == "OFFERS", "OFFERS")["offers"]["offers"]
    names = {r["name"]: r["scalar"]["value"] for r in offers[0]["resources"]}
    assert names["cpus"] == 2 and names["mem"] == 2048
    assert all(n == len(json.dumps(e)) for n, e in zip(s.lengths, s.events))


def test_calls_are_refused_with_the_masters_plain_text_reasons(master):
    s = Stream(master)
    fid = s.wait_for(lambda e: e["type"] == "SUBSCRIBED", "SUBSCRIBED")["subscribed"]["framework_id"]
    sid = s.resp.getheader("Mesos-Stream-Id")
    status, ctype, text = call(master, {"type": "DECLINE", "framework_id": fid, "decline": {"offer_ids": []}},
                               "not-the-stream-id")
    assert status == 400 and ctype.startswith("text/plain")
    assert text == (f"The stream ID 'not-the-stream-id' included in this request didn't match the stream ID "
                    f"currently associated with framework ID {fid['value']}")
    assert call(master, {"type": "BOGUS", "framework_id": fid}, sid)[2] == \
        "Failed to validate scheduler::Call: Expecting 'type' to be present"
    assert call(master, {"type": "ACCEPT", "accept": {}}, sid)[2] == \
        "Failed to validate scheduler::Call: Expecting 'framework_id' to be present"
    assert call(master, {"type": "SUPPRESS", "framework_id": fid}, sid)[0] == 202


def test_launch_fail_kill_and_reconcile_follow_the_recorded_sequences(master):
    s = Stream(master)
    fid = s.wait_for(lambda e: e["type"] == "SUBSCRIBED", "SUBSCRIBED")["subscribed"]["framework_id"]
    sid = s.resp.getheader("Mesos-Stream-Id")
    offer = s.wait_for(lambda e: e["type"] == "OFFERS", "OFFERS")["offers"]["offers"][0]

    def task(tid, command, image=IMAGE):
        return {"name": tid, "task_id": {"value": tid}, "agent_id": offer["agent_id"],
                "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                              {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}}],
                "command": {"shell": True, "value": command},
                "container": {"type": "DOCKER", "docker": {"image": image, "network": "HOST"}}}

    tasks = [task("ok", "echo hello"), task("three", "exit 3"), task("long", "sleep 60"),
             task("noimage", "true", "no-such-image-buildfarm:latest")]
    accept = {"type": "ACCEPT", "framework_id": fid, "accept": {"offer_ids": [offer["id"]], "operations": [
        {"type": "LAUNCH", "launch": {"task_infos": tasks}}]}}
    assert call(master, accept, sid)[0] == 202

    def updates(tid):
        return [e["update"]["status"] for e in list(s.events) if e["type"] == "UPDATE"
                and e["update"]["status"]["task_id"]["value"] == tid]

    def ack_all():
        for st in [e["update"]["status"] for e in list(s.events) if e["type"] == "UPDATE"]:
            if "uuid" in st:
                call(master, {"type": "ACKNOWLEDGE", "framework_id": fid, "acknowledge": {
                    "agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": st["uuid"]}}, sid)

    def states(tid):
        ack_all()
        return [u["state"] for u in updates(tid) if u.get("reason") != "REASON_RECONCILIATION"]

    wait_until(lambda: states("ok")[-1:] == ["TASK_FINISHED"], 60, what="ok to finish")
    assert states("ok") == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    wait_until(lambda: states("three")[-1:] == ["TASK_FAILED"], 60, what="three to fail")
    assert updates("three")[-1]["message"] == "Container exited with status 3"
    wait_until(lambda: states("noimage")[-1:] == ["TASK_FAILED"], 60, what="noimage to fail")
    failed = updates("noimage")[-1]
    assert failed["reason"] == "REASON_CONTAINER_LAUNCH_FAILED" and failed["source"] == "SOURCE_AGENT"
    wait_until(lambda: "TASK_RUNNING" in states("long"), 60, what="long to run")

    reconcile = {"type": "RECONCILE", "framework_id": fid, "reconcile": {"tasks": [
        {"task_id": {"value": "long"}}, {"task_id": {"value": "unknown-task-xyz"}}]}}
    assert call(master, reconcile, sid)[0] == 202
    running = s.wait_for(lambda e: e["type"] == "UPDATE" and e["update"]["status"].get("reason") ==
                         "REASON_RECONCILIATION" and e["update"]["status"]["task_id"]["value"] == "long", "reconcile")
    assert running["update"]["status"]["state"] == "TASK_RUNNING"
    assert running["update"]["status"]["source"] == "SOURCE_MASTER" and "uuid" not in running["update"]["status"]
    unknown = s.wait_for(lambda e: e["type"] == "UPDATE" and
                         e["update"]["status"]["task_id"]["value"] == "unknown-task-xyz", "unknown")
    assert unknown["update"]["status"]["state"] == "TASK_UNKNOWN"

    assert call(master, {"type": "KILL", "framework_id": fid, "kill": {"task_id": {"value": "long"}}}, sid)[0] == 202
    wait_until(lambda: states("long")[-1:] == ["TASK_KILLED"], 60, what="long to be killed")
    assert states("long")[-2:] == ["TASK_KILLING", "TASK_KILLED"]
    assert updates("long")[-1]["message"] == "Container exited with status 137"


def test_failover_resubscribes_with_the_same_id_and_teardown_ends_the_stream(master):
    s = Stream(master)
    fid = s.wait_for(lambda e: e["type"] == "SUBSCRIBED", "SUBSCRIBED")["subscribed"]["framework_id"]
    s.conn.close()
    again = Stream(master, fid["value"])
    sub = again.wait_for(lambda e: e["type"] == "SUBSCRIBED", "SUBSCRIBED again")
    assert sub["subscribed"]["framework_id"] == fid
    again.wait_for(lambda e: e["type"] == "OFFERS", "offers resume")
    sid = again.resp.getheader("Mesos-Stream-Id")
    assert call(master, {"type": "TEARDOWN", "framework_id": fid}, sid)[0] == 202
    wait_until(lambda: again.resp.isclosed() or again.resp.fp is None or not master.frameworks, 10, what="the end")
    assert fid["value"] not in master.frameworks
