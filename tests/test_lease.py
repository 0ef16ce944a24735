"""The schedulers' lease and its fencing, in process on a real Redis: one holder at a time, a
fencing token that only grows, and a deposed leader whose writes Redis refuses even while its own
clock says it still leads (a pause between its check and its write)."""

from __future__ import annotations

import time

import pytest

from buildfarm import keys
from buildfarm import lease as leases
from buildfarm.lease import Lease
from buildfarm.redis_url import BadRedisUrl, parse_sentinel
from buildfarm.scheduler import Scheduler
from buildfarm.states import State

from .test_scheduler_loop import RecordingBackend, backend, farm, record, submit  # noqa: F401 (fixtures)


def expire(lease: Lease) -> None:
    """What the passing of the TTL does to a leader that stopped renewing."""
    lease.r.delete(keys.LEASE)


def leader(farm, backend, ttl: float = 5) -> tuple[Lease, Scheduler]:
    """A scheduler that took the lease and ran its first round (which publishes its agent)."""
    lease = Lease(farm.r, ttl=ttl)
    assert lease.try_acquire()
    scheduler = Scheduler(farm, backend, lease)
    scheduler.tick()
    return lease, scheduler


def test_one_holder_at_a_time_and_the_fence_grows(farm):
    a, b = Lease(farm.r, ttl=5), Lease(farm.r, ttl=5)
    assert a.try_acquire() and not b.try_acquire()
    assert a.renew() and a.held()
    first = a.fence
    expire(a)
    assert b.try_acquire() and b.fence == first + 1
    assert not a.renew() and not a.held()  # the old holder learns it lost
    assert leases.describe(farm.r)["leader"]["id"] == b.holder


def test_a_deposed_leader_that_believes_it_leads_places_and_changes_nothing(farm, backend):
    old, scheduler = leader(farm, backend)
    running = submit(farm)
    scheduler.tick()
    assert backend.launched == [(running, 1)]
    queued = submit(farm)

    expire(old)
    new = Lease(farm.r, ttl=5)
    assert new.try_acquire()
    old.deadline = time.monotonic() + 60  # its own clock says the lease is still good (it was paused)
    assert scheduler.leading()

    scheduler.tick()  # would place `queued`
    assert backend.launched == [(running, 1)]
    assert record(farm, queued)["state"] == "queued" and record(farm, queued)["attempt"] == 0
    # Nor may it end a build: a timeout it thinks it sees is refused in the same atomic step.
    assert not scheduler.farm.end(running, State.ERROR, "a stale leader's timeout")
    assert record(farm, running)["state"] == "launching"
    assert not scheduler.farm.builds.set_fields(running, kill_sent=1)
    # The API and agents do not hold the lease and are not fenced.
    assert farm.builds.transition(running, State.RUNNING, "agent started")


def test_a_leader_that_lost_its_lease_stops_its_loop_and_launches_nothing(farm, backend):
    _, scheduler = leader(farm, backend, ttl=1)
    bid = submit(farm)
    time.sleep(1.1)  # a pause past the TTL, with nobody renewing
    scheduler.run()  # returns at once: it is not the leader any more
    assert backend.launched == [] and record(farm, bid)["state"] == "queued"


def test_a_new_term_requeues_a_launch_its_deposed_predecessor_recorded_but_never_made(farm, backend):
    old, _ = leader(farm, backend)
    bid = submit(farm)
    backend.launch = lambda *a: None  # deposed between its fenced write and the launch: nothing starts
    Scheduler(farm, backend, old).tick()
    assert record(farm, bid)["state"] == "launching"
    expire(old)
    new = Lease(farm.r, ttl=5)
    assert new.try_acquire()
    backend.found = {}
    successor = Scheduler(farm, RecordingBackend(), new)
    successor.recover()
    successor.tick()
    assert successor.backend.launched == [(bid, 2)]


def test_a_queued_record_that_no_queue_holds_is_queued_again(farm, backend, caplog):
    bid = submit(farm)
    farm.queue.queues["normal"].remove(bid)  # its place in the queue was lost (a failover)
    farm.builds.set_fields(bid, updated_at=time.time() - 10)
    scheduler = Scheduler(farm, backend)
    scheduler.recover()
    scheduler.tick()
    assert backend.launched == [(bid, 1)]
    assert f"repaired: build {bid} was queued but in no queue" in caplog.text


@pytest.mark.parametrize("url, want", [
    ("redis+sentinel://127.0.0.1:26379/buildfarm",
     {"sentinels": [("127.0.0.1", 26379)], "service": "buildfarm", "db": 0, "password": None}),
    ("redis+sentinel://:s3cret@h1:1,h2:2/bf/3",
     {"sentinels": [("h1", 1), ("h2", 2)], "service": "bf", "db": 3, "password": "s3cret"}),
])
def test_sentinel_urls(url, want):
    got = parse_sentinel(url)
    assert {k: got[k] for k in want} == want


@pytest.mark.parametrize("url, says", [
    ("redis+sentinel://127.0.0.1:26379", "SERVICE"),
    ("redis+sentinel://:pw@127.0.0.1/bf", "HOST:PORT"),
    ("redis+sentinel://127.0.0.1:1/bf/x", "must be a number"),
])
def test_bad_sentinel_urls_say_what_to_write(url, says):
    with pytest.raises(BadRedisUrl, match=says) as e:
        parse_sentinel(url)
    assert "pw" not in str(e.value)
