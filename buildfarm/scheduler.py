"""The scheduler loop: the only consumer of the build queue, and what drives the placement core.

It sits above what it uses: the placement core (placement/, pure), the farm's stores and queue
(service.Farm), the backend (backends/) and the lease. It sleeps on a Redis wake-up list (a
submit, a cancel, an agent's report or a container's exit wakes it; nothing polls in a busy loop),
then: handles ended containers, enforces every phase's timeout, and asks the pure core which
queued builds to launch on the backend's offers.
On start it reconciles with what the backend really runs, so a farm killed with SIGKILL loses
no build and runs none twice.

With a lease (lease.py), the loop runs for one term of leadership: its farm is fenced (every write
is refused once the lease is gone), it launches nothing unless the lease is still held, and it
returns when the lease is lost, leaving the next term (here or in a standby) to reconcile anew.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from pydantic import ValidationError

from .backends.base import LAUNCH_FAILED, LOST, Backend, Exit, Found, LaunchError
from .lease import Lease
from .loans import with_loans
from .records import new_agent_token, spec_of, token_digest
from .redis_outage import UNAVAILABLE, OutageLog
from .service import Farm, needs, pending_build
from .spec import BuildSpec
from .states import ACTIVE, TERMINAL, TERMINAL_STATES, State
from .placement.feasible import NOTHING, Running, Team, team_usage
from .placement.rank import dominant_share
from .placement.select import Policy, plan, pool_of

log = logging.getLogger("buildfarm.scheduler")

MISSING_PYTHON = 127
MAX_LAUNCHES = 5  # a build lost before its agent started is placed again, this many times at most
PREEMPT_CLEANUP = 60.0  # seconds a preempted build waits for its container to go before it may run again
QUEUE_CHECK_EVERY = 30.0  # seconds between checks that every queued record is in a queue


class Scheduler:
    def __init__(self, farm: Farm, backend: Backend, lease: Lease | None = None):
        self.lease = lease
        self._term = lease.value if lease else None  # the lease this loop schedules under
        self.farm = farm.fenced(lease) if lease else farm
        self.backend = backend
        self.settings = farm.settings
        self._exits: collections.deque[Exit] = collections.deque()
        self._waiting_reason: dict[str, str] = {}
        self._held: dict[str, str] = {}  # agents reclaim freed, held for the build they were freed for
        self.stopping = threading.Event()
        self.outage = OutageLog(log, "scheduler")
        self._queue_checked = 0.0

    # called from backend threads
    def on_exit(self, event: Exit) -> None:
        self._exits.append(event)
        self._wake("exit")

    def _wake(self, why: str) -> None:
        try:
            self.farm.builds.wake(why)
        except UNAVAILABLE:
            pass  # the loop is waiting for Redis; it handles what is queued here when Redis is back

    # -- the loop -------------------------------------------------------------------------------
    def leading(self) -> bool:
        """Whether this loop may still act: no lease (a single farm), or still the term's lease."""
        return self.lease is None or (self.lease.held() and self.lease.value == self._term)

    def run(self) -> None:
        """Schedule until stopped or, with a lease, until it is lost."""
        recovered = False
        while not self.stopping.is_set() and self.leading():
            if self.backend.fatal:  # the backend cannot go on (Mesos refused us)
                raise LaunchError(self.backend.fatal)
            try:
                if not recovered:
                    self.recover()
                    recovered = True
                busy = self.tick()
                self.outage.ok()
                idle = 4.0 if self.lease is None else min(4.0, self.lease.ttl)  # under SOCKET_TIMEOUT; a lost lease
                why = self.farm.builds.wait_for_wakeup(1.0 if busy else idle)
                if why and not self.leading():
                    self._wake(why)  # not ours to act on any more: pass it to the leader
            except UNAVAILABLE as e:  # Redis restarting or stopped: say so once, then wait for it
                self.outage.away(e)
                self.stopping.wait(1.0)
            except Exception:  # the engine away for a moment: never let the loop die
                if self.backend.fatal:
                    continue  # what interrupted the round was the backend's end: raised above, once
                log.exception("scheduler round failed; retrying in 1 s")
                self.stopping.wait(1.0)

    def stop(self) -> None:
        self.stopping.set()
        self._wake("stop")

    def tick(self) -> bool:
        """One round. Returns whether anything is in flight (then the loop wakes every second
        to watch timeouts)."""
        while self._exits:
            ev = self._exits.popleft()
            self.handle_exit(ev)
            if ev.ack:  # recorded: the backend may now acknowledge it (Mesos status updates)
                ev.ack()
        active = self.check_active()
        if time.monotonic() - self._queue_checked > QUEUE_CHECK_EVERY:
            self.restore_queue()
        queued = self.place()
        self.backend.settle(queued)
        free = {o.agent_id: o.free for o in self.backend.offers()}
        self.farm.builds.publish_agents([_agent_json(a, self.backend.name, free.get(a.agent_id))
                                         for a in self.backend.agents()])
        return bool(active or queued)

    # -- placement ------------------------------------------------------------------------------
    def teams_round(self, now: float) -> tuple[dict[str, Team] | None, list[Running]]:
        """The teams as the core sees them this round (loans applied, those out of credits kept
        within their guarantee) and what runs; the market's issue and settlement and the share
        samples happen here, every round, whether or not builds wait. (None, []) without teams."""
        teams = self.farm.teams.core_teams() or None
        if not teams:
            return None, []
        s = self.settings
        running = self.running()
        if s.credit_period > 0:  # credits follow the teams' own guarantees, loans or not
            self.farm.ledger.issue_once(teams, s.credit_period, now)
        teams = with_loans(teams, self.farm.loans.all(now), now)
        if s.credit_period > 0:
            teams = self.market_round(teams, running, now)
        pool = pool_of(self.backend.agents(), self.backend.offers())
        used = team_usage(running)
        self.farm.stats.sample_shares(now, {n: round(dominant_share(used.get(n, NOTHING), pool), 4) for n in teams})
        return teams, running

    def place(self) -> int:
        builds = self.farm.builds
        now = time.time()
        teams, running = self.teams_round(now)
        pending_ids = self.farm.queue.pending()
        if not pending_ids:
            return 0
        raws = {}
        for (priority, bid), h in zip(pending_ids, builds.raw_many(bid for _, bid in pending_ids)):
            if not h:
                self.farm.queue.drop(bid, priority)
                continue
            if h["state"] != State.QUEUED.value:  # ended while queued (a cancel): tidy the queue
                self.farm.queue.mark_ended(bid, priority, State(h["state"])) if h["state"] in TERMINAL_STATES else None
                continue
            if h.get("preempting") and time.time() - float(h["preempting"]) < PREEMPT_CLEANUP:
                continue  # its preempted container is still being stopped
            raws[bid] = h
        pending, specs = [], {}
        for bid, h in list(raws.items()):
            try:
                specs[bid] = spec_of(h)  # parsed once for the round
                if specs[bid].team and specs[bid].team not in (teams or {}):  # queued again after its team was deleted
                    raws.pop(bid)
                    self.farm.end(bid, State.CANCELLED, f"team {specs[bid].team} deleted",
                                  allowed_from=[State.QUEUED], close_log=True)
                    continue
                pending.append(pending_build(bid, specs[bid], int(h["seq"]),
                                             float(h.get("queued_at") or h["created_at"])))
            except ValidationError as e:  # one unreadable record must not stop every other build
                raws.pop(bid)
                self.farm.end(bid, State.ERROR, f"its stored spec is not valid any more: {e.errors()[0]['msg']}",
                              close_log=True)
        s = self.settings
        result = plan(self.backend.agents(), self.backend.offers(), pending, teams=teams, running=running, now=now,
                      policy=Policy(reclaim_grace=s.reclaim_grace, max_preemptions=s.max_preemptions),
                      held=self._held)
        self._held = result.freed_for
        for kill in result.kills:
            self.preempt(kill.build_id, kill.reason)
        for bid, reason in result.held.items():
            if self._waiting_reason.get(bid) != reason:
                self._waiting_reason[bid] = reason
                builds.set_fields(bid, reason=f"waiting: {reason}")
        for bid, reason in result.impossible.items():
            if specs[bid].wait_for_capacity:
                if self._waiting_reason.get(bid) != reason:
                    self._waiting_reason[bid] = reason
                    builds.set_fields(bid, reason=f"waiting for capacity: {reason}")
            else:
                self.farm.end(bid, State.ERROR, reason, close_log=True)
        for launch in result.launches:
            self.launch(launch.build_id, launch.agent_id, raws[launch.build_id], specs[launch.build_id])
        return len(pending) - len(result.launches)

    def market_round(self, teams: dict[str, Team], running: list[Running], now: float) -> dict[str, Team]:
        """Charge the borrowing since the last round, and return the teams with those out of credits
        kept within their guarantee."""
        ledger = self.farm.ledger
        ledger.settle_since_last(teams, team_usage(running), pool_of(self.backend.agents(), self.backend.offers()), now)
        return ledger.may_borrow(teams)

    def running(self) -> list[Running]:
        """What the active builds hold now, as the core's reclaim step sees it."""
        out = []
        ids = self.farm.builds.active_ids()
        for bid, h in zip(ids, self.farm.builds.raw_many(ids)):
            if h.get("state") not in (State.LAUNCHING.value, State.RUNNING.value) or not h.get("spec"):
                continue
            spec = spec_of(h)
            out.append(Running(bid, h.get("agent_id") or "", needs(spec), spec.team, float(h.get("launched_at") or 0),
                               spec.preemptible, int(h.get("preemptions") or 0)))
        return out

    def preempt(self, build_id: str, reason: str) -> None:
        """Stop a borrowed build and queue it again at the front of its team's queue (its place in
        arrival order is kept). Not a failure: its retries are untouched."""
        if self.farm.preempt(build_id, reason):
            log.info("build %s %s", build_id, reason)
            self.backend.kill(build_id)

    def launch(self, build_id: str, agent_id: str, raw: dict, spec: BuildSpec) -> None:
        builds = self.farm.builds
        attempt = int(raw.get("attempt", 0)) + 1
        builds.add_active(build_id)  # first, so a crash from here on is found by recover()
        token = new_agent_token()  # this attempt's; an earlier attempt's died when it was requeued
        agent = next((a for a in self.backend.agents() if a.agent_id == agent_id), None)
        # Fenced: refused if this scheduler's lease is gone, so a deposed leader changes nothing.
        if not builds.transition(build_id, State.LAUNCHING, f"placed on {agent_id}",
                                 agent_id=agent_id, host=agent.host if agent else "", attempt=attempt,
                                 launched_at=time.time(), token_sha=token_digest(token)):
            if self.leading():  # a leader deposed meanwhile leaves it to the next term
                builds.drop_active(build_id)
            return
        if not self.leading():  # paused past the lease since the write: the next leader requeues it
            log.warning("not launching build %s: this scheduler lost its lease", build_id)
            return
        self._waiting_reason.pop(build_id, None)
        self.farm.queue.mark_started(build_id, raw["priority"], spec.timeout)
        if not spec.commit and raw.get("pinned_commit"):  # the commit its ref had at submit time
            spec = spec.model_copy(update={"commit": raw["pinned_commit"]})
        self.backend.launch(build_id, attempt, spec, token, agent_id)

    # -- watching what runs ----------------------------------------------------------------------
    def check_active(self) -> int:
        now = time.time()
        s = self.settings
        ids = self.farm.builds.active_ids()
        for bid in ids:
            try:
                h = self.farm.builds.raw(bid)
            except KeyError:
                self.farm.builds.drop_active(bid)
                continue
            state = State(h["state"])
            if state in TERMINAL:
                # Ended by the agent, a cancel or a timeout: make sure the container goes.
                if not h.get("kill_sent"):
                    self.farm.builds.set_fields(bid, kill_sent=now)
                    self.backend.kill(bid)
                elif now - float(h["kill_sent"]) > 30:
                    self._finish_cleanup(bid)  # the container is gone or the engine lost it
                continue
            if state is State.QUEUED:  # requeued: no longer ours to watch
                self.farm.builds.drop_active(bid)
                continue
            if state is State.LAUNCHING and now - float(h.get("launched_at") or now) > s.start_timeout:
                self._stop(bid, State.ERROR, f"the agent did not start within {s.start_timeout:.0f} s "
                                             f"(is the image's python3 working? is the API at {s.api_url} reachable?)")
            elif state is State.RUNNING:
                spec = spec_of(h)
                started = float(h.get("started_at") or now)
                if now - started > spec.timeout:
                    self._stop(bid, State.TIMED_OUT, f"timed out after {spec.timeout} s")
                elif now - float(h.get("last_seen") or started) > s.heartbeat_timeout:
                    self._stop(bid, State.ERROR, f"no output or heartbeat from the agent for "
                                                 f"{s.heartbeat_timeout:.0f} s")
        return len(ids)

    def _stop(self, build_id: str, state: State, reason: str) -> None:
        if self.farm.end(build_id, state, reason):
            self.farm.builds.set_fields(build_id, kill_sent=time.time())
            self.backend.kill(build_id)

    def handle_exit(self, ev: Exit) -> None:
        builds = self.farm.builds
        try:
            h = builds.raw(ev.build_id)
        except KeyError:
            self.backend.cleanup(ev.build_id)
            return
        if int(h.get("attempt", 0)) != ev.attempt and State(h["state"]) not in TERMINAL:
            return  # an earlier attempt's end: it was cleaned up when the build was requeued
        state = State(h["state"])
        if state is State.QUEUED and h.get("preempting"):  # a preempted attempt ended: it may run again
            self.backend.cleanup(ev.build_id)
            builds.set_fields(ev.build_id, preempting="")
            builds.wake("preempted")
            return
        if state in ACTIVE:
            # The container ended without the agent reporting a result.
            spec = spec_of(h)
            if ev.kind == LAUNCH_FAILED:
                self.farm.end(ev.build_id, State.ERROR, ev.detail)
            elif ev.kind == LOST and state is State.LAUNCHING and int(h.get("attempt", 0)) >= MAX_LAUNCHES:
                self.farm.end(ev.build_id, State.ERROR, f"{ev.detail} (launched {MAX_LAUNCHES} times; giving up)")
            elif ev.kind == LOST and state is State.LAUNCHING:
                # The agent never started the steps: running it elsewhere cannot run it twice.
                self.backend.cleanup(ev.build_id)
                self.farm.requeue(ev.build_id, ev.detail)
            elif ev.kind == LOST:
                self._retry_or_error(ev.build_id, h, spec, ev.detail)
            elif ev.code == MISSING_PYTHON:
                self.farm.end(ev.build_id, State.ERROR, f"image {spec.image!r} cannot run the agent: it needs "
                                                        f"python3 and git (exit 127: {ev.detail[-200:]})")
            elif "out of memory" in ev.detail:
                self.farm.end(ev.build_id, State.FAILED, ev.detail, exit_code=137)
            else:
                reason = f"the build container exited with status {ev.code} before the agent reported a result"
                if ev.detail:
                    reason += f": {ev.detail[-300:]}"
                self._retry_or_error(ev.build_id, h, spec, reason)
        self._finish_cleanup(ev.build_id)

    def _retry_or_error(self, build_id: str, h: dict, spec: BuildSpec, reason: str) -> None:
        used = int(h.get("retries_used") or 0)
        if used < spec.retries:
            self.backend.cleanup(build_id)
            self.farm.builds.set_fields(build_id, retries_used=used + 1)
            self.farm.requeue(build_id, f"{reason} (retry {used + 1} of {spec.retries})")
        else:
            self.farm.end(build_id, State.ERROR, reason)

    def _finish_cleanup(self, build_id: str) -> None:
        self.backend.cleanup(build_id)
        h = self.farm.builds.raw(build_id)
        if State(h["state"]) in TERMINAL:
            self.farm.logs.close(build_id)
            self.farm.builds.drop_active(build_id)

    # -- after a restart ----------------------------------------------------------------------------
    def recover(self) -> None:
        """Match what the backend runs with what Redis says is launched: adopt what still runs,
        settle what ended while the farm was down, requeue what never started."""
        found: dict[str, Found] | None = self.backend.recover()
        builds = self.farm.builds
        # Launched builds, also those a failover left out of the active set (its write was lost).
        active = set(builds.active_ids()) | builds.ids_in_state(State.LAUNCHING) | builds.ids_in_state(State.RUNNING)
        self.restore_queue()
        if found is None:  # the backend reconciles by itself (Mesos): settle only what ended
            ids = sorted(active)
            for bid, h in zip(ids, builds.raw_many(ids)):
                if not h or h["state"] in TERMINAL_STATES or h["state"] == State.QUEUED.value:
                    self._finish_cleanup(bid) if h else self.farm.builds.drop_active(bid)
                else:
                    self.backend.adopt(bid, spec_of(h))
            return
        for bid in sorted(active | set(found)):
            try:
                h = self.farm.builds.raw(bid)
            except KeyError:
                if bid in found:
                    log.warning("repaired: removed the container of build %s, of which Redis has no record "
                                "(lost with a Redis failover?)", bid)
                self.backend.cleanup(bid)
                self.farm.builds.drop_active(bid)
                continue
            state = State(h["state"])
            f = found.get(bid)
            if f is not None and f.attempt != int(h.get("attempt", 0)):
                self.backend.cleanup(bid)  # a stale attempt
                f = None
            if state in TERMINAL:
                self._finish_cleanup(bid)
            elif state is State.QUEUED:
                self.farm.builds.drop_active(bid)
            elif f is not None and f.running:
                log.info("adopting build %s (attempt %s)", bid, f.attempt)
                self.farm.builds.add_active(bid)
                self.backend.adopt(bid, spec_of(h))
            elif f is not None:
                self.handle_exit(Exit(bid, f.attempt, f.code if f.code is not None else -2, ""))
            elif state is State.LAUNCHING:
                # Recorded as launching but no container: it never started. Not the build's fault.
                log.info("repaired: build %s was launching with no container; queued again", bid)
                self.farm.requeue(bid, "the farm stopped before the container started")
            else:
                log.warning("repaired: build %s was running but its container is gone", bid)
                spec = spec_of(h)
                self._retry_or_error(bid, h, spec, "its container disappeared while the farm was down")
                self.farm.builds.drop_active(bid)

    def restore_queue(self) -> None:
        """Queue again the builds recorded as queued that no queue holds: their enqueue was lost (a
        Redis failover that did not replicate it, or a deposed leader's late write)."""
        self._queue_checked = time.monotonic()
        queued = self.farm.builds.ids_in_state(State.QUEUED)
        if not queued:
            return
        missing = queued - {bid for _, bid in self.farm.queue.pending()}
        ids = sorted(missing)
        for bid, h in zip(ids, self.farm.builds.raw_many(ids)):
            if h.get("state") != State.QUEUED.value or float(h["updated_at"]) > time.time() - 5:
                continue  # moved on since the index was read, or being submitted or requeued right now
            log.warning("repaired: build %s was queued but in no queue; queued again", bid)
            self.farm.queue.restore(bid, h["priority"], f"build {bid} (restored)")



def _agent_json(agent, backend_name: str, free) -> dict:
    c = agent.capacity
    return {
        "agent_id": agent.agent_id,
        "host": agent.host,
        "backend": backend_name,
        "attributes": dict(agent.attributes),
        "capacity": {"cpus": c.cpus, "mem": c.mem, "disk": c.disk},
        "free": {"cpus": free.cpus, "mem": free.mem, "disk": free.disk} if free else None,
    }
