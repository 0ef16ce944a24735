"""Retention: when a build's log and artifacts expire, pins that keep them, and the collector that
deletes what expired. The build's record and history stay; only the files go.

A build's expiry is fixed when it ends: its own `expire_in` (a duration or "never"), else the
farm's --keep-logs / --keep-artifacts. Each expiry is a member of a sorted set scored by its time,
so a pass reads only what is due. A pinned build is in neither set; a build that has not ended is
never in them (and a pass skips one it finds there), so no running build loses its files.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from . import keys
from .artifacts import ArtifactStore
from .logs import LogStore
from .keys import build as build_key
from .records import BuildNotFound, BuildStore, spec_of
from .spec import BuildSpec
from .states import TERMINAL_STATES

log = logging.getLogger("buildfarm.gc")

KINDS = ("log", "artifacts")
_DUE = {kind: keys.expire_due(kind) for kind in KINDS}  # zset: build id -> when its files expire


class NotPinnable(ValueError):
    """The build's files are gone already; the message says when."""


@dataclass(frozen=True)
class Policy:
    """The farm's defaults, in seconds (None: kept until deleted by hand)."""

    keep_logs: int | None
    keep_artifacts: int | None

    def keep(self, kind: str, spec: BuildSpec) -> int | None:
        own = spec.expire_seconds()
        if own is not None:
            return None if own < 0 else own
        return self.keep_logs if kind == "log" else self.keep_artifacts


class Retention:
    def __init__(self, r: redis.Redis, builds: BuildStore, logs: LogStore, artifacts: ArtifactStore, policy: Policy):
        self.r = r
        self.builds = builds
        self.stores = {"log": logs, "artifacts": artifacts}
        self.policy = policy

    # -- when a build ends ----------------------------------------------------------------------
    def schedule(self, build_id: str, ended_at: float | None = None) -> None:
        """Fix the build's expiry times (called once it has ended) and queue them for the collector."""
        h = self.builds.raw(build_id)
        spec = spec_of(h)
        ended_at = ended_at or float(h.get("finished_at") or time.time())
        fields, due = {}, {}
        for kind in KINDS:
            keep = self.policy.keep(kind, spec)
            fields[f"{kind}_expires_at"] = ended_at + keep if keep is not None else ""
            if keep is not None:
                due[kind] = ended_at + keep
        pipe = self.r.pipeline()
        pipe.hset(build_key(build_id), mapping=fields)
        if not h.get("pinned_by"):
            for kind, at in due.items():
                pipe.zadd(_DUE[kind], {build_id: at})
        pipe.execute()

    # -- pins -------------------------------------------------------------------------------------
    def pin(self, build_id: str, who: str) -> None:
        """Keep the build's files until it is unpinned (refused once they are gone)."""
        h = self.builds.raw(build_id)
        gone = [f"{kind} expired on {date_text(h[f'{kind}_expired_at'])}" for kind in KINDS if h.get(f"{kind}_expired_at")]
        if len(gone) == len(KINDS):
            raise NotPinnable(f"build {build_id} has nothing left to keep: {' and '.join(gone)}")
        pipe = self.r.pipeline()
        pipe.hset(build_key(build_id), mapping={"pinned_by": who, "pinned_at": time.time()})
        for kind in KINDS:
            pipe.zrem(_DUE[kind], build_id)
        pipe.execute()

    def unpin(self, build_id: str) -> None:
        """Expire the build's files at their times again (at once, if those passed while pinned)."""
        h = self.builds.raw(build_id)
        pipe = self.r.pipeline()
        pipe.hdel(build_key(build_id), "pinned_by", "pinned_at")
        if h["state"] in TERMINAL_STATES:
            for kind in KINDS:
                at = h.get(f"{kind}_expires_at")
                if at and not h.get(f"{kind}_expired_at"):
                    pipe.zadd(_DUE[kind], {build_id: float(at)})
        pipe.execute()

    def expired_at(self, build_id: str, kind: str) -> float | None:
        at = self.r.hget(build_key(build_id), f"{kind}_expired_at")
        return float(at) if at else None

    # -- the collector -----------------------------------------------------------------------------
    def collect(self, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
        """Delete the files whose time has come (with dry_run, only say which). Returns what was
        (or would be) freed: {"dry_run", "freed_bytes", "items": [{"build", "what", "bytes", "due"}]}."""
        now = now or time.time()
        items = []
        for kind in KINDS:
            for build_id, due in self.r.zrangebyscore(_DUE[kind], "-inf", now, withscores=True):
                item = self._collect_one(kind, build_id, due, dry_run, now)
                if item:
                    items.append(item)
        return {"dry_run": dry_run, "freed_bytes": sum(i["bytes"] for i in items), "items": items}

    def _collect_one(self, kind: str, build_id: str, due: float, dry_run: bool, now: float) -> dict | None:
        state = self.builds.state(build_id)
        if state not in TERMINAL_STATES:  # deleted, or not ended: never a running build's files
            self.r.zrem(_DUE[kind], build_id)
            return None
        store = self.stores[kind]
        if dry_run:
            freed = store.size(build_id)
        elif self.r.zrem(_DUE[kind], build_id):  # whoever removes it deletes it: one collector per file
            freed = store.remove(build_id)
            self.builds.set_fields(build_id, **{f"{kind}_expired_at": now})
        else:
            return None
        return {"build": build_id, "what": kind, "bytes": freed, "due": due}


def summary(result: dict[str, Any]) -> str:
    """One line for the farm's log: what a pass freed."""
    items = result["items"]
    logs = sum(1 for i in items if i["what"] == "log")
    verb = "would free" if result["dry_run"] else "freed"
    return (f"gc: {verb} {human_bytes(result['freed_bytes'])}: {logs} log(s) and {len(items) - logs} artifact "
            f"set(s) of {len({i['build'] for i in items})} build(s)")


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def date_text(at: str | float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(at)))


class Collector(threading.Thread):
    """Runs a pass every `interval` seconds in the farm and logs one line for a pass that freed
    something. Redis being away is said once, not every pass."""

    def __init__(self, retention: Retention, interval: float):
        super().__init__(daemon=True, name="gc")
        self.retention = retention
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        failing = False
        while not self.stopping.wait(self.interval):
            try:
                result = self.retention.collect()
            except (redis.RedisError, OSError, BuildNotFound) as e:
                if not failing:
                    log.warning("gc pass failed (%s); trying again every %.0f s", e, self.interval)
                failing = True
                continue
            if failing:
                log.info("gc passes work again")
                failing = False
            if result["items"]:
                log.info(summary(result))

    def stop(self) -> None:
        self.stopping.set()
