"""The jenkins-bridge: buildfarm as Jenkins' elastic agent cloud.

Every poll (python-jenkins: the queue, then the nodes) the bridge

1. reads Jenkins' queue for buildable items waiting for a label it serves (Jenkins says why an item
   waits: "Waiting for next available executor on ‘linux’", "There are no nodes with the label
   ‘linux’", "All nodes of label ‘linux’ are offline");
2. for each item no agent stands for yet, within the label's `max_agents` and `--max-total`
   (counted over the bridge's nodes that exist), creates a one-shot node in Jenkins (`bf-LABEL-ID`,
   JNLP launcher, one executor, the item's label, exclusive), reads the node's secret from its JNLP
   file, and submits a buildfarm build (trigger kind "jenkins") that runs `jenkins-agent` in the
   label's image with that secret: the farm's scheduler places it on local Docker or Mesos;
3. follows each node: when its executor is busy the node is taken offline, so it runs exactly one
   build; once idle again the node is deleted, the agent's channel closes and the container exits.
   (From outside Jenkins this holds for builds longer than a poll: a build that starts and ends
   between two polls can be followed by a second one before the bridge sees the node again.);
4. cleans up: an agent that never connects within --connect-timeout, or whose queue item left the
   queue before it connected (with no other item to stand for), is cancelled in buildfarm and its
   node deleted; a node deleted by hand has its build cancelled; an agent whose build ended before
   connecting (a bad image, say) backs its label off for a few seconds.

A restart adopts what the previous run left: nodes named bf-* are matched to active buildfarm
builds through the build's trigger detail (`bridge`, `node`, `label`, `item`), which lives in the
farm's records, not in the bridge; a node without a build is deleted, a build without a node is
cancelled. Only builds the bridge itself submitted count: a trigger is whatever its submitter wrote,
so a build is the bridge's when the farm recorded it as submitted with the bridge's own token
(`submitted_by`, the name `whoami` gives), never because its trigger detail says so. Another user's
build that claims a bridge node is neither adopted nor cancelled.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urljoin
from xml.etree import ElementTree

import jenkins
import requests

from ..client import Client, ClientError
from ..states import TERMINAL_STATES
from ..states import UNFINISHED_STATES as ACTIVE_STATES
from .labelmap import LabelMap, LabelSettings

PREFIX = "bf-"
DRAIN_TIMEOUT = 30.0  # seconds an agent's build may take to end after its node was deleted
STATE_CHECK = 2.0  # seconds between build-state checks of an agent that has not connected
_QUOTED = re.compile(r"[‘'\"]([^’'\"]+)[’'\"]")

Emit = Callable[..., None]


class BridgeError(Exception):
    """Something the bridge cannot do; the message says what."""


@dataclass
class Agent:
    node: str
    label: str
    item: int | None
    build_id: str
    created: float
    connected: bool = False
    connected_at: float | None = None
    used: bool = False
    checked_at: float = 0.0
    build_state: str = "queued"
    deadline: float = 0.0  # while draining: cancel the build after this


def waiting_label(item: dict, served) -> str | None:
    """The served label a queue item waits for, from Jenkins' `why`, or None."""
    if not item.get("buildable") or item.get("blocked"):
        return None
    for m in _QUOTED.finditer(item.get("why") or ""):
        if m.group(1) in served:
            return m.group(1)
    return None


def node_secret(server: jenkins.Jenkins, name: str) -> str:
    """The node's JNLP secret: the first argument of <application-desc> in the JNLP file Jenkins
    serves at /computer/NAME/jenkins-agent.jnlp (slave-agent.jnlp before Jenkins 2.2xx)."""
    problems = []
    for page in ("jenkins-agent.jnlp", "slave-agent.jnlp"):
        url = urljoin(server.server, f"computer/{quote(name)}/{page}")
        try:
            text = server.jenkins_open(requests.Request("GET", url))
        except jenkins.NotFoundException:
            problems.append(f"{page}: 404")
            continue
        try:
            args = ElementTree.fromstring(text).findall("./application-desc/argument")
        except ElementTree.ParseError as e:
            raise BridgeError(f"{url} is not a JNLP file ({e})") from None
        if args and args[0].text:
            return args[0].text.strip()
        raise BridgeError(f"{url} has no secret argument; is the node's launcher JNLP (inbound)?")
    raise BridgeError(f"Jenkins serves no JNLP file for node {name} ({', '.join(problems)})")


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", label)[:40]


