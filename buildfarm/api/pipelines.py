"""Pipelines and their runs under /api/v1 (the CLI's `buildfarm pipeline ...` and the dashboard's
graph view), and the agent's narrow access to the artifacts of its build's inputs."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from redis.exceptions import LockError

from ..artifacts import ArtifactPathError
from ..auth import Principal
from ..pipelines.daemon import engine_for
from ..pipelines.engine import StartError
from ..pipelines.model import PipelineInvalid, parse
from ..notify import Notifier, key
from ..pipelines.store import CHANGED, RunNotFound
from ..service import Conflict, Farm
from ..spec import Mapping, Name, Text, Value
from ..yamlsource import MAX_BYTES
from .auth import agent_token, require
from .errors import ApiError


class RunRequest(BaseModel):
    pipeline: Name = Field("", description="the name of a pipeline in the farm's pipelines directory")
    parameters: Mapping(Value | int | float | bool) = Field(default_factory=dict)
    source: Text(MAX_BYTES) | None = Field(None, description="a pipeline file's text, to run it instead of a named "
                                                             "one (at most 256 KB)")
    file: Name | None = Field(None, description="the name of that file (for messages)")


def _deps(role: str) -> list:
    return [Depends(require(role))]


def router(farm: Farm, changes: Notifier) -> APIRouter:
    """`changes` is notified of each change of a run (see api/app.py), which wakes its long polls.

    Long: one closure per route, over the engine and the farm (FastAPI's way to give routes their
    state); each route is short."""
    engine = engine_for(farm)
    r = APIRouter(tags=["pipelines"])

    # -- pipelines ---------------------------------------------------------------------------------
    @r.get("/api/v1/pipelines", summary="The farm's pipelines: schedule, parameters, last run, missed ticks",
           dependencies=_deps("viewer"))
    def pipelines() -> dict[str, Any]:
        good, bad = engine.catalog.load()
        out = []
        for p in sorted(good, key=lambda x: x.name):
            s = p.summary()
            ids, total = engine.runs.ids(1, 0, p.name)
            last = engine.runs.public(engine.runs.raw(ids[0]), full=False) if ids else None
            s["last_run"] = {k: last[k] for k in ("id", "state", "created_at", "finished_at")} if last else None
            s["runs"] = total
            s["next_tick"] = p.schedule.next_tick(time.time()) if p.schedule else None
            s["missed"] = engine.runs.events(p.name, "missed", limit=20)
            s["jobs"] = [{"name": j.name, "needs": j.needs, "when": j.when, "matrix": j.axes}
                         for j in p.jobs.values()]
            out.append(s)
        return {"pipelines": out, "directory": str(engine.catalog.directory),
                "invalid": [{"problems": [vars(x) for x in e.problems]} for e in bad]}

    # -- runs -----------------------------------------------------------------------------------------
    def start(body: RunRequest, who: Principal):
        params = {k: (("true" if v else "false") if isinstance(v, bool) else str(v))
                  for k, v in body.parameters.items()}
        if body.source is not None:
            try:
                p = parse(body.source, body.file or "<posted pipeline>")
            except PipelineInvalid as e:
                raise ApiError(422, f"the pipeline is not valid:\n{e}", [vars(x) for x in e.problems]) from None
            if body.pipeline and body.pipeline != p.name:
                raise ApiError(400, f"the file's pipeline is {p.name!r}, not {body.pipeline!r}")
        else:
            if not body.pipeline:
                raise ApiError(422, "give 'pipeline' (a name) or 'source' (a pipeline file's text)")
            p = engine.catalog.get(body.pipeline)
            if p is None:
                names = ", ".join(sorted(x.name for x in engine.catalog.load()[0])) or "none"
                raise ApiError(404, f"no pipeline {body.pipeline!r} in {engine.catalog.directory} (pipelines: "
                                   f"{names}); `buildfarm pipeline run FILE` runs a file")
        try:
            run = engine.start(p, params, {"kind": "api", "user": who.user}, role=who.role)
        except PipelineInvalid as e:
            raise ApiError(422, f"the pipeline is not valid with these parameters:\n{e}",
                           [vars(x) for x in e.problems]) from None
        except StartError as e:
            raise ApiError(400, str(e)) from None
        return run

    @r.post("/api/v1/pipeline-runs", status_code=201, summary="Start a pipeline run")
    def start_run(body: RunRequest, principal=Depends(require("submitter"))):
        return start(body, principal)

    @r.get("/api/v1/pipeline-runs", summary="Pipeline runs, newest first", dependencies=_deps("viewer"))
    def list_runs(limit: int = Query(20, ge=1, le=500), offset: int = Query(0, ge=0),
                  pipeline: str | None = None) -> dict[str, Any]:
        ids, total = engine.runs.ids(limit, offset, pipeline)
        runs = []
        for i in ids:
            try:
                runs.append(engine.runs.public(engine.runs.raw(i), full=False))
            except RunNotFound:
                continue
        return {"runs": runs, "total": total}

    @r.get("/api/v1/pipeline-runs/{run_id}", summary="A run and its jobs (a graph: each job's needs)",
           dependencies=_deps("viewer"))
    async def get_run(run_id: str, wait: float = Query(0, ge=0, le=60, description=(
                          "with version_not: answer when the run's version is not that one any more, or "
                          "after this many seconds")),
                      version_not: int | None = Query(None, description="the version the caller has seen")):
        try:
            if wait and version_not is not None:
                def changed() -> bool:
                    return int(engine.runs.raw(run_id).get("version") or 0) != version_not

                await changes.wait_until(key(CHANGED, run_id), changed, wait)
            return engine.get(run_id)
        except RunNotFound:
            raise ApiError(404, f"no pipeline run {run_id!r}; `buildfarm pipeline list` shows recent runs") from None

    @r.post("/api/v1/pipeline-runs/{run_id}/cancel", summary="Cancel a run: its queued and running builds, "
                                                              "and the jobs not started")
    def cancel_run(run_id: str, principal=Depends(require("submitter"))):
        try:
            return engine.cancel(run_id, who=principal.user)
        except RunNotFound:
            raise ApiError(404, f"no pipeline run {run_id!r}") from None
        except Conflict as e:
            raise ApiError(409, str(e)) from None
        except LockError:
            raise ApiError(503, f"run {run_id} is being updated by another process; try again") from None

    @r.get("/api/v1/pipeline-schedule/events", summary="Ticks started, missed or failed, newest first",
           dependencies=_deps("viewer"))
    def schedule_events(pipeline: str | None = None, kind: str | None = None,
                        limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        return {"events": engine.runs.events(pipeline, kind, limit)}

    # -- the agent: artifacts of its build's inputs (build-scoped token) -------------------------------
    def input_of(build_id: str, upstream: str, authorization: str | None):
        agent_token(farm, build_id, authorization)
        inputs = [i.build for i in farm.builds.spec(build_id).inputs]
        if upstream is not None and upstream not in inputs:
            raise ApiError(403, f"build {upstream} is not an input of build {build_id}")
        return inputs

    @r.get("/api/v1/agent/builds/{build_id}/inputs", tags=["agent"],
           summary="The artifacts of this build's inputs")
    def agent_inputs(build_id: str, authorization: str | None = Header(None)):
        inputs = input_of(build_id, None, authorization)
        return {"inputs": [{"build": i, "artifacts": farm.builds.artifacts(i)} for i in inputs]}

    @r.get("/api/v1/agent/builds/{build_id}/inputs/{upstream}/{path:path}", tags=["agent"],
           summary="One artifact of an input build", response_class=FileResponse)
    def agent_input_artifact(build_id: str, upstream: str, path: str, authorization: str | None = Header(None)):
        input_of(build_id, upstream, authorization)
        meta = {a["path"]: a for a in farm.builds.artifacts(upstream)}.get(path)
        if meta is None:
            raise ApiError(404, f"build {upstream} has no artifact {path!r}")
        try:
            full = farm.artifacts.path(upstream, path)
        except ArtifactPathError as e:
            raise ApiError(400, str(e)) from None
        return FileResponse(full, media_type="application/octet-stream", headers={"X-Checksum-Sha256": meta["sha256"]})

    return r
