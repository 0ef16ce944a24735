"""The Mesos backend: buildfarm as a Mesos framework (pymesos, v1 scheduler HTTP API).

Offers become the core's offers; each launch becomes a Docker task (the build's image, host
network by default, the mirror cache as a volume, the agent fetched from the API by the Mesos
fetcher). It is a good citizen of a shared cluster: every offer is answered in the round it
arrives (used, or declined with a `refuse_seconds` filter), offers are SUPPRESSed while the queue
is empty and REVIVEd when a build arrives. The framework id lives in Redis, so a restarted
scheduler re-subscribes as the same framework (its tasks keep running) and reconciles.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from .. import agent_contract as contract
from .. import keys
from ..agent_contract import CACHE_MOUNT
from ..placement import Agent, Offer, Resources
from ..placement.feasible import total
from ..spec import BuildSpec
from ..teams import TeamStore
from .base import EXITED, LAUNCH_FAILED, LOST, Exit, ExitListener, Found, LaunchError

log = logging.getLogger("buildfarm.mesos")

FRAMEWORK_ID_KEY = keys.MESOS_FRAMEWORK_ID
_EXIT_STATUS = re.compile(r"exited with status (\d+)")
RESUBSCRIBE_MAX_DELAY = 10.0

# Task states that end a task, and what they mean for the build.
_GONE = {"TASK_LOST", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNREACHABLE", "TASK_UNKNOWN"}
TERMINAL_TASK_STATES = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR"} | _GONE


@dataclass
class MesosOptions:
    master: str  # host:port (or zk://...)
    name: str = "buildfarm"
    role: str = "*"
    principal: str | None = None
    secret: str | None = None
    failover_timeout: float = 7 * 24 * 3600
    checkpoint: bool = True
    network: str = "HOST"  # Docker network of build tasks: HOST or BRIDGE
    cache_host_path: str = "/var/cache/buildfarm"
    reconcile_interval: float = 60.0
    decline_seconds_idle: float = 120.0  # filter on offers declined while the queue is empty
    decline_seconds_busy: float = 5.0  # filter on offers declined that could not fit what waits
    # The master sends a HEARTBEAT every 15 s. A subscription silent this long is taken for a dead
    # connection (half-open: no FIN ever came), which pymesos alone would wait on forever.
    heartbeat_timeout: float = 60.0
    extra_volumes: list[dict[str, str]] = field(default_factory=list)
    # Subscribe with MULTI_ROLE and one role per team (`team_role`), so the cluster's own quotas and
    # weights apply to each team too; builds without a team use `role`.
    team_roles: bool = False

    def team_role(self, team: str | None) -> str:
        """The Mesos role a team's builds run under: ROLE/TEAM (buildfarm/TEAM when ROLE is *)."""
        if not team or not self.team_roles:
            return self.role
        return f"{'buildfarm' if self.role == '*' else self.role}/{team}"


def task_id_for(build_id: str, attempt: int) -> str:
    return f"{build_id}-{attempt}"


def parse_task_id(task_id: str) -> tuple[str, int]:
    build_id, _, attempt = task_id.rpartition("-")
    return build_id, int(attempt) if attempt.isdigit() else 0


