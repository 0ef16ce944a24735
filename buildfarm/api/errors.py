"""Every error the API returns is JSON: {"error": "what is wrong and how to fix it", "details": [...]}.

One path: a route raises ApiError (or AuthError, its subclass for tokens and roles); the handlers
below render it, and turn FastAPI's own errors (validation, unknown routes) and a bug into the
same shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..records import BuildNotFound
from ..redis_outage import RETRY_AFTER_SECONDS, UNAVAILABLE, describe
from ..spec import describe_errors

log = logging.getLogger("buildfarm.api")


class ApiError(Exception):
    logged = False  # whether the refusal is worth a warning in the farm's log (who was refused, and why)

    def __init__(self, status: int, message: str, details: list | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.details, self.headers = status, message, details or [], headers


def error(status: int, message: str, details: list | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "details": details or []}, status_code=status, headers=headers)


def render(request: Request, exc: ApiError) -> JSONResponse:
    """The response for an ApiError (the handler's, and the body-limit middleware's before a route
    runs); a refused caller (AuthError 401) is logged with the remote address."""
    if exc.logged:
        log.warning("refused %s %s from %s: %s", request.method, request.url.path,
                    request.client.host if request.client else "?", exc.message)
    return error(exc.status, exc.message, exc.details, exc.headers)


def redis_away(exc: Exception) -> JSONResponse:
    """The farm's Redis is restarting or stopped: the farm's log says so once (supervisor,
    scheduler); each request gets a 503 its client can retry."""
    return error(503, f"the farm's Redis is not answering ({describe(exc)}); retry in a few seconds",
                 headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        details = describe_errors(exc, skip=("body",), default="body")
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return error(422, f"invalid request: {summary}", details)

    @app.exception_handler(BuildNotFound)
    async def _missing(request: Request, exc: BuildNotFound):
        return error(404, f"no build {exc.args[0]!r}; `buildfarm list` shows the builds")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        message = {404: f"no such route {request.url.path}; /docs lists the API",
                   405: f"{request.method} is not allowed on {request.url.path}; /docs lists the API"}
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):  # FastAPI's JSON parsing
            message[400] = "the JSON body is nested too deeply to be read; send a flatter document"
        return error(exc.status_code, message.get(exc.status_code, str(exc.detail)), headers=exc.headers)

    async def _redis_away(request: Request, exc: Exception):
        return redis_away(exc)

    for kind in UNAVAILABLE:
        app.add_exception_handler(kind, _redis_away)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); the farm's log has the details")
