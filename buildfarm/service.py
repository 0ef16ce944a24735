"""The farm's operations on builds, shared by the API, the scheduler and the agent endpoints:
submit, cancel, and the agent's start/log/finish reports. Every change is recorded in Redis
(with its time and reason) before anything acts on it.
"""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import redis

from .redis_url import client as redis_client
from .artifacts import ArtifactStore, StagedArtifact
from .auth import MIN_SECRET_LENGTH, SecretStore, SecretUnreadable, TokenStore
from .config import Settings
from .diskspace import DiskFull
from .logs import LogStore
from .mirrors import ANONYMOUS_SCHEMES, anonymous_git_env
from .queue import BuildQueue
from .records import BuildStore, Fence, spec_of
from .retention import Policy, Retention
from .placement import Agent, PendingBuild, Resources, unmet_reason
from .scopes import Origin, SecretScope, has_dot_segments, refusal
from .spec import BuildSpec, Trigger
from .stats import Stats
from .loans import LoanStore
from .market import Ledger
from .teams import TeamError, TeamStore
from .states import ACTIVE, TERMINAL, State

log = logging.getLogger("buildfarm")


SOCKET_TIMEOUT = 5.0  # seconds a Redis call may take


class SubmitError(ValueError):
    """A spec that is valid in form but cannot run here; the message says how to fix it."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class OutOfScope(SubmitError):
    """The build asks for a secret whose scope it is outside; the message names the secret and its scope."""


class Conflict(ValueError):
    """The build is not in a state that allows the operation."""


class Ended(Conflict):
    """The build has ended: its agent's token is revoked, and its log, artifacts and record sealed."""

    def __init__(self, build_id: str):
        super().__init__(f"build {build_id} has ended")


class TokenInvalid(ValueError):
    """Not the agent token of the build's current attempt."""

    def __init__(self, build_id: str):
        super().__init__(f"this token is not valid for build {build_id}")


def connect(url: str) -> tuple[redis.Redis, redis.Redis]:
    """A text connection for records and a bytes connection for RQ (which needs raw bytes).
    `redis+sentinel://` URLs name a Sentinel-managed primary (see redis_url.py)."""
    # Short, so a Redis that holds the connection without answering (stopped, swapping) turns into
    # a 503 rather than a hang; every blocking wait (BLPOP) is shorter than it.
    return (redis_client(url, decode_responses=True, socket_timeout=SOCKET_TIMEOUT,
                             socket_connect_timeout=SOCKET_TIMEOUT, health_check_interval=30),
            redis_client(url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT))


def _named(ids: list[str], shown: int = 10) -> str:
    """'a, b, c' or 'a, b and 8 more': at most `shown` of the ids."""
    return ", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def needs(spec: BuildSpec) -> Resources:
    """What a build asks for, as the placement core counts it."""
    r = spec.resources
    return Resources(r.cpus, r.mem, r.disk)


def pending_build(build_id: str, spec: BuildSpec, seq: int, queued_at: float = 0.0) -> PendingBuild:
    """A queued build as the placement core sees it."""
    return PendingBuild(build_id, needs(spec), spec.parsed_constraints(), spec.priority.rank, seq,
                        spec.wait_for_capacity, spec.team, spec.preemptible, queued_at)


