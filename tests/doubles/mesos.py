"""A Mesos master and its agents, as a test double that speaks the real v1 scheduler HTTP API.

Written from Apache Mesos' `docs/scheduler-http-api.md`, `include/mesos/v1/scheduler/scheduler.proto`
and `include/mesos/v1/mesos.proto`, and made to behave like the exchange with a real Mesos 1.12
master recorded in `shared/mesos-v1/`: `POST /api/v1/scheduler`; SUBSCRIBE answers 200 with a
chunked, RecordIO-framed JSON event stream and a `Mesos-Stream-Id` header; other calls answer 202,
or 400 with a plain-text reason; status updates carry a uuid and are re-sent until acknowledged.

The agents run launched Docker tasks as real containers on the local Docker engine and report
the task states they really reach. Only 127.0.0.1 is served.
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import shutil
import tarfile
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import docker

LABEL = "buildfarm.mesos-double"
TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_GONE",
            "TASK_GONE_BY_OPERATOR", "TASK_UNREACHABLE", "TASK_UNKNOWN"}


def _scalar(name: str, value: float) -> dict[str, Any]:
    return {"name": name, "type": "SCALAR", "scalar": {"value": float(value)}, "role": "*",
            "allocation_info": {"role": "*"}}


@dataclass
class AgentSpec:
    agent_id: str
    hostname: str = "localhost"
    cpus: float = 2.0
    mem: float = 4096.0
    disk: float = 10000.0
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Task:
    task_id: str
    framework_id: str
    agent_id: str
    info: dict[str, Any]
    cpus: float
    mem: float
    disk: float
    state: str = "TASK_STAGING"
    container: Any = None
    killed: bool = False
    sandbox: str = ""


class Framework:
    def __init__(self, framework_id: str, info: dict[str, Any]):
        self.id = framework_id
        self.info = info
        self.stream_id: str | None = None
        self.events: queue.Queue | None = None  # the open subscription's outbox
        self.suppressed = False
        self.filters: dict[str, float] = {}  # agent id -> refuse until (monotonic)
        self.unacked: dict[str, list[dict[str, Any]]] = {}  # task id -> status updates in order


class MesosDouble:
    """Start with `start()`; `url` is http://127.0.0.1:PORT. Test controls: `lose_agent`,
    `add_agent`, `drop_streams`, `calls` (every scheduler call received, in order), `tasks`."""

    def __init__(self, agents: list[AgentSpec], heartbeat_seconds: float = 15.0, kill_grace: float = 1.0,
                 update_retry_seconds: float = 2.0, port: int = 0):
        self.master_id = str(uuid.uuid4())
        self.agents: dict[str, AgentSpec] = {}
        self.free: dict[str, dict[str, float]] = {}
        self.lost: set[str] = set()
        for a in agents:
            self.add_agent(a, allocate=False)
        self.heartbeat_seconds = heartbeat_seconds
        self.kill_grace = kill_grace
        self.update_retry_seconds = update_retry_seconds
        self.frameworks: dict[str, Framework] = {}
        self.removed: set[str] = set()  # torn-down framework ids: they cannot subscribe again
        self.offers: dict[str, dict[str, Any]] = {}  # offer id -> offer (outstanding)
        self.tasks: dict[str, Task] = {}
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self._offer_seq = 0
        self._fw_seq = 0
        self.docker = docker.from_env()
        self._stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    # -- life ------------------------------------------------------------------------------------
    def start(self) -> "MesosDouble":
        threading.Thread(target=self.server.serve_forever, daemon=True, name="mesos-http").start()
        threading.Thread(target=self._ticker, daemon=True, name="mesos-ticker").start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.drop_streams()
        self.server.shutdown()
        self.server.server_close()
        for c in self.docker.containers.list(all=True, filters={"label": f"{LABEL}={self.master_id}"}):
            c.remove(force=True)
        for t in self.tasks.values():
            if t.sandbox:
                shutil.rmtree(t.sandbox, ignore_errors=True)

    def _ticker(self) -> None:
        last_beat = time.monotonic()
        while not self._stopping.wait(0.5):
            with self.lock:
                if time.monotonic() - last_beat >= self.heartbeat_seconds:
                    last_beat = time.monotonic()
                    for fw in self.frameworks.values():
                        self._send(fw, {"type": "HEARTBEAT"})
                self._resend_unacked()
                self.allocate()

    # -- test controls ------------------------------------------------------------------------------
    def add_agent(self, a: AgentSpec, allocate: bool = True) -> None:
        self.agents[a.agent_id] = a
        self.free[a.agent_id] = {"cpus": a.cpus, "mem": a.mem, "disk": a.disk}
        self.lost.discard(a.agent_id)
        if allocate:
            with self.lock:
                self.allocate()

    def lose_agent(self, agent_id: str) -> None:
        """The agent disappears: its containers die, offers on it are rescinded, its tasks become
        TASK_UNREACHABLE (partition-aware frameworks) and frameworks get an agent FAILURE event."""
        with self.lock:
            self.lost.add(agent_id)
            for oid, o in list(self.offers.items()):
                if o["agent_id"]["value"] == agent_id:
                    del self.offers[oid]
                    fw = self.frameworks.get(o["framework_id"]["value"])
                    if fw:
                        self._send(fw, {"type": "RESCIND", "rescind": {"offer_id": {"value": oid}}})
            doomed = [t for t in self.tasks.values() if t.agent_id == agent_id and t.state not in TERMINAL]
            for t in doomed:  # recorded first, so the dying containers' exits are not reported
                t.killed = True
                self._update(t, "TASK_UNREACHABLE", "SOURCE_MASTER", reason="REASON_SLAVE_REMOVED",
                             message="Agent became unreachable")
            for fw in self.frameworks.values():
                self._send(fw, {"type": "FAILURE", "failure": {"agent_id": {"value": agent_id}}})
        for t in doomed:
            if t.container is not None:
                try:
                    t.container.remove(force=True)
                except docker.errors.APIError:
                    pass

    def drop_streams(self) -> None:
        """The master restarts (or fails over): every subscription stream ends."""
        with self.lock:
            for fw in self.frameworks.values():
                if fw.events is not None:
                    fw.events.put(None)
                    fw.events = None
                fw.stream_id = None
            self.offers.clear()
            for aid, a in self.agents.items():  # give back what was offered
                self.free[aid] = self._unused(aid)

    def calls_of(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c.get("type") == kind]

    def task_states(self) -> dict[str, str]:
        return {t.task_id: t.state for t in self.tasks.values()}

    # -- the scheduler API ---------------------------------------------------------------------------
    def handle_call(self, call: dict[str, Any], stream_id: str | None) -> tuple[int, str]:
        """Every call but SUBSCRIBE: (status, plain-text body)."""
        kind = call.get("type")
        known = {"ACCEPT", "DECLINE", "KILL", "ACKNOWLEDGE", "RECONCILE", "SUPPRESS", "REVIVE", "TEARDOWN",
                 "SHUTDOWN", "MESSAGE", "REQUEST", "ACCEPT_INVERSE_OFFERS", "DECLINE_INVERSE_OFFERS"}
        if kind not in known:
            return 400, "Failed to validate scheduler::Call: Expecting 'type' to be present"
        fid = call.get("framework_id", {}).get("value")
        if not fid:
            return 400, "Failed to validate scheduler::Call: Expecting 'framework_id' to be present"
        with self.lock:
            self.calls.append(call)
            fw = self.frameworks.get(fid)
            if fw is None:
                return 400, f"Framework {fid} is not subscribed"
            if stream_id != fw.stream_id:
                return 400, (f"The stream ID '{stream_id}' included in this request didn't match the stream ID "
                             f"currently associated with framework ID {fid}")
            getattr(self, f"_call_{kind.lower()}", lambda fw, call: None)(fw, call)
        return 202, ""

    def subscribe(self, call: dict[str, Any]) -> tuple[int, str, Framework | None]:
        info = call.get("subscribe", {}).get("framework_info")
        if not info:
            return 400, "Failed to validate scheduler::Call: Expecting 'subscribe' to be present", None
        with self.lock:
            self.calls.append(call)
            fid = (call.get("framework_id") or info.get("id") or {}).get("value")
            if fid in self.removed:
                fw = Framework(fid, info)
                fw.stream_id = str(uuid.uuid4())
                fw.events = queue.Queue()
                self._send(fw, {"type": "ERROR", "error": {"message": "Framework has been removed"}})
                fw.events.put(None)
                return 200, "", fw
            if fid and fid in self.frameworks:
                fw = self.frameworks[fid]
                if fw.events is not None:  # the old stream is replaced (failover)
                    fw.events.put(None)
                for oid in [i for i, o in self.offers.items() if o["framework_id"]["value"] == fid]:
                    self._return_offer(oid)  # offers made to the old connection are void
                fw.info = info
            else:
                if not fid:
                    self._fw_seq += 1
                    fid = f"{self.master_id}-{self._fw_seq:04d}"
                fw = self.frameworks[fid] = Framework(fid, info)
            fw.stream_id = str(uuid.uuid4())
            fw.events = queue.Queue()
            fw.suppressed = False
            host, port = self.address.split(":")
            self._send(fw, {"type": "SUBSCRIBED", "subscribed": {
                "framework_id": {"value": fid}, "heartbeat_interval_seconds": self.heartbeat_seconds,
                "master_info": {"id": self.master_id, "ip": 16777343, "port": int(port), "hostname": "localhost",
                                "pid": f"master@{self.address}", "version": "1.12.0",
                                "address": {"hostname": "localhost", "ip": host, "port": int(port)}}}})
            self._send(fw, {"type": "HEARTBEAT"})
            for updates in fw.unacked.values():  # what was not acknowledged before is sent again
                if updates:
                    self._send(fw, {"type": "UPDATE", "update": {"status": updates[0]}})
            self.allocate()
        return 200, "", fw

    def _call_teardown(self, fw: Framework, call) -> None:
        for t in list(self.tasks.values()):
            if t.framework_id == fw.id and t.state not in TERMINAL:
                self._kill(t)
        for oid in [i for i, o in self.offers.items() if o["framework_id"]["value"] == fw.id]:
            self._return_offer(oid)
        if fw.events is not None:
            fw.events.put(None)
        del self.frameworks[fw.id]
        self.removed.add(fw.id)

    def _call_suppress(self, fw: Framework, call) -> None:
        fw.suppressed = True

    def _call_revive(self, fw: Framework, call) -> None:
        fw.suppressed = False
        fw.filters.clear()
        self.allocate()

    def _call_decline(self, fw: Framework, call) -> None:
        refuse = float(call.get("decline", {}).get("filters", {}).get("refuse_seconds", 5.0))
        for o in call.get("decline", {}).get("offer_ids", []):
            offer = self.offers.get(o["value"])
            if offer:
                fw.filters[offer["agent_id"]["value"]] = time.monotonic() + refuse
                self._return_offer(o["value"])

    def _call_accept(self, fw: Framework, call) -> None:
        accept = call.get("accept", {})
        refuse = float(accept.get("filters", {}).get("refuse_seconds", 5.0))
        offers = [self.offers.get(o["value"]) for o in accept.get("offer_ids", [])]
        launches = [ti for op in accept.get("operations", []) if op.get("type") == "LAUNCH"
                    for ti in op.get("launch", {}).get("task_infos", [])]
        if not offers or any(o is None or o["framework_id"]["value"] != fw.id for o in offers):
            for ti in launches:  # as Mesos does for a partition-aware framework
                t = self._new_task(fw, ti)
                self._update(t, "TASK_DROPPED", "SOURCE_MASTER", reason="REASON_INVALID_OFFERS",
                             message="Task launched with invalid offers")
            return
        agent_id = offers[0]["agent_id"]["value"]
        pool = {"cpus": 0.0, "mem": 0.0, "disk": 0.0}
        for o in offers:
            for r in o["resources"]:
                if r["name"] in pool:
                    pool[r["name"]] += r["scalar"]["value"]
            del self.offers[o["id"]["value"]]
        for ti in launches:
            t = self._new_task(fw, ti)
            if t.cpus > pool["cpus"] + 1e-9 or t.mem > pool["mem"] or t.disk > pool["disk"]:
                self._update(t, "TASK_ERROR", "SOURCE_MASTER", reason="REASON_TASK_INVALID",
                             message="Task uses more resources than offered")
                continue
            pool["cpus"] -= t.cpus
            pool["mem"] -= t.mem
            pool["disk"] -= t.disk
            threading.Thread(target=self._run_task, args=(t,), daemon=True, name=f"task-{t.task_id}").start()
        free = self.free[agent_id]
        for k in free:
            free[k] += pool[k]
        fw.filters[agent_id] = time.monotonic() + refuse

    def _call_kill(self, fw: Framework, call) -> None:
        tid = call.get("kill", {}).get("task_id", {}).get("value")
        t = self.tasks.get(tid)
        if t is None or t.framework_id != fw.id:
            return
        if t.state not in TERMINAL:
            self._kill(t)

    def _call_acknowledge(self, fw: Framework, call) -> None:
        ack = call.get("acknowledge", {})
        tid = ack.get("task_id", {}).get("value")
        pending = fw.unacked.get(tid) or []
        if pending and pending[0].get("uuid") == ack.get("uuid"):
            pending.pop(0)
            if pending:  # the next update of this task follows once the previous one is acknowledged
                self._send(fw, {"type": "UPDATE", "update": {"status": pending[0]}})

    def _call_reconcile(self, fw: Framework, call) -> None:
        wanted = call.get("reconcile", {}).get("tasks", [])
        if not wanted:  # implicit: every task the master knows of this framework
            for t in self.tasks.values():
                if t.framework_id == fw.id and t.state not in TERMINAL:
                    self._reconciled(fw, t.task_id, t)
            return
        for w in wanted:
            tid = w["task_id"]["value"]
            self._reconciled(fw, tid, self.tasks.get(tid) if tid in self.tasks else None)

    def _reconciled(self, fw: Framework, task_id: str, t: Task | None) -> None:
        if t is None or t.framework_id != fw.id:
            status = {"task_id": {"value": task_id}, "state": "TASK_UNKNOWN", "source": "SOURCE_MASTER",
                      "reason": "REASON_RECONCILIATION", "message": "Reconciliation: Task is unknown",
                      "timestamp": time.time()}
        else:
            status = {"task_id": {"value": task_id}, "state": t.state, "source": "SOURCE_MASTER",
                      "reason": "REASON_RECONCILIATION", "message": "Reconciliation: Latest task state",
                      "agent_id": {"value": t.agent_id}, "timestamp": time.time()}
        self._send(fw, {"type": "UPDATE", "update": {"status": status}})

    # -- offers ----------------------------------------------------------------------------------
    def _unused(self, agent_id: str) -> dict[str, float]:
        a = self.agents[agent_id]
        used = {"cpus": 0.0, "mem": 0.0, "disk": 0.0}
        for t in self.tasks.values():
            if t.agent_id == agent_id and t.state not in TERMINAL:
                used["cpus"] += t.cpus
                used["mem"] += t.mem
                used["disk"] += t.disk
        return {"cpus": a.cpus - used["cpus"], "mem": a.mem - used["mem"], "disk": a.disk - used["disk"]}

    def _return_offer(self, offer_id: str) -> None:
        o = self.offers.pop(offer_id, None)
        if o is None:
            return
        free = self.free[o["agent_id"]["value"]]
        for r in o["resources"]:
            if r["name"] in free:
                free[r["name"]] += r["scalar"]["value"]

    def allocate(self) -> None:
        """Offer each agent's free resources to a subscribed, unsuppressed framework that has no
        outstanding offer for it and has not filtered it (round-robin over frameworks)."""
        now = time.monotonic()
        for aid, a in self.agents.items():
            if aid in self.lost:
                continue
            free = self.free[aid]
            if free["cpus"] < 0.01 or free["mem"] < 1:
                continue
            for fw in self.frameworks.values():
                if fw.events is None or fw.suppressed or fw.filters.get(aid, 0) > now:
                    continue
                if any(o["agent_id"]["value"] == aid and o["framework_id"]["value"] == fw.id
                       for o in self.offers.values()):
                    continue
                self._offer_seq += 1
                oid = f"{self.master_id}-O{self._offer_seq}"
                offer = {
                    "id": {"value": oid}, "framework_id": {"value": fw.id}, "agent_id": {"value": aid},
                    "hostname": a.hostname,
                    "url": {"scheme": "http", "address": {"hostname": a.hostname, "ip": "127.0.0.1", "port": 5051},
                            "path": "/slave(1)"},
                    "resources": [_scalar("cpus", round(free["cpus"], 6)), _scalar("mem", free["mem"]),
                                  _scalar("disk", free["disk"])],
                    "attributes": [{"name": k, "type": "TEXT", "text": {"value": v}} for k, v in a.attributes.items()],
                }
                self.offers[oid] = offer
                self.free[aid] = {"cpus": 0.0, "mem": 0.0, "disk": 0.0}
                self._send(fw, {"type": "OFFERS", "offers": {"offers": [offer]}})
                break

    # -- tasks -----------------------------------------------------------------------------------
    def _new_task(self, fw: Framework, ti: dict[str, Any]) -> Task:
        res = {"cpus": 0.0, "mem": 0.0, "disk": 0.0}
        for r in ti.get("resources", []):
            if r.get("name") in res:
                res[r["name"]] += float(r.get("scalar", {}).get("value", 0))
        t = Task(ti["task_id"]["value"], fw.id, ti.get("agent_id", {}).get("value", ""), ti, res["cpus"], res["mem"],
                 res["disk"])
        self.tasks[t.task_id] = t
        return t

    def _run_task(self, t: Task) -> None:
        """The agent's side: fetch the URIs, run the Docker container, report what happens."""
        info = t.info
        cmd = info.get("command", {})
        container = info.get("container", {})
        image = container.get("docker", {}).get("image", "")
        t.sandbox = tempfile.mkdtemp(prefix=f"mesos-sandbox-{t.task_id}-")
        os.chmod(t.sandbox, 0o755)
        try:
            for uri in cmd.get("uris", []):
                self._fetch(uri, t.sandbox)
        except Exception as e:
            with self.lock:
                self._update(t, "TASK_FAILED", "SOURCE_AGENT", reason="REASON_CONTAINER_LAUNCH_FAILED",
                             message=f"Failed to launch container: Failed to fetch all URIs for container: {e}")
            return
        env = {v["name"]: v.get("value", "") for v in cmd.get("environment", {}).get("variables", [])}
        env["MESOS_SANDBOX"] = "/mnt/mesos/sandbox"
        env["MESOS_TASK_ID"] = t.task_id
        volumes = {t.sandbox: {"bind": "/mnt/mesos/sandbox", "mode": "rw"}}
        for v in container.get("volumes", []):
            if v.get("host_path"):
                os.makedirs(v["host_path"], exist_ok=True)
                volumes[v["host_path"]] = {"bind": v["container_path"], "mode": "rw" if v.get("mode") == "RW" else "ro"}
        network = container.get("docker", {}).get("network", "HOST")
        if cmd.get("shell", True):
            argv = ["/bin/sh", "-c", cmd.get("value", "")]
        else:
            argv = [cmd.get("value", "")] + list(cmd.get("arguments", [])[1:])
        with self.lock:
            if t.killed:
                return
            self._update(t, "TASK_STARTING", "SOURCE_EXECUTOR")
        try:
            c = self.docker.containers.create(
                image, command=argv, environment=env, volumes=volumes, working_dir="/mnt/mesos/sandbox",
                network_mode="host" if network == "HOST" else "bridge", nano_cpus=int(max(t.cpus, 0.01) * 1e9),
                mem_limit=f"{max(int(t.mem), 6)}m", labels={LABEL: self.master_id, "mesos.task-id": t.task_id},
                entrypoint=[])
            c.start()
        except docker.errors.ImageNotFound:
            with self.lock:
                self._update(t, "TASK_FAILED", "SOURCE_AGENT", reason="REASON_CONTAINER_LAUNCH_FAILED",
                             message=f"Failed to launch container: Failed to run 'docker pull {image}': exited with "
                                     f"status 1; stderr='Error response from daemon: pull access denied for {image}'")
            return
        except docker.errors.APIError as e:
            with self.lock:
                self._update(t, "TASK_FAILED", "SOURCE_AGENT", reason="REASON_CONTAINER_LAUNCH_FAILED",
                             message=f"Failed to launch container: {e.explanation or e}")
            return
        with self.lock:
            t.container = c
            if t.killed:  # killed while starting
                threading.Thread(target=self._stop_container, args=(t,), daemon=True).start()
            else:
                self._update(t, "TASK_RUNNING", "SOURCE_EXECUTOR")
        try:
            code = int(c.wait().get("StatusCode", -1))
        except Exception:
            code = -1
        with self.lock:
            if t.state in TERMINAL:  # lost with its agent
                return
            msg = f"Container exited with status {code}"
            if t.killed:
                self._update(t, "TASK_KILLED", "SOURCE_EXECUTOR", message=msg)
            elif code == 0:
                self._update(t, "TASK_FINISHED", "SOURCE_EXECUTOR", message=msg)
            else:
                self._update(t, "TASK_FAILED", "SOURCE_EXECUTOR", message=msg)
        try:
            c.remove(force=True)
        except docker.errors.APIError:
            pass

    def _fetch(self, uri: dict[str, Any], sandbox: str) -> None:
        url = uri["value"]
        if not url.startswith("http://127.0.0.1"):
            raise ValueError(f"the double fetches only from 127.0.0.1, not {url}")
        with urllib.request.urlopen(url, timeout=30) as resp:
            data = resp.read()
        name = url.rstrip("/").rsplit("/", 1)[-1]
        if uri.get("extract", True) and (name.endswith(".tar.gz") or name.endswith(".tgz")):
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(sandbox, filter="data")
        else:
            with open(os.path.join(sandbox, name), "wb") as f:
                f.write(data)
        for root, dirs, files in os.walk(sandbox):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)

    def _kill(self, t: Task) -> None:
        t.killed = True
        self._update(t, "TASK_KILLING", "SOURCE_EXECUTOR")
        if t.container is not None:
            threading.Thread(target=self._stop_container, args=(t,), daemon=True).start()

    def _stop_container(self, t: Task) -> None:
        try:
            t.container.stop(timeout=self.kill_grace)
        except docker.errors.APIError:
            pass

    def _update(self, t: Task, state: str, source: str, reason: str | None = None, message: str | None = None) -> None:
        """A status update from the agent (or master): sent in order, re-sent until acknowledged."""
        t.state = state
        status = {"task_id": {"value": t.task_id}, "state": state, "source": source,
                  "agent_id": {"value": t.agent_id}, "executor_id": {"value": t.task_id},
                  "timestamp": time.time(), "uuid": base64.b64encode(uuid.uuid4().bytes).decode()}
        if reason:
            status["reason"] = reason
        if message is not None:
            status["message"] = message
        if state in TERMINAL:
            free = self.free.get(t.agent_id)
            if free is not None and t.agent_id not in self.lost and not t.info.get("_released"):
                t.info["_released"] = True
                free["cpus"] += t.cpus
                free["mem"] += t.mem
                free["disk"] += t.disk
        fw = self.frameworks.get(t.framework_id)
        if fw is None:
            return
        pending = fw.unacked.setdefault(t.task_id, [])
        pending.append(status)
        if len(pending) == 1:
            self._send(fw, {"type": "UPDATE", "update": {"status": status}})
        self.allocate()

    def _resend_unacked(self) -> None:
        now = time.time()
        for fw in self.frameworks.values():
            for updates in fw.unacked.values():
                if updates and now - updates[0].get("_sent", now) >= self.update_retry_seconds:
                    self._send(fw, {"type": "UPDATE", "update": {"status": updates[0]}})

    def _send(self, fw: Framework, event: dict[str, Any]) -> None:
        if event.get("type") == "UPDATE":
            event["update"]["status"]["_sent"] = time.time()
        if fw.events is not None:
            fw.events.put(event)


