"""The build agent's reports. Each call carries the build's own token, which is good for that
build's current attempt only: it can start, log, heartbeat, upload artifacts and finish, nothing else.
Once the build has ended the token is revoked: every route answers 409 "build ID has ended"."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..agent_bundle import build_bundle, bundle_tarball
from ..artifacts import ArtifactPathError, ChecksumMismatch
from ..diskspace import DiskFull
from ..service import Conflict, Farm, TokenInvalid
from ..spec import MAX_STEP, Name, Text
from .auth import agent_token
from .errors import ApiError


class StartReport(BaseModel):
    host: Name = "?"


class ProgressReport(BaseModel):
    commit: Text(40) | None = None


class FinishReport(BaseModel):
    outcome: Name
    exit_code: int | None = Field(None, ge=-(2**31), le=2**31)
    reason: Text(MAX_STEP) = ""
    commit: Text(40) | None = None
    cpu_seconds: float | None = Field(None, ge=0, description="CPU time the build's processes used (user + system)")


@contextmanager
def refusals():
    """The farm's refusals of a report as answers: 401 for another build's (or an earlier
    attempt's) token, 409 for a build that has ended or is not running."""
    try:
        yield
    except TokenInvalid as e:
        raise ApiError(401, str(e)) from None
    except Conflict as e:
        raise ApiError(409, str(e)) from None


def router(farm: Farm) -> APIRouter:
    api = APIRouter(prefix="/api/v1/agent", tags=["agent"])
    bundle: dict[str, Any] = {}

    @api.get("/bundle.tar.gz", summary="The build agent, for the Mesos fetcher", response_class=Response,
             responses={200: {"content": {"application/gzip": {}}, "description": "the agent bundle"}})
    def agent_bundle():
        if "data" not in bundle:
            path = build_bundle(Path(farm.settings.data_dir) / "agent")
            bundle["data"], bundle["sha256"] = bundle_tarball(path)
        return Response(bundle["data"], media_type="application/gzip",
                        headers={"X-Checksum-Sha256": bundle["sha256"]})

    @api.post("/builds/{build_id}/start")
    def start(build_id: str, body: StartReport = Body(default=StartReport()), authorization: str | None = Header(None)):
        token = agent_token(farm, build_id, authorization)
        with refusals():
            return farm.agent_start(build_id, token, body.host)

    @api.post("/builds/{build_id}/log")
    async def log(build_id: str, request: Request, seq: int = Query(..., ge=1),
                  authorization: str | None = Header(None)):
        token = agent_token(farm, build_id, authorization)
        data = await request.body()  # at most max_log_chunk (api/limits.py)
        # File and Redis writes off the event loop, so followers keep streaming meanwhile.
        with refusals():
            try:
                result = await run_in_threadpool(farm.agent_log, build_id, token, seq, data)
            except DiskFull as e:
                await run_in_threadpool(farm.disk_full, build_id, e)
                raise ApiError(507, f"{e}; the build was ended") from None
        if result == "gap":
            raise ApiError(409, f"expected log chunk {farm.logs.expected_seq(build_id)}, got {seq}")
        return {"result": result}

    @api.post("/builds/{build_id}/heartbeat")
    def heartbeat(build_id: str, authorization: str | None = Header(None)):
        token = agent_token(farm, build_id, authorization)
        with refusals():
            return {"state": farm.agent_heartbeat(build_id, token)}

    @api.post("/builds/{build_id}/progress")
    def progress(build_id: str, body: ProgressReport = Body(default=ProgressReport()),
                 authorization: str | None = Header(None)):
        token = agent_token(farm, build_id, authorization)
        if body.commit:
            with refusals():
                farm.agent_progress(build_id, token, body.commit)
        return {"ok": True}

    @api.put("/builds/{build_id}/artifacts/{path:path}")
    async def artifact(build_id: str, path: str, request: Request, x_checksum_sha256: str | None = Header(None),
                       authorization: str | None = Header(None)):
        token = agent_token(farm, build_id, authorization)
        try:
            staged = await farm.artifacts.stage(build_id, path, request.stream(), x_checksum_sha256,
                                                farm.settings.max_artifact_bytes)
        except ArtifactPathError as e:
            raise ApiError(400, str(e)) from None
        except ChecksumMismatch as e:
            raise ApiError(422, str(e)) from None
        except DiskFull as e:  # nothing of it was kept: the artifact is not recorded
            await run_in_threadpool(farm.disk_full, build_id, e)
            raise ApiError(507, f"{e}; the build was ended") from None
        with refusals():  # the build may have ended while the upload streamed: checked again as it is kept
            await run_in_threadpool(farm.agent_artifact, build_id, token, staged)
        return {"path": path, "size": staged.size, "sha256": staged.sha256}

    @api.post("/builds/{build_id}/finish")
    def finish(build_id: str, report: FinishReport, authorization: str | None = Header(None)):
        token = agent_token(farm, build_id, authorization)
        with refusals():
            return farm.agent_finish(build_id, token, report.outcome, report.exit_code, report.reason, report.commit,
                                     report.cpu_seconds)

    return api
