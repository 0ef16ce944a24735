"""Signing in, API tokens and secrets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..auth import ROLES, Principal
from ..scopes import SecretScope
from ..service import Farm
from .auth import COOKIE, require
from .errors import ApiError


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(..., description="who the token is for (letters, digits, . _ - @)")
    role: str = Field(..., description=" < ".join(ROLES))
    hook: bool = Field(False, description="may record builds as triggered by a git push (trigger kind `hook`, "
                                          "the pusher as user): the post-receive hook's token")


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(..., min_length=1, max_length=256)


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(..., min_length=1, max_length=64 * 1024)
    scope: SecretScope | None = Field(None, description="which builds may use it; left out: the secret keeps "
                                                        "its scope (a new one has none: admins only); null or {}: "
                                                        "none")


def _listed(name: str, scope: str | None) -> dict[str, Any]:
    s = SecretScope.model_validate_json(scope) if scope else SecretScope()
    return {"name": name, "scope": s.model_dump() if s.scoped else None, "usable": s.describe()}


def router(farm: Farm) -> APIRouter:
    api = APIRouter(prefix="/api/v1")
    admin = Depends(require("admin"))

    @api.get("/whoami", tags=["access"], summary="The caller's name and role")
    def whoami(who: Principal = Depends(require("viewer"))) -> dict[str, Any]:
        return {"user": who.user, "role": who.role, **({"hook": True} if who.hook else {})}

    @api.post("/session", tags=["access"], summary="Sign the dashboard in with a token (sets a cookie)")
    def sign_in(body: SessionRequest, request: Request):
        who = farm.tokens.check(body.token)
        if who is None:
            raise ApiError(401, "this API token is not valid (revoked, mistyped, or from another farm)")
        resp = JSONResponse({"user": who.user, "role": who.role})
        resp.set_cookie(COOKIE, body.token, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https", max_age=30 * 24 * 3600)
        return resp

    @api.delete("/session", tags=["access"], summary="Sign the dashboard out")
    def sign_out():
        resp = JSONResponse({"signed_out": True})
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @api.get("/tokens", tags=["access"], summary="API tokens (names and roles, never the tokens)",
             dependencies=[admin])
    def list_tokens() -> dict[str, Any]:
        return {"tokens": farm.tokens.list()}

    @api.post("/tokens", tags=["access"], status_code=201, dependencies=[admin],
              summary="Create an API token; the answer is the only time it is shown")
    def create_token(body: NewToken) -> dict[str, Any]:
        try:
            token = farm.tokens.create(body.user, body.role, body.hook)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        return {"user": body.user, "role": body.role, "hook": body.hook, "token": token}

    @api.delete("/tokens/{user}", tags=["access"], summary="Revoke a user's token", dependencies=[admin])
    def revoke_token(user: str) -> dict[str, Any]:
        if not farm.tokens.revoke(user):
            raise ApiError(404, f"no token named {user!r}; `buildfarm token list` shows them")
        return {"revoked": user}

    @api.get("/secrets", tags=["access"], summary="Secrets' names and scopes (never their values)",
             dependencies=[admin])
    def list_secrets() -> dict[str, Any]:
        """Each secret with its `scope` (null: unscoped, admins' builds only) and `usable`, the scope in words."""
        return {"secrets": [_listed(n, s) for n, s in farm.secrets.listing()]}

    @api.put("/secrets/{name}", tags=["access"], summary="Store a secret builds may ask for by name",
             dependencies=[admin])
    def set_secret(name: str, body: SecretValue) -> dict[str, Any]:
        scope = None
        if "scope" in body.model_fields_set:
            scope = body.scope.model_dump_json() if body.scope and body.scope.scoped else ""
        try:
            farm.secrets.set(name, body.value, scope)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        return _listed(name, farm.secrets.scopes([name])[name])

    @api.put("/secrets/{name}/scope", tags=["access"], dependencies=[admin],
             summary="Change which builds may use a secret (its value stays)")
    def set_secret_scope(name: str, body: SecretScope) -> dict[str, Any]:
        """An empty scope ({}) unscopes the secret: then only admins' builds may use it."""
        if not farm.secrets.set_scope(name, body.model_dump_json() if body.scoped else ""):
            raise ApiError(404, f"no secret named {name!r}; `buildfarm secret list` shows them")
        return _listed(name, farm.secrets.scopes([name])[name])

    @api.delete("/secrets/{name}", tags=["access"], summary="Delete a secret", dependencies=[admin])
    def delete_secret(name: str) -> dict[str, Any]:
        if not farm.secrets.delete(name):
            raise ApiError(404, f"no secret named {name!r}; `buildfarm secret list` shows them")
        return {"deleted": name}

    return api