def _record(event: dict[str, Any]) -> bytes:
    clean = json.loads(json.dumps(event))
    if clean.get("type") == "UPDATE":
        clean["update"]["status"].pop("_sent", None)
    data = json.dumps(clean).encode()
    return str(len(data)).encode() + b"\n" + data


def _handler(master: MesosDouble):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _plain(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            if body:
                self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, obj) -> None:
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path in ("/version", "/master/version"):
                return self._json({"version": "1.12.0", "git_sha": "double"})
            if self.path in ("/slaves", "/master/slaves"):
                with master.lock:
                    return self._json({"slaves": [
                        {"id": a.agent_id, "hostname": a.hostname, "active": True, "attributes": dict(a.attributes),
                         "resources": {"cpus": a.cpus, "mem": a.mem, "disk": a.disk}}
                        for aid, a in master.agents.items() if aid not in master.lost]})
            return self._plain(404, "")

        def do_POST(self):
            if self.path not in ("/api/v1/scheduler", "/master/api/v1/scheduler"):
                return self._plain(404, "")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                call = json.loads(raw or b"{}")
            except ValueError as e:
                return self._plain(400, f"Failed to parse body into JSON: {e}")
            if call.get("type") == "SUBSCRIBE":
                return self._subscribe(call)
            status, text = master.handle_call(call, self.headers.get("Mesos-Stream-Id"))
            return self._plain(status, text)

        def _subscribe(self, call):
            status, text, fw = master.subscribe(call)
            if fw is None:
                return self._plain(status, text)
            events = fw.events
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Mesos-Stream-Id", fw.stream_id)
            self.end_headers()
            self.close_connection = True
            try:
                while True:
                    event = events.get()
                    if event is None:
                        break
                    chunk = _record(event)
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            with master.lock:  # the framework went away: its offers return to the pool
                if fw.events is events:
                    fw.events = None
                    fw.stream_id = None
                    for oid in [i for i, o in master.offers.items() if o["framework_id"]["value"] == fw.id]:
                        master._return_offer(oid)

    return Handler


def main() -> None:  # pragma: no cover - for trying it by hand
    import argparse

    ap = argparse.ArgumentParser(description="A Mesos master double on 127.0.0.1")
    ap.add_argument("--port", type=int, default=5050)
    ap.add_argument("--agents", default='[{"agent_id": "S0", "cpus": 2, "mem": 4096}]',
                    help="JSON list of agents: agent_id, hostname, cpus, mem, disk, attributes")
    args = ap.parse_args()
    m = MesosDouble([AgentSpec(**a) for a in json.loads(args.agents)], port=args.port).start()
    print(f"Mesos master double on {m.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        m.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
