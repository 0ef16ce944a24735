"""The scheduler loop in process: a real Redis and Farm, a backend that only records what it is
asked, and the exits and restarts a real backend reports. Each kind of container end is one row
of a table, so what the loop does with it is read in one place (the end-to-end tests in
test_farm_e2e, test_restart and test_mesos_e2e drive the same paths through real containers)."""

from __future__ import annotations

import time

import pytest

from buildfarm.backends.base import EXITED, LAUNCH_FAILED, LOST, Exit, Found
from buildfarm.placement import Agent, Offer, Resources
from buildfarm.scheduler import MAX_LAUNCHES, Scheduler
from buildfarm.scopes import Origin
from buildfarm.spec import BuildSpec
from buildfarm.states import State


class RecordingBackend:
    """One agent of 2 cpus / 2 GB; launches take capacity until the build is cleaned up."""

    name = "recording"
    fatal = None

    def __init__(self):
        self.agent = Agent("node-1", "127.0.0.1", Resources(2.0, 2048), {"arch": "x86_64"})
        self.running: dict[str, Resources] = {}
        self.launched: list[tuple[str, int]] = []
        self.tokens: dict[str, str] = {}  # build id -> its current attempt's agent token
        self.killed: list[str] = []
        self.adopted: list[str] = []
        self.found: dict[str, Found] | None = {}

    def agents(self):
        return [self.agent]

    def offers(self):
        free = self.agent.capacity
        for r in self.running.values():
            free = free.minus(r)
        return [Offer(self.agent.agent_id, free)]

    def check_image(self, image):
        return None

    def launch(self, build_id, attempt, spec, token, agent_id):
        self.launched.append((build_id, attempt))
        self.tokens[build_id] = token
        self.running[build_id] = Resources(spec.resources.cpus, spec.resources.mem)

    def kill(self, build_id):
        self.killed.append(build_id)

    def cleanup(self, build_id):
        self.running.pop(build_id, None)

    def recover(self):
        return self.found

    def adopt(self, build_id, spec):
        self.adopted.append(build_id)

    def settle(self, pending):
        pass

    def teardown(self):
        pass

    def close(self):
        pass


@pytest.fixture
def farm(make_farm):
    return make_farm()


@pytest.fixture
def backend():
    return RecordingBackend()


@pytest.fixture
def scheduler(farm, backend):
    s = Scheduler(farm, backend)
    s.tick()  # publishes the agent, so submits can check capacity against it
    return s


def submit(farm, **fields) -> str:
    spec = BuildSpec(**{"repo": "git://127.0.0.1/app.git", "image": "img", "command": ["make"],
                        "resources": {"cpus": 1, "mem": 256}, **fields})
    return farm.submit(spec, Origin.token("alice", "submitter"))["id"]


def record(farm, build_id) -> dict:
    return farm.builds.get(build_id)


def launched_and_started(farm, scheduler, **fields) -> str:
    bid = submit(farm, **fields)
    scheduler.tick()
    farm.agent_start(bid, scheduler.backend.tokens[bid], "node-1")
    return bid


def test_a_queued_build_is_launched_once_on_the_offer(farm, backend, scheduler):
    bid = submit(farm)
    assert record(farm, bid)["state"] == "queued"
    scheduler.tick()
    scheduler.tick()
    assert backend.launched == [(bid, 1)]
    r = record(farm, bid)
    assert r["state"] == "launching" and r["agent_id"] == "node-1"


def test_builds_beyond_the_offer_wait_in_the_queue(farm, backend, scheduler):
    ids = [submit(farm) for _ in range(3)]  # 1 cpu each on a 2-cpu node
    scheduler.tick()
    assert [b for b, _ in backend.launched] == ids[:2]
    assert record(farm, ids[2])["state"] == "queued"
    farm.agent_start(ids[0], backend.tokens[ids[0]], "node-1")
    farm.agent_finish(ids[0], backend.tokens[ids[0]], "succeeded", 0, "", None)
    scheduler.on_exit(Exit(ids[0], 1, 0))
    scheduler.tick()
    assert [b for b, _ in backend.launched] == ids


def test_a_build_no_agent_can_run_ends_error_saying_why(farm, backend, scheduler):
    bid = submit(farm, resources={"cpus": 1, "mem": 256}, constraints=["arch:x86_64"])
    backend.agent = Agent("node-1", "127.0.0.1", Resources(2.0, 2048), {"arch": "aarch64"})
    scheduler.tick()
    r = record(farm, bid)
    assert r["state"] == "error" and "arch" in r["reason"], r["reason"]
    assert backend.launched == []


# kind, code, detail, state at the exit, retries -> state after, what the reason says, relaunched
EXITS = [
    pytest.param(LAUNCH_FAILED, 1, "image 'img' not found", State.LAUNCHING, 2,
                 "error", "image 'img' not found", False, id="launch-failed-is-never-retried"),
    pytest.param(LOST, -1, "agent node-1 lost", State.LAUNCHING, 0,
                 "queued", "agent node-1 lost", True, id="lost-before-start-is-requeued-without-retries"),
    pytest.param(LOST, -1, "agent node-1 lost", State.RUNNING, 1,
                 "queued", "retry 1 of 1", True, id="lost-while-running-uses-a-retry"),
    pytest.param(LOST, -1, "agent node-1 lost", State.RUNNING, 0,
                 "error", "agent node-1 lost", False, id="lost-while-running-without-retries-is-an-error"),
    pytest.param(EXITED, 127, "python3: not found", State.RUNNING, 2,
                 "error", "cannot run the agent", False, id="no-python3-in-the-image"),
    pytest.param(EXITED, 137, "out of memory (limit 256 MB)", State.RUNNING, 2,
                 "failed", "out of memory", False, id="out-of-memory-is-the-builds-failure"),
    pytest.param(EXITED, 3, "agent crashed", State.RUNNING, 1,
                 "queued", "exited with status 3 before the agent reported", True, id="silent-exit-uses-a-retry"),
    pytest.param(EXITED, 3, "agent crashed", State.RUNNING, 0,
                 "error", "exited with status 3 before the agent reported", False, id="silent-exit-without-retries"),
]


