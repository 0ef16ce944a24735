"""Webhook deliveries, from a verified request to queued builds (the HTTP routes are api/hooks.py).

A delivery is verified with the farm's webhook secret (`webhook_secret`: its headers before the
body is read, then the body), read by its provider (triggers/providers.py), claimed once in
`Deliveries` (a redelivery, or the same body replayed, is a "duplicate"), then handled by a
`Workers` thread: fetch the announced commit into a mirror (gitrepo.py), read its .buildfarm.yml
and changed paths, and `dispatch` it (dispatch.py) into the farm through `FarmSink`. Its outcome
is recorded whether or not the provider still waits for the reply.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from .. import keys
from ..config import local_secret
from ..redis_outage import UNAVAILABLE, describe
from ..scopes import Origin
from ..service import Conflict, Farm, OutOfScope, SubmitError
from ..spec import BuildSpec
from .buildfile import FILENAME, BuildFileError, Event
from .dispatch import UNFINISHED, Refused, Skipped, dispatch
from .gitrepo import GitError, Mirror
from .providers import Announced, Ignored, Ping, Provider

log = logging.getLogger("buildfarm.hooks")
DELIVERY_TTL = 7 * 24 * 3600
PROCESSING_TTL = 15 * 60  # a delivery whose farm died while working on it may be redelivered after this
SECRET_ENV = "BUILDFARM_WEBHOOK_SECRET"
MIN_SECRET = 16


def webhook_secret(data_dir: str | Path) -> str:
    """BUILDFARM_WEBHOOK_SECRET, else DATA_DIR/webhook.secret (created 0600 when missing)."""
    # A short file protects nothing (an empty key makes every signature forgeable): replace it.
    return local_secret(SECRET_ENV, Path(data_dir) / "webhook.secret", lambda: secrets.token_hex(32),
                        lambda v: len(v) >= MIN_SECRET, replace_invalid=True,
                        expected=f"at least {MIN_SECRET} characters; use a long random value")


class FarmSink:
    """Submits and cancels inside the farm (the webhooks' side of `dispatch`), for one event."""

    def __init__(self, farm: Farm, event: Event):
        self.farm = farm
        # The signed delivery's branch is what the builds run; a fork's pull request is on none of ours.
        self.origin = Origin("webhook", event.user, branch=event.code_branch,
                             no_branch="a pull request from another repository is on no branch of this one")

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.farm.submit(BuildSpec.model_validate(spec), self.origin)
        except OutOfScope as e:
            raise Skipped(str(e)) from None
        except SubmitError as e:
            raise Refused(str(e)) from None

    def unfinished(self, repo: str) -> list[dict[str, Any]]:
        return [b for state in UNFINISHED for b in self.farm.builds.list(limit=500, state=state, repo=repo)[0]]

    def cancel(self, build_id: str, who: str) -> None:
        try:
            self.farm.cancel(build_id, who=who)
        except Conflict as e:
            raise Refused(str(e)) from None


@dataclass(frozen=True)
class Received:
    """One delivery: its provider, its id (None when the provider sent none) and its body's sha256."""

    provider: str
    delivery: str | None
    digest: str

    @property
    def name(self) -> str:
        return self.delivery or f"(no id, sha256 {self.digest[:12]})"


class Deliveries:
    """What became of each delivery: the marks that turn a redelivery into a "duplicate" (one by
    the delivery's id, one by its body's digest, so the same signed body replayed under a new id,
    or none, builds nothing either; both released when the delivery failed on the farm's side, so
    it can be redelivered), and its outcome, all kept 7 days."""

    def __init__(self, r: redis.Redis):
        self.r = r

    def _keys(self, provider: str, delivery: str) -> tuple[str, str]:
        return keys.hook_delivery(provider, delivery), keys.hook_outcome(provider, delivery)

    def _body_key(self, d: Received) -> str:
        return keys.hook_body(d.provider, d.digest)

    def claim(self, d: Received) -> tuple[str, str | None] | None:
        """None for a new delivery (now marked "processing"); else (mark, first): mark is
        "processing" while the farm works on it, "done" once it did, and `first` names the
        delivery that brought the same body before under another id ("" for one without an id)."""
        if d.delivery:
            mark, outcome = self._keys(d.provider, d.delivery)
            if not self.r.set(mark, "processing", nx=True, ex=PROCESSING_TTL):
                return self.r.get(mark) or "done", None
        if not self.r.set(self._body_key(d), d.delivery or "", nx=True, ex=PROCESSING_TTL):
            first = self.r.get(self._body_key(d)) or ""
            if d.delivery:  # this id is answered "duplicate" from now on
                self.finish(Received(d.provider, d.delivery, ""), 200, duplicate(d, first))
            return "done", first
        if d.delivery:
            self.r.set(outcome, json.dumps({"result": "processing", "received_at": time.time()}), ex=PROCESSING_TTL)
        return None

    def renew(self, d: Received) -> None:
        """Still being worked on (a delivery that waited for a worker): keep it "processing"."""
        keys = [self._body_key(d), *(self._keys(d.provider, d.delivery) if d.delivery else ())]
        for key in keys:
            self.r.expire(key, PROCESSING_TTL)

    def finish(self, d: Received, status: int, reply: dict[str, Any]) -> None:
        marks = {}  # mark -> its value while it holds
        with self.r.pipeline() as p:
            if d.delivery:
                mark, outcome = self._keys(d.provider, d.delivery)
                p.set(outcome, json.dumps({**reply, "status": status, "finished_at": time.time()}), ex=DELIVERY_TTL)
                marks[mark] = "done"
            if d.digest:
                marks[self._body_key(d)] = d.delivery or ""
            for key, value in marks.items():
                if status >= 500:  # the farm's fault: the delivery may come again and build then
                    p.delete(key)
                else:
                    p.set(key, value, ex=DELIVERY_TTL)
            p.execute()

    def outcome(self, provider: str, delivery: str) -> dict[str, Any] | None:
        raw = self.r.get(self._keys(provider, delivery)[1])
        return json.loads(raw) if raw else None


def duplicate(d: Received, first: str | None) -> dict[str, Any]:
    """The reply to a delivery seen before: its id again, or its body under another id."""
    where = f"/api/v1/hooks/deliveries/{d.provider}/{first or d.delivery}" if (first or d.delivery) else None
    if first is None:
        reason = f"delivery {d.delivery} was received before; nothing queued"
    else:
        reason = (f"the same body was received before{f' as delivery {first}' if first else ''} "
                  f"(a replay); nothing queued")
    return {"result": "duplicate", "delivery": d.delivery, "builds": [], "outcome": where, "reason": reason,
            **({"duplicate_of": first} if first else {})}


STOPPED = "the farm stopped before it finished this delivery; redeliver it"


class Workers:
    """The threads that handle deliveries. They are daemon threads, so a stopping farm does not
    wait for a long fetch. When the farm stops, each delivery that has not started submitting its
    builds is released for redelivery, and its outcome says so; it submits nothing after that."""

    def __init__(self, farm: Farm, deliveries: Deliveries, size: int = 4):
        self.farm = farm
        self.deliveries = deliveries
        self.jobs: queue.Queue = queue.Queue()
        self.unfinished: set[Received] = set()  # taken, not finished
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        for i in range(size):
            threading.Thread(target=self._work, name=f"webhook-{i}", daemon=True).start()

    def submit(self, d: Received, a: Announced) -> Future:
        done: Future = Future()
        with self.lock:
            self.unfinished.add(d)
        self.jobs.put((done, d, a))
        return done

    def _work(self) -> None:
        while True:
            done, d, a = self.jobs.get()
            if self.stopping.is_set():
                continue  # released by stop()
            try:
                self.deliveries.renew(d)
                done.set_result(_process(self.farm, self.deliveries, d, a, lambda: self._may_submit(d)))
            except Exception as e:  # Redis gone while recording: the farm is stopping
                done.set_exception(e)
            finally:
                with self.lock:
                    self.unfinished.discard(d)

    def _may_submit(self, d: Received) -> bool:
        """Whether a delivery, fetched and read, may submit its builds: not once stop() released it."""
        with self.lock:
            if self.stopping.is_set():
                return False
            self.unfinished.discard(d)  # stop() leaves it alone from here on
            return True

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            left, self.unfinished = list(self.unfinished), set()
        for d in left:
            try:
                self.deliveries.finish(d, 503, {"result": "error", "error": STOPPED})
                log.warning("%s delivery %s not finished: the farm stopped; it can be redelivered", d.provider, d.name)
            except redis.RedisError:
                pass  # its "processing" marks expire after 15 min; then it can be redelivered


def _build(farm: Farm, a: Announced, may_submit: Callable[[], bool]) -> tuple[int, dict[str, Any]]:
    """Fetch, read, plan and submit (blocking: run in a thread)."""
    ev = a.event
    try:
        mirror = Mirror(farm.settings.cache_dir, a.fetch_url)
        mirror.fetch([ev.commit], a.refs)
        text = mirror.read(ev.commit, FILENAME)
        ev.changed = mirror.changed_paths(a.before, ev.commit, a.since_merge_base)
    except GitError as e:
        return 502, {"result": "error", "error": f"cannot read the announced commit: {e}"}
    if not may_submit():
        return 503, {"result": "error", "error": STOPPED}
    try:
        out = dispatch(text, ev, FarmSink(farm, ev))
    except BuildFileError as e:
        return 422, {"result": "invalid build file", "error": str(e), "commit": ev.commit}
    where = {"pr": ev.pr} if ev.pr else {"branch": ev.branch}
    return 200, {**out.as_json(), "commit": ev.commit, **where}


def _process(farm: Farm, deliveries: Deliveries, d: Received, a: Announced,
             may_submit: Callable[[], bool]) -> tuple[int, dict[str, Any]]:
    """_build, its outcome recorded and logged whether or not the provider still waits for it."""
    try:
        status, reply = _build(farm, a, may_submit)
    except UNAVAILABLE as e:  # the farm's Redis is away: the provider may redeliver
        log.warning("%s delivery %s not handled: Redis is not answering (%s)", d.provider, d.name, describe(e))
        raise
    except Exception as e:  # never lose a delivery silently: it is recorded, logged and may be redelivered
        log.exception("%s delivery %s failed", d.provider, d.name)
        status, reply = 500, {"result": "error", "error": f"internal error ({type(e).__name__}) on this delivery; "
                                                          f"the farm's log has the details; redeliver it"}
    deliveries.finish(d, status, reply)
    queued = ", ".join(b["id"] for b in reply.get("builds", []))
    log.info("%s delivery %s: %s%s", d.provider, d.name, reply.get("error") or reply["result"],
             f" ({queued})" if queued else "")
    return status, reply


@dataclass
class Reply:
    """What a delivery got before any work: an answer (`status`, `body`), or `work` to wait for
    (its result is (status, body)) with the delivery's id and where its outcome will be."""

    status: int = 200
    body: dict[str, Any] | None = None
    work: Future | None = None
    delivery: str | None = None
    outcome: str | None = None


class Refusal(Exception):
    """A delivery refused before any work: `status` 401 (signature) or 400 (body), and why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Webhooks:
    """The farm's webhook receiver: the secret, the deliveries store and the worker pool."""

    def __init__(self, farm: Farm, workers: int = 4):
        self.farm = farm
        self.secret = webhook_secret(farm.settings.data_dir)
        self.deliveries = Deliveries(farm.r)
        self.workers = Workers(farm, self.deliveries, workers)

    def stop(self) -> None:
        self.workers.stop()

    def _refuse(self, provider: Provider, headers: Mapping[str, str], remote: str, problem: str) -> Refusal:
        log.warning("refused %s delivery %s from %s: %s", provider.name,
                    provider.delivery(headers) or "(no id)", remote, problem)
        return Refusal(401, problem)

    def check_headers(self, provider: Provider, headers: Mapping[str, str], remote: str) -> None:
        """Before the body is read: a delivery whose headers cannot be right is refused (Refusal)."""
        problem = provider.verify_headers(headers, self.secret)
        if problem:
            raise self._refuse(provider, headers, remote, problem)

    def receive(self, provider: Provider, headers: Mapping[str, str], body: bytes, remote: str) -> Reply:
        """Verify, read and claim one delivery (after `check_headers`), and hand it to a worker;
        Refusal when refused."""
        problem = provider.verify(headers, body, self.secret)
        if problem:
            raise self._refuse(provider, headers, remote, problem)
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError) as e:
            raise Refusal(400, f"the body is not a JSON object ({e})") from None
        try:
            announced = provider.announced(headers, payload)
        except Ping:
            return Reply(body={"result": "pong"})
        except Ignored as e:
            return Reply(202, {"result": "ignored", "reason": str(e)})
        d = Received(provider.name, provider.delivery(headers), hashlib.sha256(body).hexdigest())
        delivery = d.delivery
        where = f"/api/v1/hooks/deliveries/{provider.name}/{delivery}" if delivery else None
        seen = self.deliveries.claim(d)
        if seen and seen[0] == "processing":
            return Reply(202, {"result": "processing", "delivery": delivery, "outcome": where,
                               "reason": f"delivery {delivery} is still being handled; its outcome will be "
                                         f"at {where}"})
        if seen:
            log.info("%s delivery %s from %s: duplicate", provider.name, d.name, remote)
            return Reply(body=duplicate(d, seen[1]))
        return Reply(work=self.workers.submit(d, announced), delivery=delivery, outcome=where)

    def outcome(self, provider: str, delivery: str) -> dict[str, Any] | None:
        return self.deliveries.outcome(provider, delivery)
