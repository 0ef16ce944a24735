"""Schedules: start each pipeline on its cron ticks, once per tick however many farm processes
check, and report the ticks missed while no farm was running.

Why not rq's CronScheduler (rq/cron.py, rq 3.0): it keeps each job's last and next enqueue time
in the scheduler process's memory, so two scheduler processes both enqueue every tick, a
restarted one forgets what it did, and a tick that passed while it was down is neither run nor
reported; its cron is evaluated in the host's local time zone. This ticker keeps its state in
Redis instead:

- a cursor per pipeline: the time its schedule was checked up to (it only moves forward);
- each round takes the ticks between the cursor and now, and claims each one with SET NX on
  bf:pipeline-tick:{pipeline}:{tick}: only the process that wins the claim acts on it;
- a tick claimed within `grace` seconds of its time starts a run; an older one (the farm was
  down) is recorded as a "missed" schedule event and logged, not run hours late;
- the first time a pipeline is seen its cursor starts at now (no backlog for a new file).

The clock is injected, so tests move time instead of sleeping.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from ..redis_outage import UNAVAILABLE
from .model import Pipeline
from .store import RunStore

log = logging.getLogger("buildfarm.pipelines")

GRACE = 300.0
MAX_REPORTED = 100


def _when(t: float, tz: str) -> str:
    return datetime.fromtimestamp(t, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


class ScheduleTicker:
    def __init__(self, runs: RunStore, pipelines: Callable[[], list[Pipeline]],
                 start: Callable[[Pipeline, float], str], clock: Callable[[], float] = time.time,
                 grace: float = GRACE):
        self.runs = runs
        self.pipelines = pipelines
        self.start = start
        self.clock = clock
        self.grace = grace
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    def tick(self) -> list[dict]:
        """One round over every scheduled pipeline; returns the events this process recorded."""
        now = self.clock()
        events: list[dict] = []
        for p in self.pipelines():
            if p.schedule is not None:
                try:
                    events += self._check(p, now)
                except UNAVAILABLE:
                    raise  # Redis is away: the daemon says so once and waits
                except Exception:
                    log.exception("schedule of pipeline %s could not be checked", p.name)
        return events

    def _check(self, p: Pipeline, now: float) -> list[dict]:
        cursor = self.runs.cursor(p.name, now)
        if cursor is None or now <= cursor:
            return []
        ticks = p.schedule.ticks(cursor, now, limit=10 * MAX_REPORTED)
        events = []
        missed = 0
        for t in ticks:
            if not self.runs.claim_tick(p.name, t, self.owner):
                continue  # another process has it
            event = {"pipeline": p.name, "tick": t, "tick_local": _when(t, p.schedule.timezone), "at": now,
                     "by": self.owner}
            if now - t > self.grace:
                missed += 1
                if missed > MAX_REPORTED:
                    continue
                event.update(kind="missed", reason=f"the farm was not running at {event['tick_local']} "
                                                   f"(noticed {now - t:.0f} s late); not started")
                log.warning("pipeline %s: tick %s missed: %s", p.name, event["tick_local"], event["reason"])
            else:
                try:
                    event.update(kind="started", run=self.start(p, t))
                except Exception as e:
                    event.update(kind="error", reason=f"the run could not start: {e}")
                    log.warning("pipeline %s: tick %s: %s", p.name, event["tick_local"], event["reason"])
            self.runs.add_event(event)
            events.append(event)
        if missed > MAX_REPORTED:
            extra = {"pipeline": p.name, "tick": ticks[-1], "tick_local": _when(ticks[-1], p.schedule.timezone),
                     "at": now, "by": self.owner, "kind": "missed",
                     "reason": f"and {missed - MAX_REPORTED} more ticks missed up to this one"
                               + (" (at least)" if len(ticks) >= 10 * MAX_REPORTED else "")}
            self.runs.add_event(extra)
            events.append(extra)
        self.runs.advance_cursor(p.name, now)
        return events
