"""The schedulers' lease in Redis: one leader at a time, with a fencing token.

Every `buildfarm scheduler` (and `buildfarm up`) is a candidate. The one that sets the lease key
leads: the key holds "FENCE HOLDER", where FENCE comes from a counter that only grows, and has a
TTL of a few seconds that the leader renews. A candidate that finds the key gone takes it with the
next FENCE. The leader's writes of a placement check, in the same Lua step as the state change
(records.BuildStore), that the key still holds its value: a leader that was paused past its TTL
and wakes finds its writes refused, so it cannot launch or change a build.

A leader also ends its term when Redis's primary changes (a Sentinel failover): replication is
asynchronous, so the new primary may have lost recent writes, and the next term reconciles first.

Each candidate publishes a heartbeat (`bf:schedulers`), which `GET /api/v1/schedulers` shows.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

import redis

from .keys import LEASE, LEASE_FENCE, LEASE_LEADER, SCHEDULERS

log = logging.getLogger("buildfarm.lease")


# KEYS: lease, fence counter, leader hash. ARGV: holder, ttl ms, now. Returns the lease value held.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sp = string.find(cur, ' ', 1, true)
  if string.sub(cur, sp + 1) == ARGV[1] then return cur end
  return false
end
local fence = redis.call('INCR', KEYS[2])
local value = fence .. ' ' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
redis.call('HSET', KEYS[3], 'holder', ARGV[1], 'fence', fence, 'since', ARGV[3], 'renewed', ARGV[3])
return value
"""

# KEYS: lease, leader hash. ARGV: the value held, ttl ms, now.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'renewed', ARGV[3])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """This process's candidacy. `value` is the lease it holds ("FENCE HOLDER"), or None."""

    key = LEASE

    def __init__(self, r: redis.Redis, ttl: float = 5.0, holder: str | None = None):
        self.r = r
        self.ttl = ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.value: str | None = None
        self.deadline = 0.0  # monotonic time until which the lease is surely ours
        self.lost = threading.Event()  # set when a held lease ends (renewal refused, primary changed)
        self._primary: str | None = None
        self._acquire = r.register_script(_ACQUIRE)
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)

    @property
    def fence(self) -> int | None:
        return int(self.value.split(" ", 1)[0]) if self.value else None

    def held(self) -> bool:
        """Whether this process may act as the leader now: it holds the lease and its TTL, counted
        from before the last renewal was sent, has not run out (a pause past it makes this false)."""
        return self.value is not None and time.monotonic() < self.deadline and not self.lost.is_set()

    def try_acquire(self) -> bool:
        sent = time.monotonic()
        value = self._acquire(keys=[LEASE, LEASE_FENCE, LEASE_LEADER],
                              args=[self.holder, int(self.ttl * 1000), time.time()])
        if not value:
            return False
        self.value, self.deadline = value, sent + self.ttl
        self._primary = primary_id(self.r)
        self.lost.clear()
        return True

    def renew(self) -> bool:
        """Extend the lease; False (and `lost` set) if it is no longer ours or Redis's primary changed."""
        if self.value is None:
            return False
        sent = time.monotonic()
        why = None
        if primary_id(self.r) != self._primary:
            why = "Redis's primary changed (a failover): a new term reconciles first"
        elif not self._renew(keys=[LEASE, LEASE_LEADER], args=[self.value, int(self.ttl * 1000), time.time()]):
            why = "another scheduler holds the lease now"
        if why:
            self.drop(why)
            return False
        self.deadline = sent + self.ttl
        return True

    def drop(self, why: str) -> None:
        if self.value is not None:
            log.warning("scheduler %s is no longer the leader (fence %s): %s", self.holder, self.fence, why)
        self.value = None
        self.lost.set()

    def release(self) -> None:
        """Give the lease up at once (a clean stop), so a standby need not wait for the TTL."""
        if self.value is not None:
            try:
                self._release(keys=[LEASE], args=[self.value])
            except redis.RedisError:
                pass
        self.value = None

    def heartbeat(self, role: str) -> None:
        self.r.hset(SCHEDULERS, self.holder, json.dumps({
            "id": self.holder, "host": socket.gethostname(), "pid": os.getpid(), "role": role,
            "fence": self.fence, "last_seen": time.time()}))

    def forget(self) -> None:
        try:
            self.r.hdel(SCHEDULERS, self.holder)
        except redis.RedisError:
            pass


def primary_id(r: redis.Redis) -> str:
    """The run id of the Redis server answering: it changes when a replica is promoted."""
    return r.info("server")["run_id"]


class Candidate:
    """A thread that keeps this process a candidate: standby, it tries to take the lease every
    round; leader, it renews it every third of the TTL. `on_change` is called when it wins or loses."""

    def __init__(self, lease: Lease, on_change=lambda leading: None):
        self.lease = lease
        self.on_change = on_change
        self.stopping = threading.Event()
        self._said_standby = False
        self.thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def start(self) -> Candidate:
        self.thread.start()
        return self

    def _run(self) -> None:
        lease = self.lease
        while not self.stopping.is_set():
            try:
                self._round()
            except redis.RedisError as e:
                if lease.value is not None and time.monotonic() >= lease.deadline:
                    lease.drop(f"Redis did not answer for longer than the lease ({e})")
                    self._changed(False)
            self.stopping.wait(self.lease.ttl / (3 if lease.value else 5))

    def _round(self) -> None:
        lease = self.lease
        if lease.value is not None:
            if not lease.renew():
                self._changed(False)
        elif lease.try_acquire():
            log.info("scheduler %s leads (fence %s)", lease.holder, lease.fence)
            self._changed(True)
        elif not self._said_standby:
            self._said_standby = True
            log.info("scheduler %s stands by: %s leads", lease.holder,
                     (lease.r.get(LEASE) or "another scheduler").split(" ", 1)[-1])
        lease.heartbeat("leader" if lease.value else "standby")

    def _changed(self, leading: bool) -> None:
        try:
            self.on_change(leading)
        except Exception as e:  # the listener's trouble (Redis away) must not end the candidacy
            log.warning("reacting to the lease's change failed: %s", e)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.lease.release()
        self.lease.forget()


def describe(r: redis.Redis, ttl_hint: float = 5.0) -> dict[str, Any]:
    """Who leads since when, the standbys and their last heartbeat (for the API and dashboard)."""
    leader = r.hgetall(LEASE_LEADER)
    value = r.get(LEASE)
    holder = value.split(" ", 1)[1] if value else None
    now = time.time()
    seen = [json.loads(v) for v in r.hgetall(SCHEDULERS).values()]
    for s in seen:
        s["age"] = round(now - s["last_seen"], 1)
    live = [s for s in seen if s["age"] < 10 * ttl_hint]
    return {
        "leader": {"id": holder, "fence": int(leader.get("fence", 0)), "since": float(leader["since"]),
                   "renewed": float(leader.get("renewed", leader["since"]))} if holder and leader.get("holder") == holder
        else None,
        "fence": int(r.get(LEASE_FENCE) or 0),
        "standbys": sorted((s for s in live if s["id"] != holder), key=lambda s: s["id"]),
        "schedulers": sorted(live, key=lambda s: s["id"]),
    }