def exit_for_status(status: dict[str, Any]) -> Exit | None:
    """A task status as the build sees it: None while the task lives, else how it ended."""
    state = status.get("state", "")
    if state not in TERMINAL_TASK_STATES:
        return None
    build_id, attempt = parse_task_id(status.get("task_id", {}).get("value", ""))
    reason = status.get("reason", "")
    message = status.get("message", "")
    where = status.get("agent_id", {}).get("value", "")
    detail = f"{state}{' ' + reason if reason else ''}{': ' + message if message else ''}"
    if state == "TASK_FINISHED":
        return Exit(build_id, attempt, 0, "", EXITED)
    if reason == "REASON_RECONCILIATION" and state not in _GONE:
        # The master's answer to a reconciliation: the task's latest state, never why (its message is
        # "Reconciliation: Latest task state"). The agent's own update, with the cause, is re-sent
        # until acknowledged, but only on its backoff (10 s doubling to 10 min): until then nothing
        # says the build failed, so it is a loss (a build still launching is placed again).
        return Exit(build_id, attempt, -1, f"the task ended ({state}) and Mesos' reconciliation does not say why "
                                           f"(the agent's report of it has not reached the farm yet)", LOST)
    if state == "TASK_FAILED":
        if reason == "REASON_CONTAINER_LAUNCH_FAILED" and "Failed to fetch" in message:
            # Its only URI is the farm's own agent bundle: the farm did not answer (it was restarting),
            # and the build never started, so it can be placed again.
            return Exit(build_id, attempt, -1, f"the agent could not be fetched from the farm on {where}: {message}",
                        LOST)
        if reason in ("REASON_CONTAINER_LAUNCH_FAILED", "REASON_TASK_INVALID", "REASON_CONTAINER_PREEMPTED"):
            return Exit(build_id, attempt, -1, f"the task could not start on {where}: {message or reason}",
                        LAUNCH_FAILED)
        m = _EXIT_STATUS.search(message)
        if reason == "REASON_CONTAINER_LIMITATION_MEMORY":
            return Exit(build_id, attempt, 137, f"killed: out of memory ({message})", EXITED)
        return Exit(build_id, attempt, int(m.group(1)) if m else -2, detail, EXITED)
    if state == "TASK_KILLED":
        return Exit(build_id, attempt, 137, detail, EXITED)
    if state == "TASK_ERROR":
        return Exit(build_id, attempt, -1, f"Mesos refused the task: {message or reason}", LAUNCH_FAILED)
    return Exit(build_id, attempt, -1, f"the task was lost ({detail})", LOST)


def _scalars(resources: list[dict[str, Any]], role: str) -> Resources:
    total = {"cpus": 0.0, "mem": 0.0, "disk": 0.0}
    for r in resources:
        if r.get("type", "SCALAR") != "SCALAR" or r.get("name") not in total:
            continue
        if r.get("role", "*") not in ("*", role) and not r.get("allocation_info"):
            continue
        total[r["name"]] += float(r.get("scalar", {}).get("value", 0))
    return Resources(round(total["cpus"], 6), int(total["mem"]), int(total["disk"]))


