"""Who is calling: `require(role)` is the FastAPI dependency every user route declares.

A token comes as `Authorization: Bearer TOKEN`, or in the `bf_session` cookie the dashboard gets
from `POST /api/v1/session`. Changes made with the cookie must also come from the farm's own
pages (same origin), so another site cannot ride a signed-in browser.
"""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from ..auth import ROLES, Principal
from .errors import ApiError

COOKIE = "bf_session"
_bearer = HTTPBearer(auto_error=False, description="an API token: `buildfarm token create NAME --role ROLE`")
_cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="the dashboard's session")
_SAFE = {"GET", "HEAD", "OPTIONS"}


class AuthError(ApiError):
    """A request without the token or role it needs: 401 (logged, with a Bearer challenge) or 403."""

    def __init__(self, status: int, message: str):
        super().__init__(status, message, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)
        self.logged = status == 401


def require(role: str):
    """The dependency for a route that needs at least `role`; its value is the caller."""
    if role not in ROLES:
        raise ValueError(role)

    # The two schemes are declared so /docs and the OpenAPI document show them; `authenticate` reads them.
    # Not async: the token check reads Redis, which must not hold up the event loop when Redis hangs.
    def dependency(request: Request, _b: HTTPAuthorizationCredentials | None = Security(_bearer),
                         _c: str | None = Security(_cookie)) -> Principal:
        return authenticate(request, role)

    return dependency


def authenticate(request: Request, role: str) -> Principal:
    tokens = request.app.state.farm.tokens
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    via_cookie = False
    if not token and request.cookies.get(COOKIE):
        token, via_cookie = request.cookies[COOKIE], True
    if not token:
        raise AuthError(401, "this needs an API token: pass `Authorization: Bearer TOKEN` (the CLI reads "
                             "BUILDFARM_TOKEN), or sign in on the dashboard; an admin makes one with "
                             "`buildfarm token create NAME --role viewer|submitter|admin`")
    who = tokens.check(token)
    if who is None:
        raise AuthError(401, "this API token is not valid (revoked, mistyped, or from another farm)")
    if via_cookie and request.method not in _SAFE and not _same_origin(request):
        raise AuthError(403, "a change signed in by cookie must come from the farm's own pages")
    if not who.can(role):
        raise AuthError(403, f"{who.user} is a {who.role}; this needs the {role} role")
    request.state.principal = who
    return who


def still_allowed(request: Request, role: str) -> bool:
    """Whether the token of a request that was let in still holds `role`: a long response (a
    followed log) asks again every few seconds, so a revoked token does not keep it open."""
    try:
        authenticate(request, role)
        return True
    except AuthError:
        return False


def agent_token(farm, build_id: str, authorization: str | None) -> str:
    """The agent token of `build_id`'s current attempt from the Authorization header, or AuthError:
    401 for any other token, 409 once the build has ended (its token died with it). Each write an
    agent makes checks the token again, atomically with the write (service.py)."""
    token = (authorization or "").removeprefix("Bearer ").strip()
    verdict = farm.builds.check_token(build_id, token)
    if verdict == "ended":
        raise AuthError(409, f"build {build_id} has ended")
    if verdict != "ok":
        raise AuthError(401, "this token is not valid for this build")
    return token


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    host = request.headers.get("host", "")
    return bool(host) and (origin == f"http://{host}" or origin == f"https://{host}"
                           or origin.startswith((f"http://{host}/", f"https://{host}/")))
