"""A Jenkins controller, as a test double that speaks the parts of Jenkins' remote access API that
python-jenkins calls for buildfarm's jenkins-bridge (and that the bridge reads with a Request).

Written from Jenkins' "Remote Access API" documentation and the JSON its `/api/json` endpoints
serve (hudson.model.Queue, ComputerSet, SlaveComputer, the DefaultCrumbIssuer), answered in the
same shapes:

  GET  /crumbIssuer/api/json       {"crumb", "crumbRequestField": "Jenkins-Crumb"}; every POST must
                                   carry that header (403 "No valid crumb was included" otherwise)
  GET  /  and  /api/json           the controller; header `X-Jenkins: VERSION` on every answer
  GET  /queue/api/json             {"items": [{id, task: {name, url, color}, why, buildable, blocked,
                                   stuck, inQueueSince, params, url, actions}]}; `why` as Jenkins words
                                   it: "There are no nodes with the label ‘L’", "All nodes of label ‘L’
                                   are offline", "Waiting for next available executor on ‘L’"
  POST /computer/doCreateItem      form: name, type (hudson.slaves.DumbSlave$DescriptorImpl), json
                                   (nodeDescription, numExecutors, remoteFS, labelString, mode,
                                   retentionStrategy, launcher); 302 to /computer/; 400 for a taken name
  GET  /computer/api/json          {"computer": [...]} with the built-in node first
  GET  /computer/NAME/api/json     displayName, description, offline, temporarilyOffline, idle,
                                   numExecutors, jnlpAgent, assignedLabels, executors, offlineCause...
  POST /computer/NAME/doDelete     302; the agent's connection is closed
  POST /computer/NAME/toggleOffline  (python-jenkins' disable_node/enable_node)
  GET  /computer/NAME/jenkins-agent.jnlp  (and the older slave-agent.jnlp) the JNLP file; the node's
                                   secret is the first <argument> of <application-desc>
  POST /job/NAME/buildWithParameters  201, `Location: URL/queue/item/N/`

Every /api and mutating call needs basic auth with the user and its API token (401 otherwise).

The inbound agent's own protocol (TCP or WebSocket remoting) is not spoken: the stand-in agent in
`images/jenkins-agent/standin/agent.py` stands for agent.jar and uses a small JSON endpoint under
`/buildfarm-test/agent/` instead, authenticated like the real one by the node's secret:
`connect` (the channel comes up: the node goes online), `poll` (what Jenkins' queue assigned to this
executor: a build, nothing, or "gone" once the node was deleted: the real agent's channel closes
then) and `done` (the build ended; the executor is idle again). Like Jenkins, the double assigns a
buildable item to any online, idle, not temporarily offline node carrying its label.

Test controls are Python methods: `enqueue(job, label, duration, until_offline)`, `cancel(item_id)`,
`nodes`, `node(name)`, `started`, `completed`, `triggered`, `peak_nodes`, `peak_online`, `accept_agents`.
A build enqueued with `until_offline` lasts its duration and then until its node is taken offline
(the agent's `done` is answered with the build again, to be worked on): a build longer than any
poll of the bridge, by construction rather than by timing.
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlparse

VERSION = "2.462.3"
CRUMB_FIELD = "Jenkins-Crumb"


@dataclass
class QueueItem:
    id: int
    job: str
    label: str | None
    duration: float
    params: dict[str, str]
    until_offline: bool = False  # the build does not end before its node was taken offline
    since: float = field(default_factory=time.time)


@dataclass
class Node:
    name: str
    description: str
    labels: list[str]
    num_executors: int
    remote_fs: str
    mode: str
    launcher: str
    secret: str
    created: float = field(default_factory=time.time)
    online: bool = False  # the agent's channel is up
    temporarily_offline: bool = False
    offline_message: str = ""
    current: dict | None = None  # the build its executor runs
    builds: int = 0


class JenkinsDouble:
    def __init__(self, user: str = "bridge", token: str | None = None):
        self.user = user
        self.token = token or secrets.token_hex(16)
        self.crumb = secrets.token_hex(16)
        self.lock = threading.RLock()
        self.queue: list[QueueItem] = []
        self.nodes: dict[str, Node] = {}
        self.ids = itertools.count(101)
        self.numbers: collections.Counter = collections.Counter()
        self.started: list[dict] = []
        self.completed: list[dict] = []
        self.triggered: list[dict] = []
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.secrets_issued: dict[str, str] = {}  # node name -> its JNLP secret, kept after deletion
        self.peak_nodes: collections.Counter = collections.Counter()  # label -> most nodes at once ("*": all)
        self.peak_online: collections.Counter = collections.Counter()
        self.accept_agents = True  # False: agents cannot connect (as behind a firewall)
        self.requests: collections.Counter = collections.Counter()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="jenkins-double")

    def start(self) -> JenkinsDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- test controls ----------------------------------------------------------------------------
    def enqueue(self, job: str, label: str | None, duration: float = 0.5, until_offline: bool = False,
                **params: str) -> int:
        with self.lock:
            item = QueueItem(next(self.ids), job, label, duration, dict(params), until_offline)
            self.queue.append(item)
            return item.id

    def cancel(self, item_id: int) -> bool:
        with self.lock:
            before = len(self.queue)
            self.queue = [i for i in self.queue if i.id != item_id]
            return len(self.queue) < before

    def queued(self) -> list[int]:
        with self.lock:
            return [i.id for i in self.queue]

    def node(self, name: str) -> Node | None:
        with self.lock:
            return self.nodes.get(name)

    def node_names(self) -> list[str]:
        with self.lock:
            return sorted(self.nodes)

    def _note_peaks(self) -> None:
        per_label: collections.Counter = collections.Counter()
        online: collections.Counter = collections.Counter()
        for n in self.nodes.values():
            for lab in n.labels:
                per_label[lab] += 1
                online[lab] += n.online
        per_label["*"] = len(self.nodes)
        online["*"] = sum(n.online for n in self.nodes.values())
        for k, v in per_label.items():
            self.peak_nodes[k] = max(self.peak_nodes[k], v)
        for k, v in online.items():
            self.peak_online[k] = max(self.peak_online[k], v)

    # -- what Jenkins answers -----------------------------------------------------------------------
    def why(self, item: QueueItem) -> str:
        if item.label is None:
            return "Waiting for next available executor"
        nodes = [n for n in self.nodes.values() if item.label in n.labels]
        if not nodes:
            return f"There are no nodes with the label ‘{item.label}’"
        if all(not n.online or n.temporarily_offline for n in nodes):
            return f"All nodes of label ‘{item.label}’ are offline"
        return f"Waiting for next available executor on ‘{item.label}’"

    def queue_json(self) -> dict:
        with self.lock:
            items = []
            for i in self.queue:
                items.append({
                    "_class": "hudson.model.Queue$BuildableItem",
                    "actions": [{"_class": "hudson.model.CauseAction",
                                 "causes": [{"_class": "hudson.model.Cause$UserIdCause",
                                             "shortDescription": f"Started by user {self.user}"}]}],
                    "blocked": False, "buildable": True, "id": i.id, "inQueueSince": int(i.since * 1000),
                    "params": "".join(f"\n{k}={v}" for k, v in i.params.items()), "stuck": False,
                    "task": {"_class": "hudson.model.FreeStyleProject", "name": i.job,
                             "url": f"{self.url}job/{quote(i.job)}/", "color": "notbuilt_anime"},
                    "url": f"queue/item/{i.id}/", "why": self.why(i),
                    "buildableStartMilliseconds": int(i.since * 1000), "pending": False})
            return {"_class": "hudson.model.Queue", "discoverableItems": [], "items": items}

    def computer_json(self, n: Node) -> dict:
        offline = not n.online or n.temporarily_offline
        cause = None
        if n.temporarily_offline:
            cause = {"_class": "hudson.slaves.OfflineCause$UserCause",
                     "description": f"Disconnected by {self.user}" + (f" : {n.offline_message}" if n.offline_message else "")}
        executors = [{"_class": "hudson.model.Executor", "currentExecutable":
                      ({"_class": "hudson.model.FreeStyleBuild", "number": n.current["number"],
                        "url": f"{self.url}job/{quote(n.current['job'])}/{n.current['number']}/"}
                       if n.current and i == 0 else None), "idle": not (n.current and i == 0),
                      "number": i, "progress": -1} for i in range(n.num_executors)]
        return {"_class": "hudson.slaves.SlaveComputer", "actions": [],
                "assignedLabels": [{"name": lab} for lab in n.labels] + [{"name": n.name}],
                "description": n.description, "displayName": n.name, "executors": executors,
                "icon": "symbol-computer" + ("-offline" if offline else ""),
                "iconClassName": "symbol-computer" + ("-offline" if offline else ""),
                "idle": n.current is None, "jnlpAgent": n.launcher == "hudson.slaves.JNLPLauncher",
                "launchSupported": True, "loadStatistics": {}, "manualLaunchAllowed": True, "monitorData": {},
                "numExecutors": n.num_executors, "offline": offline, "offlineCause": cause,
                "offlineCauseReason": cause["description"] if cause else "", "oneOffExecutors": [],
                "temporarilyOffline": n.temporarily_offline, "absoluteRemotePath": n.remote_fs if n.online else None}

    def builtin_json(self) -> dict:
        return {"_class": "hudson.model.Hudson$MasterComputer", "actions": [], "assignedLabels": [{"name": "built-in"}],
                "description": "the Jenkins controller's built-in node", "displayName": "Built-In Node",
                "executors": [], "icon": "symbol-computer", "iconClassName": "symbol-computer", "idle": True,
                "jnlpAgent": False, "launchSupported": True, "loadStatistics": {}, "manualLaunchAllowed": True,
                "monitorData": {}, "numExecutors": 0, "offline": False, "offlineCause": None,
                "offlineCauseReason": "", "oneOffExecutors": [], "temporarilyOffline": False}

    def jnlp(self, n: Node) -> str:
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<jnlp codebase="{self.url}computer/{quote(n.name)}/" '
                f'spec="1.0+"><information><title>Agent for {n.name}</title><vendor>Jenkins project</vendor>'
                f'<homepage href="https://jenkins.io/"/></information><security><all-permissions/></security>'
                f'<resources><j2se version="1.8+"/><jar href="{self.url}jnlpJars/remoting.jar"/></resources>'
                f'<application-desc main-class="hudson.remoting.jnlp.Main"><argument>{n.secret}</argument>'
                f'<argument>{n.name}</argument><argument>-workDir</argument><argument>{n.remote_fs}</argument>'
                f'<argument>-internalDir</argument><argument>remoting</argument><argument>-url</argument>'
                f'<argument>{self.url}</argument></application-desc></jnlp>')

    # -- changes ------------------------------------------------------------------------------------
    def create_node(self, form: dict[str, str]) -> tuple[int, str]:
        name = form.get("name", "").strip()
        if not name:
            return 400, "Query parameter 'name' is required"
        if form.get("type") != "hudson.slaves.DumbSlave$DescriptorImpl":
            return 400, f"No such type: {form.get('type')}"
        try:
            conf = json.loads(form.get("json", ""))
        except ValueError:
            return 400, "The form's json field is not JSON"
        with self.lock:
            if name in self.nodes:
                return 400, f"Agent called ‘{name}’ already exists"
            launcher = (conf.get("launcher") or {}).get("stapler-class", "")
            self.nodes[name] = Node(name=name, description=conf.get("nodeDescription") or "",
                                    labels=(conf.get("labelString") or "").split(),
                                    num_executors=int(conf.get("numExecutors", 1)), remote_fs=conf.get("remoteFS", ""),
                                    mode=conf.get("mode", "NORMAL"), launcher=launcher, secret=secrets.token_hex(32))
            self.created.append(name)
            self.secrets_issued[name] = self.nodes[name].secret
            self._note_peaks()
        return 302, ""

    def delete_node(self, name: str) -> bool:
        with self.lock:
            n = self.nodes.pop(name, None)
            if n is None:
                return False
            self.deleted.append(name)
            if n.current:  # the build on it is aborted with its channel
                self.completed.append({**n.current, "node": name, "result": "ABORTED"})
            return True

    def _assign(self, n: Node) -> None:
        """Jenkins' queue maintenance for one node: give it a buildable item with its label."""
        if not n.online or n.temporarily_offline or n.current is not None:
            return
        for item in self.queue:
            if item.label in n.labels:
                self.queue.remove(item)
                self.numbers[item.job] += 1
                n.current = {"job": item.job, "number": self.numbers[item.job], "item": item.id,
                             "duration": item.duration, "params": item.params, "until_offline": item.until_offline}
                n.builds += 1
                self.started.append({**n.current, "node": n.name, "at": time.time()})
                return

    # -- the stand-in agent's channel ----------------------------------------------------------------
    def agent_call(self, action: str, args: dict[str, str]) -> tuple[int, dict]:
        with self.lock:
            n = self.nodes.get(args.get("name", ""))
            if n is None:
                return 200, {"state": "gone"}  # the node was deleted: the channel is closed
            if not secrets.compare_digest(args.get("secret", ""), n.secret):
                return 403, {"error": f"incorrect secret for {n.name}"}
            if action == "connect":
                if not self.accept_agents:
                    return 503, {"error": "connection refused"}
                n.online = True
                self._note_peaks()
                return 200, {"state": "connected"}
            if not n.online:
                return 409, {"error": "not connected"}
            if action == "done" and n.current and n.current["until_offline"] and not n.temporarily_offline:
                n.current["duration"] = 0.2  # not over while its node is online: the agent works on
            elif action == "done" and n.current:
                self.completed.append({**n.current, "node": n.name, "result": "SUCCESS"})
                n.current = None
            self._assign(n)
            if n.current:
                return 200, {"state": "build", **n.current}
            return 200, {"state": "idle"}

    def trigger(self, job: str, params: dict[str, str]) -> int:
        with self.lock:
            item_id = next(self.ids)
            self.triggered.append({"job": job, "params": params, "item": item_id})
            return item_id


