"""Webhooks: POST /hooks/github, /hooks/gitlab, /hooks/gitea, and what became of a delivery.

Thin routes over triggers/webhooks.py, which verifies, records and handles each delivery.

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
import os
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..service import Farm
from ..triggers.providers import PROVIDERS, Provider
from ..triggers.webhooks import Refusal, Webhooks
from .auth import require
from .errors import ApiError

REPLY_ENV = "BUILDFARM_WEBHOOK_REPLY_SECONDS"
REPLY_SECONDS = 4.0


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
    hooks = Webhooks(farm)
    r = APIRouter(tags=["webhooks"], on_shutdown=[hooks.stop])
    reply_seconds = float(os.environ.get(REPLY_ENV) or REPLY_SECONDS)

    def route(provider: Provider):
        async def receive(request: Request) -> JSONResponse:
            remote = request.client.host if request.client else "?"
            try:
                # At most WEBHOOK_MAX_BYTES (api/limits.py), and only once the headers can be right.
                hooks.check_headers(provider, request.headers, remote)
                got = hooks.receive(provider, request.headers, await request.body(), remote)
            except Refusal as e:
                raise ApiError(e.status, str(e)) from None
            if got.work is None:
                return JSONResponse(got.body, status_code=got.status)
            try:
                status, reply = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(got.work)), reply_seconds)
            except asyncio.TimeoutError:
                return JSONResponse({"result": "accepted", "delivery": got.delivery, "outcome": got.outcome,
                                     "reason": "still fetching the commit; its builds are queued once it is read"},
                                    status_code=202)
            return JSONResponse({**reply, "delivery": got.delivery}, status_code=status)

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
        found = hooks.outcome(provider, delivery)
        if found is None:
            raise ApiError(404, f"no {provider} delivery {delivery!r} in the last 7 days")
        return {"provider": provider, "delivery": delivery, **found}

    return r
