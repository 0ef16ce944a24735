"""Request bodies: who may send one, and how large, decided before the body is read.

An ASGI middleware in front of every route:
- a change under /api/v1 (any method but GET/HEAD/OPTIONS) needs a valid API token before its body
  is read, so a caller without one gets 401 and the farm reads nothing (the route's own dependency
  still checks the role); the agent's routes check their build's token themselves, before reading;
- each route has a body limit (LIMITS, the agent's from the farm's settings): a Content-Length
  above it is refused at once, and a body sent without one (chunked) is counted as it streams and
  refused when it passes the limit. Either way the answer is 413 naming the limit, and the farm
  never holds more than the limit of one request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..redis_outage import UNAVAILABLE
from .auth import AuthError, authenticate
from .errors import error, redis_away, render

KB, MB = 1024, 1024 * 1024
WEBHOOK_MAX_BYTES = 5 * MB  # a provider's delivery (GitHub's push payloads are far smaller)
SPEC_MAX_BYTES = 1 * MB  # a build spec, or a pipeline run (with a pipeline file's text, at most 256 KB)
DEFAULT_MAX_BYTES = 64 * KB  # anything else: tokens, secrets, the agent's reports
_SAFE = {"GET", "HEAD", "OPTIONS"}
_AGENT = re.compile(r"^/api/v1/agent/builds/[^/]+/(artifacts/.+|log)$")
# Routes that take a change without an API token: signing in (the token is the body).
_OPEN = {"/api/v1/session"}


@dataclass(frozen=True)
class Limit:
    max_bytes: int
    what: str  # for the message: "a webhook delivery"

    def message(self) -> str:
        return f"the request body is larger than {_size(self.max_bytes)}, the limit for {self.what}"


class BodyTooLarge(HTTPException):
    """Raised by `receive` while a route reads a body past its limit; the API answers 413 with it."""

    def __init__(self, limit: Limit):
        super().__init__(413, limit.message())


def limit_for(method: str, path: str, settings: Settings) -> Limit:
    """The body limit of a route (every route has one)."""
    if method == "POST" and path.startswith("/hooks/"):
        return Limit(WEBHOOK_MAX_BYTES, "a webhook delivery")
    if method == "POST" and path == "/api/v1/builds":
        return Limit(SPEC_MAX_BYTES, "a build spec")
    if method == "POST" and path == "/api/v1/pipeline-runs":
        return Limit(SPEC_MAX_BYTES, "a pipeline run")
    agent = _AGENT.match(path)
    if agent and method == "PUT" and agent.group(1) != "log":
        return Limit(settings.max_artifact_bytes, "an artifact (max_artifact_bytes)")
    if agent and method == "POST" and agent.group(1) == "log":
        return Limit(settings.max_log_chunk, "a log chunk (max_log_chunk)")
    return Limit(DEFAULT_MAX_BYTES, "this route")


class BodyLimits:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE:
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/agent/") and path not in _OPEN:
            request = Request(scope)
            try:
                authenticate(request, "viewer")  # who it is; the route checks the role
            except AuthError as e:
                return await render(request, e)(scope, receive, send)
            except UNAVAILABLE as e:  # a middleware's errors bypass the app's handlers: the same 503 here
                return await redis_away(e)(scope, receive, send)
        limit = limit_for(scope["method"], path, self.settings)
        declared = _content_length(scope)
        if declared is not None and declared > limit.max_bytes:
            return await error(413, limit.message())(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.max_bytes:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _size(n: int) -> str:
    for unit, size in (("GB", 1024 * MB), ("MB", MB), ("KB", KB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"
