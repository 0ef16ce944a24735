"""Build records in Redis: the build's spec (and its summary, which lists of builds show), its
state with a history of (state, time, reason), its artifacts index, and the agents the scheduler
knows. Every state change goes through
`transition`, an atomic compare-and-set, so two actors (API, scheduler, agent) never race a
build into two final states. The agent token of a build's current attempt (its digest) dies in the
same step as the attempt, and every write an agent makes is checked against it atomically
(`agent_write`), so nothing an agent sends after its build ended changes the build.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

import redis

from .spec import BuildSpec
from .states import COMES_FROM, TERMINAL, State

from .keys import ACTIVE_SET, AGENTS, BUILDS, INDEX, NO_LEASE, SEQ, STATE_CHANNEL, TMP, WAKEUP
from .keys import history as history_key
from .keys import build as build_key
FILTERS = ("state", "repo", "trigger", "user", "team")

# KEYS: the build's hash, its history list, the state-index prefix, the build id and the state
# channel (a member and a channel, not keys: one Redis, never a cluster). ARGV: new state, reason,
# time, the states it may move from (comma-separated), what becomes of the agent token, the digest
# the caller's token must have ('' for any), then field, value pairs. The agent token dies in the
# same step as its attempt: 'end' keeps its digest as `ended_token_sha` (its late calls are told
# the build ended), 'drop' forgets it. KEYS[6] is the schedulers' lease and ARGV[7] the lease value
# a fenced writer (the leading scheduler) holds, or '' for writers that need no lease (API, agents):
# a fenced write is refused once the lease is not its own.
_TRANSITION = """
if ARGV[7] ~= '' and redis.call('GET', KEYS[6]) ~= ARGV[7] then return {0, 'fenced'} end
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, ''} end
local allowed = ARGV[4]
if not string.find(',' .. allowed .. ',', ',' .. cur .. ',', 1, true) then
  return {0, cur}
end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'token_sha') ~= ARGV[6] then return {0, cur} end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'reason', ARGV[2], 'updated_at', ARGV[3])
redis.call('SREM', KEYS[3] .. cur, KEYS[4])
redis.call('SADD', KEYS[3] .. ARGV[1], KEYS[4])
local token = redis.call('HGET', KEYS[1], 'token_sha')
if ARGV[5] ~= '' and token then
  if ARGV[5] == 'end' then redis.call('HSET', KEYS[1], 'ended_token_sha', token) end
  redis.call('HDEL', KEYS[1], 'token_sha')
end
for i = 8, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('RPUSH', KEYS[2], cjson.encode({state = ARGV[1], at = tonumber(ARGV[3]), reason = ARGV[2]}))
redis.call('PUBLISH', KEYS[5], KEYS[4])
return {1, cur}
"""

# The same fence for plain field writes: KEYS: the build's hash, the lease. ARGV: the lease value,
# then field, value pairs.
_FENCED_HSET = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""

# What an agent's token may do, checked in the same step as the write it allows. KEYS: the build's
# hash, its artifacts hash. ARGV: the token's digest, an artifact's path and record ('' for none),
# then field, value pairs for the build's hash. Returns 'ok' (written), 'ended' (the token was this
# build's, and the build has ended: nothing written) or 'invalid'.
_AGENT_WRITE = """
local t = redis.call('HMGET', KEYS[1], 'token_sha', 'ended_token_sha')
if t[1] and t[1] == ARGV[1] then
  if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) end
  for i = 4, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  return 'ok'
end
if t[2] and t[2] == ARGV[1] then return 'ended' end
return 'invalid'
"""


def spec_of(h: dict[str, str]) -> BuildSpec:
    """The spec stored in a build's record (a raw hash): the one place it is parsed. ValidationError
    when it is not valid any more (an older farm wrote it)."""
    return BuildSpec.model_validate_json(h["spec"])


def exit_code_of(h: dict[str, str]) -> int | None:
    """The exit code stored in a build's record (a raw hash); None until the build reported one."""
    return int(h["exit_code"]) if h.get("exit_code", "") != "" else None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_agent_token() -> str:
    """A token for one attempt of a build: its record keeps only the digest (`token_sha`)."""
    return secrets.token_urlsafe(24)


