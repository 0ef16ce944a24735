"""Pipeline runs and schedule events in Redis.

bf:pipeline-run:{id}          hash: the run (its jobs as one JSON list, rewritten under the run's lock)
bf:pipeline-run:{id}:lock     the per-run lock every change of a run holds
bf:pipeline-runs              zset: run id -> created_at (bf:pipeline-runs:{name}: one pipeline's)
bf:pipeline-runs:active       set: runs not finished (the periodic check advances them)
bf:pipeline-wakeup            list: run ids whose builds ended (the pipeline daemon pops them)
bf:pipeline-changed           pub/sub: a run's id each time the run changes (its `version` grows)
bf:pipeline-cursor            hash: pipeline -> the time its schedule was last checked up to
bf:pipeline-tick:{name}:{t}   claimed (SET NX) by the one process that handles tick t
bf:pipeline-schedule-events   list: started / missed / error ticks, newest first (capped)
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

from ..keys import RUN_CHANGED as CHANGED
from ..keys import RUN_CURSOR as CURSOR
from ..keys import RUN_EVENTS as EVENTS
from ..keys import RUN_WAKEUP as WAKEUP
from ..keys import RUNS, run_tick
from ..keys import RUNS_ACTIVE as ACTIVE
from ..keys import run as run_key
MAX_EVENTS = 1000


_MAX = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""


class RunNotFound(KeyError):
    pass


class RunStore:
    def __init__(self, r: redis.Redis):
        self.r = r
        self._max = r.register_script(_MAX)

    # -- runs ------------------------------------------------------------------------------------
    def create(self, pipeline: str, file: str, source: str, parameters: dict[str, str], trigger: dict[str, Any],
               repo: str, ref: str | None, commit: str, tag: dict[str, str] | None,
               jobs: list[dict[str, Any]], origin: dict[str, Any] | None = None) -> str:
        run_id = uuid.uuid4().hex[:10]
        now = time.time()
        fields = {
            "id": run_id, "pipeline": pipeline, "file": file, "source": source, "state": "running",
            "reason": "started", "parameters": json.dumps(parameters), "trigger": json.dumps(trigger),
            "repo": repo, "ref": ref or "", "commit": commit, "tag": json.dumps(tag) if tag else "",
            "tag_result": "", "cancel_requested": "", "created_at": now, "finished_at": "",
            "jobs": json.dumps(jobs), "origin": json.dumps(origin or {}), "version": 1,
        }
        pipe = self.r.pipeline()
        pipe.hset(run_key(run_id), mapping=fields)
        pipe.zadd(RUNS, {run_id: now})
        pipe.zadd(f"{RUNS}:{pipeline}", {run_id: now})
        pipe.sadd(ACTIVE, run_id)
        pipe.execute()
        return run_id

    def raw(self, run_id: str) -> dict[str, str]:
        h = self.r.hgetall(run_key(run_id))
        if not h:
            raise RunNotFound(run_id)
        return h

    def jobs(self, raw: dict[str, str]) -> list[dict[str, Any]]:
        return json.loads(raw["jobs"])

    def save_jobs(self, run_id: str, jobs: list[dict[str, Any]]) -> None:
        self.set_fields(run_id, jobs=json.dumps(jobs))

    def set_fields(self, run_id: str, **fields: Any) -> None:
        pipe = self.r.pipeline()
        self._change(pipe, run_id, fields)
        pipe.execute()

    def finish(self, run_id: str, state: str, reason: str, **fields: Any) -> None:
        pipe = self.r.pipeline()
        self._change(pipe, run_id, {"state": state, "reason": reason, "finished_at": time.time(), **fields})
        pipe.srem(ACTIVE, run_id)
        pipe.execute()

    @staticmethod
    def _change(pipe, run_id: str, fields: dict[str, Any]) -> None:
        """Write fields of a run, count the change in its `version` and announce it (in `pipe`)."""
        pipe.hset(run_key(run_id), mapping={k: ("" if v is None else v) for k, v in fields.items()})
        pipe.hincrby(run_key(run_id), "version", 1)
        pipe.publish(CHANGED, run_id)

    def lock(self, run_id: str):
        # Held while a run is advanced; a tag push happens under it, hence the long expiry.
        return self.r.lock(run_key(run_id) + ":lock", timeout=300, blocking_timeout=30)

    def active(self) -> list[str]:
        return sorted(self.r.smembers(ACTIVE))

    def forget(self, run_id: str) -> None:
        """Drop a run whose record is gone from the unfinished ones."""
        self.r.srem(ACTIVE, run_id)

    def ids(self, limit: int, offset: int, pipeline: str | None = None) -> tuple[list[str], int]:
        key = f"{RUNS}:{pipeline}" if pipeline else RUNS
        return self.r.zrevrange(key, offset, offset + limit - 1), self.r.zcard(key)

    def public(self, raw: dict[str, str], full: bool = True) -> dict[str, Any]:
        jobs = json.loads(raw["jobs"])
        out: dict[str, Any] = {
            "id": raw["id"], "pipeline": raw["pipeline"], "file": raw.get("file", ""), "state": raw["state"],
            "reason": raw.get("reason", ""), "parameters": json.loads(raw["parameters"]),
            "trigger": json.loads(raw["trigger"]), "repo": raw.get("repo", ""), "ref": raw.get("ref") or None,
            "commit": raw.get("commit") or None, "created_at": float(raw["created_at"]),
            "finished_at": float(raw["finished_at"]) if raw.get("finished_at") else None,
            "tag": json.loads(raw["tag_result"]) if raw.get("tag_result") else (
                {"name": json.loads(raw["tag"])["name"], "state": "pending"} if raw.get("tag") else None),
            "counts": _counts(jobs), "version": int(raw.get("version") or 0),
        }
        if full:
            out["jobs"] = [{k: j.get(k) for k in ("name", "job", "needs", "state", "reason", "build_id", "builds",
                                                  "attempt", "matrix", "when", "exit_code")} for j in jobs]
        return out

    # -- wake-ups --------------------------------------------------------------------------------
    def wake(self, run_id: str) -> None:
        pipe = self.r.pipeline()
        pipe.lpush(WAKEUP, run_id)
        pipe.ltrim(WAKEUP, 0, 9999)
        pipe.execute()

    def wait_for_wakeups(self, timeout: float) -> set[str]:
        got = self.r.blpop([WAKEUP], timeout=max(timeout, 0.01))
        if not got:
            return set()
        ids = {got[1]}
        for _ in range(1000):  # everything queued so far, in one round
            more = self.r.lpop(WAKEUP)
            if more is None:
                break
            ids.add(more)
        return ids

    # -- schedules ----------------------------------------------------------------------------------
    def cursor(self, pipeline: str, now: float) -> float | None:
        """Where `pipeline`'s schedule was checked up to, or None the first time (then it starts now)."""
        if self.r.hsetnx(CURSOR, pipeline, now):
            return None
        return float(self.r.hget(CURSOR, pipeline))

    def advance_cursor(self, pipeline: str, to: float) -> None:
        self._max(keys=[CURSOR], args=[pipeline, to])

    def claim_tick(self, pipeline: str, tick: float, owner: str) -> bool:
        return bool(self.r.set(run_tick(pipeline, int(tick)), owner, nx=True, ex=60 * 24 * 3600))

    def add_event(self, event: dict[str, Any]) -> None:
        pipe = self.r.pipeline()
        pipe.lpush(EVENTS, json.dumps(event))
        pipe.ltrim(EVENTS, 0, MAX_EVENTS - 1)
        pipe.execute()

    def events(self, pipeline: str | None = None, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        out = []
        for x in self.r.lrange(EVENTS, 0, MAX_EVENTS - 1):
            e = json.loads(x)
            if (pipeline is None or e["pipeline"] == pipeline) and (kind is None or e["kind"] == kind):
                out.append(e)
                if len(out) >= limit:
                    break
        return out


def _counts(jobs: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for j in jobs:
        out[j["state"]] = out.get(j["state"], 0) + 1
    return out
