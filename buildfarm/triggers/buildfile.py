"""`.buildfarm.yml`: which builds a repository asks for on a push or a pull request.

    cancel_superseded: true          # a new push cancels the branch's older, unfinished builds
    builds:
      unit:                          # a mapping name -> build, or a list of builds with `name:`
        image: buildfarm/builder
        steps: [make -j2 test]       # or command: [make, test]
        resources: {cpus: 2, mem: 2048}
        artifacts: ["dist/*.tar.gz"]
        branches: [main, "release/*", "!release/old-*"]
        paths: ["src/**", Makefile]

Every BuildSpec field except repo/ref/commit/trigger may be given; `branches` and `paths` are
glob lists (`*` stays within one path segment, `**` crosses them, a leading `!` excludes; the
last pattern that matches decides). For a pull request, `branches` is matched against the branch
it targets; a pull request from a fork gets no `secrets`, and the farm gives a build a secret only
within the secret's scope (scopes.py). `builds_for()` turns the file and an event into the BuildSpecs to
submit, or the reason nothing matched. Errors name the file, the line and what is expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from ..globs import selected
from ..spec import BuildSpec, describe_errors
from ..yamlsource import SourceError, SyntaxProblem, line_of, load

FILENAME = ".buildfarm.yml"
ZERO = "0" * 40
# BuildSpec fields a build file may not set: the event decides them.
_FROM_EVENT = {"repo", "ref", "commit", "trigger"}
# ... and fields a file anyone can push must not set: other builds' artifacts, secret values.
_NOT_FROM_FILES = {"inputs", "secret_env"}
_FILTERS = {"name", "branches", "paths"}
_TOP = {"builds", "cancel_superseded"}


class BuildFileError(ValueError):
    """A build file that cannot be used; the message says where and what is expected."""


@dataclass
class Event:
    """A push to a branch or an update of a pull request, as every trigger sees it."""

    repo: str  # the clone URL the builds use
    commit: str  # what to build (the pushed commit or the PR's head)
    kind: str  # "hook" or "webhook"
    branch: str | None = None  # the pushed branch; for a PR, the branch it targets
    pr: str | None = None  # pull/merge request number
    changed: list[str] | None = None  # changed paths; None: unknown (every `paths` filter matches)
    user: str | None = None
    detail: dict[str, str] = field(default_factory=dict)
    # False for a pull request from another repository (a fork): its build file is the
    # contributor's, so its builds get no farm secrets.
    trusted: bool = True

    @property
    def code_branch(self) -> str | None:
        """The branch of this repository whose tip is the commit built: the pushed branch, or a pull
        request's source branch when it is in this repository (a fork's is not)."""
        if not self.pr:
            return self.branch
        return (self.detail.get("source_branch") or None) if self.trusted else None

    @property
    def line(self) -> str:
        """What a newer push supersedes: the branch, or the pull request."""
        return f"pr {self.pr}" if self.pr else f"branch {self.branch}"


@dataclass
class Build:
    name: str
    branches: list[str]
    paths: list[str]
    spec: dict  # BuildSpec fields from the file (validated with the event's repo and commit)
    line: int | None = None


@dataclass
class BuildFile:
    builds: list[Build]
    cancel_superseded: bool = False


@dataclass
class Matched:
    specs: list[tuple[str, BuildSpec]]  # (build name, spec) to submit
    skipped: list[tuple[str, str]]  # (build name, why not)
    cancel_superseded: bool = False

    @property
    def reason(self) -> str:
        """Why nothing is built (when `specs` is empty)."""
        if not self.skipped:
            return f"{FILENAME} lists no builds"
        if len(self.skipped) == 1:
            return self.skipped[0][1]
        reasons = {why for _, why in self.skipped}
        if len(reasons) == 1:
            return reasons.pop()
        return "; ".join(f"{name}: {why}" for name, why in self.skipped)


# -- parsing ----------------------------------------------------------------------------------

def _at(doc, path: tuple, filename: str) -> str:
    line = line_of(doc, path)
    return f"{filename}, line {line}" if line else filename


def _where(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def parse(text: str, filename: str = FILENAME) -> BuildFile:
    """Read and check a build file's form (its build specs are checked by `builds_for`, with the event)."""
    try:
        data = load(text)
    except SourceError as e:  # too large, anchors, a duplicate key, or not YAML at all
        where = f"{filename}, line {e.line}" if e.line else filename
        raise BuildFileError(f"{where}: not valid YAML: {e.problem}" if isinstance(e, SyntaxProblem)
                             else f"{where}: {e}") from None

    def fail(path: tuple, message: str) -> BuildFileError:
        return BuildFileError(f"{_at(data, path, filename)}: {message}")

    if not isinstance(data, dict):
        raise fail((), "expected a mapping with `builds:` (and optionally `cancel_superseded:`)")
    for key in data:
        if key not in _TOP:
            raise fail((key,), f"unknown key {key!r}; expected `builds` or `cancel_superseded`")
    cancel = data.get("cancel_superseded", False)
    if not isinstance(cancel, bool):
        raise fail(("cancel_superseded",), f"cancel_superseded must be true or false, not {cancel!r}")
    raw = data.get("builds")
    if raw is None:
        raise fail((), "missing `builds:` (a mapping of build name -> build, or a list of builds)")
    if isinstance(raw, dict):
        entries = [((("builds", name)), name, body) for name, body in raw.items()]
    elif isinstance(raw, list):
        entries = []
        for i, body in enumerate(raw):
            name = body.get("name") if isinstance(body, dict) else None
            entries.append((("builds", i), name if name is not None else f"build{i + 1}", body))
    else:
        raise fail(("builds",), "`builds` must be a mapping of build name -> build, or a list of builds")

    allowed = (set(BuildSpec.model_fields) - _FROM_EVENT - _NOT_FROM_FILES) | _FILTERS
    builds, names = [], set()
    for path, name, body in entries:
        if not isinstance(body, dict):
            raise fail(path, f"build {name!r} must be a mapping with at least `image` and `steps`")
        if not isinstance(name, str) or not name.strip():
            raise fail(path + ("name",), "a build's name must be a non-empty string")
        if name in names:
            raise fail(path, f"two builds are named {name!r}; names must be unique")
        names.add(name)
        for key in body:
            if key not in allowed:
                hint = (" (the event decides it)" if key in _FROM_EVENT else
                        " (a build file cannot set it)" if key in _NOT_FROM_FILES else "")
                raise fail(path + (key,), f"build {name!r}: unknown key {key!r}{hint}; expected one of "
                                          f"{', '.join(sorted(allowed - {'name'}))}")
        filters = {}
        for key in ("branches", "paths"):
            value = body.get(key, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip("!") for v in value):
                example = '[main, "release/*"]' if key == "branches" else '["src/**", Makefile]'
                raise fail(path + (key,), f"build {name!r}: `{key}` must be a list of globs, e.g. {example}")
            filters[key] = value
        if "command" in body and isinstance(body["command"], str):
            raise fail(path + ("command",), f"build {name!r}: `command` is an argv list, e.g. [make, test]; "
                                            f"for a shell line use `steps: [\"make test\"]`")
        if "steps" in body and isinstance(body["steps"], str):
            body = {**body, "steps": [body["steps"]]}
        spec = {k: _as_text(v) if k in ("env", "command", "steps") else v
                for k, v in body.items() if k not in _FILTERS}
        spec.setdefault("image", None)
        _check_spec(name, spec, path, data, filename)
        builds.append(Build(name, filters["branches"], filters["paths"], spec, line_of(data, path) or None))
    return BuildFile(builds, cancel)


