"""Waking the API's waiting requests when something they wait for happens, without polling.

`Notifier` wakes async waiters by key (a build's log grew, a build's state changed, a pipeline run
changed); it may be called from any thread. `Subscription` relays Redis pub/sub messages to a
Notifier, so a change made by another process (the scheduler, another API replica) wakes this
process's waiters as soon as Redis delivers it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import redis

log = logging.getLogger(__name__)

RECHECK = 5.0  # seconds after which a waiter looks again anyway (a message lost with a connection)


class Notifier:
    """Wakes async waiters of a key. Safe to call from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def notify(self, key: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(key, ()))
        self._wake(waiters)

    def notify_all(self) -> None:
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
        self._wake(waiters)

    @staticmethod
    def _wake(waiters) -> None:
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed
                pass

    @contextmanager
    def _registered(self, key: str):
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.setdefault(key, set()).add(entry)
        try:
            yield event
        finally:
            with self._lock:
                s = self._waiters.get(key)
                if s:
                    s.discard(entry)
                    if not s:
                        del self._waiters[key]

    async def wait(self, key: str, timeout: float) -> None:
        """Return when `key` is notified or `timeout` passes (whichever first)."""
        with self._registered(key) as event:
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                pass

    async def wait_until(self, key: str, ready: Callable[[], bool], timeout: float) -> bool:
        """Return True as soon as `ready()` is true (looked at now and after each notification of
        `key`), False after `timeout`. The waiter is registered before the first look, so a change
        between the look and the wait is not missed."""
        end = time.monotonic() + timeout
        with self._registered(key) as event:
            while not ready():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                try:
                    await asyncio.wait_for(event.wait(), min(left, RECHECK))
                except TimeoutError:
                    pass
                event.clear()
            return True


class Subscription:
    """A thread that subscribes to Redis channels and notifies `notifier` with the key
    "CHANNEL MESSAGE" for each message. After a lost connection it subscribes again and wakes every
    waiter (a message may have been missed meanwhile)."""

    def __init__(self, r: redis.Redis, channels: Iterable[str], notifier: Notifier):
        self.r, self.channels, self.notifier = r, list(channels), notifier
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-subscription", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(*self.channels)
                if failures:
                    log.info("subscribed again to %s", ", ".join(self.channels))
                    self.notifier.notify_all()
                failures = 0
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg and msg["type"] == "message":
                        self.notifier.notify(key(msg["channel"], msg["data"]))
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                if not failures:
                    log.warning("lost the subscription to %s (%s); waiters look every %.0f s until it is back",
                                ", ".join(self.channels), e, RECHECK)
                failures += 1
                self._stop.wait(min(failures, 5))
            finally:
                try:
                    pubsub.close()
                except Exception:  # closing a broken connection
                    pass


def key(channel: str, message: str) -> str:
    """The Notifier key under which a Subscription relays `message` on `channel`."""
    return f"{channel} {message}"
