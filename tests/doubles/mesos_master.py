"""A Mesos master and its agents, as a test double that speaks the real v1 scheduler HTTP API.

Written from Apache Mesos' `docs/scheduler-http-api.md`, `include/mesos/v1/scheduler/scheduler.proto`
and `include/mesos/v1/mesos.proto`, checked against what the master's sources say for the corner
cases, and made to answer like the exchange with a real Mesos 1.12 master recorded in
`shared/mesos-v1/transcript-mesos-1.12.jsonl`. Unmodified pymesos (MesosSchedulerDriver) talks to it.

The scheduler API (`POST /api/v1/scheduler`, also under `/master/`):
  SUBSCRIBE  200, `Transfer-Encoding: chunked`, `Content-Type: application/json`, `Mesos-Stream-Id`;
             a RecordIO stream (one record per chunk) of SUBSCRIBED, HEARTBEAT, OFFERS, RESCIND,
             UPDATE, FAILURE, ERROR. Re-subscribing with a known framework id is a failover: same id,
             the old stream (if still open) gets ERROR "Framework failed over" and ends, offers
             made to it are void. A torn-down id gets ERROR "Framework has been removed".
  others     202 (UPDATE_FRAMEWORK, RECONCILE_OPERATIONS: 200), or 400/403/405/406/415 with the
             master's plain-text reasons ("Failed to validate scheduler::Call: ...", "The stream ID
             '...' included in this request didn't match ...", "Framework is not subscribed", ...).
  ACCEPT (LAUNCH), DECLINE (`filters.refuse_seconds`, default 5, with Mesos' filter semantics: the
  agent is not offered again while what it has free is within what was refused), KILL, ACKNOWLEDGE,
  RECONCILE (explicit and implicit, with Mesos' answers for unknown/unreachable/gone tasks),
  SUPPRESS, REVIVE (offers at once), TEARDOWN. SHUTDOWN, MESSAGE, REQUEST, the inverse-offer and
  operation calls are accepted and ignored.
  Status updates from agents and executors carry a uuid and are re-sent (one at a time per task,
  as the agent's status update manager does) until acknowledged; the master's own (reconciliation,
  lost agents, invalid launches) carry none and are sent once. PARTITION_AWARE frameworks get
  TASK_UNREACHABLE/GONE/DROPPED/UNKNOWN, others TASK_LOST. TASK_KILLING only with the
  TASK_KILLING_STATE capability. A framework disconnected for longer than its failover_timeout is
  removed and its tasks killed (Mesos' default timeout is 0; pymesos sends 100 unless told).
  Roles: `role`, or with the MULTI_ROLE capability `roles` (the master's validation of the two
  fields, as an ERROR on SUBSCRIBE or a 400 on UPDATE_FRAMEWORK). A MULTI_ROLE framework's roles take
  turns on each agent (the real allocator orders them by DRF); offers and their resources carry
  `allocation_info.role`, refuse filters are per role, offers of two roles cannot be aggregated in
  one ACCEPT, and a task whose resources are allocated to another role than the offers' is
  TASK_ERROR "Total resources ... more than available ..." (resources of another role are not
  contained in the offer). SUPPRESS/REVIVE act on all the framework's roles.

Agents are simulated (id, hostname, cpus/mem/disk/ports, attributes). Tasks with
`container.type == DOCKER` run as real containers on the local Docker engine: the image (never
pulled: a missing image is TASK_FAILED, REASON_CONTAINER_LAUNCH_FAILED from SOURCE_AGENT, like the
recorded pull failure), `command` (shell: `/bin/sh -c value` as the entrypoint; otherwise the
image's entrypoint with value and arguments), `command.environment`, the network (HOST unless told
otherwise), `container.volumes`, cpu shares/quota and memory from the task's resources, and labels
(`buildfarm.mesos-double=1`, the master's id, task/framework/agent ids). `command.uris` are fetched
by the agent (HTTP from loopback addresses only, or local files; archives extracted when `extract`)
into a per-task sandbox mounted at /mnt/mesos/sandbox ($MESOS_SANDBOX); the container's output is
saved there as `stdout` and `stderr`. Updates: TASK_STARTING, TASK_RUNNING (with the docker inspect
as `data`), then TASK_FINISHED / TASK_FAILED / TASK_KILLED with "Container exited with status N",
all from SOURCE_EXECUTOR, as the recording shows.

Test controls: Python methods (`add_agent`, `lose_agent`, `drop_streams`, `restart`,
`rescind_offers`, `calls`/`calls_of`, `rejected`, `task_states`, `task_list`, `state`) and the same
over HTTP under `/double/` (see `_Handler._control`). Also `GET /version`, `/master/redirect`,
`/master/state`, `/master/slaves`, `/health`.

    python -m tests.doubles.mesos_master --port 5050 --agents '[{"id": "a1", "cpus": 2, "mem": 4096,
        "attributes": {"arch": "x86_64", "os": "el9"}}]'

or in-process: `MesosMasterDouble([AgentSpec("a1", ...)], kill_grace=1).start()` ... `.stop()`.
Only 127.0.0.1 is served, and the agents fetch only from loopback. `stop()` removes every
container it started. Standard library plus the docker SDK (only needed once a task runs).
"""

from __future__ import annotations

import argparse
import base64
import copy
import gzip
import ipaddress
import json
import os
import queue
import select
import shutil
import signal
import socket
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

try:
    import docker
    import docker.errors
except ImportError:  # pragma: no cover - the protocol works without it; tasks then fail to launch
    docker = None

LABEL = "buildfarm.mesos-double"
MESOS_VERSION = "1.12.0"
SANDBOX = "/mnt/mesos/sandbox"
MIN_CPUS, MIN_MEM = 0.01, 32.0  # Mesos offers nothing smaller
TERMINAL = frozenset({"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED",
                      "TASK_GONE", "TASK_GONE_BY_OPERATOR"})
CALL_TYPES = frozenset({"SUBSCRIBE", "TEARDOWN", "ACCEPT", "DECLINE", "ACCEPT_INVERSE_OFFERS",
                        "DECLINE_INVERSE_OFFERS", "REVIVE", "KILL", "SHUTDOWN", "ACKNOWLEDGE",
                        "ACKNOWLEDGE_OPERATION_STATUS", "RECONCILE", "RECONCILE_OPERATIONS", "MESSAGE", "REQUEST",
                        "SUPPRESS", "UPDATE_FRAMEWORK"})
# Calls whose message field is required (scheduler::call::validate).
CALL_FIELD = {"ACCEPT": "accept", "DECLINE": "decline", "ACCEPT_INVERSE_OFFERS": "accept_inverse_offers",
              "DECLINE_INVERSE_OFFERS": "decline_inverse_offers", "KILL": "kill", "SHUTDOWN": "shutdown",
              "ACKNOWLEDGE": "acknowledge", "ACKNOWLEDGE_OPERATION_STATUS": "acknowledge_operation_status",
              "RECONCILE": "reconcile", "RECONCILE_OPERATIONS": "reconcile_operations", "MESSAGE": "message",
              "REQUEST": "request", "UPDATE_FRAMEWORK": "update_framework"}
YEAR = 31536000.0


# -- resources -----------------------------------------------------------------------------------
# A resource set is {name: float} for SCALARs and {name: [(begin, end), ...]} for RANGES (ports).

def _merge(ranges) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for b, e in sorted((int(b), int(e)) for b, e in ranges):
        if out and b <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([b, e])
    return [(b, e) for b, e in out]


def _ranges_minus(a, b) -> list[tuple[int, int]]:
    out = _merge(a)
    for sb, se in _merge(b):
        nxt = []
        for b0, e0 in out:
            if se < b0 or sb > e0:
                nxt.append((b0, e0))
                continue
            if b0 < sb:
                nxt.append((b0, sb - 1))
            if se < e0:
                nxt.append((se + 1, e0))
        out = nxt
    return out


def res_add(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, list):
            out[k] = _merge(list(out.get(k, [])) + list(v))
        else:
            out[k] = round(out.get(k, 0.0) + v, 3)
    return out


def res_sub(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, list):
            out[k] = _ranges_minus(out.get(k, []), v)
        else:
            out[k] = round(out.get(k, 0.0) - v, 3)
    return out


def res_contains(a: dict, b: dict) -> bool:
    """Whether `a` holds all of `b`."""
    for k, v in b.items():
        if isinstance(v, list):
            if _ranges_minus(v, a.get(k, [])):
                return False
        elif v > 1e-9 and a.get(k, 0.0) + 1e-9 < v:
            return False
    return True


def res_empty(a: dict) -> bool:
    return all((not v) if isinstance(v, list) else v <= 1e-9 for v in a.values())


def res_from_json(resources: list[dict] | None) -> dict:
    out: dict = {}
    for r in resources or []:
        name = r.get("name")
        if not name:
            continue
        if r.get("type", "SCALAR") == "RANGES" or "ranges" in r:
            rs = [(x.get("begin", 0), x.get("end", 0)) for x in r.get("ranges", {}).get("range", [])]
            out[name] = _merge(list(out.get(name, [])) + rs)
        elif "scalar" in r:
            out[name] = round(out.get(name, 0.0) + float(r["scalar"].get("value", 0.0)), 3)
    return out


def res_to_json(res: dict, role: str) -> list[dict]:
    order = ["ports", "cpus", "mem", "disk"]
    names = [n for n in order if n in res] + sorted(n for n in res if n not in order)
    out = []
    for name in names:
        v = res[name]
        if isinstance(v, list):
            if not v:
                continue
            item = {"name": name, "type": "RANGES", "ranges": {"range": [{"begin": b, "end": e} for b, e in v]}}
        else:
            if v <= 1e-9:
                continue
            item = {"name": name, "type": "SCALAR", "scalar": {"value": float(v)}}
        item["role"] = "*"
        item["allocation_info"] = {"role": role}
        out.append(item)
    return out