class Bridge:
    def __init__(self, server: jenkins.Jenkins, farm: Client, label_map: LabelMap, *, max_total: int = 10,
                 connect_timeout: float = 300.0, emit: Emit | None = None, user: str | None = None,
                 launch_server: jenkins.Jenkins | None = None, launchers: int = 4):
        self.server = server
        # Launches (node, secret, submit: ~0.5 s each) run beside the poll, so a burst of them
        # never keeps the poll from seeing a node that went busy.
        self.launch_server = launch_server or server
        self.pool = ThreadPoolExecutor(max_workers=launchers, thread_name_prefix="launch")
        self.lock = threading.Lock()
        self.pending: dict[int, str] = {}  # queue item -> label, while its agent is being launched
        self.farm = farm
        self.map = label_map
        self.max_total = max_total
        self.connect_timeout = connect_timeout
        self.emit = emit or (lambda event, **fields: None)
        self.user = user
        self.url = server.server.rstrip("/")
        self.agents: dict[str, Agent] = {}
        self.draining: dict[str, Agent] = {}
        self.backoff: dict[str, tuple[float, int]] = {}  # label -> (until, failures in a row)

    # -- start ---------------------------------------------------------------------------------------
    def adopt(self) -> None:
        """Take over what a previous run left: bridge nodes with their builds; delete nodes without
        a build, cancel builds without a node."""
        builds = self._our_builds()
        for n in self._bridge_nodes().values():
            b = builds.pop(n["name"], None)
            if b is None:
                self._delete_node(n["name"])
                self.emit("orphan-node-deleted", node=n["name"], reason="no active buildfarm build runs its agent")
                continue
            d = b["spec"]["trigger"]["detail"]
            item = int(d["item"]) if d.get("item", "").isdigit() else None
            a = Agent(n["name"], d.get("label", ""), item, b["id"], b.get("created_at") or time.time(),
                      build_state=b["state"])
            a.used = bool(n["temporarilyOffline"] or not n["idle"])
            a.connected = a.used or not n["offline"]
            a.connected_at = time.time() if a.connected else None
            self.agents[a.node] = a
            self.emit("agent-adopted", node=a.node, label=a.label, item=a.item, build=a.build_id,
                      connected=a.connected, used=a.used)
        for node, b in builds.items():
            self._cancel(b["id"])
            self.emit("orphan-build-cancelled", node=node, build=b["id"], reason="its Jenkins node no longer exists")

    def _our_builds(self) -> dict[str, dict]:
        """Active buildfarm builds of this bridge's agents, by node name: submitted with the bridge's
        own farm token, for this Jenkins."""
        me = self.farm.whoami()["user"]
        out = {}
        for state in ACTIVE_STATES:
            for b in self.farm.list(state=state, limit=500, trigger="jenkins"):
                t = b["spec"].get("trigger") or {}
                d = t.get("detail") or {}
                if (b.get("submitted_by") == me and t.get("kind") == "jenkins" and d.get("bridge") == self.url
                        and d.get("node")):
                    out[d["node"]] = b
        return out

    def _bridge_nodes(self) -> dict[str, dict]:
        return {n["name"]: n for n in self.server.get_nodes_with_info() if n["name"].startswith(PREFIX)}

    # -- one poll -----------------------------------------------------------------------------------------
    def poll(self) -> None:
        now = time.time()
        t0 = time.monotonic()
        # Nodes before the queue: an item that leaves the queue in between was given to a node, which
        # then looks idle with its item gone, and is looked at again before it is removed
        # (_take_offline); the other order would see the item waiting and the node busy, and
        # launch a needless agent for it.
        with self.lock:  # before the nodes: an agent launched meanwhile waits for the next poll
            agents = list(self.agents.values())
        nodes = self._bridge_nodes()
        waiting: dict[str, list[int]] = {}
        jobs: dict[int, str] = {}
        for item in self.server.get_queue_info():
            label = waiting_label(item, self.map.labels)
            if label:
                waiting.setdefault(label, []).append(item["id"])
                jobs[item["id"]] = (item.get("task") or {}).get("name", "?")
        t1 = time.monotonic()
        for a in agents:
            n = nodes.get(a.node)
            if n is None:
                self._retire(a, "its node was deleted in Jenkins", cancel=True, delete=False)
            else:
                self._follow(a, n, waiting.get(a.label, []), now)
        t2 = time.monotonic()
        self._drain(now)
        t3 = time.monotonic()
        self._provision(waiting, jobs, now)
        t4 = time.monotonic()
        if t4 - t0 > 1.0:
            self.emit("slow-poll", seconds=round(t4 - t0, 2), read=round(t1 - t0, 2), follow=round(t2 - t1, 2),
                      drain=round(t3 - t2, 2), provision=round(t4 - t3, 2))

    def _follow(self, a: Agent, n: dict, queued: list[int], now: float) -> None:
        if not n["offline"] or not n["idle"] or n["temporarilyOffline"]:
            if not a.connected:
                a.connected, a.connected_at = True, now
                self.emit("agent-connected", node=a.node, label=a.label, build=a.build_id,
                          seconds=round(now - a.created, 2))
        if not n["idle"]:  # its one build runs: no second one
            if not a.used:
                a.used = True
                self.emit("agent-busy", node=a.node, label=a.label, build=a.build_id)
            if not n["temporarilyOffline"]:
                self.server.disable_node(a.node, "buildfarm: one build per agent")
            return
        if n["temporarilyOffline"]:
            a.used = True
        if a.used:
            self._retire(a, "its build is done")
            return
        if not a.connected:
            if self._build_ended(a, now):
                self._retire(a, f"its buildfarm build ended before the agent connected ({a.build_state})",
                             failure=True)
            elif now - a.created > self.connect_timeout:
                self._retire(a, f"the agent did not connect within {self.connect_timeout:g} s", cancel=True,
                             failure=True)
            elif a.item not in queued and not self._rebind(a, queued) and not self._connected_since(a, now):
                self._retire(a, f"queue item {a.item} left the queue before its agent connected", cancel=True)
            return
        # Connected and idle, never seen busy: waiting for Jenkins to hand it the item. Jenkins takes
        # an item off the queue in the same step that gives it to an executor, so once the item is
        # gone this agent either ran a build quicker than a poll or will get none: retire it now,
        # before the queue hands it a second one.
        if a.item in queued:
            if now - (a.connected_at or now) > self.connect_timeout:
                self._retire(a, f"connected but given no build within {self.connect_timeout:g} s")
            return
        self._retire(a, f"queue item {a.item} left the queue (built here, quicker than a poll, or elsewhere)")

    def _connected_since(self, a: Agent, now: float) -> bool:
        """Look at the node again: the agent may have connected (and taken its item) after the
        nodes were read; then the next poll follows it like any connected agent."""
        try:
            n = self.server.get_node_info(a.node)
        except jenkins.JenkinsException:
            return False
        if n["offline"] and n["idle"] and not n["temporarilyOffline"]:
            return False
        a.connected, a.connected_at = True, now
        self.emit("agent-connected", node=a.node, label=a.label, build=a.build_id, seconds=round(now - a.created, 2))
        return True

    def _rebind(self, a: Agent, queued: list[int]) -> bool:
        """Let an agent that has not connected stand for another waiting item of its label."""
        with self.lock:
            covered = {b.item for b in self.agents.values() if b.label == a.label and not b.used}
            covered |= set(self.pending)
        for item in queued:
            if item not in covered:
                self.emit("agent-rebound", node=a.node, label=a.label, item=item, was=a.item)
                a.item = item
                return True
        return False

    def _build_ended(self, a: Agent, now: float) -> bool:
        if now - a.checked_at >= STATE_CHECK:
            a.checked_at = now
            try:
                a.build_state = self.farm.get(a.build_id)["state"]
            except ClientError as e:
                if e.status == 404:
                    a.build_state = "gone"
        return a.build_state in TERMINAL_STATES or a.build_state == "gone"

    def _retire(self, a: Agent, reason: str, *, cancel: bool = False, delete: bool = True,
                failure: bool = False) -> None:
        if delete and not self._take_offline(a):
            return  # it took a build after all: it retires once that is done
        with self.lock:
            self.agents.pop(a.node, None)
        if cancel:  # first, so the agent is stopped rather than left to fail on a vanished node
            self._cancel(a.build_id)
        if delete:
            self._delete_node(a.node)
        self.emit("agent-removed", node=a.node, label=a.label, item=a.item, build=a.build_id, reason=reason,
                  cancelled=cancel)
        if not cancel and a.build_state not in TERMINAL_STATES:
            a.deadline = time.time() + DRAIN_TIMEOUT
            self.draining[a.node] = a
        if failure:
            until, failures = self.backoff.get(a.label, (0.0, 0))
            failures += 1
            self.backoff[a.label] = (time.time() + min(2.0 * 2 ** (failures - 1), 60.0), failures)
        elif a.used:
            self.backoff.pop(a.label, None)

    def _take_offline(self, a: Agent) -> bool:
        """Before deleting an online node: take it offline so the queue gives it nothing more, then
        look again. False if a build started on it meanwhile (it is kept, offline, until done)."""
        try:
            self.server.disable_node(a.node, "buildfarm: agent being removed")
            info = self.server.get_node_info(a.node)
        except jenkins.JenkinsException:
            return True  # gone already
        if not info.get("idle", True):
            a.used = a.connected = True
            self.emit("agent-busy", node=a.node, label=a.label, build=a.build_id)
            return False
        return True

    def _drain(self, now: float) -> None:
        """Agents whose node is gone: their container exits with the agent; cancel it if not."""
        for a in list(self.draining.values()):
            try:
                state = self.farm.get(a.build_id)["state"]
            except ClientError:
                state = "gone"
            if state in TERMINAL_STATES or state == "gone":
                del self.draining[a.node]
            elif now > a.deadline:
                self._cancel(a.build_id)
                del self.draining[a.node]
                self.emit("agent-killed", node=a.node, build=a.build_id,
                          reason=f"still running {DRAIN_TIMEOUT:g} s after its node was deleted")

    # -- provisioning -------------------------------------------------------------------------------------
    def _provision(self, waiting: dict[str, list[int]], jobs: dict[int, str], now: float) -> None:
        with self.lock:
            agents = list(self.agents.values())
            pending = dict(self.pending)
        count = {label: sum(1 for a in agents if a.label == label) + sum(1 for lab in pending.values() if lab == label)
                 for label in self.map.labels}
        total = len(agents) + len(pending)
        todo: dict[str, list[int]] = {}
        for label, items in waiting.items():
            if self.backoff.get(label, (0.0, 0))[0] > now:
                continue
            covered = {a.item for a in agents if a.label == label and not a.used} | set(pending)
            todo[label] = [i for i in items if i not in covered]
        # Round-robin over the labels, so one label's burst does not take the whole --max-total.
        while any(todo.values()) and total < self.max_total:
            for label in list(todo):
                if not todo[label]:
                    continue
                if count[label] >= self.map.labels[label].max_agents or total >= self.max_total:
                    todo[label] = []
                    continue
                item = todo[label].pop(0)
                count[label] += 1
                total += 1
                with self.lock:
                    self.pending[item] = label
                self.pool.submit(self._launch, label, self.map.labels[label], item, jobs.get(item, "?"))

    def _launch(self, label: str, s: LabelSettings, item: int, job: str) -> bool:
        try:
            return self._launch_one(label, s, item, job)
        except Exception as e:  # noqa: BLE001  (a launch thread must report, never die silently)
            self._fail(label, f"launching an agent failed: {type(e).__name__}: {e}")
            return False
        finally:
            with self.lock:
                self.pending.pop(item, None)

    def _launch_one(self, label: str, s: LabelSettings, item: int, job: str) -> bool:
        server = self.launch_server
        name = f"{PREFIX}{slug(label)}-{secrets.token_hex(4)}"
        try:
            server.create_node(
                name, numExecutors=1, remoteFS=s.workdir, labels=label, exclusive=True,
                nodeDescription=f"buildfarm ephemeral agent ({label}) for queue item {item} ({job}); "
                                f"created by buildfarm jenkins-bridge, deleted after one build",
                launcher=jenkins.LAUNCHER_JNLP, launcher_params={"webSocket": s.websocket})
            secret = node_secret(server, name)
        except (jenkins.JenkinsException, requests.RequestException, BridgeError) as e:
            self._delete_node(name, server)
            self._fail(label, f"cannot create node {name} in Jenkins: {e}")
            return False
        trigger = {"kind": "jenkins", "user": self.user, "url": f"{self.url}/computer/{quote(name)}/",
                   "detail": {"bridge": self.url, "node": name, "label": label, "item": str(item), "job": job}}
        env = {"JENKINS_URL": self.url + "/", "JENKINS_AGENT_NAME": name, "JENKINS_AGENT_WORKDIR": s.workdir}
        if s.websocket:
            env["JENKINS_WEB_SOCKET"] = "true"
        spec = s.spec(self.map.repo_of(label), env, trigger)
        spec["secret_env"] = {"JENKINS_SECRET": secret}  # masked in the log, never in the build's record
        try:
            b = self.farm.submit(spec)
        except ClientError as e:
            self._delete_node(name, server)
            self._fail(label, f"buildfarm refused the agent build: {e}")
            return False
        with self.lock:
            self.agents[name] = Agent(name, label, item, b["id"], time.time())
        self.emit("agent-created", node=name, label=label, item=item, job=job, build=b["id"])
        return True

    def _fail(self, label: str, message: str) -> None:
        until, failures = self.backoff.get(label, (0.0, 0))
        failures += 1
        delay = min(2.0 * 2 ** (failures - 1), 60.0)
        self.backoff[label] = (time.time() + delay, failures)
        self.emit("error", label=label, message=message, retry_in=delay)

    # -- Jenkins and the farm, tolerant of what is already gone ------------------------------------------
    def _delete_node(self, name: str, server: jenkins.Jenkins | None = None) -> None:
        server = server or self.server
        try:
            server.delete_node(name)
        except jenkins.JenkinsException:
            if server.node_exists(name):
                raise

    def close(self) -> None:
        """Wait for launches under way (their agents are then adopted by the next start)."""
        self.pool.shutdown(wait=True)

    def _cancel(self, build_id: str) -> None:
        try:
            self.farm.cancel(build_id)
        except ClientError as e:
            if e.status not in (404, 409):  # already ended, or gone
                raise