def _handler(jenkins: JenkinsDouble):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        # -- plumbing ----------------------------------------------------------------------------
        def _send(self, status: int, body: bytes | str | dict = b"", ctype: str = "application/json;charset=utf-8",
                  headers: dict | None = None) -> None:
            if isinstance(body, dict):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            self.send_response(status)
            self.send_header("X-Jenkins", VERSION)
            self.send_header("X-Hudson", "1.395")
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                try:
                    user, _, token = base64.b64decode(auth[6:]).decode().partition(":")
                except ValueError:
                    user = token = ""
                if user == jenkins.user and secrets.compare_digest(token, jenkins.token):
                    return True
                self._send(401, f"Invalid password/token for user: {user}", "text/html;charset=utf-8",
                           {"WWW-Authenticate": 'Basic realm="Jenkins"'})
                return False
            self._send(401, "Authentication required", "text/html;charset=utf-8",
                       {"WWW-Authenticate": 'Basic realm="Jenkins"'})
            return False

        def _form(self, parsed) -> dict[str, str]:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            form = {k: v[-1] for k, v in parse_qs(parsed.query, keep_blank_values=True).items()}
            if body and "json" not in (self.headers.get("Content-Type") or ""):
                form.update({k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()})
            elif body:
                form.update(json.loads(body))
            return form

        # -- GET ---------------------------------------------------------------------------------
        def do_GET(self):
            parsed = urlparse(self.path)
            path = unquote(parsed.path)
            jenkins.requests["GET " + path] += 1
            if path.startswith("/buildfarm-test/agent/"):
                args = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
                return self._send(*jenkins.agent_call(path.rsplit("/", 1)[-1], args))
            if path == "/login":
                return self._send(200, "<html>login</html>", "text/html")
            if not self._authorized():
                return
            if path in ("/", "/api/json"):
                return self._send(200, {"_class": "hudson.model.Hudson", "mode": "NORMAL", "nodeDescription":
                                        "the Jenkins controller's built-in node", "numExecutors": 0,
                                        "url": jenkins.url, "useCrumbs": True, "useSecurity": True})
            if path == "/crumbIssuer/api/json":
                return self._send(200, {"_class": "hudson.security.csrf.DefaultCrumbIssuer", "crumb": jenkins.crumb,
                                        "crumbRequestField": CRUMB_FIELD})
            if path == "/queue/api/json":
                return self._send(200, jenkins.queue_json())
            if path in ("/computer/", "/computer"):
                return self._send(200, "<html>Nodes</html>", "text/html")
            if path == "/computer/api/json":
                with jenkins.lock:
                    comps = [jenkins.builtin_json()] + [jenkins.computer_json(n) for n in jenkins.nodes.values()]
                return self._send(200, {"_class": "hudson.model.ComputerSet", "busyExecutors":
                                        sum(1 for n in jenkins.nodes.values() if n.current), "computer": comps,
                                        "displayName": "Nodes", "totalExecutors":
                                        sum(n.num_executors for n in jenkins.nodes.values())})
            parts = path.strip("/").split("/")
            if len(parts) == 2 and parts[0] == "computer":  # the node's page (toggleOffline redirects here)
                with jenkins.lock:
                    n = jenkins.nodes.get(parts[1])
                return self._send(200 if n else 404, f"<html>{parts[1]}</html>", "text/html")
            if len(parts) == 3 and parts[0] == "computer":
                with jenkins.lock:
                    n = jenkins.nodes.get(parts[1])
                    if n is None:
                        return self._send(404, "<html>Not Found</html>", "text/html")
                    if parts[2] in ("jenkins-agent.jnlp", "slave-agent.jnlp"):
                        return self._send(200, jenkins.jnlp(n), "application/x-java-jnlp-file")
            if len(parts) == 4 and parts[0] == "computer" and parts[2:] == ["api", "json"]:
                with jenkins.lock:
                    n = jenkins.nodes.get(parts[1])
                    if n is None:
                        return self._send(404, "<html>Not Found</html>", "text/html")
                    return self._send(200, jenkins.computer_json(n))
            return self._send(404, "<html>Not Found</html>", "text/html")

        # -- POST --------------------------------------------------------------------------------
        def do_POST(self):
            parsed = urlparse(self.path)
            path = unquote(parsed.path)
            jenkins.requests["POST " + path] += 1
            if path.startswith("/buildfarm-test/agent/"):
                return self._send(*jenkins.agent_call(path.rsplit("/", 1)[-1], self._form(parsed)))
            if not self._authorized():
                return
            if self.headers.get(CRUMB_FIELD) != jenkins.crumb:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                return self._send(403, "No valid crumb was included in the request", "text/html;charset=utf-8")
            form = self._form(parsed)
            parts = path.strip("/").split("/")
            if path == "/computer/doCreateItem":
                status, msg = jenkins.create_node(form)
                if status == 302:
                    return self._send(302, "", "text/html", {"Location": jenkins.url + "computer/"})
                return self._send(status, msg, "text/plain;charset=utf-8")
            if len(parts) == 3 and parts[0] == "computer" and parts[2] == "doDelete":
                if not jenkins.delete_node(parts[1]):
                    return self._send(404, "<html>Not Found</html>", "text/html")
                return self._send(302, "", "text/html", {"Location": jenkins.url + "computer/"})
            if len(parts) == 3 and parts[0] == "computer" and parts[2] == "toggleOffline":
                with jenkins.lock:
                    n = jenkins.nodes.get(parts[1])
                    if n is None:
                        return self._send(404, "<html>Not Found</html>", "text/html")
                    n.temporarily_offline = not n.temporarily_offline
                    n.offline_message = form.get("offlineMessage", "")
                return self._send(302, "", "text/html", {"Location": f"{jenkins.url}computer/{quote(n.name)}/"})
            if len(parts) == 3 and parts[0] == "job" and parts[2] in ("build", "buildWithParameters"):
                item = jenkins.trigger(parts[1], form)
                return self._send(201, "", "text/html", {"Location": f"{jenkins.url}queue/item/{item}/"})
            return self._send(404, "<html>Not Found</html>", "text/html")

    return Handler
