"""The web dashboard: `/` is its page, `/ui/NAME` its scripts and styles (shipped in buildfarm/web/).

The page is plain HTML, CSS and ES modules that talk to /api/v1 like any other client, signed in
with the `bf_session` cookie. Assets are revalidated on every load (ETag, `no-cache`), so an
upgraded farm never serves a stale script, and a 304 keeps it cheap.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .errors import ApiError

_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(html|js|css|svg)$")
# Scripts only from the farm itself; styles may be set inline (bar widths); data is fetched from it.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


@lru_cache(maxsize=64)
def _asset(name: str) -> tuple[bytes, str] | None:
    f = resources.files("buildfarm").joinpath("web", name)
    if not f.is_file():
        return None
    data = f.read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


def _serve(request: Request, name: str) -> Response:
    found = _asset(name) if _NAME.match(name) else None
    if found is None:
        raise ApiError(404, f"no dashboard file {name!r}")
    data, etag = found
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": _CSP, "Referrer-Policy": "same-origin"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=_TYPES[name.rsplit(".", 1)[1]], headers=headers)


def router() -> APIRouter:
    r = APIRouter(tags=["dashboard"])

    @r.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index(request: Request) -> Response:
        return _serve(request, "index.html")

    @r.api_route("/ui/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    def asset(name: str, request: Request) -> Response:
        return _serve(request, name)

    return r
