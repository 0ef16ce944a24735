"""The pipeline daemon, a thread in every `buildfarm up` (and `buildfarm scheduler`) process:
it advances the runs whose builds ended (woken through Redis by the farm's end listener, in
whichever process ended the build), and every few seconds advances every unfinished run (so a
lost wake-up never leaves a run stuck) and checks the schedules."""

from __future__ import annotations

import logging
import threading
import time

from redis.exceptions import LockError

from ..redis_outage import UNAVAILABLE, OutageLog
from ..service import Farm
from .catalog import Catalog
from .engine import Engine
from .ticker import ScheduleTicker

log = logging.getLogger("buildfarm.pipelines")

SWEEP_SECONDS = 5.0


def engine_for(farm: Farm) -> Engine:
    """The farm's pipeline engine (one per Farm), its end listener registered."""
    engine = getattr(farm, "pipelines", None)
    if engine is None:
        engine = Engine(farm, Catalog())
        farm.pipelines = engine  # type: ignore[attr-defined]
        farm.end_listeners.append(engine.on_build_end)
    return engine


class PipelineDaemon(threading.Thread):
    def __init__(self, engine: Engine, sweep_seconds: float = SWEEP_SECONDS):
        super().__init__(name="pipelines", daemon=True)
        self.engine = engine
        self.sweep_seconds = sweep_seconds
        self.stopping = threading.Event()
        self.outage = OutageLog(log, "pipeline daemon")
        self.ticker = ScheduleTicker(engine.runs, lambda: engine.catalog.load()[0], self._start_scheduled)

    def _start_scheduled(self, pipeline, tick: float) -> str:
        run = self.engine.start(pipeline, {}, {"kind": "schedule", "user": "schedule",
                                               "detail": {"tick": str(int(tick))}})
        return run["id"]

    def run(self) -> None:
        last = 0.0
        while not self.stopping.is_set():
            try:
                for run_id in self.engine.runs.wait_for_wakeups(1.0):
                    try:
                        self.engine.advance(run_id)
                    except (KeyError, LockError):
                        pass  # not a run (any more), or busy elsewhere: the next sweep looks again
                if time.monotonic() - last >= self.sweep_seconds:
                    last = time.monotonic()
                    self.engine.sweep()
                    self.ticker.tick()
                self.outage.ok()
            except UNAVAILABLE as e:  # Redis restarting or stopped: say so once, then wait for it
                self.outage.away(e)
                self.stopping.wait(1.0)
            except Exception:  # a bug in one round: never let the thread die
                log.exception("pipeline daemon round failed; retrying in 1 s")
                self.stopping.wait(1.0)

    def stop(self) -> None:
        self.stopping.set()


def start_daemon(farm: Farm, start: bool = True) -> PipelineDaemon:
    daemon = PipelineDaemon(engine_for(farm))
    if start:
        daemon.start()
    return daemon
