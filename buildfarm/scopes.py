"""Secret scopes: which builds may use a farm secret, as GitHub environments and GitLab protected
variables decide it. Pure: the farm gives it the build, who asks, and the branch it verified.

A scope has five lists. A build may use the secret when it fits all three of:

- `repos`: repository URL globs (fnmatch: `*` also crosses `/`); empty: any repository. A URL with
  `.` or `..` path segments matches none (git would resolve it somewhere else).
- `branches`: branch globs as in .buildfarm.yml's `branches:` (`*` within a segment, `**` across,
  `!` excludes); empty: any branch, or none. Matched against the branch the farm verified the
  build runs, never a name the submitter merely claims: a token's build names it with `ref` and the
  farm checks with `git ls-remote` that it is a branch and that the build's commit (if it names
  one) is that branch's tip; a webhook's is the pushed branch of the signed delivery (a pull
  request's: its source branch, when it is in the same repository); a pipeline run's is its `ref`,
  resolved when the run started. A commit alone is on no branch.
- who asks, from `pipelines`, `roles` and `users`: an admin always may. A build submitted with an
  API token (CLI, API, git hook, Jenkins) may when the token's user is listed or its role is at
  least a listed role. A build of a pipeline run may when its pipeline is listed (one of the
  farm's pipeline files, not a source posted with the run), or as the person who started the run.
  A webhook build has no farm user behind it (a pusher's name on GitHub is not a farm user): it
  may when the scope names both `repos` and `branches`.

A secret with no scope at all is unscoped: only admins' builds may use it until an admin scopes it.
"""

from __future__ import annotations

import fnmatch
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .auth import ROLES, USER_NAME
from .globs import selected
from .spec import BuildSpec

MAX_PATTERNS = 100


class SecretScope(BaseModel):
    """Who may use a secret; an empty list places no limit of its own (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid")

    repos: list[str] = Field(default_factory=list, max_length=MAX_PATTERNS,
                             description="repository URL globs (fnmatch), e.g. git://git.example/app*")
    branches: list[str] = Field(default_factory=list, max_length=MAX_PATTERNS,
                                description="branch globs as in .buildfarm.yml, e.g. main, release/*")
    pipelines: list[str] = Field(default_factory=list, max_length=MAX_PATTERNS,
                                 description="names of the farm's pipelines whose builds may use it")
    roles: list[str] = Field(default_factory=list, max_length=MAX_PATTERNS,
                             description="token roles (and those above) that may submit builds using it")
    users: list[str] = Field(default_factory=list, max_length=MAX_PATTERNS,
                             description="token names that may submit builds using it")

    @field_validator("repos", "branches", "pipelines")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.strip("!") or len(p) > 500 or any(c.isspace() for c in p):
                raise ValueError(f"{p!r} is not a pattern: give a non-empty glob without spaces (at most 500 characters)")
        return list(dict.fromkeys(v))

    @field_validator("roles", "users")
    @classmethod
    def _names(cls, v: list[str], info: ValidationInfo) -> list[str]:
        for name in v:
            if info.field_name == "roles" and name not in ROLES:
                raise ValueError(f"unknown role {name!r}; use one of {', '.join(ROLES)}")
            if info.field_name == "users" and not USER_NAME.match(name):
                raise ValueError(f"{name!r} is not a token name (letters, digits, '.', '_', '-' or '@')")
        return list(dict.fromkeys(v))

    @property
    def scoped(self) -> bool:
        return bool(self.repos or self.branches or self.pipelines or self.roles or self.users)

    def describe(self) -> str:
        """E.g. "by repositories git://x/* on branches main, release/*, asked for by users alice,
        webhooks or admins"."""
        if not self.scoped:
            return "by admins' builds only (unscoped)"
        where = f"by repositories {', '.join(self.repos)}" if self.repos else "by any repository"
        if self.branches:
            where += f" on branches {', '.join(self.branches)}"
        who = [f"{what} {', '.join(names)}" for what, names in
               (("pipelines", self.pipelines), ("users", self.users), ("roles", self.roles)) if names]
        if self.repos and self.branches:
            who.append("webhooks")
        who.append("admins")
        return f"{where}, asked for by {', '.join(who[:-1])} or {who[-1]}" if len(who) > 1 else f"{where}, by admins"


