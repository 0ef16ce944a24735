"""The Docker engine going away and coming back (dockerd restarted, crashed, upgraded).

The local backend's calls find out first: a call that cannot reach the engine hands the error to
`EngineWatch.lost`, which waits until the engine answers again. One thread pings (0.2 s, doubling to
2 s) and logs one line when the engine goes and one when it is back; then the callbacks run (the
warm pool is rebuilt) and every waiting call goes on. docker-py opens new connections by itself,
so nothing needs reconnecting by hand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("buildfarm.local")


def engine_unreachable(e: BaseException) -> bool:
    """The engine did not answer at all (its socket refused or closed), as opposed to an answer
    with an error, or a long wait that timed out."""
    import requests

    return isinstance(e, requests.exceptions.ConnectionError) and not isinstance(e, requests.exceptions.Timeout)


class EngineWatch:
    def __init__(self, ping: Callable[[], object]):
        self.ping = ping
        self.up = threading.Event()
        self.up.set()
        self.on_back: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.restarts = 0  # times it came back: a wait that saw one knows its container may have died

    @property
    def available(self) -> bool:
        return self.up.is_set()

    def lost(self, err: BaseException) -> None:
        """A call could not reach the engine: wait until it answers again."""
        with self._lock:
            if self.up.is_set():
                self.up.clear()
                log.warning("the Docker engine does not answer (%s); waiting for it: builds stay queued, and "
                            "running builds are settled or adopted when it is back", _short(err))
                threading.Thread(target=self._until_back, daemon=True, name="docker-engine-watch").start()
        self.up.wait()

    def _until_back(self) -> None:
        since, delay = time.monotonic(), 0.2
        while True:
            try:
                self.ping()
                break
            except Exception:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.restarts += 1
        log.warning("the Docker engine answers again after %.1f s", time.monotonic() - since)
        for callback in self.on_back:
            try:
                callback()
            except Exception as e:  # the pool is rebuilt on the next build's launch anyway
                log.warning("after the Docker engine came back: %s", e)
        self.up.set()


def _short(e: BaseException) -> str:
    text = str(e)
    return text if len(text) < 200 else text[:200] + "..."
