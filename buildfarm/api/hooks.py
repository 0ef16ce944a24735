"""Webhooks: POST /hooks/github, /hooks/gitlab, /hooks/gitea.

Open without a token: each delivery is verified with the farm's webhook secret instead (the
value of BUILDFARM_WEBHOOK_SECRET when the farm starts, else the file DATA_DIR/webhook.secret,
generated with mode 0600 on the farm's first start). A refused delivery is answered 401 and
logged (logger "buildfarm.hooks"); a delivery id seen before is answered 200 "duplicate" and
builds nothing. The farm fetches the announced commit into a bare mirror under
DATA_DIR/cache/hooks/, reads its .buildfarm.yml and the changed paths, and submits the builds.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..service import Conflict, Farm, SubmitError
from ..spec import BuildSpec
from ..triggers.buildfile import FILENAME, BuildFileError
from ..triggers.dispatch import UNFINISHED, Refused, dispatch
from ..triggers.gitrepo import GitError, Mirror
from ..triggers.providers import PROVIDERS, Announced, Ignored, Ping, Provider

log = logging.getLogger("buildfarm.hooks")
DELIVERY_TTL = 7 * 24 * 3600
SECRET_ENV = "BUILDFARM_WEBHOOK_SECRET"
MIN_SECRET = 16


def webhook_secret(data_dir: str | Path) -> str:
    """BUILDFARM_WEBHOOK_SECRET, else DATA_DIR/webhook.secret (created 0600 when missing)."""
    if os.environ.get(SECRET_ENV):
        if len(os.environ[SECRET_ENV]) < MIN_SECRET:
            raise ValueError(f"{SECRET_ENV} is shorter than {MIN_SECRET} characters; use a long random value")
        return os.environ[SECRET_ENV]
    path = Path(data_dir) / "webhook.secret"
    if path.exists() and len(path.read_text().strip()) >= MIN_SECRET:
        return path.read_text().strip()
    # Missing, or cut short (a first start killed mid-write): an empty key would make every
    # signature forgeable, so write a new one.
    tmp = path.with_name(f"webhook.secret.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    os.replace(tmp, path)
    return path.read_text().strip()


class FarmSink:
    """Submits and cancels inside the farm (the webhooks' side of `dispatch`)."""

    def __init__(self, farm: Farm):
        self.farm = farm

    def submit(self, spec: dict[str, Any], user: str | None) -> dict[str, Any]:
        try:
            return self.farm.submit(BuildSpec.model_validate(spec), user)
        except SubmitError as e:
            raise Refused(str(e)) from None

    def unfinished(self, repo: str) -> list[dict[str, Any]]:
        return [b for state in UNFINISHED for b in self.farm.builds.list(limit=500, state=state, repo=repo)[0]]

    def cancel(self, build_id: str, who: str) -> None:
        try:
            self.farm.cancel(build_id, who=who)
        except Conflict as e:
            raise Refused(str(e)) from None


def _build(farm: Farm, a: Announced) -> tuple[int, dict[str, Any]]:
    """Fetch, read, plan and submit (blocking: run in a thread)."""
    ev = a.event
    try:
        mirror = Mirror(farm.settings.cache_dir, a.fetch_url)
        mirror.fetch([ev.commit], a.refs)
        text = mirror.read(ev.commit, FILENAME)
        ev.changed = mirror.changed_paths(a.before, ev.commit, a.since_merge_base)
    except GitError as e:
        return 502, {"error": f"cannot read the announced commit: {e}"}
    try:
        out = dispatch(text, ev, FarmSink(farm))
    except BuildFileError as e:
        return 422, {"result": "invalid build file", "error": str(e), "commit": ev.commit}
    where = {"pr": ev.pr} if ev.pr else {"branch": ev.branch}
    return 200, {**out.as_json(), "commit": ev.commit, **where}


_DESCRIPTION = """Builds on {name} {events} deliveries, as asked by the pushed commit's `.buildfarm.yml`.

Authenticated with `{header}` and the farm's webhook secret: the value of `BUILDFARM_WEBHOOK_SECRET`
when the farm started, else the contents of `DATA_DIR/webhook.secret` (generated, mode 0600, on the
farm's first start; `cat ~/.buildfarm/webhook.secret`). Answers: 200 with the queued build ids (or why
nothing was built, or "duplicate" for a delivery id seen in the last 7 days), 202 for events that build
nothing, 401 for a missing or wrong signature, 422 for an invalid `.buildfarm.yml`, 502 when the commit
cannot be fetched from the payload's clone URL (the delivery can then be redelivered)."""


def router(farm: Farm) -> APIRouter:
    r = APIRouter(tags=["webhooks"])
    secret = webhook_secret(farm.settings.data_dir)

    def route(provider: Provider):
        async def receive(request: Request) -> JSONResponse:
            body = await request.body()
            remote = request.client.host if request.client else "?"
            problem = provider.verify(request.headers, body, secret)
            if problem:
                log.warning("refused %s delivery %s from %s: %s", provider.name,
                            provider.delivery(request.headers) or "(no id)", remote, problem)
                return JSONResponse({"error": problem}, status_code=401)
            try:
                payload = json.loads(body)
                if not isinstance(payload, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                return JSONResponse({"error": f"the body is not a JSON object ({e})"}, status_code=400)
            try:
                announced = provider.announced(request.headers, payload)
            except Ping:
                return JSONResponse({"result": "pong"})
            except Ignored as e:
                return JSONResponse({"result": "ignored", "reason": str(e)}, status_code=202)
            delivery = provider.delivery(request.headers)
            key = f"bf:hooks:delivery:{provider.name}:{delivery}"
            if delivery and not farm.r.set(key, "1", nx=True, ex=DELIVERY_TTL):
                return JSONResponse({"result": "duplicate", "delivery": delivery, "builds": [],
                                     "reason": f"delivery {delivery} was received before; nothing queued"})
            try:
                status, reply = await run_in_threadpool(_build, farm, announced)
            except Exception:
                if delivery:
                    farm.r.delete(key)  # the redelivery must not be taken for a duplicate
                raise
            if status >= 500 and delivery:
                farm.r.delete(key)  # a redelivery may succeed
            return JSONResponse({**reply, "delivery": delivery}, status_code=status)

        events = "push and merge request" if provider.name == "gitlab" else "push and pull request"
        r.add_api_route(f"/hooks/{provider.name}", receive, methods=["POST"],
                        summary=f"{provider.name.capitalize()} webhook",
                        description=_DESCRIPTION.format(name=provider.name.capitalize(), events=events,
                                                        header=provider.signature_header))

    for p in PROVIDERS.values():
        route(p)
    return r