@pytest.mark.parametrize("kind, code, detail, at, retries, after, reason, relaunched", EXITS)
def test_each_kind_of_exit(farm, backend, scheduler, kind, code, detail, at, retries, after, reason, relaunched):
    bid = submit(farm, retries=retries)
    scheduler.tick()
    if at is State.RUNNING:
        farm.agent_start(bid, backend.tokens[bid], "node-1")
    scheduler.on_exit(Exit(bid, 1, code, detail, kind))
    scheduler.handle_exit(scheduler._exits.popleft())
    r = record(farm, bid)
    assert r["state"] == after, r["reason"]
    assert reason in r["reason"], r["reason"]
    if after == "failed":
        assert r["exit_code"] == 137
    scheduler.tick()
    assert backend.launched == ([(bid, 1), (bid, 2)] if relaunched else [(bid, 1)])


def test_a_build_lost_before_start_again_and_again_ends_error_saying_so(farm, backend, scheduler):
    bid = submit(farm)
    for attempt in range(1, MAX_LAUNCHES + 1):
        scheduler.tick()
        scheduler.on_exit(Exit(bid, attempt, -1, "the agent could not be fetched from the farm", LOST))
        scheduler.handle_exit(scheduler._exits.popleft())
    r = record(farm, bid)
    assert r["state"] == "error" and f"launched {MAX_LAUNCHES} times; giving up" in r["reason"], r["reason"]
    assert len(backend.launched) == MAX_LAUNCHES


def test_an_earlier_attempts_exit_is_ignored(farm, backend, scheduler):
    bid = launched_and_started(farm, scheduler, retries=1)
    scheduler.on_exit(Exit(bid, 1, -1, "agent lost", LOST))
    scheduler.tick()  # requeued and launched again as attempt 2
    farm.agent_start(bid, backend.tokens[bid], "node-1")
    scheduler.on_exit(Exit(bid, 1, 9, "the first container's late exit"))
    scheduler.tick()
    r = record(farm, bid)
    assert (r["state"], r["attempt"]) == ("running", 2)


def test_an_exit_after_the_agent_reported_keeps_its_result(farm, backend, scheduler):
    bid = launched_and_started(farm, scheduler)
    farm.agent_finish(bid, backend.tokens[bid], "failed", 7, "", None)
    scheduler.on_exit(Exit(bid, 1, 7))
    scheduler.tick()
    r = record(farm, bid)
    assert (r["state"], r["exit_code"]) == ("failed", 7)
    assert bid not in backend.running  # cleaned up once its end was recorded


@pytest.mark.parametrize("phase, field, setting, state, reason", [
    ("launching", "launched_at", "start_timeout", "error", "did not start within"),
    ("running", "last_seen", "heartbeat_timeout", "error", "no output or heartbeat"),
    ("running", "started_at", None, "timed_out", "timed out after 60 s"),
])
def test_every_phase_has_a_timeout(farm, backend, scheduler, phase, field, setting, state, reason):
    bid = submit(farm, timeout=60)
    scheduler.tick()
    if phase == "running":
        farm.agent_start(bid, backend.tokens[bid], "node-1")
    limit = getattr(farm.settings, setting) if setting else 60
    farm.builds.set_fields(bid, **{field: time.time() - limit - 1})
    scheduler.tick()
    r = record(farm, bid)
    assert r["state"] == state and reason in r["reason"], r["reason"]
    assert backend.killed == [bid]


def test_a_cancelled_running_builds_container_is_killed_once(farm, backend, scheduler):
    bid = launched_and_started(farm, scheduler)
    farm.cancel(bid, "alice")
    scheduler.tick()
    scheduler.tick()
    assert backend.killed == [bid]
    assert record(farm, bid)["state"] == "cancelled"


def test_recover_adopts_settles_and_requeues(farm, backend, scheduler):
    still_running = launched_and_started(farm, scheduler, resources={"cpus": 0.5, "mem": 256})
    ended_meanwhile = launched_and_started(farm, scheduler, resources={"cpus": 0.5, "mem": 256})
    never_started = submit(farm, resources={"cpus": 0.5, "mem": 256})
    scheduler.tick()
    vanished = launched_and_started(farm, scheduler, resources={"cpus": 0.5, "mem": 256}, retries=0)
    assert record(farm, never_started)["state"] == "launching"

    # A new scheduler process: the backend reports what really runs.
    after = RecordingBackend()
    after.found = {still_running: Found(still_running, 1, True),
                   ended_meanwhile: Found(ended_meanwhile, 1, False, code=3)}
    Scheduler(farm, after).recover()

    assert after.adopted == [still_running]
    assert record(farm, still_running)["state"] == "running"
    assert record(farm, ended_meanwhile)["state"] == "error"
    assert "status 3" in record(farm, ended_meanwhile)["reason"]
    assert record(farm, never_started)["state"] == "queued"
    assert "before the container started" in record(farm, never_started)["reason"]
    assert record(farm, vanished)["state"] == "error"
    assert "disappeared while the farm was down" in record(farm, vanished)["reason"]