@dataclass(frozen=True)
class Origin:
    """Who asks for a build, as the farm itself established it (never read from the spec)."""

    via: str = "farm"  # "token" (API, CLI, git hook, Jenkins), "webhook", "pipeline"; "farm": no one
    user: str | None = None  # the token's name; who started a pipeline run; a webhook's pusher (shown only)
    role: str | None = None  # the token's role (for a pipeline run, its starter's); None without a token
    pipeline: str | None = None  # the farm's own pipeline file the build comes from (a posted source is not)
    branch: str | None = None  # for a webhook or pipeline build: the branch the farm verified it runs
    no_branch: str = "it is on no branch the farm verified"  # why `branch` is None, for the message

    @classmethod
    def token(cls, user: str, role: str) -> Origin:
        return cls("token", user, role)

    def shown(self) -> str:
        if self.via == "token":
            return f"submitted by {self.user} ({self.role})"
        if self.via == "pipeline":
            by = f"{self.user} ({self.role})" if self.role else (self.user or "?")
            return f"from pipeline {self.pipeline or '(a posted source)'} started by {by}"
        if self.via == "webhook":
            return f"from a webhook (pushed by {self.user or '?'})"
        return "from the farm itself"


def has_dot_segments(url: str) -> bool:
    """Whether the URL's path has '.' or '..' segments (also %-encoded), which git resolves away."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path if "://" in url else url)
    return any(seg in (".", "..") for seg in path.replace("\\", "/").split("/"))


def repo_in(patterns: list[str], url: str) -> bool:
    return not has_dot_segments(url) and any(fnmatch.fnmatchcase(url, p) for p in patterns)


def _who_refusal(scope: SecretScope, origin: Origin) -> str | None:
    """Why who asks may not use the secret, or None when they may."""
    if origin.role == "admin":
        return None
    person = origin.role is not None and (origin.user in scope.users or any(
        ROLES.index(origin.role) >= ROLES.index(r) for r in scope.roles))
    if origin.via == "token":
        return None if person else f"{origin.user} ({origin.role}) is not among the users or roles it names"
    if origin.via == "pipeline":
        if person or (origin.pipeline and origin.pipeline in scope.pipelines):
            return None
        if not origin.pipeline:
            return "a pipeline posted with its run is not one of the farm's pipeline files, and whoever started it " \
                   "is not among the users or roles it names"
        return f"pipeline {origin.pipeline} is not among the pipelines it names (nor is whoever started the run " \
               f"among its users or roles)"
    if origin.via == "webhook":
        if scope.repos and scope.branches:
            return None
        return "a webhook build has no farm user behind it: it may use a secret only when the secret's scope " \
               "names both repositories and branches"
    return "the farm's own builds use no secrets"


def refusal(name: str, scope: SecretScope | None, spec: BuildSpec, origin: Origin,
            branch: Callable[[], tuple[str | None, str]]) -> str | None:
    """Why this build may not use secret `name`, or None when it may. `branch()` is the branch the
    build runs as the farm verified it, with why there is none (called only when the scope names
    branches: it may ask the repository)."""
    if scope is None or not scope.scoped:
        if origin.role == "admin":
            return None
        return (f"secret {name} is not scoped yet, so only admins' builds may use it; an admin scopes it with "
                f"`buildfarm secret scope {name} --repo URL-GLOB --branch BRANCH` (or --pipeline, --role, --user)")
    failed = None
    if scope.repos and not repo_in(scope.repos, spec.repo):
        failed = "its repository is not one of them"
    if failed is None:
        failed = _who_refusal(scope, origin)
    if failed is None and scope.branches:
        name_, why = branch()
        if name_ is None:
            failed = why
        elif not selected(scope.branches, name_):
            failed = f"branch {name_} is not one of them"
    if failed is None:
        return None
    at = "".join(f" {k} {v}" for k, v in (("ref", spec.ref), ("commit", (spec.commit or "")[:12])) if v)
    return f"secret {name} may be used only {scope.describe()}; this build is repo {spec.repo}{at}, " \
           f"{origin.shown()}: {failed}"