def res_str(res: dict, role: str = "*") -> str:
    parts = []
    for k, v in res.items():
        if isinstance(v, list):
            parts.append(f"{k}(allocated: {role}):[" + ", ".join(f"{b}-{e}" for b, e in v) + "]")
        else:
            parts.append(f"{k}(allocated: {role}):{v:g}")
    return "; ".join(parts)


# -- model ---------------------------------------------------------------------------------------

@dataclass
class AgentSpec:
    """An agent as given at start: `attributes` like {"arch": "x86_64", "os": "el9"}."""
    agent_id: str
    hostname: str = "localhost"
    cpus: float = 2.0
    mem: float = 4096.0
    disk: float = 10000.0
    attributes: dict[str, str] = field(default_factory=dict)
    ports: tuple[int, int] | None = (31000, 32000)

    @classmethod
    def from_json(cls, d: dict | str) -> AgentSpec:
        """{"id" or "agent_id", "hostname", "cpus", "mem", "disk", "ports": [b, e] or "b-e" or null,
        "attributes": {"k": "v"} or ["k:v"] or "k:v;k2:v2"}."""
        if isinstance(d, str):
            d = json.loads(d)
        attrs = d.get("attributes") or {}
        if isinstance(attrs, str):
            attrs = [a for a in attrs.split(";") if a]
        if isinstance(attrs, list):
            attrs = dict(a.split(":", 1) for a in attrs)
        ports = d.get("ports", (31000, 32000))
        if isinstance(ports, str):
            b, e = ports.strip("[]").split("-")
            ports = (int(b), int(e))
        aid = d.get("agent_id") or d.get("id")
        if not aid:
            raise ValueError(f"an agent needs an id: {d}")
        return cls(aid, d.get("hostname", "localhost"), float(d.get("cpus", 2.0)), float(d.get("mem", 4096.0)),
                   float(d.get("disk", 10000.0)), {str(k): str(v) for k, v in attrs.items()},
                   tuple(ports) if ports else None)

    def resources(self) -> dict:
        r: dict = {"cpus": float(self.cpus), "mem": float(self.mem), "disk": float(self.disk)}
        if self.ports:
            r["ports"] = [tuple(self.ports)]
        return r

    def attributes_json(self) -> list[dict]:
        out = []
        for k, v in self.attributes.items():
            try:
                out.append({"name": k, "type": "SCALAR", "scalar": {"value": float(v)}})
            except ValueError:
                out.append({"name": k, "type": "TEXT", "text": {"value": v}})
        return out


class Agent:
    def __init__(self, spec: AgentSpec):
        self.spec = spec
        self.id = spec.agent_id
        self.state = "active"  # active | unreachable | gone
        self.since = time.time()
        self.total = spec.resources()
        self.used: dict = {}


class Offer:
    def __init__(self, oid: str, fw: Framework, agent: Agent, resources: dict, role: str):
        self.id = oid
        self.role = role
        self.framework_id = fw.id
        self.agent_id = agent.id
        self.resources = resources
        self.created = time.monotonic()
        self.json = {
            "id": {"value": oid}, "framework_id": {"value": fw.id}, "agent_id": {"value": agent.id},
            "hostname": agent.spec.hostname,
            "url": {"scheme": "http", "address": {"hostname": agent.spec.hostname, "ip": "127.0.0.1", "port": 5051},
                    "path": "/slave(1)"},
            "resources": res_to_json(resources, role), "allocation_info": {"role": role}}
        attrs = agent.spec.attributes_json()
        if attrs:
            self.json["attributes"] = attrs


class Stream:
    """One subscription connection: the events to write, in order."""

    def __init__(self, framework_id: str):
        self.id = str(uuid.uuid4())
        self.framework_id = framework_id
        self.events: queue.Queue = queue.Queue()
        self.closing = False
        self.abort = False
        self.stalled = False  # the connection stays open but carries nothing more (see stall_streams)
        self.ended = threading.Event()

    def send(self, event: dict) -> None:
        if not self.closing and not self.stalled:
            self.events.put(event)

    def close(self, abort: bool = False) -> None:
        """End the stream: after what is queued (EOF), or at once without the chunked terminator."""
        if not self.closing:
            self.closing = True
            self.abort = abort
            self.events.put(None)


class Task:
    def __init__(self, fw: Framework, info: dict, agent_id: str):
        self.info = info
        self.task_id = info.get("task_id", {}).get("value", "")
        self.framework_id = fw.id
        self.agent_id = agent_id
        self.resources = res_from_json(info.get("resources"))
        # A MULTI_ROLE framework names the role in each resource; the master fills in the
        # framework's only role for the others.
        self.roles = {(r.get("allocation_info") or {}).get("role", fw.role) for r in info.get("resources") or []
                      if isinstance(r, dict)} if "MULTI_ROLE" in fw.capabilities else {fw.role}
        self.role = next(iter(self.roles), fw.role)
        self.state = "TASK_STAGING"
        self.container_id = str(uuid.uuid4())
        self.container_name = f"mesos-{self.container_id}"
        self.container = None
        self.network_ip = "127.0.0.1"
        self.killed = False
        self.kill_grace: float | None = None
        self.timed_out = False
        self.orphaned = False  # its agent or framework is gone: it reports nothing more
        self.holds_resources = False
        self.sandbox = ""
        self.exit_code: int | None = None
        self.pending: list[dict] = []  # the agent's unacknowledged updates, oldest first
        self.last_sent = 0.0
        self.history: list[dict] = []  # every status sent or queued for it, in order
        self.started_at: float | None = None
        self.thread: threading.Thread | None = None

    def summary(self) -> dict:
        return {"task_id": self.task_id, "framework_id": self.framework_id, "agent_id": self.agent_id,
                "state": self.state, "container_id": self.container_id, "container_name": self.container_name,
                "docker_id": getattr(self.container, "id", None), "exit_code": self.exit_code,
                "sandbox": self.sandbox, "unacknowledged": [p["state"] for p in self.pending],
                "states": [h["state"] for h in self.history],
                "resources": {k: v for k, v in self.resources.items()}}


class Framework:
    def __init__(self, fid: str, info: dict):
        self.id = fid
        self.info: dict = {}
        self.update_info(info)
        self.stream: Stream | None = None
        self.suppressed = False
        # (agent id, refused resources, until monotonic, role): Mesos keeps filters per role
        self.filters: list[tuple[str, dict, float, str]] = []
        self.tasks: dict[str, Task] = {}  # known to the master: live, or terminal and not yet acknowledged
        self.unreachable: dict[str, Task] = {}
        self.completed: dict[str, Task] = {}
        self.disconnected_at: float | None = None
        self.master_restarted = False  # re-send pending updates at once on the next SUBSCRIBE
        self.last_heartbeat = 0.0
        self.subscribed_at = 0.0

    def update_info(self, info: dict) -> None:
        self.info = copy.deepcopy(info)
        self.capabilities = {c.get("type") for c in info.get("capabilities", []) if isinstance(c, dict)}
        multi = "MULTI_ROLE" in self.capabilities
        self.roles: list[str] = list(info.get("roles") or []) if multi else [info.get("role") or "*"]
        self.role = self.roles[0] if self.roles else "*"
        self.next_role = 0  # the roles take turns on each agent
        self.failover_timeout = float(info.get("failover_timeout", 0.0) or 0.0)

    @property
    def connected(self) -> bool:
        return self.stream is not None

    @property
    def partition_aware(self) -> bool:
        return "PARTITION_AWARE" in self.capabilities

    def send(self, event: dict) -> None:
        if self.stream is not None:
            self.stream.send(event)


class _Reply:
    def __init__(self, status: int, body: str | bytes = "", ctype: str | None = None, headers: dict | None = None):
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.ctype = ctype if ctype is not None else ("text/plain; charset=utf-8" if body else None)
        self.headers = headers or {}


def _roles_problem(info: dict) -> str | None:
    """What the master's FrameworkInfo validation says of its role fields, or None."""
    multi = any(isinstance(c, dict) and c.get("type") == "MULTI_ROLE" for c in info.get("capabilities", []))
    if multi and "role" in info:
        return "'FrameworkInfo.role' must not be set when the framework is MULTI_ROLE capable"
    if not multi and info.get("roles"):
        return "'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE capable"
    roles = info.get("roles") or []
    if len(set(roles)) != len(roles):
        return f"'FrameworkInfo.roles' contains duplicate items: {roles}"
    for role in roles if multi else [info.get("role", "*")]:
        if not role or role in (".", "..") or role.startswith("-") or any(c.isspace() for c in role) \
                or "//" in role or role.endswith("/") or (role != "*" and "*" in role):
            return f"Role '{role}' is invalid"
    return None