def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v) if isinstance(v, int | float) else v


def _as_text(value):
    """YAML reads `JOBS: 4` or `command: [true]` as numbers and booleans; the shell wants text."""
    if isinstance(value, dict):
        return {k: _scalar(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scalar(v) for v in value]
    return value


def _check_spec(name: str, spec: dict, path: tuple, doc, filename: str) -> None:
    try:
        BuildSpec(repo="file:///check", commit=ZERO, **{k: v for k, v in spec.items() if v is not None})
    except ValidationError as e:
        problems = []
        for d, err in zip(describe_errors(e), e.errors()):
            loc = tuple(err.get("loc", ()))
            where = _at(doc, path + loc, filename)
            field_ = d["field"] if d["field"] != "spec" else "build"
            problems.append(f"{where}: build {name!r}: {field_}: {d['message']}")
        raise BuildFileError("; ".join(problems)) from None


# -- matching ---------------------------------------------------------------------------------

def _short(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def why_not(build: Build, event: Event) -> str | None:
    """Why this build does not run for the event, or None when it does."""
    if build.branches and event.branch is not None and not selected(build.branches, event.branch):
        target = "targets" if event.pr else "is"
        return f"branch {event.branch} {target} not in branches: {_short(build.branches)}"
    if build.paths and event.changed is not None:
        if not any(selected(build.paths, p) for p in event.changed):
            changed = _short(event.changed) if event.changed else "none"
            return f"no changed path matches {_short(build.paths)} (changed: {changed})"
    return None


def builds_for(text: str | None, event: Event, filename: str = FILENAME) -> Matched:
    """The builds the event asks for. Raises BuildFileError for a file that cannot be used."""
    if text is None:
        return Matched([], [("*", f"no {filename} at {event.commit[:12]}")])
    bf = parse(text, filename)
    specs, skipped = [], []
    for b in bf.builds:
        reason = why_not(b, event)
        if not reason and b.spec.get("secrets") and not event.trusted:
            reason = ("a pull request from another repository gets no secrets (its .buildfarm.yml is the "
                      "contributor's); build it from a branch of this repository")
        if reason:
            skipped.append((b.name, reason))
            continue
        detail = {k: v for k, v in {**event.detail, "job": b.name}.items() if v is not None}
        trigger = {"kind": event.kind, "user": event.user, "detail": {k: str(v) for k, v in detail.items()}}
        fields = {k: v for k, v in b.spec.items() if v is not None}
        # The commit alone (its branch is in the trigger): a later force-push must not fail this build.
        # A build with secrets of a push also names its branch, which the farm checks against the
        # secrets' scopes (and the build then runs only while the commit is on it).
        if b.spec.get("secrets") and not event.pr and event.branch:
            fields["ref"] = event.branch
        specs.append((b.name, BuildSpec(repo=event.repo, commit=event.commit, trigger=trigger, **fields)))
    return Matched(specs, skipped, bf.cancel_superseded)
