"""The REST API under /api/v1 (the CLI's only way in), and the agent's report endpoints.

Errors are JSON: {"error": "what is wrong and how to fix it", "details": [...]}.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from .. import __version__
from ..agent_bundle import build_bundle, bundle_tarball
from ..artifacts import ArtifactPathError, ChecksumMismatch, safe_relpath
from ..records import BuildNotFound
from ..service import Conflict, Farm, SubmitError
from ..spec import BuildSpec
from ..states import TERMINAL, State
from . import pipelines as pipelines_api


class ApiError(Exception):
    def __init__(self, status: int, message: str, details: list | None = None):
        self.status, self.message, self.details = status, message, details or []


class FinishReport(BaseModel):
    outcome: str
    exit_code: int | None = None
    reason: str = ""
    commit: str | None = None


def create_app(farm: Farm) -> FastAPI:
    app = FastAPI(title="buildfarm", version=__version__,
                  description="A CI build farm: submit builds, follow their logs, fetch their artifacts.")
    app.state.farm = farm
    builds = farm.builds

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message, "details": exc.details}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        details = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "unknown field"
            elif err.get("type") == "missing":
                msg = "required"
            details.append({"field": ".".join(loc) or "body", "message": msg})
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return JSONResponse({"error": f"invalid request: {summary}", "details": details}, status_code=422)

    @app.exception_handler(BuildNotFound)
    async def _missing(request: Request, exc: BuildNotFound):
        return JSONResponse({"error": f"no build {exc.args[0]!r}; `buildfarm list` shows the builds", "details": []},
                            status_code=404)

    def record(build_id: str) -> dict[str, Any]:
        return builds.get(build_id)

    # -- builds ---------------------------------------------------------------------------------
    @app.post("/api/v1/builds", status_code=201, tags=["builds"], summary="Submit a build")
    def submit(spec: BuildSpec) -> dict[str, Any]:
        try:
            return farm.submit(spec)
        except SubmitError as e:
            raise ApiError(400, str(e), [{"field": e.field or "spec", "message": str(e)}]) from None

    @app.get("/api/v1/builds", tags=["builds"], summary="List builds, newest first")
    def list_builds(state: State | None = None, limit: int = Query(50, ge=1, le=500),
                    offset: int = Query(0, ge=0)) -> dict[str, Any]:
        return {"builds": builds.list(limit=limit, offset=offset, state=state.value if state else None)}

    @app.get("/api/v1/builds/{build_id}", tags=["builds"], summary="A build's record and state history")
    def get_build(build_id: str) -> dict[str, Any]:
        rec = record(build_id)
        rec["artifacts"] = builds.artifacts(build_id)
        rec["log_bytes"] = farm.logs.size(build_id)
        return rec

    @app.post("/api/v1/builds/{build_id}/cancel", tags=["builds"], summary="Cancel a queued or running build")
    def cancel(build_id: str) -> dict[str, Any]:
        try:
            return farm.cancel(build_id)
        except Conflict as e:
            raise ApiError(409, str(e)) from None

    @app.get("/api/v1/builds/{build_id}/log", tags=["logs"], summary="The build's log (raw bytes)",
             response_class=StreamingResponse,
             responses={200: {"content": {"text/plain": {}}, "description": "log bytes from `offset`"}})
    async def get_log(build_id: str, offset: int = Query(0, ge=0), follow: bool = False):
        builds.raw(build_id)  # 404 for an unknown build

        async def stream():
            pos = offset
            idle_since = None
            while True:
                data = farm.logs.read(build_id, pos, 256 * 1024)
                if data:
                    pos += len(data)
                    idle_since = None
                    yield data
                    continue
                if not follow:
                    return
                if farm.logs.is_closed(build_id):
                    if farm.logs.size(build_id) <= pos:
                        return
                    continue
                state = builds.r.hget(f"bf:build:{build_id}", "state")
                if state in _TERMINAL:
                    # Ended but not closed yet (its container is being removed): a short grace.
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 15:
                        return
                await farm.logs.notifier.wait(build_id, 1.0)

        return StreamingResponse(stream(), media_type="text/plain; charset=utf-8",
                                 headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    @app.get("/api/v1/builds/{build_id}/artifacts", tags=["artifacts"], summary="The build's artifacts")
    def list_artifacts(build_id: str) -> dict[str, Any]:
        builds.raw(build_id)
        return {"artifacts": builds.artifacts(build_id)}

    @app.get("/api/v1/builds/{build_id}/artifacts/{path:path}", tags=["artifacts"], summary="Download an artifact",
             response_class=FileResponse)
    def download_artifact(build_id: str, path: str):
        builds.raw(build_id)
        index = {a["path"]: a for a in builds.artifacts(build_id)}
        meta = index.get(path)
        if meta is None:
            raise ApiError(404, f"build {build_id} has no artifact {path!r}; "
                                f"`buildfarm artifacts {build_id}` lists them")
        full = farm.artifacts.path(build_id, path)
        return FileResponse(full, filename=full.name, media_type="application/octet-stream",
                            headers={"X-Checksum-Sha256": meta["sha256"]})

    # -- the farm -------------------------------------------------------------------------------
    @app.get("/api/v1/agents", tags=["farm"], summary="Agents and their capacity")
    def agents() -> dict[str, Any]:
        return {"agents": builds.agents()}

    @app.get("/api/v1/queue", tags=["farm"], summary="Queued builds by priority")
    def queue() -> dict[str, Any]:
        return {"depth": farm.queue.depth()}

    @app.get("/healthz", tags=["farm"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["farm"], summary="Readiness: Redis answers")
    def readyz():
        try:
            farm.r.ping()
        except Exception as e:
            return JSONResponse({"status": "unavailable", "error": f"redis: {e}"}, status_code=503)
        return {"status": "ready", "version": __version__}

    # -- the agent's reports (token scoped to one build) ------------------------------------------
    bundle: dict[str, Any] = {}

    @app.get("/api/v1/agent/bundle.tar.gz", tags=["agent"], summary="The build agent, for the Mesos fetcher",
             response_class=Response)
    def agent_bundle():
        if "data" not in bundle:
            path = build_bundle(Path(farm.settings.data_dir) / "agent")
            bundle["data"], bundle["sha256"] = bundle_tarball(path)
        return Response(bundle["data"], media_type="application/gzip",
                        headers={"X-Checksum-Sha256": bundle["sha256"]})

    def agent_auth(build_id: str, authorization: str | None) -> None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token or not builds.exists(build_id) or not builds.check_token(build_id, token):
            raise ApiError(401, "this token is not valid for this build")

    @app.post("/api/v1/agent/builds/{build_id}/start", tags=["agent"])
    def agent_start(build_id: str, body: dict = Body(default={}), authorization: str | None = Header(None)):
        agent_auth(build_id, authorization)
        try:
            return farm.agent_start(build_id, str(body.get("host", "?")))
        except Conflict as e:
            raise ApiError(409, str(e)) from None

    @app.post("/api/v1/agent/builds/{build_id}/log", tags=["agent"])
    async def agent_log(build_id: str, request: Request, seq: int = Query(..., ge=1),
                        authorization: str | None = Header(None)):
        agent_auth(build_id, authorization)
        data = await request.body()
        if len(data) > farm.settings.max_log_chunk:
            raise ApiError(413, f"log chunk larger than {farm.settings.max_log_chunk} bytes")
        result = farm.agent_log(build_id, seq, data)
        if result == "gap":
            raise ApiError(409, f"expected log chunk {farm.logs.expected_seq(build_id)}, got {seq}")
        return {"result": result}

    @app.post("/api/v1/agent/builds/{build_id}/heartbeat", tags=["agent"])
    def agent_heartbeat(build_id: str, authorization: str | None = Header(None)):
        agent_auth(build_id, authorization)
        farm.agent_heartbeat(build_id)
        return {"state": builds.raw(build_id)["state"]}

    @app.post("/api/v1/agent/builds/{build_id}/progress", tags=["agent"])
    def agent_progress(build_id: str, body: dict = Body(default={}), authorization: str | None = Header(None)):
        agent_auth(build_id, authorization)
        if body.get("commit"):
            builds.set_fields(build_id, resolved_commit=str(body["commit"])[:40])
        return {"ok": True}

    @app.put("/api/v1/agent/builds/{build_id}/artifacts/{path:path}", tags=["agent"])
    async def agent_artifact(build_id: str, path: str, request: Request,
                             x_checksum_sha256: str | None = Header(None),
                             authorization: str | None = Header(None)):
        agent_auth(build_id, authorization)
        try:
            size, sha = await farm.artifacts.put(build_id, path, request.stream(), x_checksum_sha256,
                                                 farm.settings.max_artifact_bytes)
        except ArtifactPathError as e:
            raise ApiError(400, str(e)) from None
        except ChecksumMismatch as e:
            raise ApiError(422, str(e)) from None
        builds.add_artifact(build_id, safe_relpath(path), size, sha)
        return {"path": path, "size": size, "sha256": sha}

    @app.post("/api/v1/agent/builds/{build_id}/finish", tags=["agent"])
    def agent_finish(build_id: str, report: FinishReport, authorization: str | None = Header(None)):
        agent_auth(build_id, authorization)
        return farm.agent_finish(build_id, report.outcome, report.exit_code, report.reason, report.commit)

    app.include_router(pipelines_api.router(farm))
    return app


_TERMINAL = {s.value for s in TERMINAL}

__all__ = ["create_app"]