class BuildNotFound(KeyError):
    pass


class Fence(Protocol):
    """What a fenced writer holds: the lease's key and the value it must still have (None: none)."""
    key: str
    value: str | None


class BuildStore:
    def __init__(self, r: redis.Redis, fence: Fence | None = None):
        self.r = r
        self.fence = fence
        self._fenced_hset = r.register_script(_FENCED_HSET)
        self._transition = r.register_script(_TRANSITION)
        self._agent_write = r.register_script(_AGENT_WRITE)

    def fenced(self, fence: Fence) -> BuildStore:
        """The same records, for the leading scheduler: each state change and field write is refused,
        in the same atomic step, unless `fence` still holds its lease."""
        return BuildStore(self.r, fence)

    def _fence_args(self) -> tuple[str, str]:
        if self.fence is None:
            return NO_LEASE, ""
        return self.fence.key, self.fence.value or "(no lease held)"

    # -- creation and reading ---------------------------------------------------------
    def create(self, spec: BuildSpec, user: str | None = None) -> tuple[dict[str, Any], str]:
        """Record a new build in `queued`; returns (record, agent token). The token is shown once.
        `user` is who submitted it (the API token's name)."""
        build_id = uuid.uuid4().hex[:12]
        token = new_agent_token()
        now = time.time()
        seq = self.r.incr(SEQ)
        fields = {
            "id": build_id,
            "number": seq,
            "seq": seq,
            "spec": spec.model_dump_json(),
            "summary": json.dumps(summary(spec.model_dump(mode="json"))),
            "state": State.QUEUED.value,
            "reason": "waiting for capacity",
            "priority": spec.priority.value,
            "created_at": now,
            "updated_at": now,
            "attempt": 0,
            "token_sha": token_digest(token),
            "log_seq": 0,
            "submitted_by": user or "",
        }
        pipe = self.r.pipeline()
        for name, value in _index_values(spec, user, State.QUEUED.value).items():
            pipe.sadd(f"{INDEX}{name}:{value}", build_id)
        pipe.hset(build_key(build_id), mapping=fields)
        pipe.rpush(history_key(build_id),
                   json.dumps({"state": "queued", "at": now, "reason": "submitted"}))
        pipe.zadd(BUILDS, {build_id: now})
        pipe.execute()
        return self.get(build_id), token

    def exists(self, build_id: str) -> bool:
        return bool(self.r.exists(build_key(build_id)))

    def raw(self, build_id: str) -> dict[str, str]:
        h = self.r.hgetall(build_key(build_id))
        if not h:
            raise BuildNotFound(build_id)
        return h

    def raw_many(self, ids: Iterable[str]) -> list[dict[str, str]]:
        """The raw records of `ids`, in one round trip, in their order ({} for one that is gone)."""
        pipe = self.r.pipeline()
        for i in ids:
            pipe.hgetall(build_key(i))
        return pipe.execute()

    def state(self, build_id: str) -> str | None:
        return self.r.hget(build_key(build_id), "state")

    def get(self, build_id: str, history: bool = True) -> dict[str, Any]:
        return self._public(self.raw(build_id), history)

    def get_many(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """Records with their spec's summary (`summary()`), not the whole spec: what lists show."""
        ids = list(ids)
        pipe = self.r.pipeline()
        for i in ids:
            pipe.hmget(build_key(i), _LISTED)
        rows = [dict(zip(_LISTED, values)) for values in pipe.execute()]
        out = []
        for h in rows:
            if not h["id"]:
                continue  # removed meanwhile
            if not h["summary"]:  # recorded before summaries were
                h["summary"] = json.dumps(summary(json.loads(self.r.hget(build_key(h["id"]), "spec") or "{}")))
            out.append(self._public({k: v for k, v in h.items() if v is not None}, False, listed=True))
        return out

    def list(self, limit: int = 50, offset: int = 0, **filters: str | None) -> tuple[list[dict[str, Any]], int]:
        """Newest first, filtered by any of state, repo, trigger (kind) and user; returns (page, total)."""
        sets = [f"{INDEX}{k}:{v}" for k, v in filters.items() if v and k in FILTERS]
        if not sets:
            ids = self.r.zrevrange(BUILDS, offset, offset + limit - 1)
            return self.get_many(ids), self.r.zcard(BUILDS)
        tmp = f"{TMP}list:{uuid.uuid4().hex}"
        pipe = self.r.pipeline()
        # A set's members score 1; weight 0 keeps the creation time from `builds` as the order.
        pipe.zinterstore(tmp, {BUILDS: 1, **{s: 0 for s in sets}})
        pipe.zrevrange(tmp, offset, offset + limit - 1)
        pipe.delete(tmp)
        total, ids, _ = pipe.execute()
        return self.get_many(ids), total

    def ids_since(self, start: float) -> list[str]:
        """The ids of the builds submitted at `start` or later, oldest first."""
        return self.r.zrangebyscore(BUILDS, start, "+inf")

    def backfill_index(self) -> int:
        """Index the builds recorded before the filter index existed (once per Redis)."""
        if not self.r.set(INDEX + "built", "1", nx=True):
            return 0
        done, start = 0, 0
        while ids := self.r.zrange(BUILDS, start, start + 499):
            pipe = self.r.pipeline()
            for bid in ids:
                pipe.hmget(build_key(bid), "spec", "state", "submitted_by")
            rows = pipe.execute()
            pipe = self.r.pipeline()
            for bid, (spec, state, user) in zip(ids, rows):
                try:
                    values = _index_values(BuildSpec.model_validate_json(spec), user, state) if spec and state else {}
                except ValueError:  # a record that no longer validates: the scheduler ends it
                    values = {"state": state} if state else {}
                for name, value in values.items():
                    pipe.sadd(f"{INDEX}{name}:{value}", bid)
                done += bool(values)
            pipe.execute()
            start += 500
        return done

    def count_by_state(self) -> dict[str, int]:
        states = [s.value for s in State]
        pipe = self.r.pipeline()
        for s in states:
            pipe.scard(f"{INDEX}state:{s}")
        return dict(zip(states, pipe.execute()))

    def history(self, build_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(history_key(build_id), 0, -1)]

    def spec(self, build_id: str) -> BuildSpec:
        return spec_of(self.raw(build_id))

    def _public(self, h: dict[str, str], history: bool, listed: bool = False) -> dict[str, Any]:
        spec = json.loads(h["summary"] if listed else h["spec"])
        rec: dict[str, Any] = {
            "id": h["id"],
            "number": int(h["number"]),
            "state": h["state"],
            "reason": h.get("reason", ""),
            "exit_code": exit_code_of(h),
            "priority": h["priority"],
            "attempt": int(h.get("attempt", 0)),
            "agent_id": h.get("agent_id") or None,
            "host": h.get("host") or None,
            "commit": h.get("resolved_commit") or None,
            "created_at": float(h["created_at"]),
            "started_at": float(h["started_at"]) if h.get("started_at") else None,
            "finished_at": float(h["finished_at"]) if h.get("finished_at") else None,
            "submitted_by": h.get("submitted_by") or None,
            "team": spec.get("team"),
            "preemptions": int(h.get("preemptions") or 0),
            "launched_at": float(h["launched_at"]) if h.get("launched_at") else None,
            "measured_cpu_seconds": float(h["measured_cpu_seconds"]) if h.get("measured_cpu_seconds") else None,
            "reserved": {"seconds": float(h.get("reserved_seconds") or 0),
                         "cpu_seconds": float(h.get("reserved_cpu_seconds") or 0),
                         "mem_mb_seconds": float(h.get("reserved_mem_mb_seconds") or 0)},
            "spec": spec,
        }
        rec["retention"] = _retention(h)
        if history:
            rec["history"] = self.history(h["id"])
        return rec

    # -- state changes ------------------------------------------------------------------
    def transition(self, build_id: str, to: State, reason: str, *, allowed_from: Iterable[State] | None = None,
                   token: str | None = None, **fields: Any) -> bool:
        """Atomically move a build to `to` if it is in a state `to` may follow (states.COMES_FROM;
        `allowed_from` narrows that) and, when `token` is given, if that is the agent token of its
        current attempt. Returns whether it moved. Extra fields are written in the same step. A
        final state revokes the agent token in that step; so does going back to the queue (the
        attempt is over). A fenced store moves nothing once its lease is gone."""
        allowed = COMES_FROM[to]
        if allowed_from is not None:
            wider = sorted(s.value for s in set(allowed_from) - allowed)
            if wider:  # a caller's mistake, not a race: the table is the rule
                raise ValueError(f"{to.value} never follows {', '.join(wider)}")
            allowed = frozenset(allowed_from)
        now = time.time()
        revoke = ""
        if to in TERMINAL:
            fields.setdefault("finished_at", now)
            revoke = "end"
        elif to is State.QUEUED:
            revoke = "drop"
        lease_key, held = self._fence_args()
        args: list[Any] = [to.value, reason, now, ",".join(sorted(s.value for s in allowed)), revoke,
                           token_digest(token) if token else "", held]
        for k, v in fields.items():
            args += [k, "" if v is None else v]
        keys = [build_key(build_id), history_key(build_id), INDEX + "state:", build_id, STATE_CHANNEL,
                lease_key]
        moved, _ = self._transition(keys=keys, args=args)
        return bool(moved)

    def add_reserved(self, build_id: str, seconds: float, cpus: float, mem: float) -> None:
        """Add what an attempt that held `cpus` and `mem` MB for `seconds` reserved to the build's
        sums over its attempts (reserved_seconds, reserved_cpu_seconds, reserved_mem_mb_seconds)."""
        key = build_key(build_id)
        pipe = self.r.pipeline()
        pipe.hincrbyfloat(key, "reserved_seconds", seconds)
        pipe.hincrbyfloat(key, "reserved_cpu_seconds", seconds * cpus)
        pipe.hincrbyfloat(key, "reserved_mem_mb_seconds", seconds * mem)
        pipe.execute()

    def set_fields(self, build_id: str, **fields: Any) -> bool:
        """Write fields of the build's record (refused, returning False, if the store's fence is gone)."""
        mapping = {k: ("" if v is None else v) for k, v in fields.items()}
        if self.fence is None:
            self.r.hset(build_key(build_id), mapping=mapping)
            return True
        lease_key, held = self._fence_args()
        args = [held] + [x for kv in mapping.items() for x in kv]
        return bool(self._fenced_hset(keys=[build_key(build_id), lease_key], args=args))

    def agent_write(self, build_id: str, token: str, artifact: dict[str, Any] | None = None,
                    **fields: Any) -> str:
        """Write what an agent reports (fields of the build, an artifact's record) if `token` is the
        agent token of the build's current attempt, in one atomic step with that check: 'ok',
        'ended' (the build has ended; nothing written) or 'invalid' (not this build's token)."""
        key = build_key(build_id)
        args: list[Any] = [token_digest(token), "", ""]
        if artifact is not None:
            args[1:3] = [artifact["path"], json.dumps(artifact)]
        for k, v in fields.items():
            args += [k, "" if v is None else v]
        return self._agent_write(keys=[key, key + ":artifacts"], args=args)

    def check_token(self, build_id: str, token: str) -> str:
        """'ok', 'ended' or 'invalid' for an agent's token, as agent_write() says, writing nothing."""
        return self.agent_write(build_id, token) if token else "invalid"

    # -- the scheduler's active set ---------------------------------------------------------
    def active_ids(self) -> list[str]:
        return sorted(self.r.smembers(ACTIVE_SET))

    def ids_in_state(self, state: State) -> set[str]:
        return set(self.r.smembers(f"{INDEX}state:{state.value}"))

    def team_ids_in(self, team: str, *states: State) -> list[str]:
        """The ids of the builds charged to `team` that are in one of `states`, oldest first."""
        pipe = self.r.pipeline(transaction=False)
        for state in states:
            pipe.sinter(f"{INDEX}team:{team}", f"{INDEX}state:{state.value}")
        ids = sorted(set().union(*pipe.execute()))
        scores = self.r.zmscore(BUILDS, ids) if ids else []
        return [bid for _, bid in sorted(zip((s or 0 for s in scores), ids))]

    def add_active(self, build_id: str) -> None:
        self.r.sadd(ACTIVE_SET, build_id)

    def drop_active(self, build_id: str) -> None:
        self.r.srem(ACTIVE_SET, build_id)

    # -- artifacts index ----------------------------------------------------------------------
    def artifacts(self, build_id: str) -> list[dict[str, Any]]:
        h = self.r.hgetall(build_key(build_id) + ":artifacts")
        return sorted((json.loads(v) for v in h.values()), key=lambda a: a["path"])

    # -- agents (published by the scheduler's backend) -------------------------------------------
    def publish_agents(self, agents: list[dict[str, Any]]) -> None:
        pipe = self.r.pipeline()
        pipe.delete(AGENTS)
        for a in agents:
            pipe.hset(AGENTS, a["agent_id"], json.dumps(a))
        pipe.execute()

    def agents(self) -> list[dict[str, Any]]:
        return [json.loads(v) for v in self.r.hgetall(AGENTS).values()]

    # -- waking the scheduler ------------------------------------------------------------------
    def wake(self, why: str = "tick") -> None:
        pipe = self.r.pipeline()
        pipe.lpush(WAKEUP, why)
        pipe.ltrim(WAKEUP, 0, 99)
        pipe.execute()

    def wait_for_wakeup(self, timeout: float) -> str | None:
        got = self.r.blpop([WAKEUP], timeout=max(timeout, 0.01))
        if got:
            self.r.delete(WAKEUP)  # one wake-up covers every reason queued so far
            return got[1]
        return None


def _retention(h: dict[str, str]) -> dict[str, Any]:
    """When the build's log and artifacts expire (fixed when it ends; None: kept), when they did,
    and who pinned it (buildfarm/retention.py keeps these fields)."""
    def when(field: str) -> float | None:
        return float(h[field]) if h.get(field) else None

    return {"log_expires_at": when("log_expires_at"), "log_expired_at": when("log_expired_at"),
            "artifacts_expire_at": when("artifacts_expires_at"),
            "artifacts_expired_at": when("artifacts_expired_at"),
            "pinned_by": h.get("pinned_by") or None}


PREVIEW = 200  # characters of a listed build's command, and of each text of its trigger
# The record fields a list reads (the whole spec stays in Redis).
_LISTED = ("id", "number", "state", "reason", "exit_code", "priority", "attempt", "agent_id", "host",
           "resolved_commit", "created_at", "started_at", "finished_at", "submitted_by", "summary",
           "log_expires_at", "log_expired_at", "artifacts_expires_at", "artifacts_expired_at", "pinned_by",
           # what usage sums (usage.py) and lists show of a build's attempts
           "preemptions", "launched_at", "measured_cpu_seconds", "reserved_seconds", "reserved_cpu_seconds",
           "reserved_mem_mb_seconds")


def summary(spec: dict[str, Any]) -> dict[str, Any]:
    """What a list of builds shows of a spec: where it builds, in what, with what, who started it,
    and the start of what it runs (`run`); GET /api/v1/builds/{id} has the whole spec."""
    lines = spec.get("steps") or ([" ".join(spec["command"])] if spec.get("command") else [])
    run = "; ".join(lines)
    trigger = spec.get("trigger") or {}
    return {
        **{k: spec.get(k) for k in ("repo", "ref", "commit", "image", "resources", "priority", "team", "preemptible")},
        "constraints": [_clip(c) for c in spec.get("constraints", [])[:20]],
        "run": _clip(run),
        "trigger": {"kind": trigger.get("kind"), "user": _clip(trigger.get("user")), "url": _clip(trigger.get("url")),
                    "detail": {_clip(k): _clip(v) for k, v in (trigger.get("detail") or {}).items()}},
        "summary": True,
    }


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW:
        return text
    return text[:PREVIEW - 3] + "..."


def _index_values(spec: BuildSpec, user: str | None, state: str) -> dict[str, str]:
    out = {"state": state, "repo": spec.repo, "trigger": spec.trigger.kind}
    who = spec.trigger.user or user
    if who:
        out["user"] = who
    if spec.team:
        out["team"] = spec.team
    return out
