"""A scheduler process's life as a candidate for the lease (lease.py).

Standby, it only renews its heartbeat and tries to take the lease. Each term of leadership gets a
backend of its own (on Mesos: a subscription, with the framework id kept in Redis, so the tasks of
the previous leader keep running), reconciles with it exactly as after a restart (adopt what runs,
requeue what never started), then schedules with a fenced farm until the lease is lost or the
process stops. Losing the lease closes the backend (a Mesos driver stops, without tearing the
framework down), so a deposed leader neither launches nor holds a subscription.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .backends.base import Backend, Exit
from .lease import Candidate, Lease
from .scheduler import Scheduler
from .service import Farm

log = logging.getLogger("buildfarm.leadership")

BackendFactory = Callable[[Farm, Callable[[Exit], None], Callable[[], bool]], Backend]


class ElectedScheduler:
    """`run()` until `stop()`: a standby that schedules in each term it leads."""

    def __init__(self, farm: Farm, make_backend: BackendFactory, lease_ttl: float = 5.0):
        self.farm = farm
        self.make_backend = make_backend
        self.lease = Lease(farm.r, lease_ttl)
        self.stopping = threading.Event()
        self.scheduler: Scheduler | None = None
        self.backend: Backend | None = None
        self._won = threading.Event()
        self._lock = threading.Lock()

    def _changed(self, leading: bool) -> None:
        if leading:
            self._won.set()
            return
        # At once, from the lease's thread: a deposed leader must not keep a Mesos subscription
        # (pymesos would subscribe again and push the new leader off the master). Other backends
        # close when the term's loop ends; until then they launch nothing (`may_launch`).
        if getattr(self.backend, "holds_subscription", False):
            self._close_backend()
        self.farm.builds.wake("lease lost")  # the term's loop notices at its next wake-up

    def _close_backend(self) -> None:
        with self._lock:
            backend, self.backend = self.backend, None
        if backend is not None:
            try:
                backend.close()
            except Exception as e:
                log.warning("closing the backend after the term failed: %s", e)

    def run(self) -> None:
        candidate = Candidate(self.lease, self._changed).start()
        try:
            while not self.stopping.is_set():
                if not self._won.wait(0.5):
                    continue
                self._won.clear()
                if self.lease.held():
                    self.term()
        finally:
            candidate.stop()

    def term(self) -> None:
        """One term of leadership: a backend, recover, schedule; then close the backend."""
        log.info("leading with fence %s: reconciling, then scheduling", self.lease.fence)
        holder: dict = {}
        backend = self.make_backend(self.farm, lambda ev: holder["scheduler"].on_exit(ev), self.lease.held)
        with self._lock:
            self.backend = backend
        self.scheduler = holder["scheduler"] = Scheduler(self.farm, backend, self.lease)
        try:
            if not self.stopping.is_set():
                self.scheduler.run()
        finally:
            self.scheduler = None
            self._close_backend()
        if not self.stopping.is_set():
            log.info("term ended; standing by")

    def check_image(self, image: str) -> str | None:
        backend = self.backend
        return backend.check_image(image) if backend else None

    def stop(self) -> None:
        self.stopping.set()
        if self.scheduler:
            self.scheduler.stop()
