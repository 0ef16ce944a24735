"""Webhooks: POST /hooks/github, /hooks/gitlab, /hooks/gitea.

Open without a token: each delivery is verified with the farm's webhook secret instead (the
value of BUILDFARM_WEBHOOK_SECRET when the farm starts, else the file DATA_DIR/webhook.secret,
generated with mode 0600 on the farm's first start). A refused delivery is answered 401 and
logged (logger "buildfarm.hooks"), one without a signature before its body is read; a body is at
most 5 MB (api/limits.py). A delivery id seen before, or a body seen before under another id or
none (a replay), is answered 200 "duplicate" and builds nothing ("processing", 202, while the first
delivery is still being handled). The farm
fetches the announced commit into a bare mirror under
DATA_DIR/cache/hooks/, reads its .buildfarm.yml and the changed paths, and submits the builds.

Providers give up on a delivery after a few seconds (Gitea after 5, GitHub and GitLab after 10),
while the first fetch of a large repository takes minutes. A delivery still being worked on after
BUILDFARM_WEBHOOK_REPLY_SECONDS (4) is answered 202 "accepted" and finished in the background;
what became of every delivery is kept for 7 days at GET /api/v1/hooks/deliveries/PROVIDER/ID.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..config import local_secret
from ..redis_outage import UNAVAILABLE, describe
from ..scopes import Origin
from ..service import Conflict, Farm, OutOfScope, SubmitError
from ..spec import BuildSpec
from ..triggers.buildfile import FILENAME, BuildFileError, Event
from ..triggers.dispatch import UNFINISHED, Refused, Skipped, dispatch
from ..triggers.gitrepo import GitError, Mirror
from ..triggers.providers import PROVIDERS, Announced, Ignored, Ping, Provider
from .auth import require
from .errors import ApiError

log = logging.getLogger("buildfarm.hooks")
DELIVERY_TTL = 7 * 24 * 3600
PROCESSING_TTL = 15 * 60  # a delivery whose farm died while working on it may be redelivered after this
REPLY_ENV = "BUILDFARM_WEBHOOK_REPLY_SECONDS"
REPLY_SECONDS = 4.0
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
        return f"bf:hooks:delivery:{provider}:{delivery}", f"bf:hooks:outcome:{provider}:{delivery}"

    def _body_key(self, d: Received) -> str:
        return f"bf:hooks:body:{d.provider}:{d.digest}"

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

    def __init__(self, farm: Farm, size: int = 4):
        self.farm = farm
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
                Deliveries(self.farm.r).renew(d)
                done.set_result(_process(self.farm, d, a, lambda: self._may_submit(d)))
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
                Deliveries(self.farm.r).finish(d, 503, {"result": "error", "error": STOPPED})
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


def _process(farm: Farm, d: Received, a: Announced, may_submit: Callable[[], bool]) -> tuple[int, dict[str, Any]]:
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
    Deliveries(farm.r).finish(d, status, reply)
    queued = ", ".join(b["id"] for b in reply.get("builds", []))
    log.info("%s delivery %s: %s%s", d.provider, d.name, reply.get("error") or reply["result"],
             f" ({queued})" if queued else "")
    return status, reply


_DESCRIPTION = """Builds on {name} {events} deliveries, as asked by the pushed commit's `.buildfarm.yml`.

Authenticated with `{header}` and the farm's webhook secret: the value of `BUILDFARM_WEBHOOK_SECRET`
when the farm started, else the contents of `DATA_DIR/webhook.secret` (generated, mode 0600, on the
farm's first start; `cat ~/.buildfarm/webhook.secret`). Answers: 200 with the queued build ids (or why
nothing was built, or "duplicate" for a delivery id seen in the last 7 days), 202 for events that build
nothing, and 202 "accepted" for a delivery still being worked on after a few seconds (a first fetch of a
large repository; its outcome is at `/api/v1/hooks/deliveries/{lower}/ID`), 401 for a missing or
wrong signature, 422 for an invalid `.buildfarm.yml`, 502 when the commit cannot be fetched from the
payload's clone URL (the delivery can then be redelivered)."""


