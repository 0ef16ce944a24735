"""Retention through the API: pin a build's files, unpin them, run (or preview) a collector pass."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from ..auth import Principal
from ..retention import NotPinnable, summary
from ..service import Farm
from .auth import require
from .errors import ApiError

log = logging.getLogger("buildfarm.gc")


def router(farm: Farm) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["retention"])
    submitter, admin = Depends(require("submitter")), Depends(require("admin"))

    @api.post("/builds/{build_id}/pin", summary="Keep the build's log and artifacts until unpinned")
    def pin(build_id: str, who: Principal = submitter) -> dict[str, Any]:
        try:
            farm.retention.pin(build_id, who.user)
        except NotPinnable as e:
            raise ApiError(409, str(e)) from None
        return farm.builds.get(build_id, history=False)

    @api.delete("/builds/{build_id}/pin", summary="Let the build's files expire again at their times")
    def unpin(build_id: str, who: Principal = submitter) -> dict[str, Any]:
        farm.retention.unpin(build_id)
        return farm.builds.get(build_id, history=False)

    @api.post("/gc", summary="Delete the logs and artifacts that expired (dry_run: only list them)",
              dependencies=[admin])
    async def gc(dry_run: bool = Query(False, description="list what would be deleted, delete nothing")):
        result = await run_in_threadpool(farm.retention.collect, dry_run)
        result["summary"] = summary(result)
        if result["items"] and not dry_run:
            log.info("%s (asked through the API)", result["summary"])
        return result

    return api