def _basic(principal: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{principal}:{secret}".encode()).decode()


def _bad(text: str) -> _Reply:
    return _Reply(400, text)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _uuid_b64() -> str:
    return base64.b64encode(uuid.uuid4().bytes).decode()


# -- the master ----------------------------------------------------------------------------------

class MesosMasterDouble:
    """A Mesos 1.12 master with simulated agents whose Docker tasks really run.

    kill_grace: docker stop's grace period for KILL when neither the call nor the task has a
      kill_policy (the recorded master took 5 s; tests want 1).
    update_retry_seconds: how long an unacknowledged status update waits before it is sent again
      (Mesos' agents start at 10 s and back off).
    heartbeat_seconds: HEARTBEAT interval (15 in Mesos).
    one_offer_per_agent: a framework holding an offer for an agent gets no other offer for that
      agent until it answers (real Mesos may send a second offer with newly freed resources).
    offer_timeout: rescind offers held longer than this (Mesos' --offer_timeout; off by default).
    redirect_to: act as a non-leading master: answer the scheduler API with 307 to this host:port.
    """

    def __init__(self, agents=(), *, port: int = 0, heartbeat_seconds: float = 15.0, kill_grace: float = 5.0,
                 update_retry_seconds: float = 10.0, default_refuse_seconds: float = 5.0,
                 offer_timeout: float | None = None, one_offer_per_agent: bool = True, cpu_quota: bool = True,
                 redirect_to: str | None = None, keep_sandboxes: bool = False, tick_seconds: float = 0.1,
                 docker_client=None, log=None):
        self.master_id = str(uuid.uuid4())
        self.heartbeat_seconds = float(heartbeat_seconds)
        self.kill_grace = float(kill_grace)
        self.update_retry_seconds = float(update_retry_seconds)
        self.default_refuse_seconds = float(default_refuse_seconds)
        self.offer_timeout = offer_timeout
        self.one_offer_per_agent = one_offer_per_agent
        self.cpu_quota = cpu_quota
        self.redirect_to = redirect_to
        self.keep_sandboxes = keep_sandboxes
        self.tick_seconds = tick_seconds
        self._log = log
        self.lock = threading.RLock()
        self.agents: dict[str, Agent] = {}
        self.frameworks: dict[str, Framework] = {}
        self.removed_frameworks: dict[str, Framework] = {}
        self.credentials: tuple[str, str] | None = None  # (principal, secret) the scheduler API demands
        self.offers: dict[str, Offer] = {}
        self.all_tasks: list[Task] = []
        self.calls: list[dict] = []  # every scheduler call the master took (2xx), in order
        self.rejected: list[dict] = []  # {"call", "status", "message"} for the ones it refused
        self._offer_seq = 0
        self._fw_seq = 0
        self._rr = 0
        self._docker = docker_client
        self._docker_error: str | None = None
        self._stopping = threading.Event()
        self._down_until = 0.0
        self.unavailable_replies = 0  # 503s answered while recovering (see unavailable)
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._started = False
        self.sandbox_root = tempfile.mkdtemp(prefix="mesos-double-")
        os.chmod(self.sandbox_root, 0o755)
        for a in agents:
            spec = a if isinstance(a, AgentSpec) else AgentSpec.from_json(a)
            self.agents[spec.agent_id] = Agent(spec)
        self.server = self._bind(port)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"

    # -- life --------------------------------------------------------------------------------------
    def _bind(self, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        server.daemon_threads = True
        server.master = self  # type: ignore[attr-defined]
        return server

    def start(self) -> MesosMasterDouble:
        self._started = True
        threading.Thread(target=self.server.serve_forever, args=(0.2,), daemon=True, name="mesos-http").start()
        threading.Thread(target=self._ticker, daemon=True, name="mesos-ticker").start()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Close every connection and remove every container and sandbox this double made."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self.lock:
            for fw in list(self.frameworks.values()):
                if fw.stream:
                    fw.stream.close(abort=True)
                    fw.stream = None
            for t in self.all_tasks:
                t.orphaned = True
        try:
            if self._started:
                self.server.shutdown()
        finally:
            self.server.server_close()
        self._close_connections()
        self.remove_containers()
        for th in list(self._threads):
            th.join(timeout=5)
        if not self.keep_sandboxes:
            shutil.rmtree(self.sandbox_root, ignore_errors=True)

    def remove_containers(self) -> list[str]:
        """Remove (force) every container labelled with this master's id; their ids."""
        client = self._client(quiet=True)
        if client is None:
            return []
        gone = []
        try:  # the low-level list: the high-level one inspects each, racing with removals
            ids = [c["Id"] for c in client.api.containers(all=True, filters={"label": f"{LABEL}.master={self.master_id}"})]
        except Exception as e:  # noqa: BLE001 - the engine went away: nothing to do
            self.log(f"could not list containers: {e}")
            return gone
        for cid in ids:
            try:
                client.api.remove_container(cid, force=True)
                gone.append(cid)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                self.log(f"could not remove container {cid}: {e}")
        return gone

    def log(self, msg: str) -> None:
        if self._log:
            self._log(msg)

    def _ticker(self) -> None:
        while not self._stopping.wait(self.tick_seconds):
            try:
                self._tick()
            except Exception as e:  # noqa: BLE001 - keep the master alive; say why
                self.log(f"tick failed: {e!r}")

    def _tick(self) -> None:
        now = time.monotonic()
        doomed: list[Task] = []
        with self.lock:
            for fw in list(self.frameworks.values()):
                if fw.connected:
                    if now - fw.last_heartbeat >= self.heartbeat_seconds:
                        fw.last_heartbeat = now
                        fw.send({"type": "HEARTBEAT"})
                    for t in fw.tasks.values():
                        if t.pending and now - t.last_sent >= self.update_retry_seconds:
                            self._forward(fw, t)
                elif (fw.disconnected_at is not None and not fw.master_restarted
                      and now - fw.disconnected_at >= fw.failover_timeout):
                    self.log(f"framework {fw.id} did not fail over within {fw.failover_timeout} s: removed")
                    self._remove_framework(fw)
                fw.filters = [f for f in fw.filters if f[2] > now]
            if self.offer_timeout is not None:
                for o in list(self.offers.values()):
                    if now - o.created >= self.offer_timeout:
                        self._rescind(o)
            for t in self.all_tasks:
                limit = t.info.get("max_completion_time", {}).get("nanoseconds")
                if (limit is not None and t.started_at is not None and not t.killed and t.state not in TERMINAL
                        and now - t.started_at >= int(limit) / 1e9):
                    t.timed_out = True
                    doomed.append(t)
            for t in doomed:
                self._kill(t, grace=0.0)
            self._allocate()

    # -- test controls -----------------------------------------------------------------------------
    def add_agent(self, spec: AgentSpec | dict) -> str:
        """A new agent registers (or a lost one comes back, empty)."""
        spec = spec if isinstance(spec, AgentSpec) else AgentSpec.from_json(spec)
        with self.lock:
            self.agents[spec.agent_id] = Agent(spec)
            self._allocate()
        return spec.agent_id

    def lose_agent(self, agent_id: str, mode: str = "unreachable") -> None:
        """The agent dies with its containers. "unreachable": as when it fails the master's health
        checks (TASK_UNREACHABLE, or TASK_LOST for frameworks that are not PARTITION_AWARE,
        REASON_AGENT_REMOVED, "health check timed out"); "gone": an operator marked it gone
        (TASK_GONE_BY_OPERATOR / TASK_LOST, REASON_AGENT_REMOVED_BY_OPERATOR). Offers on it are
        rescinded and every subscribed framework gets a FAILURE event for the agent."""
        if mode not in ("unreachable", "gone"):
            raise ValueError("mode is 'unreachable' or 'gone'")
        containers = []
        with self.lock:
            agent = self.agents[agent_id]
            if agent.state != "active":
                return
            agent.state = mode
            agent.since = time.time()
            for o in [o for o in self.offers.values() if o.agent_id == agent_id]:
                self._rescind(o)
            for fw in list(self.frameworks.values()):
                for t in [t for t in fw.tasks.values() if t.agent_id == agent_id]:
                    t.orphaned = True
                    t.pending.clear()
                    if t.container is not None:
                        containers.append(t.container)
                    del fw.tasks[t.task_id]
                    if t.state in TERMINAL:  # already reported; its acknowledgement no longer matters
                        fw.completed[t.task_id] = t
                        continue
                    fw.unreachable[t.task_id] = t
                    if mode == "unreachable":
                        state = "TASK_UNREACHABLE" if fw.partition_aware else "TASK_LOST"
                        self._master_update(fw, t, state, "REASON_AGENT_REMOVED", "health check timed out",
                                            unreachable_time={"nanoseconds": int(agent.since * 1e9)})
                    else:
                        state = "TASK_GONE_BY_OPERATOR" if fw.partition_aware else "TASK_LOST"
                        self._master_update(fw, t, state, "REASON_AGENT_REMOVED_BY_OPERATOR",
                                            "Agent has been marked gone")
                fw.send({"type": "FAILURE", "failure": {"agent_id": {"value": agent_id}}})
            agent.used = {}
        for c in containers:
            self._spawn(self._remove_container, c, name=f"lose-{agent_id}")

    def drop_streams(self) -> None:
        """Every subscription stream ends at once (a broken connection or a master failover). The
        master keeps its frameworks and tasks; frameworks must SUBSCRIBE again with their id, and
        their unacknowledged updates are sent again as soon as they do."""
        with self.lock:
            for fw in self.frameworks.values():
                if fw.stream is not None:
                    fw.stream.close(abort=True)
                    self._disconnected(fw, master_restart=True)

    def unavailable(self, seconds: float) -> None:
        """A leader election: the streams end and, for `seconds`, the master answers every scheduler
        call 503 "Master has not finished recovery" (its port open), as a master does until it has
        recovered its state. Frameworks keep their tasks and must SUBSCRIBE again."""
        with self.lock:
            self._down_until = time.monotonic() + seconds
            self.drop_streams()

    def stall_streams(self) -> None:
        """Every subscription stream goes silent, its connection left open: what a scheduler sees
        of a half-open TCP connection (a master host gone without a FIN, a NAT entry dropped). Only
        the scheduler can notice, by the HEARTBEATs that stop; the master keeps the framework as
        connected until it subscribes again."""
        with self.lock:
            for fw in self.frameworks.values():
                if fw.stream is not None:
                    fw.stream.stalled = True

    def restart(self, down_seconds: float = 1.0) -> None:
        """The master process restarts: every connection is closed, the port refuses connections for
        `down_seconds`, then the master is back with its frameworks, agents and tasks (the agents
        re-register at once). Returns at once; the port comes back in a background thread."""
        with self.lock:
            self._down_until = time.monotonic() + down_seconds
            self.drop_streams()
        old = self.server
        old.shutdown()
        old.server_close()
        self._close_connections()

        def back():
            if self._stopping.wait(down_seconds):
                return
            for _ in range(50):
                try:
                    self.server = self._bind(self.port)
                    break
                except OSError:
                    time.sleep(0.1)
            else:  # pragma: no cover
                self.log(f"could not bind 127.0.0.1:{self.port} again")
                return
            threading.Thread(target=self.server.serve_forever, args=(0.2,), daemon=True, name="mesos-http").start()

        self._spawn(back, name="mesos-restart")

    def rescind_offers(self) -> int:
        """Rescind every outstanding offer (as --offer_timeout would); how many."""
        with self.lock:
            offers = list(self.offers.values())
            for o in offers:
                self._rescind(o)
            return len(offers)

    def teardown_framework(self, framework_id: str) -> bool:
        """What an operator's `POST /master/teardown frameworkId=ID` does: the framework is removed,
        its tasks are killed, and a scheduler that subscribes with its id again gets ERROR."""
        with self.lock:
            fw = self.frameworks.get(framework_id)
            if fw is None:
                return False
            self.log(f"framework {framework_id} torn down by the operator")
            self._remove_framework(fw)
            return True

    def calls_of(self, kind: str) -> list[dict]:
        with self.lock:
            return [c for c in self.calls if c.get("type") == kind]

    @property
    def tasks(self) -> dict[str, Task]:
        """Every task launched, by task id (the latest one when frameworks reuse an id)."""
        with self.lock:
            return {t.task_id: t for t in self.all_tasks}

    def task_states(self) -> dict[str, str]:
        with self.lock:
            return {t.task_id: t.state for t in self.all_tasks}

    def task_list(self) -> list[dict]:
        with self.lock:
            return [t.summary() for t in self.all_tasks]

    def state(self) -> dict:
        with self.lock:
            return {
                "master_id": self.master_id, "address": self.address, "version": MESOS_VERSION,
                "agents": [{"id": a.id, "hostname": a.spec.hostname, "state": a.state, "attributes": a.spec.attributes,
                            "resources": a.total, "used": a.used,
                            "offered": [o.id for o in self.offers.values() if o.agent_id == a.id]}
                           for a in self.agents.values()],
                "frameworks": [{"id": fw.id, "name": fw.info.get("name"), "connected": fw.connected,
                                "stream_id": fw.stream.id if fw.stream else None, "suppressed": fw.suppressed,
                                "capabilities": sorted(fw.capabilities), "failover_timeout": fw.failover_timeout,
                                "filters": [{"agent_id": a, "resources": r, "seconds_left": round(u - time.monotonic(), 3)}
                                            for a, r, u, _ in fw.filters],
                                "tasks": sorted(fw.tasks), "unreachable_tasks": sorted(fw.unreachable),
                                "completed_tasks": sorted(fw.completed)}
                               for fw in self.frameworks.values()],
                "removed_frameworks": sorted(self.removed_frameworks),
                "offers": [o.json for o in self.offers.values()],
                "tasks": [t.summary() for t in self.all_tasks]}

    # -- the scheduler API -------------------------------------------------------------------------
    def scheduler_call(self, method: str, headers, body: bytes) -> _Reply | Stream:
        """One request to /api/v1/scheduler: a reply, or the Stream of a SUBSCRIBE."""
        if self.redirect_to:
            return _Reply(307, headers={"Location": f"//{self.redirect_to}/master/api/v1/scheduler"})
        if time.monotonic() < self._down_until:
            self.unavailable_replies += 1
            return _Reply(503, "Master has not finished recovery")
        if self.credentials and headers.get("Authorization") != _basic(*self.credentials):
            # A master run with --authenticate_http_frameworks refuses other credentials.
            return _Reply(401, headers={"WWW-Authenticate": 'Basic realm="mesos-master-scheduler"'})
        if method != "POST":
            return _Reply(405, f"Expecting one of {{ 'POST' }}, but received '{method}'", headers={"Allow": "POST"})
        ctype = headers.get("Content-Type")
        if ctype is None:
            return _bad("Expecting 'Content-Type' to be present")
        if ctype.split(";")[0].strip() != "application/json":
            return _Reply(415, "Expecting 'Content-Type' of application/json or application/x-protobuf"
                          if ctype != "application/x-protobuf" else
                          "This Mesos double speaks JSON only; application/x-protobuf is not supported")
        try:
            call = json.loads(body.decode("utf-8") or "null")
        except (ValueError, UnicodeDecodeError) as e:
            return _bad(f"Failed to parse body into JSON: {e}")
        if not isinstance(call, dict):
            return _bad("Failed to convert JSON into Call protobuf: Expecting a JSON object")
        error = self._validate(call)
        if error:
            return self._refuse(call, 400, f"Failed to validate scheduler::Call: {error}")
        kind = call["type"]
        if kind == "SUBSCRIBE":
            accept = headers.get("Accept", "*/*")
            if not any(a.split(";")[0].strip() in ("application/json", "application/*", "*/*", "")
                       for a in accept.split(",")):
                return self._refuse(call, 406, "Expecting 'Accept' to allow 'application/x-protobuf' or "
                                               "'application/json'")
            if headers.get("Mesos-Stream-Id") is not None:
                return self._refuse(call, 400, "Subscribe calls should not include the 'Mesos-Stream-Id' header")
            return self._subscribe(call)
        with self.lock:
            fw = self.frameworks.get(call["framework_id"]["value"])
            if fw is None:
                return self._refuse(call, 400, "Framework cannot be found")
            if not fw.connected:
                return self._refuse(call, 403, "Framework is not subscribed")
            sid = headers.get("Mesos-Stream-Id")
            if sid is None:
                return self._refuse(call, 400, "All non-subscribe calls should include the 'Mesos-Stream-Id' header")
            if sid != fw.stream.id:
                return self._refuse(call, 400, f"The stream ID '{sid}' included in this request didn't match the "
                                               f"stream ID currently associated with framework ID {fw.id}")
            self.calls.append(copy.deepcopy(call))
            handler = getattr(self, f"_call_{kind.lower()}", None)
            reply = handler(fw, call) if handler else None
            return reply or _Reply(202)

    def _refuse(self, call: dict, status: int, message: str) -> _Reply:
        with self.lock:
            self.rejected.append({"call": copy.deepcopy(call), "status": status, "message": message})
        return _Reply(status, message)

    @staticmethod
    def _validate(call: dict) -> str | None:
        """What scheduler::call::validate (and protobuf's required fields) would say, or None."""
        kind = call.get("type")
        if kind not in CALL_TYPES:  # an unknown enum value parses as an unset field
            return "Expecting 'type' to be present"
        missing = []
        if isinstance(call.get("framework_id"), dict) and "value" not in call["framework_id"]:
            missing.append("framework_id.value")
        if kind == "SUBSCRIBE":
            sub = call.get("subscribe")
            if isinstance(sub, dict):
                info = sub.get("framework_info")
                if not isinstance(info, dict):
                    missing.append("subscribe.framework_info")
                else:
                    missing += [f"subscribe.framework_info.{f}" for f in ("user", "name") if f not in info]
        for k in ("kill", "acknowledge"):
            if kind.lower() == k and isinstance(call.get(k), dict):
                need = ["task_id"] if k == "kill" else ["agent_id", "task_id", "uuid"]
                missing += [f"{k}.{f}" for f in need if f not in call[k]]
        if missing:
            return "Not initialized: " + ", ".join(missing)
        if kind == "SUBSCRIBE":
            if not isinstance(call.get("subscribe"), dict):
                return "Expecting 'subscribe' to be present"
            info_id = call["subscribe"]["framework_info"].get("id")
            if (info_id or {}).get("value") != (call.get("framework_id") or {}).get("value"):
                return "'framework_id' differs from 'subscribe.framework_info.id'"
            return None
        if not isinstance(call.get("framework_id"), dict):
            return "Expecting 'framework_id' to be present"
        fname = CALL_FIELD.get(kind)
        if fname and not isinstance(call.get(fname), dict):
            return f"Expecting '{fname}' to be present"
        if kind == "ACKNOWLEDGE":
            try:
                raw = base64.b64decode(call["acknowledge"]["uuid"], validate=True)
                if len(raw) != 16 or uuid.UUID(bytes=raw).version is None:
                    raise ValueError
            except (ValueError, TypeError):
                return "Not a valid UUID"
        return None

    def _subscribe(self, call: dict) -> Stream:
        info = call["subscribe"]["framework_info"]
        fid = (call.get("framework_id") or {}).get("value")
        with self.lock:
            self.calls.append(copy.deepcopy(call))
            if fid and fid in self.removed_frameworks:
                stream = Stream(fid)
                stream.send({"type": "ERROR", "error": {"message": "Framework has been removed"}})
                stream.close()
                return stream
            problem = _roles_problem(info)
            if problem:  # the master answers an invalid FrameworkInfo with an ERROR event, then closes
                stream = Stream(fid or "")
                stream.send({"type": "ERROR", "error": {"message": problem}})
                stream.close()
                return stream
            fw = self.frameworks.get(fid) if fid else None
            resend = False
            if fw is not None:  # failover, or coming back after a disconnection
                if fw.stream is not None:
                    fw.stream.send({"type": "ERROR", "error": {"message": "Framework failed over"}})
                    fw.stream.close()
                for o in [o for o in self.offers.values() if o.framework_id == fw.id]:
                    self._discard(o)
                fw.update_info(info)
                resend = fw.master_restarted
            else:
                if not fid:  # a new framework; an unknown id is taken as a framework from before a failover
                    self._fw_seq += 1
                    fid = f"{self.master_id}-{self._fw_seq:04d}"
                fw = self.frameworks[fid] = Framework(fid, info)
            stream = Stream(fid)
            fw.stream = stream
            fw.disconnected_at = None
            fw.master_restarted = False
            fw.suppressed = bool(call["subscribe"].get("suppressed_roles"))
            fw.subscribed_at = fw.last_heartbeat = time.monotonic()
            stream.send({"type": "SUBSCRIBED", "subscribed": {
                "framework_id": {"value": fid}, "heartbeat_interval_seconds": self.heartbeat_seconds,
                "master_info": self._master_info()}})
            stream.send({"type": "HEARTBEAT"})
            if resend:  # the agents re-registered with the new master and flush what is pending
                for t in fw.tasks.values():
                    if t.pending:
                        self._forward(fw, t)
            self._allocate()
        return stream

    def _master_info(self) -> dict:
        return {"id": self.master_id, "ip": 16777343, "port": self.port, "pid": f"master@{self.address}",
                "hostname": "localhost", "version": MESOS_VERSION,
                "address": {"hostname": "localhost", "ip": "127.0.0.1", "port": self.port},
                "capabilities": [{"type": "AGENT_UPDATE"}, {"type": "AGENT_DRAINING"}, {"type": "QUOTA_V2"}]}

    def stream_ended(self, stream: Stream) -> None:
        """The subscription connection is gone (whoever closed it)."""
        stream.ended.set()
        with self.lock:
            fw = self.frameworks.get(stream.framework_id)
            if fw is not None and fw.stream is stream:
                self._disconnected(fw, master_restart=False)

    def _disconnected(self, fw: Framework, master_restart: bool) -> None:
        fw.stream = None
        fw.disconnected_at = time.monotonic()
        fw.master_restarted = fw.master_restarted or master_restart
        for o in [o for o in self.offers.values() if o.framework_id == fw.id]:
            self._discard(o)
        self._allocate()

    # calls ------------------------------------------------------------------------------------
    def _call_teardown(self, fw: Framework, call: dict) -> None:
        self._remove_framework(fw)

    def _remove_framework(self, fw: Framework) -> None:
        if fw.stream is not None:
            fw.stream.close()
            fw.stream = None
        for o in [o for o in self.offers.values() if o.framework_id == fw.id]:
            self._discard(o)
        for t in list(fw.tasks.values()):  # Mesos shuts their executors down
            if t.state not in TERMINAL:
                self._kill(t, grace=self.kill_grace, report=False)
            t.orphaned = True
            self._release(t)
        del self.frameworks[fw.id]
        self.removed_frameworks[fw.id] = fw
        self._allocate()

    def _call_suppress(self, fw: Framework, call: dict) -> None:
        fw.suppressed = True

    def _call_revive(self, fw: Framework, call: dict) -> None:
        fw.suppressed = False
        fw.filters.clear()
        self._allocate()

    def _refuse_seconds(self, filters: dict | None) -> float:
        s = (filters or {}).get("refuse_seconds")
        if s is None:
            return self.default_refuse_seconds
        s = float(s)
        return self.default_refuse_seconds if s < 0 else min(s, YEAR)

    def _call_decline(self, fw: Framework, call: dict) -> None:
        decline = call["decline"]
        refuse = self._refuse_seconds(decline.get("filters"))
        for oid in decline.get("offer_ids", []):
            o = self.offers.get(oid.get("value"))
            if o is not None and o.framework_id == fw.id:
                self._decline(fw, o, o.resources, refuse)
        self._allocate()

    def _decline(self, fw: Framework, o: Offer, unused: dict, refuse: float) -> None:
        del self.offers[o.id]
        if refuse > 0 and not res_empty(unused):
            fw.filters.append((o.agent_id, unused, time.monotonic() + refuse, o.role))

    def _call_accept(self, fw: Framework, call: dict) -> None:
        accept = call["accept"]
        refuse = self._refuse_seconds(accept.get("filters"))
        launches = [ti for op in accept.get("operations", []) if op.get("type") == "LAUNCH"
                    for ti in op.get("launch", {}).get("task_infos", [])]
        ids = [o.get("value") for o in accept.get("offer_ids", [])]
        error = None
        if not ids:
            error = "No offers specified"
        for oid in ids:
            o = self.offers.get(oid)
            if o is None or o.framework_id != fw.id:
                error = error or f"Offer {oid} is no longer valid"
        offers = [self.offers[i] for i in ids if i in self.offers and self.offers[i].framework_id == fw.id]
        if not error and len({o.agent_id for o in offers}) > 1:
            error = "Aggregated offers must belong to one single agent"
        if not error and len({o.role for o in offers}) > 1:
            error = "Aggregated offers must be allocated to the same role"
        if error:
            for o in offers:  # what was valid goes back, with no filter
                self._discard(o)
            for ti in launches:
                t = Task(fw, ti, ti.get("agent_id", {}).get("value", ""))
                self.all_tasks.append(t)
                state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
                self._master_update(fw, t, state, "REASON_INVALID_OFFERS", f"Task launched with invalid offers: {error}")
            self._allocate()
            return
        agent = self.agents[offers[0].agent_id]
        role = offers[0].role
        pool: dict = {}
        for o in offers:
            pool = res_add(pool, o.resources)
            del self.offers[o.id]
        for ti in launches:
            t = Task(fw, ti, agent.id)
            self.all_tasks.append(t)
            problem = self._task_problem(fw, t, ti, agent, pool, role)
            if problem:
                self._master_update(fw, t, "TASK_ERROR", "REASON_TASK_INVALID", problem)
                continue
            pool = res_sub(pool, t.resources)
            agent.used = res_add(agent.used, t.resources)
            t.holds_resources = True
            fw.tasks[t.task_id] = t
            t.thread = self._spawn(self._run_task, t, name=f"task-{t.task_id}")
        if refuse > 0 and not res_empty(pool):
            fw.filters.append((agent.id, pool, time.monotonic() + refuse, role))
        self._allocate()

    def _task_problem(self, fw: Framework, t: Task, ti: dict, agent: Agent, pool: dict, role: str) -> str | None:
        if not t.task_id:
            return "Task ID must not be empty"
        if t.task_id in fw.tasks:
            return f"Task has duplicate ID: {t.task_id}"
        if t.task_id in fw.unreachable:
            return f"Task reuses the ID of an unreachable task: {t.task_id}"
        given = ti.get("agent_id", {}).get("value")
        if given != agent.id:
            return f"Task uses invalid agent {given} while agent {agent.id} is expected"
        if ("command" in ti) == ("executor" in ti):
            return "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present"
        if res_empty(t.resources):
            return "Task uses no resources"
        if not res_contains(pool, t.resources) or t.roles != {role}:
            # Resources allocated to another role are not contained in the offer's.
            return (f"Total resources {res_str(t.resources, t.role)} required by task and its executor is more "
                    f"than available {res_str(pool, role)}")
        return None

    def _call_kill(self, fw: Framework, call: dict) -> None:
        kill = call["kill"]
        tid = kill["task_id"].get("value")
        t = fw.tasks.get(tid)
        if t is None:  # unknown: the master answers with reconciliation
            self._reconcile_one(fw, tid, kill.get("agent_id", {}).get("value"))
            return
        grace = kill.get("kill_policy", {}).get("grace_period", {}).get("nanoseconds")
        self._kill(t, grace=None if grace is None else int(grace) / 1e9)

    def _call_acknowledge(self, fw: Framework, call: dict) -> None:
        ack = call["acknowledge"]
        t = fw.tasks.get(ack["task_id"].get("value"))
        if t is None or not t.pending or t.pending[0]["uuid"] != ack["uuid"]:
            return  # Mesos ignores (and logs) acknowledgements it cannot match
        t.pending.pop(0)
        if t.pending:
            self._forward(fw, t)
        elif t.state in TERMINAL:
            del fw.tasks[t.task_id]
            fw.completed[t.task_id] = t

    def _call_reconcile(self, fw: Framework, call: dict) -> None:
        asked = call["reconcile"].get("tasks", [])
        if not asked:  # implicit: every task the master knows for this framework
            for t in fw.tasks.values():
                self._reconcile_known(fw, t)
            return
        for item in asked:
            self._reconcile_one(fw, item.get("task_id", {}).get("value"), item.get("agent_id", {}).get("value"))

    def _reconcile_known(self, fw: Framework, t: Task) -> None:
        state = t.pending[0]["state"] if t.pending else t.state  # what the framework was last sent
        status = {"task_id": {"value": t.task_id}, "state": state, "message": "Reconciliation: Latest task state",
                  "source": "SOURCE_MASTER", "reason": "REASON_RECONCILIATION", "agent_id": {"value": t.agent_id},
                  "timestamp": time.time()}
        if t.container is not None:
            status["container_status"] = self._container_status(t)
        fw.send({"type": "UPDATE", "update": {"status": status}})

    def _reconcile_one(self, fw: Framework, tid: str, agent_id: str | None) -> None:
        t = fw.tasks.get(tid)
        if t is not None:
            self._reconcile_known(fw, t)
            return
        pa = fw.partition_aware
        agent = self.agents.get(agent_id) if agent_id else None
        extra: dict = {}
        if agent is not None and agent.state == "active":
            state, message = ("TASK_GONE" if pa else "TASK_LOST"), "Reconciliation: Task is unknown to the agent"
        elif agent is not None and agent.state == "unreachable":
            state, message = ("TASK_UNREACHABLE" if pa else "TASK_LOST"), "Reconciliation: Task is unreachable"
            extra["unreachable_time"] = {"nanoseconds": int(agent.since * 1e9)}
        elif agent is not None and agent.state == "gone":
            state, message = ("TASK_GONE_BY_OPERATOR" if pa else "TASK_LOST"), "Reconciliation: Task is gone"
        else:
            state, message = ("TASK_UNKNOWN" if pa else "TASK_LOST"), "Reconciliation: Task is unknown"
        status = {"task_id": {"value": tid}, "state": state, "message": message, "source": "SOURCE_MASTER",
                  "reason": "REASON_RECONCILIATION"}
        if agent_id:
            status["agent_id"] = {"value": agent_id}
        status["timestamp"] = time.time()
        status.update(extra)
        fw.send({"type": "UPDATE", "update": {"status": status}})

    def _call_update_framework(self, fw: Framework, call: dict) -> _Reply:
        uf = call["update_framework"]
        problem = _roles_problem(uf.get("framework_info", fw.info))
        if problem:
            return self._refuse(call, 400, f"Failed to validate scheduler::Call: {problem}")
        fw.update_info(uf.get("framework_info", fw.info))
        fw.suppressed = bool(uf.get("suppressed_roles"))
        self._allocate()
        return _Reply(200)

    def _call_reconcile_operations(self, fw: Framework, call: dict) -> _Reply:
        body = json.dumps({"type": "RECONCILE_OPERATIONS", "reconcile_operations": {"operation_statuses": []}})
        return _Reply(200, body, "application/json")

    # -- offers ------------------------------------------------------------------------------------
    def _free(self, agent: Agent) -> dict:
        free = res_sub(agent.total, agent.used)
        for o in self.offers.values():
            if o.agent_id == agent.id:
                free = res_sub(free, o.resources)
        return free

    def _filtered(self, fw: Framework, agent: Agent, free: dict, role: str) -> bool:
        now = time.monotonic()
        return any(a == agent.id and until > now and r == role and res_contains(refused, free)
                   for a, refused, until, r in fw.filters)

    def _allocate(self) -> None:
        """Offer what each active agent has free to a connected, unsuppressed framework that has not
        filtered it (taking turns among frameworks); one OFFERS event per framework and round."""
        if self._stopping.is_set():
            return
        out: dict[str, list[dict]] = {}
        fws = [fw for fw in self.frameworks.values() if fw.connected and not fw.suppressed]
        if not fws:
            return
        for agent in self.agents.values():
            if agent.state != "active":
                continue
            free = self._free(agent)
            if free.get("cpus", 0.0) < MIN_CPUS or free.get("mem", 0.0) < MIN_MEM:
                continue
            self._rr += 1
            for i in range(len(fws)):
                fw = fws[(self._rr + i) % len(fws)]
                if self.one_offer_per_agent and any(o.agent_id == agent.id and o.framework_id == fw.id
                                                    for o in self.offers.values()):
                    continue
                role = self._role_for(fw, agent, free)
                if role is None:
                    continue
                self._offer_seq += 1
                o = Offer(f"{self.master_id}-O{self._offer_seq}", fw, agent, free, role)
                self.offers[o.id] = o
                out.setdefault(fw.id, []).append(o.json)
                break
        for fid, offers in out.items():
            self.frameworks[fid].send({"type": "OFFERS", "offers": {"offers": offers}})

    def _role_for(self, fw: Framework, agent: Agent, free: dict) -> str | None:
        """The role of the framework's this agent's free resources go to: its roles take turns (the
        real allocator orders them by DRF), skipping those that filtered the agent."""
        n = len(fw.roles)
        for i in range(n):
            role = fw.roles[(fw.next_role + i) % n]
            if not self._filtered(fw, agent, free, role):
                fw.next_role = (fw.next_role + i + 1) % n
                return role
        return None

    def _discard(self, o: Offer) -> None:
        """The offer is void without a word (its framework went away or failed over)."""
        self.offers.pop(o.id, None)

    def _rescind(self, o: Offer) -> None:
        self.offers.pop(o.id, None)
        fw = self.frameworks.get(o.framework_id)
        if fw is not None:
            fw.send({"type": "RESCIND", "rescind": {"offer_id": {"value": o.id}}})

    # -- status updates ----------------------------------------------------------------------------
    def _container_status(self, t: Task) -> dict:
        return {"container_id": {"value": t.container_id},
                "network_infos": [{"ip_addresses": [{"protocol": "IPv4", "ip_address": t.network_ip}]}]}

    def _release(self, t: Task) -> None:
        if t.holds_resources:
            t.holds_resources = False
            agent = self.agents.get(t.agent_id)
            if agent is not None and agent.state == "active":
                agent.used = res_sub(agent.used, t.resources)

    def _agent_update(self, t: Task, state: str, source: str, reason: str | None = None, message: str | None = None,
                      data: str | None = None) -> None:
        """A reliable update from the agent or the executor: queued, sent when it is the oldest
        unacknowledged one of its task, re-sent until acknowledged. Call with the lock held."""
        if t.orphaned or t.state in TERMINAL:
            return
        t.state = state
        status: dict = {"task_id": {"value": t.task_id}, "state": state}
        if message is not None:
            status["message"] = message
        status["source"] = source
        if reason:
            status["reason"] = reason
        if data is not None:
            status["data"] = data
        status["agent_id"] = {"value": t.agent_id}
        status["executor_id"] = {"value": t.task_id}
        status["timestamp"] = time.time()
        status["uuid"] = _uuid_b64()
        if source == "SOURCE_EXECUTOR":
            status["container_status"] = self._container_status(t)
        t.history.append(status)
        t.pending.append(status)
        if state in TERMINAL:
            self._release(t)
        fw = self.frameworks.get(t.framework_id)
        if fw is not None and len(t.pending) == 1:
            self._forward(fw, t)
        if state in TERMINAL:
            self._allocate()

    def _forward(self, fw: Framework, t: Task) -> None:
        t.last_sent = time.monotonic()
        fw.send({"type": "UPDATE", "update": {"status": t.pending[0]}})

    def _master_update(self, fw: Framework, t: Task, state: str, reason: str, message: str, **extra) -> None:
        """An update the master makes itself: no uuid, not retried, dropped if the framework is away."""
        t.state = state
        status: dict = {"task_id": {"value": t.task_id}, "state": state, "message": message,
                        "source": "SOURCE_MASTER", "reason": reason}
        if t.agent_id:
            status["agent_id"] = {"value": t.agent_id}
        status["timestamp"] = time.time()
        status.update(extra)
        t.history.append(status)
        self._release(t)
        fw.send({"type": "UPDATE", "update": {"status": status}})

    # -- the agents' side: running tasks -----------------------------------------------------------
    def _spawn(self, target, *args, name: str) -> threading.Thread:
        th = threading.Thread(target=target, args=args, daemon=True, name=name)
        with self.lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [th]
        th.start()
        return th

    def _client(self, quiet: bool = False):
        if self._docker is not None:
            return self._docker
        if docker is None:
            self._docker_error = "the docker SDK is not installed"
            return None
        try:
            self._docker = docker.from_env(max_pool_size=64)
            self._docker.ping()
        except Exception as e:  # noqa: BLE001 - whatever it is, there is no engine to use
            self._docker = None
            self._docker_error = str(e)
            if not quiet:
                self.log(f"Docker is not available: {e}")
        return self._docker

    def _fail_launch(self, t: Task, message: str) -> None:
        with self.lock:
            self._agent_update(t, "TASK_FAILED", "SOURCE_AGENT", "REASON_CONTAINER_LAUNCH_FAILED",
                               f"Failed to launch container: {message}")

    def _run_task(self, t: Task) -> None:
        try:
            self._run_task_inner(t)
        except Exception as e:  # noqa: BLE001 - never leave a task hanging without a terminal update
            self.log(f"task {t.task_id}: {e!r}")
            with self.lock:
                if t.container is None:
                    self._agent_update(t, "TASK_FAILED", "SOURCE_AGENT", "REASON_CONTAINER_LAUNCH_FAILED",
                                       f"Failed to launch container: {e}")
                else:
                    self._agent_update(t, "TASK_FAILED", "SOURCE_EXECUTOR", None,
                                       f"Failed to run docker container: {e}")

    def _run_task_inner(self, t: Task) -> None:
        info = t.info
        cmd = info.get("command", {})
        cinfo = info.get("container", {})
        parts = [self.sandbox_root, "agents", t.agent_id, "frameworks", t.framework_id, "executors", t.task_id,
                 "runs", t.container_id]
        t.sandbox = os.path.join(*(p.replace("/", "_") if i else p for i, p in enumerate(parts)))
        os.makedirs(t.sandbox, mode=0o755)
        try:
            for uri in cmd.get("uris", []):
                self._fetch(uri, t.sandbox)
        except Exception as e:  # noqa: BLE001 - any fetch failure fails the launch
            with open(os.path.join(t.sandbox, "stderr"), "a") as f:
                f.write(f"Failed to fetch: {e}\n")
            self._fail_launch(t, f"Failed to fetch all URIs for container '{t.container_id}': exited with status 1 "
                                 f"({e})")
            return
        if cinfo.get("type") != "DOCKER":
            self._fail_launch(t, "the Mesos double's agents run only container.type DOCKER tasks")
            return
        client = self._client()
        if client is None:
            self._fail_launch(t, f"Docker is not available: {self._docker_error}")
            return
        dinfo = cinfo.get("docker", {})
        image = dinfo.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
            image += ":latest"
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            self._fail_launch(t, f"Failed to run '/usr/bin/docker -H unix:///var/run/docker.sock pull {image}': "
                                 f"exited with status 1; stderr='Error response from daemon: pull access denied for "
                                 f"{image.rsplit(':', 1)[0]} (the Mesos double never pulls images, and this one is "
                                 f"not on this host)\n'")
            return
        except docker.errors.APIError as e:
            self._fail_launch(t, f"Failed to inspect image '{image}': {e.explanation or e}")
            return
        try:
            kwargs = self._container_args(t, cmd, cinfo, dinfo, image)
        except ValueError as e:
            self._fail_launch(t, str(e))
            return
        with self.lock:
            if t.orphaned or t.state in TERMINAL:
                return
            if t.killed:
                self._agent_update(t, "TASK_KILLED", "SOURCE_AGENT", "REASON_TASK_KILLED_DURING_LAUNCH",
                                   "Killed before delivery to the executor")
                return
            self._agent_update(t, "TASK_STARTING", "SOURCE_EXECUTOR")
        try:
            c = client.containers.create(**kwargs)
        except docker.errors.APIError as e:
            with self.lock:
                self._agent_update(t, "TASK_FAILED", "SOURCE_EXECUTOR", None,
                                   f"Failed to run docker container: {e.explanation or e}")
            return
        with self.lock:
            t.container = c
            go = not t.orphaned
        if not go:
            self._remove_container(c)
            return
        try:
            c.start()
            inspect = client.api.inspect_container(c.id)
        except docker.errors.APIError as e:
            with self.lock:
                self._agent_update(t, "TASK_FAILED", "SOURCE_EXECUTOR", None,
                                   f"Failed to run docker container: {e.explanation or e}")
            self._remove_container(c)
            return
        ip = (inspect.get("NetworkSettings") or {}).get("IPAddress")
        with self.lock:
            t.started_at = time.monotonic()
            if ip:
                t.network_ip = ip
            if t.killed:  # killed while it was starting: stop it now
                self._spawn(self._stop_container, t, t.kill_grace or 0.0, name=f"stop-{t.task_id}")
            elif not t.orphaned:
                data = base64.b64encode(json.dumps([inspect], indent=4).encode()).decode()
                self._agent_update(t, "TASK_RUNNING", "SOURCE_EXECUTOR", data=data)
        code = self._wait(c)
        self._save_logs(c, t.sandbox)
        with self.lock:
            t.exit_code = code
            if not t.orphaned:
                msg = "Container exited with status 1" if code is None else f"Container exited with status {code}"
                if code is None:
                    self._agent_update(t, "TASK_FAILED", "SOURCE_EXECUTOR", None, "Failed to get exit status of container")
                elif t.timed_out:
                    self._agent_update(t, "TASK_FAILED", "SOURCE_EXECUTOR", "REASON_MAX_COMPLETION_TIME_REACHED", msg)
                elif t.killed:
                    self._agent_update(t, "TASK_KILLED", "SOURCE_EXECUTOR", None, msg)
                elif code == 0:
                    self._agent_update(t, "TASK_FINISHED", "SOURCE_EXECUTOR", None, msg)
                else:
                    self._agent_update(t, "TASK_FAILED", "SOURCE_EXECUTOR", None, msg)
        self._remove_container(c)

    def _container_args(self, t: Task, cmd: dict, cinfo: dict, dinfo: dict, image: str) -> dict:
        """docker run's options as Mesos' docker containerizer would give them."""
        env = {}
        for v in cmd.get("environment", {}).get("variables", []):
            if v.get("type", "VALUE") == "VALUE":
                env[v["name"]] = v.get("value", "")
        env.update({"MESOS_SANDBOX": SANDBOX, "MESOS_CONTAINER_NAME": t.container_name,
                    "MESOS_TASK_ID": t.task_id, "MESOS_ALLOCATION_ROLE": t.role
                    if t.framework_id in self.frameworks else "*"})
        labels = {LABEL: "1", f"{LABEL}.master": self.master_id, "mesos.task-id": t.task_id,
                  "mesos.framework-id": t.framework_id, "mesos.agent-id": t.agent_id,
                  "mesos.container-id": t.container_id}
        for p in dinfo.get("parameters", []):
            if p.get("key") == "label" and "=" in p.get("value", ""):
                k, v = p["value"].split("=", 1)
                labels.setdefault(k, v)
            elif p.get("key") == "env" and "=" in p.get("value", ""):
                k, v = p["value"].split("=", 1)
                env[k] = v
        volumes = {}
        for v in cinfo.get("volumes", []):
            cpath = v.get("container_path", "")
            if not cpath.startswith("/"):
                cpath = os.path.join(SANDBOX, cpath)
            mode = "ro" if v.get("mode") == "RO" else "rw"
            hpath = v.get("host_path")
            if hpath is None:
                src = v.get("source", {})
                if src.get("type") == "DOCKER_VOLUME":
                    volumes[src["docker_volume"]["name"]] = {"bind": cpath, "mode": mode}
                    continue
                raise ValueError("Host path or volume source is required")
            if not hpath.startswith("/"):
                if not v.get("container_path", "").startswith("/"):
                    raise ValueError(f"Both host_path '{hpath}' and container_path '{v.get('container_path')}' "
                                     f"of a volume are relative")
                hpath = os.path.join(t.sandbox, hpath)
            os.makedirs(hpath, exist_ok=True)
            volumes[hpath] = {"bind": cpath, "mode": mode}
        volumes[t.sandbox] = {"bind": SANDBOX, "mode": "rw"}
        network = dinfo.get("network", "HOST")
        kwargs: dict[str, Any] = {}
        if network == "HOST":
            kwargs["network_mode"] = "host"
        elif network == "NONE":
            kwargs["network_mode"] = "none"
        elif network == "USER":
            names = [n.get("name") for n in cinfo.get("network_infos", []) if n.get("name")]
            kwargs["network"] = names[0] if names else "bridge"
        else:  # BRIDGE
            ports = {}
            for pm in dinfo.get("port_mappings", []):
                proto = pm.get("protocol", "tcp")
                ports[f"{pm['container_port']}/{proto}"] = ("127.0.0.1", pm["host_port"])
            if ports:
                kwargs["ports"] = ports
        cpus = float(t.resources.get("cpus", 0.0))
        mem = float(t.resources.get("mem", 0.0))
        limits = t.info.get("limits", {})

        def limit(name, default):
            v = limits.get(name)
            if isinstance(v, dict):
                v = v.get("value")
            if v is None:
                return default
            v = float(v)
            return None if v == float("inf") else v

        cpu_limit = limit("cpus", cpus if self.cpu_quota else None)
        mem_limit = limit("mem", mem)
        if cpus > 0:
            kwargs["cpu_shares"] = max(int(1024 * cpus), 2)
        if cpu_limit:
            kwargs["cpu_period"] = 100000
            kwargs["cpu_quota"] = max(int(100000 * min(cpu_limit, os.cpu_count() or 1)), 1000)
        if mem_limit:
            kwargs["mem_limit"] = f"{max(int(mem_limit), int(MIN_MEM))}m"
            kwargs["memswap_limit"] = kwargs["mem_limit"]
        if cmd.get("shell", True):
            if "value" not in cmd:
                raise ValueError("Shell specified but no command value provided")
            kwargs["entrypoint"] = ["/bin/sh"]
            kwargs["command"] = ["-c", cmd["value"]]
        else:
            argv = ([cmd["value"]] if cmd.get("value") else []) + list(cmd.get("arguments", []))
            if argv:
                kwargs["command"] = argv
        kwargs.update(image=image, name=t.container_name, environment=env, volumes=volumes, labels=labels,
                      working_dir=SANDBOX)
        if dinfo.get("privileged"):
            kwargs["privileged"] = True
        return kwargs

    def _wait(self, c) -> int | None:
        while True:
            try:
                return int(c.wait(timeout=3600).get("StatusCode", -1))
            except docker.errors.NotFound:  # removed under us (stop(), a lost agent)
                return None
            except Exception as e:  # noqa: BLE001 - a read timeout: still running
                if self._stopping.is_set():
                    return None
                if "timed out" not in str(e).lower():
                    self.log(f"waiting for {c.id}: {e!r}")
                    return None

    def _save_logs(self, c, sandbox: str) -> None:
        for name, out, err in (("stdout", True, False), ("stderr", False, True)):
            try:
                data = c.logs(stdout=out, stderr=err)
            except (docker.errors.DockerException, OSError):  # gone already: nothing to save
                continue
            with open(os.path.join(sandbox, name), "ab") as f:
                f.write(data)

    def _remove_container(self, c) -> None:
        try:
            c.remove(force=True)
        except (docker.errors.DockerException, OSError):  # gone already
            pass

    def _kill(self, t: Task, grace: float | None = None, report: bool = True) -> None:
        """KILL at the agent/executor. Call with the lock held."""
        if t.state in TERMINAL or t.killed:
            return
        t.killed = True
        if grace is None:
            policy = t.info.get("kill_policy", {}).get("grace_period", {}).get("nanoseconds")
            grace = self.kill_grace if policy is None else int(policy) / 1e9
        t.kill_grace = grace
        fw = self.frameworks.get(t.framework_id)
        if t.state == "TASK_STAGING":  # not yet delivered to an executor
            if report:
                self._agent_update(t, "TASK_KILLED", "SOURCE_AGENT", "REASON_TASK_KILLED_DURING_LAUNCH",
                                   "Killed before delivery to the executor")
            return
        if report and fw is not None and "TASK_KILLING_STATE" in fw.capabilities and not t.timed_out:
            self._agent_update(t, "TASK_KILLING", "SOURCE_EXECUTOR")
        if t.container is not None and t.started_at is not None:
            self._spawn(self._stop_container, t, grace, name=f"stop-{t.task_id}")

    def _stop_container(self, t: Task, grace: float) -> None:
        try:
            t.container.stop(timeout=max(0, round(grace)) if grace >= 1 or grace == 0 else 1)
        except (docker.errors.DockerException, OSError):  # gone already
            pass

    def _fetch(self, uri: dict, sandbox: str) -> None:
        """The Mesos fetcher, for loopback HTTP and local files only."""
        value = uri["value"]
        parsed = urllib.parse.urlparse(value)
        name = uri.get("output_file") or os.path.basename(parsed.path.rstrip("/")) or "download"
        dest = os.path.join(sandbox, name)
        if parsed.scheme in ("http", "https"):
            if not _is_loopback(parsed.hostname or ""):
                raise ValueError(f"the double fetches only from loopback addresses, not {parsed.hostname}")
            with urllib.request.urlopen(value, timeout=30) as resp, open(dest, "wb") as f:
                shutil.copyfileobj(resp, f)
        elif parsed.scheme in ("", "file"):
            shutil.copyfile(parsed.path if parsed.scheme else value, dest)
        else:
            raise ValueError(f"unsupported URI scheme '{parsed.scheme}'")
        if uri.get("executable"):
            os.chmod(dest, 0o755)
        elif uri.get("extract", True):
            lower = name.lower()
            if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
                with tarfile.open(dest) as tar:
                    tar.extractall(sandbox, filter="data")
            elif lower.endswith(".zip"):
                with zipfile.ZipFile(dest) as z:
                    z.extractall(sandbox)
            elif lower.endswith(".gz"):
                with gzip.open(dest) as src, open(dest[:-3], "wb") as out:
                    shutil.copyfileobj(src, out)
        for root, dirs, files in os.walk(sandbox):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                p = os.path.join(root, f)
                os.chmod(p, os.stat(p).st_mode | 0o644)

    # -- connections -------------------------------------------------------------------------------
    def _track(self, sock: socket.socket, add: bool) -> None:
        with self.lock:
            (self._conns.add if add else self._conns.discard)(sock)

    def _close_connections(self) -> None:
        with self.lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# -- HTTP ------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return f"Mesos/{MESOS_VERSION} (buildfarm double)"

    @property
    def master(self) -> MesosMasterDouble:
        return self.server.master  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        self.master._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.master._track(self.connection, False)

    def log_message(self, fmt, *args) -> None:
        self.master.log("http: " + fmt % args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        if reply.ctype:
            self.send_header("Content-Type", reply.ctype)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(_Reply(status, json.dumps(obj, default=str), "application/json"))

    def _route(self, method: str) -> None:
        body = self._read_body()
        path = urllib.parse.urlparse(self.path)
        if path.path in ("/api/v1/scheduler", "/master/api/v1/scheduler"):
            result = self.master.scheduler_call(method, self.headers, body)
            if isinstance(result, Stream):
                self._stream(result)
            else:
                self._send(result)
            return
        if path.path.startswith("/double/"):
            return self._control(method, path.path, urllib.parse.parse_qs(path.query), body)
        if path.path in ("/teardown", "/master/teardown") and method == "POST":
            fid = urllib.parse.parse_qs(body.decode(errors="replace")).get("frameworkId", [""])[0]
            return self._send(_Reply(200) if self.master.teardown_framework(fid) else
                              _Reply(400, f"No framework found with specified ID: {fid}"))
        if method != "GET":
            return self._send(_Reply(404))
        m = self.master
        if path.path in ("/version", "/master/version"):
            return self._json({"version": MESOS_VERSION, "build_user": "buildfarm", "git_sha": "mesos-double",
                               "build_date": "2020-01-01 00:00:00", "build_time": 1577836800.0})
        if path.path in ("/redirect", "/master/redirect"):
            leader = m.redirect_to or m.address
            return self._send(_Reply(307, headers={"Location": f"//{leader}"}))
        if path.path in ("/health", "/master/health"):
            return self._send(_Reply(200))
        if path.path in ("/state", "/master/state", "/state.json", "/master/state.json"):
            s = m.state()
            return self._json({"version": MESOS_VERSION, "id": s["master_id"], "leader": f"master@{m.address}",
                               "pid": f"master@{m.address}", "hostname": "localhost",
                               "frameworks": s["frameworks"], "slaves": s["agents"]})
        if path.path in ("/slaves", "/master/slaves"):
            with m.lock:
                return self._json({"slaves": [
                    {"id": a.id, "hostname": a.spec.hostname, "active": a.state == "active",
                     "attributes": dict(a.spec.attributes), "resources": _state_resources(a.total),
                     "used_resources": _state_resources(a.used)}
                    for a in m.agents.values() if a.state == "active"]})
        return self._send(_Reply(404))

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _stream(self, stream: Stream) -> None:
        """Write the stream's events as RecordIO records, one per chunk, until it ends or the
        client goes away."""
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Mesos-Stream-Id", stream.id)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.close_connection = True
        sock = self.connection
        try:
            while True:
                try:
                    event = stream.events.get(timeout=0.2)
                except queue.Empty:
                    if self.master._stopping.is_set() or stream.closing and stream.abort or _peer_closed(sock):
                        break
                    continue
                if event is None or (stream.closing and stream.abort):
                    break
                data = json.dumps(event, separators=(",", ":")).encode()
                record = str(len(data)).encode() + b"\n" + data
                self.wfile.write(f"{len(record):x}\r\n".encode() + record + b"\r\n")
            if stream.abort:
                sock.shutdown(socket.SHUT_RDWR)
            else:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        finally:
            self.master.stream_ended(stream)

    def _control(self, method: str, path: str, query: dict, body: bytes) -> None:
        """The test controls:
        GET  /double/state                       agents, frameworks, offers, tasks
        GET  /double/calls[?type=DECLINE]        the scheduler calls taken, in order
        GET  /double/rejected                    the calls refused, with status and message
        GET  /double/tasks                       every task, with its states and container
        POST /double/agents                      {"id", "hostname", "cpus", "mem", "disk", "attributes"}
        POST /double/agents/<id>/lose            {"mode": "unreachable" | "gone"}
        POST /double/streams/drop                every subscription stream ends
        POST /double/streams/stall               every subscription stream goes silent, left open
        POST /double/restart                     {"down_seconds": 1.0}
        POST /double/offers/rescind              every outstanding offer is rescinded
        """
        m = self.master
        try:
            args = json.loads(body or b"{}")
        except ValueError as e:
            return self._send(_Reply(400, f"Failed to parse body into JSON: {e}"))
        parts = [p for p in path.split("/") if p][1:]
        try:
            if method == "GET" and parts == ["state"]:
                return self._json(m.state())
            if method == "GET" and parts == ["calls"]:
                kinds = query.get("type")
                with m.lock:
                    calls = [c for c in m.calls if not kinds or c.get("type") in kinds]
                return self._json({"calls": calls})
            if method == "GET" and parts == ["rejected"]:
                with m.lock:
                    return self._json({"rejected": list(m.rejected)})
            if method == "GET" and parts == ["tasks"]:
                return self._json({"tasks": m.task_list()})
            if method == "POST" and parts == ["agents"]:
                return self._json({"agent_id": m.add_agent(AgentSpec.from_json(args))})
            if method == "POST" and len(parts) == 3 and parts[0] == "agents" and parts[2] == "lose":
                if parts[1] not in m.agents:
                    return self._send(_Reply(404, f"Unknown agent {parts[1]}"))
                m.lose_agent(parts[1], args.get("mode", "unreachable"))
                return self._json({"lost": parts[1]})
            if method == "POST" and parts == ["streams", "drop"]:
                m.drop_streams()
                return self._json({"dropped": True})
            if method == "POST" and parts == ["streams", "stall"]:
                m.stall_streams()
                return self._json({"stalled": True})
            if method == "POST" and parts == ["restart"]:
                self.close_connection = True
                self._json({"restarting": True, "down_seconds": float(args.get("down_seconds", 1.0))})
                m.restart(float(args.get("down_seconds", 1.0)))
                return
            if method == "POST" and parts == ["offers", "rescind"]:
                return self._json({"rescinded": m.rescind_offers()})
        except (ValueError, KeyError, TypeError) as e:
            return self._send(_Reply(400, str(e)))
        return self._send(_Reply(404, f"No such control: {method} {path}"))


def _state_resources(res: dict) -> dict:
    """Resources as the master's JSON endpoints show them: {"cpus": 2.0, "ports": "[31000-32000]"}."""
    return {k: ("[" + ", ".join(f"{b}-{e}" for b, e in v) + "]" if isinstance(v, list) else v)
            for k, v in res.items()}


def _peer_closed(sock: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


# Names the first version of this double had; tests/test_mesos_e2e.py and bench use them.
MesosDouble = MesosMasterDouble


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.doubles.mesos_master",
                                 description="A Mesos 1.12 master double (v1 scheduler API) on 127.0.0.1 whose "
                                             "agents run Docker tasks for real.")
    ap.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default 5050; 0 picks one)")
    ap.add_argument("--agents", default=None,
                    help='JSON list of agents, or @FILE: [{"id": "a1", "hostname": "h1", "cpus": 2, "mem": 4096, '
                         '"disk": 10000, "ports": "31000-32000", "attributes": {"arch": "x86_64"}}]')
    ap.add_argument("--config", default=None, help="JSON file with any of: port, agents, heartbeat_seconds, "
                                                   "kill_grace, update_retry_seconds, default_refuse_seconds, "
                                                   "offer_timeout, one_offer_per_agent, redirect_to")
    ap.add_argument("--heartbeat-seconds", type=float, default=None)
    ap.add_argument("--kill-grace", type=float, default=None, help="docker stop grace period for KILL (default 5)")
    ap.add_argument("--update-retry-seconds", type=float, default=None)
    ap.add_argument("--offer-timeout", type=float, default=None)
    ap.add_argument("--verbose", action="store_true", help="log HTTP requests and events to stderr")
    args = ap.parse_args(argv)
    conf: dict = {}
    if args.config:
        with open(args.config) as f:
            conf = json.load(f)
    agents = conf.pop("agents", None)
    if args.agents:
        text = args.agents
        if text.startswith("@"):
            with open(text[1:]) as f:
                text = f.read()
        agents = json.loads(text)
    if agents is None:
        agents = [{"id": "agent-1", "cpus": 2, "mem": 4096}]
    port = args.port if args.port is not None else conf.pop("port", 5050)
    conf.pop("port", None)
    for key in ("heartbeat_seconds", "kill_grace", "update_retry_seconds", "offer_timeout"):
        if getattr(args, key) is not None:
            conf[key] = getattr(args, key)
    if args.verbose:
        conf["log"] = lambda msg: print(msg, file=sys.stderr, flush=True)
    master = MesosMasterDouble([AgentSpec.from_json(a) for a in agents], port=port, **conf).start()
    print(json.dumps({"url": master.url, "address": master.address, "master_id": master.master_id,
                      "agents": list(master.agents)}), flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    master.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
