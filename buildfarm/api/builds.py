"""Builds, their logs and their artifacts: what users and the dashboard read and change."""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..auth import Principal
from ..notify import Notifier, key
from ..records import STATE_CHANNEL
from ..retention import date_text
from ..scopes import Origin
from ..service import Conflict, Farm, OutOfScope, SubmitError
from ..spec import BuildSpec
from ..states import FARM_KINDS, TERMINAL_STATES, TRIGGER_KINDS, State
from .auth import require, still_allowed
from .errors import ApiError

READ_CHUNK = 256 * 1024
ENDED_GRACE = 15.0  # seconds a log may stay open after its build ended (the container is being removed)
KEEPALIVE = 15.0
RECHECK = 2.0  # seconds between checks that a streaming caller's token is still valid
REVOKED = "the API token of this stream is no longer valid (revoked); sign in again"


class TokenRevoked(Exception):
    """The token a log stream was opened with was revoked meanwhile."""


def router(farm: Farm, changes: Notifier) -> APIRouter:
    """`changes` is notified of each build's state changes (see api/app.py): it wakes long polls.

    Long: one closure per route, over the farm and its stores (FastAPI's way to give routes their
    state); each route is short, and the helpers they share are module functions above."""
    api = APIRouter(prefix="/api/v1")
    builds = farm.builds
    viewer, submitter = Depends(require("viewer")), Depends(require("submitter"))

    @api.post("/builds", status_code=201, tags=["builds"], summary="Submit a build")
    def submit(spec: BuildSpec, who: Principal = submitter) -> dict[str, Any]:
        try:
            return farm.submit(recorded_trigger(spec, who), Origin.token(who.user, who.role))
        except SubmitError as e:
            raise ApiError(403 if isinstance(e, OutOfScope) else 400, str(e),
                           [{"field": e.field or "spec", "message": str(e)}]) from None

    @api.get("/builds", tags=["builds"], summary="List builds, newest first, filtered and paged",
             description="Each build's `spec` is a summary (`\"summary\": true`): repo, ref, commit, image, "
                         "resources, priority, constraints, trigger, and `run`, the start of what it runs. "
                         "GET /api/v1/builds/{id} has the whole spec.",
             dependencies=[viewer])
    def list_builds(state: State | None = None,
                    repo: str | None = Query(None, description="the repository URL, exactly as submitted"),
                    trigger: str | None = Query(None, description=f"one of {', '.join(TRIGGER_KINDS)}"),
                    user: str | None = Query(None, description="who submitted or pushed"),
                    team: str | None = Query(None, description="the team it is charged to"),
                    limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10**9)) -> dict[str, Any]:
        page, total = builds.list(limit=limit, offset=offset, state=state.value if state else None,
                                  repo=repo, trigger=trigger, user=user, team=team)
        return {"builds": page, "total": total, "limit": limit, "offset": offset}

    @api.get("/builds/{build_id}", tags=["builds"], summary="A build's record and state history",
             dependencies=[viewer])
    async def get_build(build_id: str, wait: float = Query(0, ge=0, le=60, description=(
                            "with state_not: answer as soon as the build's state is none of those, or after "
                            "this many seconds (a long poll: `--wait` learns of the end when it happens)")),
                        state_not: list[State] = Query([], description=(
                            "states to wait past (repeatable): the one the caller has seen, or every "
                            "unfinished state to wait for the end"))) -> dict[str, Any]:
        if wait and state_not:
            waiting = {s.value for s in state_not}
            await changes.wait_until(key(STATE_CHANNEL, build_id), lambda: builds.state(build_id) not in waiting,
                                     wait)
        rec = builds.get(build_id)
        rec["artifacts"] = builds.artifacts(build_id)
        rec["log_bytes"] = farm.logs.size(build_id)
        return rec

    @api.post("/builds/{build_id}/cancel", tags=["builds"], summary="Cancel a queued or running build")
    def cancel(build_id: str, who: Principal = submitter) -> dict[str, Any]:
        try:
            return farm.cancel(build_id, who.user)
        except Conflict as e:
            raise ApiError(409, str(e)) from None

    @api.post("/builds/{build_id}/rebuild", status_code=201, tags=["builds"],
              summary="Submit the same build again (its ref resolved anew)")
    def rebuild(build_id: str, who: Principal = submitter) -> dict[str, Any]:
        try:
            return farm.rebuild(build_id, Origin.token(who.user, who.role))
        except SubmitError as e:
            raise ApiError(403 if isinstance(e, OutOfScope) else 400, f"cannot rebuild {build_id}: {e}",
                           [{"field": e.field or "spec", "message": str(e)}]) from None

    def unless_expired(build_id: str, kind: str) -> None:
        """410 for files the collector deleted (the record stays): say when, and how to keep others."""
        at = farm.retention.expired_at(build_id, kind)
        if at:
            what = "log" if kind == "log" else "artifacts"
            raise ApiError(410, f"the {what} of build {build_id} expired on {date_text(at)} and was deleted; "
                                f"`buildfarm pin ID` keeps a build's files, `expire_in` sets how long")

    # -- logs -------------------------------------------------------------------------------------
    async def follow(build_id: str, offset: int, keep_following: bool,
                     allowed: Callable[[], bool] = lambda: True) -> AsyncIterator[bytes]:
        """The log's bytes from `offset`; with keep_following, until the build ended and its log closed.
        Yields b"" when nothing came for a while (a chance to send a keep-alive). `allowed` is asked
        every RECHECK seconds; when it says no (the caller's token was revoked), TokenRevoked."""
        pos, ended_since, quiet_since, checked = offset, None, time.monotonic(), time.monotonic()
        while True:
            if time.monotonic() - checked > RECHECK:
                if not await run_in_threadpool(allowed):
                    raise TokenRevoked()
                checked = time.monotonic()
            data = farm.logs.read(build_id, pos, READ_CHUNK)
            if data:
                pos += len(data)
                ended_since, quiet_since = None, time.monotonic()
                yield data
                continue
            if not keep_following:
                return
            if farm.logs.is_closed(build_id):
                if farm.logs.size(build_id) <= pos:
                    return
                continue
            if builds.state(build_id) in TERMINAL_STATES:
                ended_since = ended_since or time.monotonic()
                if time.monotonic() - ended_since > ENDED_GRACE:
                    return
            if time.monotonic() - quiet_since > KEEPALIVE:
                quiet_since = time.monotonic()
                yield b""
            await farm.logs.wait(build_id, 1.0)

    @api.get("/builds/{build_id}/log", tags=["logs"], dependencies=[viewer],
             summary="The build's log as raw bytes: a range (offset, length), or followed live",
             response_class=StreamingResponse,
             responses={200: {"content": {"text/plain": {}}, "description": "log bytes from `offset`"}})
    async def get_log(request: Request, build_id: str, offset: int = Query(0, ge=0, le=2**53),
                      length: int | None = Query(None, ge=1, le=2**53, description="at most this many bytes"),
                      follow_: bool = Query(False, alias="follow", description="keep streaming until the build ends")):
        builds.raw(build_id)  # 404 for an unknown build
        unless_expired(build_id, "log")
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
                   "X-Log-Size": str(farm.logs.size(build_id))}
        if length is not None and not follow_:
            return Response(farm.logs.read(build_id, offset, length), media_type="text/plain; charset=utf-8",
                            headers=headers)

        async def body():
            try:
                async for chunk in follow(build_id, offset, follow_, lambda: still_allowed(request, "viewer")):
                    if chunk:
                        yield chunk
            except TokenRevoked:
                return  # the stream ends; asking again answers 401

        return StreamingResponse(body(), media_type="text/plain; charset=utf-8", headers=headers)

    @api.get("/builds/{build_id}/log/events", tags=["logs"], dependencies=[viewer],
             summary="The build's log live, as Server-Sent Events",
             description="`event: log` carries text (UTF-8, invalid bytes replaced) and `id:` the byte offset "
                         "after it, so a reconnecting EventSource resumes with `Last-Event-ID`; `event: end` "
                         "carries the outcome, `{\"state\", \"reason\", \"exit_code\"}`, when the log is "
                         "complete (the build has ended).",
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"}})
    async def log_events(request: Request, build_id: str, offset: int = Query(0, ge=0, le=2**53),
                         last_event_id: str | None = Header(None)):
        builds.raw(build_id)
        unless_expired(build_id, "log")
        if last_event_id and last_event_id.isdigit():
            offset = int(last_event_id)

        async def events():
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            pos = offset
            yield b"retry: 2000\n\n"
            try:
                async for chunk in follow(build_id, offset, True, lambda: still_allowed(request, "viewer")):
                    if not chunk:
                        yield b": keep-alive\n\n"
                        continue
                    pos += len(chunk)
                    text = decoder.decode(chunk)
                    if text:
                        held = len(decoder.getstate()[0])
                        yield sse("log", text, pos - held)
            except TokenRevoked:
                yield sse("denied", json.dumps({"error": REVOKED}), pos)
                return
            b = builds.raw(build_id)
            outcome = {"state": b["state"], "reason": b.get("reason", ""),
                       "exit_code": int(b["exit_code"]) if b.get("exit_code") else None}
            yield sse("end", json.dumps(outcome), pos)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- artifacts ------------------------------------------------------------------------------------
    @api.get("/builds/{build_id}/artifacts", tags=["artifacts"], summary="The build's artifacts",
             dependencies=[viewer])
    def list_artifacts(build_id: str) -> dict[str, Any]:
        builds.raw(build_id)
        return {"artifacts": builds.artifacts(build_id)}

    @api.get("/builds/{build_id}/artifacts/{path:path}", tags=["artifacts"], summary="Download an artifact",
             response_class=FileResponse, dependencies=[viewer],
             responses={200: {"content": {"application/octet-stream": {}}, "description": "the file"}})
    def download_artifact(build_id: str, path: str):
        builds.raw(build_id)
        unless_expired(build_id, "artifacts")
        meta = {a["path"]: a for a in builds.artifacts(build_id)}.get(path)
        if meta is None:
            raise ApiError(404, f"build {build_id} has no artifact {path!r}; "
                                f"`buildfarm artifacts {build_id}` lists them")
        full = farm.artifacts.path(build_id, path)
        return FileResponse(full, filename=full.name, media_type="application/octet-stream",
                            headers={"X-Checksum-Sha256": meta["sha256"]})

    return api


def recorded_trigger(spec: BuildSpec, who: Principal) -> BuildSpec:
    """The spec with the trigger the farm records for a build submitted through the API: its user
    is the caller's token (whatever name a client sent), and the kinds the farm assigns itself are
    refused, except `hook` (with the pusher as its user) from a token made for the post-receive hook."""
    t = spec.trigger
    if t.kind == "hook" and who.hook:
        return spec
    if t.kind in FARM_KINDS:
        hint = (" (the post-receive hook's token is made with `buildfarm token create NAME --role submitter "
                "--hook`)" if t.kind == "hook" else "")
        message = (f"trigger kind {t.kind!r} is recorded by the farm itself, not set by a client{hint}; "
                   f"submit with kind cli, api or jenkins")
        raise ApiError(403, message, [{"field": "trigger.kind", "message": message}])
    return spec.model_copy(update={"trigger": t.model_copy(update={"user": who.user})})


def sse(event: str, text: str, offset: int) -> bytes:
    """One Server-Sent Event. SSE ends a data line at CR or LF, so each line of `text` is its own
    `data:` field (the client joins them with LF); a lone CR (a progress bar) becomes LF."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return (f"event: {event}\nid: {offset}\n" + "".join(f"data: {ln}\n" for ln in lines) + "\n").encode()