def router(farm: Farm) -> APIRouter:
    workers = Workers(farm)
    r = APIRouter(tags=["webhooks"], on_shutdown=[workers.stop])
    secret = webhook_secret(farm.settings.data_dir)
    reply_seconds = float(os.environ.get(REPLY_ENV) or REPLY_SECONDS)

    def route(provider: Provider):
        async def receive(request: Request) -> JSONResponse:
            remote = request.client.host if request.client else "?"
            # At most WEBHOOK_MAX_BYTES (api/limits.py), and only once the headers can be right.
            problem = (provider.verify_headers(request.headers, secret)
                       or provider.verify(request.headers, await request.body(), secret))
            if problem:
                log.warning("refused %s delivery %s from %s: %s", provider.name,
                            provider.delivery(request.headers) or "(no id)", remote, problem)
                return JSONResponse({"error": problem}, status_code=401)
            body = await request.body()
            try:
                payload = json.loads(body)
                if not isinstance(payload, dict):
                    raise ValueError("not an object")
            except (ValueError, RecursionError) as e:
                return JSONResponse({"error": f"the body is not a JSON object ({e})"}, status_code=400)
            try:
                announced = provider.announced(request.headers, payload)
            except Ping:
                return JSONResponse({"result": "pong"})
            except Ignored as e:
                return JSONResponse({"result": "ignored", "reason": str(e)}, status_code=202)
            d = Received(provider.name, provider.delivery(request.headers), hashlib.sha256(body).hexdigest())
            delivery = d.delivery
            where = f"/api/v1/hooks/deliveries/{provider.name}/{delivery}" if delivery else None
            seen = Deliveries(farm.r).claim(d)
            if seen and seen[0] == "processing":
                return JSONResponse({"result": "processing", "delivery": delivery, "outcome": where,
                                     "reason": f"delivery {delivery} is still being handled; its outcome will be "
                                               f"at {where}"}, status_code=202)
            if seen:
                log.info("%s delivery %s from %s: duplicate", provider.name, d.name, remote)
                return JSONResponse(duplicate(d, seen[1]))
            work = asyncio.wrap_future(workers.submit(d, announced))
            try:
                status, reply = await asyncio.wait_for(asyncio.shield(work), reply_seconds)
            except asyncio.TimeoutError:
                return JSONResponse({"result": "accepted", "delivery": delivery, "outcome": where,
                                     "reason": "still fetching the commit; its builds are queued once it is read"},
                                    status_code=202)
            return JSONResponse({**reply, "delivery": delivery}, status_code=status)

        events = "push and merge request" if provider.name == "gitlab" else "push and pull request"
        r.add_api_route(f"/hooks/{provider.name}", receive, methods=["POST"],
                        summary=f"{provider.name.capitalize()} webhook",
                        description=_DESCRIPTION.format(name=provider.name.capitalize(), lower=provider.name,
                                                        events=events, header=provider.signature_header))

    for p in PROVIDERS.values():
        route(p)

    @r.get("/api/v1/hooks/deliveries/{provider}/{delivery}", summary="What became of a webhook delivery",
           dependencies=[Depends(require("viewer"))])
    def delivery_outcome(provider: str, delivery: str) -> dict[str, Any]:
        """The reply the delivery got, or would have got had the provider waited: `result` is
        "processing" while the farm still works on it, else as the webhook answers (queued builds,
        "nothing to build" and why, or an `error` with the HTTP `status`). Kept 7 days."""
        if provider not in PROVIDERS:
            raise ApiError(404, f"no provider {provider!r}; one of {', '.join(PROVIDERS)}")
        found = Deliveries(farm.r).outcome(provider, delivery)
        if found is None:
            raise ApiError(404, f"no {provider} delivery {delivery!r} in the last 7 days")
        return {"provider": provider, "delivery": delivery, **found}

    return r