def _attributes(attrs: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for a in attrs or []:
        if "text" in a:
            out[a["name"]] = str(a["text"].get("value", ""))
        elif "scalar" in a:
            out[a["name"]] = f"{a['scalar'].get('value', 0):g}"
    return out


class MesosBackend:
    name = "mesos"
    holds_subscription = True  # one scheduler at a time: closed as soon as its lease is lost

    def __init__(self, options: MesosOptions, redis_client, api_url: str, on_exit: ExitListener,
                 wake: Callable[[str], None], active_tasks: Callable[[], list[str]],
                 driver_factory: Callable[..., Any] | None = None, leading: Callable[[], bool] = lambda: True):
        self.opts = options
        self.r = redis_client
        self.api_url = api_url.rstrip("/")
        self.on_exit = on_exit
        self.wake = wake
        self.active_tasks = active_tasks  # task ids of builds the farm believes launched
        self.leading = leading  # the scheduler's lease: a deposed leader never subscribes again
        self._lock = threading.RLock()
        self._offers: dict[str, dict[str, Any]] = {}
        self._agents: dict[str, Agent] = {}
        self._totals: dict[str, Resources] = {}  # from the master's /slaves, when it answers
        self._alloc: dict[str, tuple[str, Resources]] = {}  # build id -> (agent id, resources)
        self._to_launch: dict[str, list[dict[str, Any]]] = {}  # agent id -> task infos this round
        self.suppressed = False
        self._idle_filters = False  # offers were declined with the long idle filter since the last REVIVE
        self.connected = threading.Event()
        self._last_reconcile = 0.0
        self.framework_id = self.r.get(FRAMEWORK_ID_KEY)
        self._teams = TeamStore(redis_client)
        self._roles: dict[str, str | None] = self._team_roles()  # role -> team (None: no team)
        framework = self._framework_info()
        if options.principal:
            framework["principal"] = options.principal
        if self.framework_id:
            framework["id"] = {"value": self.framework_id}
        if driver_factory is None:
            import pymesos.process
            from pymesos import MesosSchedulerDriver

            pymesos.process.thread = _NoMainThreadInterrupt
            driver_factory = MesosSchedulerDriver
        # pymesos' connection thread ends for good on a refused SUBSCRIBE (a 4xx: wrong credentials,
        # an invalid role) or a master unreachable past its deadline, and logs the cause: keep it, so
        # the scheduler loop stops the farm with it, not silently (see connection_ended).
        self.fatal: str | None = None
        pymesos_log = logging.getLogger("pymesos.process")
        self._watcher = _AbortWatcher(self)
        pymesos_log.addHandler(self._watcher)
        pymesos_log.propagate = False  # the watcher says it, once and without a traceback
        self.driver = driver_factory(_Callbacks(self), framework, options.master, use_addict=False,
                                     implicit_acknowledgements=False, principal=options.principal,
                                     secret=options.secret, failover=True)
        self.last_heartbeat = time.monotonic()
        self._resubscribing = False
        self._unsubscribed = 0  # connections ended since the last SUBSCRIBED
        self._closing = threading.Event()
        self.driver.start()
        threading.Thread(target=self._watch_heartbeats, name="mesos-heartbeats", daemon=True).start()

    def _framework_info(self) -> dict[str, Any]:
        o = self.opts
        framework = {"user": "root", "name": o.name, "failover_timeout": o.failover_timeout,
                     "checkpoint": o.checkpoint,
                     "capabilities": [{"type": "TASK_KILLING_STATE"}, {"type": "PARTITION_AWARE"}]}
        if o.team_roles:
            framework["roles"] = list(self._roles)
            framework["capabilities"].insert(0, {"type": "MULTI_ROLE"})
        else:
            framework["role"] = o.role
        return framework

    def _team_roles(self) -> dict[str, str | None]:
        roles: dict[str, str | None] = {self.opts.role: None}
        if self.opts.team_roles:
            roles.update({self.opts.team_role(t): t for t in sorted(self._teams.core_teams())})
        return roles

    def _follow_teams(self) -> None:
        """With team roles: a team created or deleted changes the framework's roles (UPDATE_FRAMEWORK,
        Mesos >= 1.9); the next SUBSCRIBE carries them too."""
        roles = self._team_roles()
        if roles == self._roles:
            return
        self._roles = roles
        info = self._framework_info()
        self.driver._framework.update(info)  # what pymesos sends on its next SUBSCRIBE
        if self.framework_id and self.connected.is_set():
            info = {**self.driver.framework, "id": {"value": self.framework_id}}
            # suppressed_roles replaces the master's set: keep a suppression as it is
            update = {"framework_info": info, "suppressed_roles": list(roles) if self.suppressed else []}
            self._call(self.driver._send, {"type": "UPDATE_FRAMEWORK", "framework_id": {"value": self.framework_id},
                                           "update_framework": update})
        log.info("mesos roles now %s", ", ".join(roles))

    def _offer_role(self, offer: dict[str, Any]) -> str:
        return (offer.get("allocation_info") or {}).get("role", self.opts.role)

    def _by_agent(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """The held offers by agent, then by the role they were made to."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for o in self._offers.values():
            out.setdefault(o["agent_id"]["value"], {}).setdefault(self._offer_role(o), []).append(o)
        return out

    # -- what the scheduler loop asks ------------------------------------------------------------
    def agents(self) -> list[Agent]:
        with self._lock:
            out = []
            for aid, a in self._agents.items():
                cap = self._totals.get(aid) or a.capacity
                out.append(Agent(aid, a.host, cap, a.attributes))
            return out

    def offers(self) -> list[Offer]:
        """One offer per agent. With team roles, an agent offered to several roles at once shows
        the largest role's offer (the others are declined this round) and serves only its team."""
        with self._lock:
            out = []
            for aid, roles in self._by_agent().items():
                free = {role: total(_scalars(o.get("resources", []), role) for o in offers)
                        for role, offers in roles.items()}
                role = max(free, key=lambda k: (free[k].cpus, free[k].mem, k))
                teams = frozenset([self._roles.get(role)]) if self.opts.team_roles else None
                out.append(Offer(aid, free[role], teams))
            return out

    def check_image(self, image: str) -> str | None:
        return None  # the cluster's agents pull it; a missing image fails the task with the reason

    def launch(self, build_id: str, attempt: int, spec: BuildSpec, token: str, agent_id: str) -> None:
        task = self.task_info(build_id, attempt, spec, token, agent_id)
        r = spec.resources
        with self._lock:
            self._alloc[build_id] = (agent_id, Resources(r.cpus, r.mem, r.disk))
            self._to_launch.setdefault(agent_id, []).append(task)

    def task_info(self, build_id: str, attempt: int, spec: BuildSpec, token: str, agent_id: str) -> dict[str, Any]:
        r = spec.resources
        env = {**contract.agent_env(self.api_url, build_id, token), "PYTHONDONTWRITEBYTECODE": "1"}
        resources = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": r.cpus}},
                     {"name": "mem", "type": "SCALAR", "scalar": {"value": r.mem}}]
        if r.disk:
            resources.append({"name": "disk", "type": "SCALAR", "scalar": {"value": r.disk}})
        role = self.opts.team_role(spec.team)
        if role != "*" or self.opts.team_roles:
            for res in resources:
                res["allocation_info"] = {"role": role}
        volumes = [{"container_path": CACHE_MOUNT, "host_path": self.opts.cache_host_path, "mode": "RW"}]
        volumes += [dict(v) for v in self.opts.extra_volumes]
        return {
            "name": f"buildfarm build {build_id}",
            "task_id": {"value": task_id_for(build_id, attempt)},
            "agent_id": {"value": agent_id},
            "resources": resources,
            "command": {
                "shell": True,
                "value": f'PYTHONPATH="$MESOS_SANDBOX/{contract.BUNDLE_DIR}" exec python3 '
                         f'"$MESOS_SANDBOX/{contract.BUNDLE_DIR}/{contract.AGENT_SCRIPT}"',
                "uris": [{"value": f"{self.api_url}/api/v1/agent/bundle.tar.gz", "extract": True, "cache": False}],
                "environment": {"variables": [{"name": k, "value": v} for k, v in env.items()]},
            },
            "container": {
                "type": "DOCKER",
                "docker": {"image": spec.image, "network": self.opts.network, "force_pull_image": False},
                "volumes": volumes,
            },
            "labels": {"labels": [{"key": k, "value": v} for k, v in contract.build_labels(build_id, attempt).items()]},
        }

    def kill(self, build_id: str) -> None:
        """Kill the build's current task (its attempt is in the build record)."""
        attempt = self.r.hget(keys.build(build_id), "attempt")
        if attempt and attempt != "0":
            self._call(self.driver.killTask, {"value": task_id_for(build_id, int(attempt))})

    def cleanup(self, build_id: str) -> None:
        with self._lock:
            self._alloc.pop(build_id, None)

    def recover(self) -> dict[str, Found] | None:
        return None  # reconciliation on (re)subscription tells what runs

    def adopt(self, build_id: str, spec: BuildSpec) -> None:
        """After a restart: hold the build's resources until the master says how it is."""
        r = spec.resources
        with self._lock:
            self._alloc.setdefault(build_id, ("?", Resources(r.cpus, r.mem, r.disk)))

    def settle(self, pending: int) -> None:
        """Answer every held offer now: accept with this round's launches, decline the rest."""
        if self.opts.team_roles:
            self._follow_teams()
        with self._lock:
            by_agent = self._by_agent()
            launches, self._to_launch = self._to_launch, {}
            self._offers.clear()
        for agent_id, roles in by_agent.items():
            tasks = launches.pop(agent_id, None)
            # The tasks' resources carry the role of the offers they use (one role per ACCEPT).
            role = tasks[0]["resources"][0].get("allocation_info", {}).get("role") if tasks else None
            for offer_role, offers in roles.items():
                ids = [o["id"] for o in offers]
                if tasks and (offer_role == role or not self.opts.team_roles):
                    self._call(self.driver.launchTasks, ids, tasks, {"refuse_seconds": 1.0})
                    tasks = None
                    continue
                seconds = self.opts.decline_seconds_busy if pending else self.opts.decline_seconds_idle
                if self._call(self.driver.declineOffer, ids, {"refuse_seconds": seconds}) and not pending:
                    self._idle_filters = True
            if tasks:  # placed on a role this agent was not offered to: placed again next round
                launches[agent_id] = tasks
        for agent_id, tasks in launches.items():  # offers rescinded under us (or of another role): lost
            for t in tasks:
                bid, attempt = parse_task_id(t["task_id"]["value"])
                why = (f"{agent_id} was not offered to role {t['resources'][0]['allocation_info']['role']}"
                       if agent_id in by_agent else f"the offer on {agent_id} was rescinded before launch")
                self.on_exit(Exit(bid, attempt, -1, why, LOST))
        if pending and (self.suppressed or self._idle_filters):
            # A build waits: lift the suppression and the long filters of offers declined while idle.
            if self._call(self.driver.reviveOffers):
                self.suppressed = self._idle_filters = False
        elif not pending and not self.suppressed and not by_agent and self.connected.is_set():
            if self._call(self.driver.suppressOffers):
                self.suppressed = True
        if self.connected.is_set() and time.monotonic() - self._last_reconcile > self.opts.reconcile_interval:
            self.reconcile()

    def reconcile(self) -> None:
        self._last_reconcile = time.monotonic()
        tasks = [{"task_id": {"value": t}} for t in self.active_tasks()]
        if tasks:
            self._call(self.driver.reconcileTasks, tasks)
        self._refresh_totals()

    def _refresh_totals(self) -> None:
        """Agents' whole capacity from the master's /slaves (offers only show what is free)."""
        master = getattr(self.driver, "master", None)
        if not master:
            return
        try:
            with urllib.request.urlopen(f"http://{master}/slaves", timeout=5) as resp:
                slaves = json.loads(resp.read()).get("slaves", [])
        except Exception as e:
            log.debug("no /slaves from %s: %s", master, e)
            return
        with self._lock:
            for s in slaves:
                res = s.get("resources", {})
                aid = s["id"]
                self._totals[aid] = Resources(float(res.get("cpus", 0)), int(res.get("mem", 0)),
                                              int(res.get("disk", 0)))
                attrs = {k: str(v) for k, v in (s.get("attributes") or {}).items()}
                if aid not in self._agents or not s.get("active", True):
                    self._agents[aid] = Agent(aid, s.get("hostname", ""), self._totals[aid], attrs)
            for aid in [a for a in self._agents if a not in {s["id"] for s in slaves}]:
                self._agents.pop(aid, None)
                self._totals.pop(aid, None)

    def teardown(self) -> None:
        """End the framework: Mesos kills its tasks; the next start registers anew."""
        deadline = time.monotonic() + 30
        while not self.connected.wait(0.5):
            if self.fatal:
                raise LaunchError(self.fatal)
            if time.monotonic() > deadline:
                raise LaunchError(f"not subscribed to the Mesos master {self.opts.master} within 30 s; "
                                  f"nothing was torn down")
        self._closing.set()
        self.driver.stop(failover=False)  # pymesos sends TEARDOWN from its own thread as that ends:
        ending = threading.Thread(target=self.driver.join, daemon=True)  # wait for it, within bounds
        ending.start()
        ending.join(30)
        if ending.is_alive():
            raise LaunchError("pymesos did not stop within 30 s; the framework may still be registered")
        if self.driver.framework_id:  # pymesos forgets the id only once its TEARDOWN call went through
            raise LaunchError("the TEARDOWN call did not go through (see the warning above); the framework "
                              "is still registered: try again")
        self.r.delete(FRAMEWORK_ID_KEY)

    def close(self) -> None:
        """Unsubscribe without tearing the framework down: its tasks run on, for the next scheduler."""
        self._closing.set()
        self.driver.stop(failover=True)
        logging.getLogger("pymesos.process").removeHandler(self._watcher)

    def _watch_heartbeats(self) -> None:
        while not self._closing.wait(min(5.0, self.opts.heartbeat_timeout / 4)):
            silent = time.monotonic() - self.last_heartbeat
            # Subscribed, or subscribing again after a dead connection of ours: the stream must speak.
            watched = self.connected.is_set() or self._resubscribing
            if watched and silent >= self.opts.heartbeat_timeout:
                log.warning("no HEARTBEAT from the Mesos master for %.0f s (one comes every 15 s): taking the "
                            "connection for dead and subscribing again", silent)
                try:
                    self._reconnect()
                except Exception as e:  # last_heartbeat is still old: the next check tries again
                    log.warning("reconnecting to the Mesos master failed: %s", e)

    def _reconnect(self) -> None:
        """Drop the subscription's connection and SUBSCRIBE again with the framework id, through
        pymesos' own master change (as when ZooKeeper names a new leader): no master, then this
        one again, unless a new leader was named meanwhile."""
        master = getattr(self.driver, "master", None)
        if master is None:
            return  # no master known (ZooKeeper looks for one): nothing to reconnect to
        if self._closing.is_set() or not self.leading():
            return  # deposed (woken from a pause): the leader holds the subscription now
        self.driver.change_master(None)
        deadline = time.monotonic() + 10
        while self.driver.master == master and time.monotonic() < deadline:
            time.sleep(0.05)  # until pymesos' thread has closed the connection
        if self.driver.master == master:  # its thread is busy: take the change back, try later
            self.driver.change_master(master)
            raise RuntimeError("pymesos did not close the connection within 10 s")
        if self.driver.master is None:
            self.driver.change_master(master)
        self._resubscribing = True
        self.last_heartbeat = time.monotonic()

    def heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()

    def _call(self, fn, *args) -> bool:
        try:
            fn(*args)
            return True
        except Exception as e:  # disconnected, or the master refused: the next round tries again
            log.warning("mesos call %s failed: %s", getattr(fn, "__name__", fn), e)
            return False

    # -- events from the driver (its thread) --------------------------------------------------------
    def subscribed(self, framework_id: str) -> None:
        self.framework_id = framework_id
        self.r.set(FRAMEWORK_ID_KEY, framework_id)
        self.suppressed = False  # a new subscription starts unsuppressed
        self._idle_filters = True  # and filters may survive a failover: revive when builds wait
        self.last_heartbeat = time.monotonic()
        self._resubscribing = False
        self._unsubscribed = 0
        self.connected.set()
        self._last_reconcile = 0.0
        self.wake("subscribed")  # the next round reconciles

    def disconnected(self) -> None:
        """The subscription's connection ended. pymesos calls this from its connection thread and
        subscribes again as soon as it returns, with no pause when the master answered (a 503
        while no leader is elected would be re-sent in a tight loop): attempts that follow one
        another without a SUBSCRIBED wait 0.5, 1, 2 ... 10 s here first."""
        self.connected.clear()
        with self._lock:
            self._offers.clear()
        # A deposed leader (woken from a pause, its stream ended by the new leader's failover) must
        # not subscribe again: hold pymesos here until this backend is closed or the lease is back.
        while not self.leading() and not self._closing.wait(0.2):
            pass
        if self._closing.is_set():
            return
        self._unsubscribed += 1
        if self._unsubscribed > 1 and not self._master_changing():
            delay = min(RESUBSCRIBE_MAX_DELAY, 0.5 * 2 ** (self._unsubscribed - 2))
            if self._unsubscribed & (self._unsubscribed - 1) == 0:  # 2, 4, 8, ...: not each time
                log.warning("no subscription with the Mesos master after %d attempts; trying again every %.1f s",
                            self._unsubscribed - 1, delay)
            self._closing.wait(delay)

    def _master_changing(self) -> bool:
        """Whether pymesos is switching masters (our watchdog, or ZooKeeper naming a leader): it
        closes the old connection holding its lock then, so that is no time to wait. (Attributes of
        pymesos' Process, read without its lock: a stale read only costs one pause more or less.)"""
        return getattr(self.driver, "_new_master", None) != getattr(self.driver, "_master", None)

    def offers_arrived(self, offers: list[dict[str, Any]]) -> None:
        with self._lock:
            for o in offers:
                self._offers[o["id"]["value"]] = o
                aid = o["agent_id"]["value"]
                offered = _scalars(o.get("resources", []), self.opts.role)
                used = [r for a, r in self._alloc.values() if a == aid]
                est = Resources(round(offered.cpus + sum(r.cpus for r in used), 6),
                                offered.mem + sum(r.mem for r in used), offered.disk + sum(r.disk for r in used))
                old = self._agents.get(aid)
                cap = old.capacity if old else est
                cap = Resources(max(cap.cpus, est.cpus), max(cap.mem, est.mem), max(cap.disk, est.disk))
                self._agents[aid] = Agent(aid, o.get("hostname", ""), cap, _attributes(o.get("attributes", [])))
        self.wake("offers")

    def offer_rescinded(self, offer_id: str) -> None:
        with self._lock:
            self._offers.pop(offer_id, None)

    def agent_lost(self, agent_id: str) -> None:
        with self._lock:
            self._agents.pop(agent_id, None)
            self._totals.pop(agent_id, None)
            for oid in [i for i, o in self._offers.items() if o["agent_id"]["value"] == agent_id]:
                self._offers.pop(oid)
        self.wake("agent-lost")

    def status_update(self, status: dict[str, Any]) -> None:
        state = status.get("state", "")
        task_id = status.get("task_id", {}).get("value", "")
        build_id, attempt = parse_task_id(task_id)
        ack = (lambda: self._call(self.driver.acknowledgeStatusUpdate, status)) if "uuid" in status else None
        ev = exit_for_status(status)
        log.info("task %s: %s %s", task_id, state, status.get("message", ""))
        if ev is None:
            agent = status.get("agent_id", {}).get("value")
            if agent:
                with self._lock:
                    if build_id in self._alloc:
                        self._alloc[build_id] = (agent, self._alloc[build_id][1])
            if ack:
                ack()
            return
        if state == "TASK_UNREACHABLE":  # it may come back: make sure it cannot run on as well
            self._call(self.driver.killTask, {"value": task_id})
        self.on_exit(Exit(ev.build_id, ev.attempt, ev.code, ev.detail, ev.kind, ack))

    def connection_ended(self, cause: str) -> None:
        """pymesos' connection thread ended for good: the backend cannot go on. The scheduler loop,
        woken now rather than at its next round, stops with `fatal`, which the farm says once."""
        why = f"the connection to the Mesos master {self.opts.master} ended: {cause}"
        if "HTTP 401" in cause or "HTTP 403" in cause:
            why += "; check --principal and --secret (BUILDFARM_MESOS_SECRET)"
        self.fatal = _AbortWatcher.last = why
        try:
            self.wake("mesos-ended")
        except redis.RedisError:
            pass  # the loop sees `fatal` at its next round

    def framework_error(self, message: str) -> None:
        """The master refused the framework. When it was removed (torn down, or away longer than
        its failover timeout) its tasks are gone: forget its id so pymesos' next SUBSCRIBE registers
        a new framework (else it re-subscribes with the dead id in a tight loop), and let
        reconciliation settle the builds the farm believed running."""
        log.error("Mesos framework error: %s", message)
        if "removed" in message.lower() or "failover" in message.lower():
            self.r.delete(FRAMEWORK_ID_KEY)
            self.framework_id = None
            self.driver._framework.pop("id", None)  # as pymesos' own teardown does
            self.connected.clear()


class _AbortWatcher(logging.Handler):
    last: str | None = None  # the latest backend's failure, for the process that runs it

    def __init__(self, backend: MesosBackend):
        super().__init__(logging.WARNING)
        self.backend = backend

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Thread abort") and record.exc_info and record.exc_info[1]:
            self.backend.connection_ended(str(record.exc_info[1]).removesuffix(": b''"))  # (an empty body)
        else:  # pymesos' other news (reconnects, redirects), without its tracebacks
            log.log(record.levelno, "pymesos: %s", record.getMessage())


class _NoMainThreadInterrupt:
    """Stands in for the `_thread` module in pymesos.process. As its connection thread ends for good,
    pymesos stores the error and calls _thread.interrupt_main(), for its SIGINT handler to raise the
    error in the main thread, wherever that is: in uvicorn, which takes it for Ctrl-C, and for a second
    one (a forced exit, the app's lifespan task cancelled and logged with a CancelledError traceback)
    when the scheduler thread has already stopped the server for the same failure; in a logging call;
    mid Redis command; in a cleanup. The backend hears of the end from pymesos' log (_AbortWatcher)
    and stops the farm through its scheduler loop, so the interruption is dropped."""

    @staticmethod
    def interrupt_main(*_args) -> None:
        import pymesos.process

        pymesos.process._exc_info = None  # what the handler would raise: Ctrl-C stays a KeyboardInterrupt


def connection_failure() -> str | None:
    """Why pymesos' connection thread ended for good in this process, if it did."""
    return _AbortWatcher.last


class _Callbacks:
    """pymesos' Scheduler interface, forwarded to the backend."""

    def __init__(self, backend: MesosBackend):
        self.b = backend

    def registered(self, driver, framework_id, master_info):
        self.b.subscribed(framework_id["value"])

    def reregistered(self, driver, master_info):
        self.b.subscribed(driver.framework_id)

    def disconnected(self, driver):
        self.b.disconnected()

    def resourceOffers(self, driver, offers):
        self.b.offers_arrived(offers)

    def inverseOffers(self, driver, offers):
        pass

    def offerRescinded(self, driver, offer_id):
        self.b.offer_rescinded(offer_id["value"])

    def statusUpdate(self, driver, status):
        try:
            self.b.status_update(status)
        except redis.RedisError as e:  # raised here, it would end pymesos' connection, and the farm with it
            log.warning("task %s: %s not recorded (Redis: %s); left unacknowledged, so Mesos sends it again",
                        status.get("task_id", {}).get("value", "?"), status.get("state", "?"), e)

    def frameworkMessage(self, driver, executor_id, agent_id, data):
        pass

    def slaveLost(self, driver, agent_id):
        self.b.agent_lost(agent_id["value"])

    def executorLost(self, driver, executor_id, agent_id, status):
        pass

    def error(self, driver, message):
        self.b.framework_error(message)

    def processHeartBeat(self, driver):
        self.b.heartbeat()
