"""Pipeline runs: start one (every job pinned to the commit the ref had at the start), advance
it as its builds end, cancel it, and tag the repository once every job succeeded.

A job becomes a build through `farm.submit`, with trigger {"kind": "pipeline", "detail": {"run",
"job"}} and the builds of the jobs it needs as `inputs` (their artifacts are downloaded into its
workspace before its steps). Advancing a run is idempotent and holds the run's Redis lock, so the
API, the scheduler and a periodic check may all call it, in any process, any number of times.

Job conditions (`when`): on_success (the default) runs when every job it needs succeeded;
on_failure when one of them, or a job before them, failed; always when they all ended. A job not
run is `skipped`, with the reason. `retries` re-submits a job whose build failed, errored or timed
out. The run ends `succeeded` when no job failed (and its tag, if any, was pushed), `cancelled`
when cancelled, else `failed`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis.exceptions import LockError

from ..mirrors import NETWORK_SCHEMES
from ..records import exit_code_of
from ..redis_outage import UNAVAILABLE
from ..scopes import Origin
from ..service import Conflict, Farm, SubmitError, branch_at, ls_remote, ref_commit, repo_allowed
from ..spec import BuildSpec
from ..states import JOB_FAILED, JOB_FINAL, State
from .catalog import Catalog
from .model import Pipeline, PipelineInvalid, run_plan, resolve_parameters
from .store import RunNotFound, RunStore
from .tagging import TagError, create_tag, tag_problem

log = logging.getLogger("buildfarm.pipelines")


class StartError(ValueError):
    """The run cannot start (bad parameters, unreachable repository); the message says why."""


class Engine:
    def __init__(self, farm: Farm, catalog: Catalog | None = None):
        self.farm = farm
        self.runs = RunStore(farm.r)
        self.catalog = catalog or Catalog()

    # -- starting ----------------------------------------------------------------------------------
    def start(self, p: Pipeline, parameters: dict[str, str], trigger: dict[str, Any],
              role: str | None = None) -> dict[str, Any]:
        """Start a run; `role` is the token role of whoever started it (None for a schedule)."""
        try:
            first = run_plan(p, parameters, commit=None)
            if first.tag and tag_problem(first.tag["name"]):
                raise StartError(f"tag.name: {tag_problem(first.tag['name'])}")
            for what, url in (("repo", first.repo), ("tag.push_url", (first.tag or {}).get("push_url"))):
                if url and not repo_allowed(url, self.farm.settings.allow_repos):
                    raise StartError(f"{what}: this farm builds only repositories under "
                                     f"{', '.join(self.farm.settings.allow_repos)}; {url} is not one")
            push_url = (first.tag or {}).get("push_url")
            if push_url and not push_url.startswith(NETWORK_SCHEMES):
                raise StartError(f"tag.push_url: {push_url} is not a git, http(s) or ssh URL; the farm pushes "
                                 f"release tags to network remotes only, never to a path on its host")
            if not first.repo.startswith(NETWORK_SCHEMES):
                raise StartError(f"repo: {first.repo} is not a git, http(s) or ssh URL; a run pins its commit "
                                 f"with `git ls-remote`, which the farm does for network repositories only")
            refs = ls_remote(first.repo) or {}
            commit = ref_commit(refs, first.repo, first.ref)
            if not commit:
                raise StartError(f"{first.repo} has no commit at {first.ref or 'its default branch'}")
            pinned = run_plan(p, parameters, commit=commit)
        except (ValueError, SubmitError) as e:
            if isinstance(e, PipelineInvalid | StartError):
                raise
            raise StartError(str(e)) from None
        jobs = [{"name": j.name, "job": j.job, "needs": j.needs, "matrix": j.matrix, "when": j.when,
                 "retries": j.retries, "spec": j.spec, "state": "pending", "reason": "waiting for its needs"
                 if j.needs else "starting", "build_id": None, "builds": [], "attempt": 0, "exit_code": None}
                for j in pinned.jobs]
        values = resolve_parameters(p, parameters)
        # What its builds' secret scopes are checked against: a pipeline is the farm's own only
        # when it is the text of the farm's file of that name (a posted source names itself).
        own = self.catalog.get(p.name)
        origin = {"role": role, "pipeline": p.name if own is not None and own.source == p.source else None,
                  "branch": branch_at(refs, first.ref, commit)}
        run_id = self.runs.create(p.name, p.file, p.source, values, trigger, first.repo, first.ref, commit,
                                  pinned.tag, jobs, origin)
        log.info("pipeline %s: run %s started at %s (%d jobs)", p.name, run_id, commit[:12], len(jobs))
        return self.advance(run_id)

    def get(self, run_id: str) -> dict[str, Any]:
        return self.runs.public(self.runs.raw(run_id))

    # -- advancing ---------------------------------------------------------------------------------
    def on_build_end(self, build_id: str, state: State) -> None:
        """The farm's end listener: wake the pipeline daemon for the build's run (cheap, never blocks)."""
        try:
            trigger = json.loads(self.farm.builds.raw(build_id)["spec"]).get("trigger") or {}
        except KeyError:
            return
        if trigger.get("kind") == "pipeline" and (trigger.get("detail") or {}).get("run"):
            self.runs.wake(trigger["detail"]["run"])

    def sweep(self) -> None:
        """Advance every unfinished run (covers a lost wake-up)."""
        for run_id in self.runs.active():
            try:
                self.advance(run_id)
            except RunNotFound:
                self.runs.forget(run_id)
            except LockError:
                pass  # another process is advancing it
            except UNAVAILABLE:
                raise  # Redis is away: the daemon says so once and waits
            except Exception:
                log.exception("advancing run %s failed", run_id)

    def advance(self, run_id: str) -> dict[str, Any]:
        with self.runs.lock(run_id):
            self._advance(run_id)
        return self.get(run_id)

    def _advance(self, run_id: str) -> None:
        raw = self.runs.raw(run_id)
        if raw["state"] != "running":
            return
        jobs = self.runs.jobs(raw)
        by_name = {j["name"]: j for j in jobs}
        cancelling = bool(raw.get("cancel_requested"))
        changed = False
        for j in jobs:  # what the builds did
            if j["build_id"] and j["state"] not in JOB_FINAL:
                changed |= self._refresh(run_id, raw, j, jobs, cancelling)
        for j in jobs:  # in order of needs: a skip cascades in one pass
            if j["state"] != "pending":
                continue
            if cancelling:
                j.update(state="cancelled", reason="the run was cancelled")
                changed = True
                continue
            needs = [by_name[n] for n in j["needs"]]
            if any(n["state"] not in JOB_FINAL for n in needs):
                continue
            go, why = _decide(j, needs, by_name)
            if go:
                self._submit(run_id, raw, j, by_name, jobs)
            else:
                j.update(state="skipped", reason=why)
            changed = True
        if changed:
            self.runs.save_jobs(run_id, jobs)
        if all(j["state"] in JOB_FINAL for j in jobs):
            self._finish(run_id, raw, jobs, cancelling)

    def _refresh(self, run_id: str, raw: dict, j: dict, jobs: list[dict], cancelling: bool) -> bool:
        try:
            b = self.farm.builds.raw(j["build_id"])
        except KeyError:
            j.update(state="error", reason=f"build {j['build_id']} disappeared")
            return True
        state, reason = b["state"], b.get("reason", "")
        code = exit_code_of(b)
        if state in JOB_FAILED and j["attempt"] <= j["retries"] and not cancelling:
            log.info("run %s: %s %s, retrying (%d of %d)", run_id, j["name"], state, j["attempt"], j["retries"])
            self._submit(run_id, raw, j, {x["name"]: x for x in jobs}, jobs,
                         note=f"retry {j['attempt']} of {j['retries']} after {state}: {reason}")
            return True
        if (state, reason, code) == (j["state"], j["reason"], j["exit_code"]):
            return False
        j.update(state=state, reason=reason, exit_code=code)
        return True

    def _submit(self, run_id: str, raw: dict, j: dict, by_name: dict, jobs: list[dict], note: str = "") -> None:
        trigger = json.loads(raw["trigger"])
        spec = dict(j["spec"])
        spec["trigger"] = {"kind": "pipeline", "user": trigger.get("user"),
                           "detail": {"run": run_id, "job": j["name"], "pipeline": raw["pipeline"]}}
        spec["inputs"] = [{"build": by_name[n]["build_id"], "name": n} for n in j["needs"]
                          if by_name[n]["build_id"] and by_name[n]["spec"].get("artifacts")]
        started = json.loads(raw.get("origin") or "{}")  # runs started before secrets had scopes have none
        origin = Origin("pipeline", trigger.get("user"), started.get("role"), started.get("pipeline"),
                        started.get("branch"), f"the run's ref {raw.get('ref') or '(the default branch)'} was not "
                                             f"a branch when it started")
        try:
            record = self.farm.submit(BuildSpec.model_validate(spec), origin)
        except (SubmitError, ValueError) as e:
            j.update(state="error", reason=f"could not submit: {e}")
            return
        j.update(state=record["state"], build_id=record["id"], builds=j["builds"] + [record["id"]],
                 attempt=j["attempt"] + 1, exit_code=None, reason=note or "submitted")
        self.runs.save_jobs(run_id, jobs)  # at once: a crash now must not submit it twice

    def _finish(self, run_id: str, raw: dict, jobs: list[dict], cancelling: bool) -> None:
        failed = [j["name"] for j in jobs if j["state"] in JOB_FAILED]
        cancelled = [j["name"] for j in jobs if j["state"] == "cancelled"]
        if cancelling:
            state, reason = "cancelled", raw.get("reason") or "cancelled"
        elif failed:
            state, reason = "failed", f"{len(failed)} job(s) failed: {', '.join(failed[:5])}"
        elif cancelled:
            state, reason = "cancelled", f"build(s) cancelled: {', '.join(cancelled[:5])}"
        else:
            state, reason = "succeeded", f"all {len(jobs)} jobs succeeded"
        extra: dict[str, Any] = {}
        if raw.get("tag"):
            tag = json.loads(raw["tag"])
            result = {"name": tag["name"], "commit": raw["commit"], "push_url": tag["push_url"]}
            if state == "succeeded":
                try:
                    result.update(state="created", detail=create_tag(
                        raw["repo"], tag["push_url"], raw["commit"], tag["name"], tag["message"],
                        self.farm.settings.data_dir / "tmp"))
                    reason += f"; {result['detail']}"
                except TagError as e:
                    result.update(state="failed", detail=str(e))
                    state, reason = "failed", f"all jobs succeeded but the tag was not created: {e}"
            else:
                result.update(state="not created", detail=f"the run {state}: tags are made only when every "
                                                          f"job succeeds")
            extra["tag_result"] = json.dumps(result)
        self.runs.finish(run_id, state, reason, **extra)
        (log.info if state == "succeeded" else log.warning)("pipeline %s: run %s %s: %s", raw["pipeline"], run_id,
                                                            state, reason)

    # -- cancelling ----------------------------------------------------------------------------------
    def cancel(self, run_id: str, who: str = "user") -> dict[str, Any]:
        with self.runs.lock(run_id):
            raw = self.runs.raw(run_id)
            if raw["state"] != "running":
                raise Conflict(f"run {run_id} already ended ({raw['state']}); nothing to cancel")
            self.runs.set_fields(run_id, cancel_requested=time.time(), reason=f"cancelled by {who}")
            for j in self.runs.jobs(raw):
                if j["build_id"] and j["state"] not in JOB_FINAL:
                    try:
                        self.farm.cancel(j["build_id"], who=f"{who} (pipeline run {run_id})")
                    except (Conflict, KeyError):
                        pass  # it ended meanwhile
            self._advance(run_id)
        return self.get(run_id)


def _failed_before(j: dict, by_name: dict, memo: dict[str, bool]) -> bool:
    """Whether `j` or a job it (transitively) needs failed."""
    if j["name"] not in memo:
        memo[j["name"]] = j["state"] in JOB_FAILED or any(_failed_before(by_name[n], by_name, memo)
                                                          for n in j["needs"])
    return memo[j["name"]]


def _decide(j: dict, needs: list[dict], by_name: dict) -> tuple[bool, str]:
    if j["when"] == "always":
        return True, ""
    memo: dict[str, bool] = {}
    if j["when"] == "on_failure":
        if any(_failed_before(n, by_name, memo) for n in needs):
            return True, ""
        return False, "skipped: nothing before it failed (when: on_failure)"
    bad = [n for n in needs if n["state"] != "succeeded"]
    if bad:
        return False, f"skipped: {bad[0]['name']} {bad[0]['state']}"
    return True, ""