class Farm:
    def __init__(self, settings: Settings, redis_url: str):
        self.settings = settings
        self.r, self.rq = connect(redis_url)
        # For health checks: answers within 2 s or counts as down.
        self.probe = redis_client(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.builds = BuildStore(self.r)
        self.queue = BuildQueue(self.rq)
        self.logs = LogStore(settings.logs_dir)
        self.logs.publish = self.r.publish  # followers in every API replica wake when a log grows
        self.artifacts = ArtifactStore(settings.artifacts_dir)
        self.tokens = TokenStore(self.r)
        self.secrets = SecretStore(self.r, Path(settings.data_dir) / "secrets.key")
        self.stats = Stats(self.r)
        self.retention = Retention(self.r, self.builds, self.logs, self.artifacts,
                                   Policy(settings.keep_logs, settings.keep_artifacts))
        self.teams = TeamStore(self.r)
        self.ledger = Ledger(self.r)
        self.loans = LoanStore(self.r, self.teams, self.ledger)
        # Called after a build reaches a final state, in the process that ended it (API or scheduler).
        self.end_listeners: list[Callable[[str, State], None]] = []
        # Set by the process that runs a backend, so submit can check images on this host.
        self.image_check: Callable[[str], str | None] | None = None

    def fenced(self, fence: Fence) -> Farm:
        """The same farm for the leading scheduler: its build records and the market's ledger refuse
        every change once `fence` no longer holds the schedulers' lease (see lease.py)."""
        view = copy.copy(self)
        view.builds = self.builds.fenced(fence)
        view.ledger = self.ledger.fenced(fence)
        return view

    # -- submit ------------------------------------------------------------------------------
    def submit(self, spec: BuildSpec, origin: Origin) -> dict[str, Any]:
        """Validate what only the farm can (secrets and their scopes, capacity, image, ref), then
        queue the build. `origin` is who asks, as the farm established it (an API token, a webhook,
        a pipeline run)."""
        if not repo_allowed(spec.repo, self.settings.allow_repos):
            raise SubmitError(f"this farm builds only repositories under {', '.join(self.settings.allow_repos)}; "
                              f"{spec.repo} is not one", "repo")
        short = [k for k, v in spec.secret_env.items() if len(v) < MIN_SECRET_LENGTH]
        if short:
            raise SubmitError(f"secret_env {', '.join(short)}: a value shorter than {MIN_SECRET_LENGTH} characters "
                              f"cannot be masked in the log", "secret_env")
        missing = self.secrets.missing(spec.secrets)
        if missing:
            raise SubmitError(f"no secret named {', '.join(missing)} on this farm; an admin stores one with "
                              f"`buildfarm secret set NAME`", "secrets")
        pinned = self._check_scopes(spec, origin)
        spec = self._charge(spec, origin)
        self._check_capacity(spec)
        if self.image_check:
            problem = self.image_check(spec.image)
            if problem:
                raise SubmitError(problem, "image")
        if self.settings.check_repos and not pinned:
            pinned = None if spec.commit else check_remote(spec.repo, spec.ref)
        own_secrets = spec.secret_env
        if own_secrets:  # the record shows the names only
            spec = spec.model_copy(update={"secret_env": {k: "***" for k in own_secrets}})
        record, _token = self.builds.create(spec, origin.user)
        if own_secrets:
            self.secrets.keep_for_build(record["id"], own_secrets)
        if pinned:  # the build checks out what the ref pointed at when it was submitted
            self.builds.set_fields(record["id"], pinned_commit=pinned)
        what = spec.ref or (spec.commit or "")[:12] or "default branch"
        self.queue.enqueue(record["id"], spec.priority.value, f"{spec.repo}@{what} in {spec.image}")
        self.builds.wake("submit")
        return record

    def rebuild(self, build_id: str, origin: Origin) -> dict[str, Any]:
        """The same spec again (its ref resolved anew, its secrets' scopes checked anew against who
        asks now), recorded as a rebuild of `build_id`."""
        spec = self.builds.spec(build_id)
        if spec.secret_env:
            raise SubmitError(f"build {build_id} was given one-time secrets ({', '.join(spec.secret_env)}), which "
                              f"the farm does not keep; submit it anew with them", "secret_env")
        detail = {"rebuild_of": build_id, **{f"original_{k}": v for k, v in spec.trigger.detail.items()}}
        spec = spec.model_copy(update={"trigger": Trigger(kind="rebuild", user=origin.user, detail=detail)})
        return self.submit(spec, origin)

    def _check_scopes(self, spec: BuildSpec, origin: Origin) -> str | None:
        """Refuse a build outside a secret's scope (OutOfScope). Returns the commit its branch check
        found at the tip of the build's branch, which the build then pins, if it made one."""
        if not spec.secrets:
            return None
        scopes = {n: SecretScope.model_validate_json(s) if s else None
                  for n, s in self.secrets.scopes(spec.secrets).items()}
        branch = cache(lambda: verified_branch(spec, origin))
        for name, scope in scopes.items():
            why = refusal(name, scope, spec, origin, lambda: branch()[:2])
            if why:
                raise OutOfScope(why, "secrets")
        return branch()[2] if any(s and s.branches for s in scopes.values()) else None

    def _charge(self, spec: BuildSpec, origin: Origin) -> BuildSpec:
        """The spec with the team it is charged to (teams.py); refused when the team is unknown, the
        submitter not a member, or the build larger than the team's limit."""
        if not spec.team and not self.teams.exist():
            return spec
        person = origin.role is not None and origin.role != "admin"
        user = origin.user if origin.via in ("token", "pipeline") else None  # a webhook's pusher is no farm user
        try:
            team = self.teams.charge_to(spec.team, user, admin=not person)
            if team:
                self.teams.check_fits(team, needs(spec))
        except TeamError as e:
            raise SubmitError(str(e), "team") from None
        return spec if team == spec.team else spec.model_copy(update={"team": team})

    def _check_capacity(self, spec: BuildSpec) -> None:
        if spec.wait_for_capacity:
            return
        agents = [agent_from_json(a) for a in self.builds.agents()]
        reason = unmet_reason(agents, pending_build("new", spec, 0))
        if reason:
            raise SubmitError(f"{reason}; lower the request, or pass --wait-for-capacity to wait for such an agent",
                              "resources" if "asks for more" in reason else "constraints")

    # -- ending and cancelling ----------------------------------------------------------------------
    def end(self, build_id: str, state: State, reason: str, *, exit_code: int | None = None,
            allowed_from=None, close_log: bool = False, token: str | None = None, **fields) -> bool:
        """Move a build to a final state (from the states it may follow, states.COMES_FROM, or
        `allowed_from` among them) and say so in its log. Its agent token is revoked in the same
        step; with `token`, only if that is the build's token."""
        if exit_code is not None:
            fields["exit_code"] = exit_code
        before = self.builds.raw(build_id)
        moved = self.builds.transition(build_id, state, reason, allowed_from=allowed_from, token=token, **fields)
        if not moved:
            return False
        self._charge_attempt(build_id, before, preempted=False)
        spec_priority = self.builds.raw(build_id)["priority"]
        self.queue.mark_ended(build_id, spec_priority, state)
        self.retention.schedule(build_id)
        self.logs.append_system(build_id, f"build {state.value}: {reason}")
        if close_log:
            self.logs.close(build_id)
        self.secrets.drop_for_build(build_id)
        self.stats.ended(state)
        self.builds.wake("end")
        for listener in self.end_listeners:
            try:
                listener(build_id, state)
            except Exception:  # a listener's bug must not undo the build's end
                log.exception("end listener %r failed for build %s", listener, build_id)
        return True

    def cancel(self, build_id: str, who: str = "user") -> dict[str, Any]:
        raw = self.builds.raw(build_id)
        state = State(raw["state"])
        if state in TERMINAL:
            raise Conflict(f"build {build_id} already ended ({state.value}); nothing to cancel")
        queued = state is State.QUEUED
        if not self.end(build_id, State.CANCELLED, f"cancelled by {who}", close_log=queued):
            now = State(self.builds.raw(build_id)["state"])
            raise Conflict(f"build {build_id} already ended ({now.value}); nothing to cancel")
        return self.builds.get(build_id)

    # -- teams ----------------------------------------------------------------------------------
    def delete_team(self, name: str, force: bool = False) -> dict[str, Any]:
        """Delete a team. While builds charged to it are queued or running, refused (naming them)
        unless `force`: then its queued builds are cancelled with the reason "team NAME deleted" and
        its running ones run to their end (queued again later, a retry or a preemption, the
        scheduler cancels them the same way: no team is left to run them for)."""
        self.teams.get(name)  # unknown: refused, naming the teams there are
        in_team = self.builds.team_ids_in
        queued, running = in_team(name, State.QUEUED), in_team(name, State.LAUNCHING, State.RUNNING)
        if (queued or running) and not force:
            in_flight = " and ".join(f"{len(ids)} {state} ({_named(ids)})"
                                     for ids, state in ((queued, "queued"), (running, "running")) if ids)
            raise TeamError(f"team {name} has builds in flight, {in_flight}: cancel them (`buildfarm cancel ID`), "
                            f"or delete the team with --force, which cancels its queued builds and lets the running "
                            f"ones end", 409)
        self.teams.delete(name)  # first: nothing is charged to it from here on
        cancelled = [bid for bid in in_team(name, State.QUEUED)
                     if self.end(bid, State.CANCELLED, f"team {name} deleted", allowed_from=[State.QUEUED],
                                 close_log=True)]
        return {"deleted": name, "cancelled": cancelled, "running": in_team(name, State.LAUNCHING, State.RUNNING)}

    def disk_full(self, build_id: str, e: DiskFull) -> None:
        """The farm could not store the build's output: end it with that reason (its container is
        stopped); what was stored before stays whole."""
        reason = f"{e}; free space (`buildfarm gc`, --keep-logs, --keep-artifacts) and rebuild it"
        if self.end(build_id, State.ERROR, reason, allowed_from=ACTIVE):  # a queued build writes nothing
            log.warning("build %s ended: %s", build_id, e)

    def _charge_attempt(self, build_id: str, before: dict[str, str], preempted: bool) -> None:
        """Record what the attempt that just ended held (its request, from its launch to now) on the
        build (reserved_cpu_seconds, reserved_mem_mb_seconds: summed over its attempts) and in its
        team's counters. Nothing when the build was not launched (ended while queued)."""
        if before.get("state") not in (State.LAUNCHING.value, State.RUNNING.value) or not before.get("launched_at"):
            return
        spec = spec_of(before)
        seconds = max(0.0, time.time() - float(before["launched_at"]))
        r = spec.resources
        self.builds.add_reserved(build_id, seconds, r.cpus, r.mem)
        self.stats.attempt_used(spec.team, seconds, r.cpus, r.mem, preempted)

    def requeue(self, build_id: str, reason: str) -> bool:
        """Put a launched build back in the queue after an infrastructure failure."""
        raw = self.builds.raw(build_id)
        if not self.builds.transition(build_id, State.QUEUED, f"retrying: {reason}"):
            return False
        self.queue.requeue(build_id, raw["priority"])
        self.logs.append_system(build_id, f"attempt {raw.get('attempt', '?')} lost ({reason}); queued again")
        self.builds.wake("requeue")
        return True

    def preempt(self, build_id: str, reason: str) -> bool:
        """Queue a launched build again because its capacity went back to its owner (not a failure:
        its retries stay). Returns whether it was launched or running."""
        raw = self.builds.raw(build_id)
        if not self.builds.transition(build_id, State.QUEUED, reason, preemptions=int(raw.get("preemptions") or 0) + 1,
                                      queued_at=time.time(), preempting=time.time()):
            return False
        self._charge_attempt(build_id, raw, preempted=True)
        self.queue.requeue(build_id, raw["priority"])
        self.logs.append_system(build_id, f"attempt {raw.get('attempt', '?')} stopped ({reason}); queued again")
        self.builds.wake("preempt")
        return True

    # -- the agent's reports ---------------------------------------------------------------------
    # Each write is checked against the agent's token in the same atomic step (records.py): once a
    # build has ended, whatever its token still sends changes nothing and is told so (Ended).
    def _refuse(self, build_id: str, verdict: str) -> None:
        """Raise what a verdict of records.agent_write other than 'ok' means."""
        if verdict == "ended":
            raise Ended(build_id)
        if verdict != "ok":
            raise TokenInvalid(build_id)

    def agent_start(self, build_id: str, token: str, host: str) -> dict[str, Any]:
        raw = self.builds.raw(build_id)
        if raw["state"] == State.LAUNCHING.value:
            now = time.time()
            if self.builds.transition(build_id, State.RUNNING, f"agent started on {host}", token=token,
                                      started_at=now, last_seen=now):
                self.stats.started(now - float(raw["created_at"]))
        self._refuse(build_id, self.builds.check_token(build_id, token))
        state = self.builds.state(build_id)
        if state != State.RUNNING.value:  # a retried start is fine; a build not launched is not
            raise Conflict(f"build {build_id} is {state}; not starting it")
        spec = self.builds.spec(build_id)
        body = spec.model_dump(mode="json")
        body["steps"] = spec.shell_steps()
        # Secret values go to the agent only, over its build-scoped token; the record keeps names.
        try:
            values = {**self.secrets.values(spec.secrets), **self.secrets.for_build(build_id)}
        except SecretUnreadable as e:
            self.end(build_id, State.ERROR, str(e))
            raise Conflict(str(e)) from None
        return {"spec": body, "pinned_commit": raw.get("pinned_commit") or None, "secrets": values}

    def agent_log(self, build_id: str, token: str, seq: int, data: bytes) -> str:
        """Append chunk `seq`: 'appended', 'duplicate' or 'gap'. The token is checked under the
        log's lock, which the farm's closing line also takes: a chunk lands before it or not at all."""
        result = self.logs.append_chunk(build_id, seq, data,
                                        check=lambda: self.builds.agent_write(build_id, token, last_seen=time.time()))
        if result in ("ended", "invalid"):
            self._refuse(build_id, result)
        return result

    def agent_heartbeat(self, build_id: str, token: str) -> str:
        self._refuse(build_id, self.builds.agent_write(build_id, token, last_seen=time.time()))
        return self.builds.state(build_id) or ""

    def agent_progress(self, build_id: str, token: str, commit: str) -> None:
        self._refuse(build_id, self.builds.agent_write(build_id, token, resolved_commit=commit[:40]))

    def agent_artifact(self, build_id: str, token: str, staged: StagedArtifact) -> None:
        """Keep an uploaded artifact if the build still runs: recorded under the token's check and
        put in place under the log's lock, so it is in place before the farm's closing line or never."""
        with self.logs.locked(build_id):
            verdict = self.builds.agent_write(build_id, token, artifact=staged.record())
            if verdict == "ok":
                staged.keep()
        if verdict != "ok":
            staged.discard()
            self._refuse(build_id, verdict)

    def agent_finish(self, build_id: str, token: str, outcome: str, exit_code: int | None, reason: str,
                     commit: str | None, cpu_seconds: float | None = None) -> dict[str, Any]:
        state = {"succeeded": State.SUCCEEDED, "failed": State.FAILED}.get(outcome, State.ERROR)
        extra = {"resolved_commit": commit[:40]} if commit else {}
        if cpu_seconds is not None:  # what the agent measured its processes used, recorded with the end
            extra["measured_cpu_seconds"] = cpu_seconds
        if not self.end(build_id, state, reason or outcome, exit_code=exit_code, token=token,
                        allowed_from=ACTIVE, **extra):  # an agent ends only a launched build
            self._refuse(build_id, self.builds.check_token(build_id, token))
            raise Conflict(f"build {build_id} is {self.builds.state(build_id)}; it has not started")
        if cpu_seconds is not None:
            self.stats.measured(self.builds.spec(build_id).team, cpu_seconds)
        self.logs.close(build_id)
        return self.builds.get(build_id, history=False)


def agent_from_json(a: dict[str, Any]) -> Agent:
    c = a["capacity"]
    return Agent(a["agent_id"], a.get("host", ""), Resources(c["cpus"], c["mem"], c.get("disk", 0)),
                 a.get("attributes", {}))


def repo_allowed(url: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `url` is under one of the allowed prefixes (any, when there are none). A path with
    '.' or '..' segments (also %-encoded) is refused: git would resolve it out of the prefix."""
    if not prefixes:
        return True
    return not has_dot_segments(url) and url.startswith(tuple(prefixes))


def ls_remote(url: str, timeout: float = 20.0) -> dict[str, str] | None:
    """The refs of a network repository now (`git ls-remote`): name -> commit, an annotated tag
    peeled to its commit. None for a local path: that is the build's to read, not the farm's (the
    build itself finds out, and an unknown ref then ends it `error` with the reason)."""
    if url.startswith(ANONYMOUS_SCHEMES):
        env = anonymous_git_env()
    elif url.startswith("ssh://"):  # the refs only, with the farm's key; nothing of it is mirrored
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes", "GIT_ALLOW_PROTOCOL": "ssh",
               "HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    else:
        return None
    try:
        out = subprocess.run(["git", "ls-remote", "--", url], capture_output=True, text=True, timeout=timeout,
                             env=env, check=False)
    except subprocess.TimeoutExpired:
        raise SubmitError(f"repository {url} did not answer within {timeout:.0f} s", "repo") from None
    if out.returncode != 0:
        msg = " ".join(ln.strip() for ln in out.stderr.strip().splitlines()[-2:]) or f"git exit {out.returncode}"
        raise SubmitError(f"cannot read repository {url}: {msg}", "repo")
    refs: dict[str, str] = {}
    for line in out.stdout.splitlines():
        sha, _, name = line.partition("\t")
        if name.endswith("^{}"):  # an annotated tag, peeled: the commit it points at wins
            refs[name.removesuffix("^{}")] = sha
        else:
            refs.setdefault(name, sha)
    return refs


def check_remote(url: str, ref: str | None, timeout: float = 20.0) -> str | None:
    """Fail fast on an unreachable repository or an unknown branch/tag (`git ls-remote`).
    Returns the commit the ref (or the default branch) points at now, which the build pins."""
    refs = ls_remote(url, timeout)
    return None if refs is None else ref_commit(refs, url, ref)


def ref_commit(refs: dict[str, str], url: str, ref: str | None) -> str | None:
    """The commit `ref` names among a repository's refs (a branch before a tag of the same name)."""
    if ref is None:
        return refs.get("HEAD")
    for name in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
        if name in refs:
            return refs[name]
    branches = sorted(n.removeprefix("refs/heads/") for n in refs if n.startswith("refs/heads/"))
    raise SubmitError(f"ref {ref!r} not found in {url}; branches: {', '.join(branches[:10]) or 'none'}", "ref")


def branch_at(refs: dict[str, str], ref: str | None, commit: str | None) -> str | None:
    """The branch `ref` names when it is a branch whose tip is `commit` (any tip when None)."""
    if not ref:
        return None
    branch = ref.removeprefix("refs/heads/")
    tip = refs.get(f"refs/heads/{branch}")
    return branch if tip and (commit is None or tip.startswith(commit)) else None


def verified_branch(spec: BuildSpec, origin: Origin) -> tuple[str | None, str, str | None]:
    """The branch the build runs as the farm verified it: (branch, why there is none, the branch's
    tip to pin the build to). A webhook or a pipeline run verified it already; for a token's build
    the farm asks the repository that `ref` is a branch and that the commit, if any, is its tip."""
    if origin.via != "token":
        return origin.branch, origin.no_branch, None
    if not spec.ref:
        what = f"commit {spec.commit[:12]} alone" if spec.commit else "the default branch"
        return None, f"it names no branch ({what} is not a branch the farm can verify): give --ref BRANCH", None
    refs = ls_remote(spec.repo)
    if refs is None:
        return None, f"the farm verifies a branch with git ls-remote, of network repositories only, and " \
                     f"{spec.repo} is a path", None
    branch = branch_at(refs, spec.ref, None)
    if branch is None:
        return None, f"ref {spec.ref} is not a branch of {spec.repo}", None
    tip = refs[f"refs/heads/{branch}"]
    if spec.commit and not tip.startswith(spec.commit):
        return None, f"commit {spec.commit[:12]} is not the tip of branch {branch} (now {tip[:12]}): only a " \
                     f"branch's current commit may use a secret scoped to branches", None
    return branch, "", tip
