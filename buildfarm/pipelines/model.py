"""A pipeline file: parsed, validated with errors that point at file:line and the field, and
expanded (parameters substituted, matrices expanded, `needs` resolved between instances) into
the jobs of one run, each ready to become a BuildSpec.

Templates: `${{ params.NAME }}` and `${{ matrix.AXIS }}` in any string of the file's `repo`,
`ref`, `tag` and jobs. Parameters are substituted first, so a parameter's value may itself
hold `${{ matrix.AXIS }}`. A constraint that renders empty is dropped (so a constraint can be
an optional parameter).
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..spec import BuildSpec, describe_errors
from ..spec import parse_duration as parse_duration_text
from .cron import Schedule, cron_problem, zone_problem
from ..yamlsource import LineDict, LineList, SourceError, line_of, load

TOP_KEYS = ("name", "description", "repo", "ref", "image", "schedule", "parameters", "tag", "jobs", "expire_in", "team")
JOB_KEYS = ("image", "steps", "resources", "env", "secrets", "artifacts", "needs", "matrix", "constraints",
            "timeout", "retries", "when", "priority", "expire_in", "team")
SCHEDULE_KEYS = ("cron", "timezone")
TAG_KEYS = ("name", "message", "push_url")
WHEN = ("on_success", "on_failure", "always")
MAX_COMBINATIONS = 256

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}")
_REF = re.compile(r"^\s*(params|matrix)\.([A-Za-z_][A-Za-z0-9_]*)\s*$")


@dataclass
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class PipelineInvalid(ValueError):
    def __init__(self, problems: list[Problem]):
        problems = sorted(problems, key=lambda p: p.line)
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def dotted(path: tuple) -> str:
    """('jobs', 'test', 'needs', 1) -> 'jobs.test.needs[1]'"""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Param:
    name: str
    default: str | None
    description: str = ""


@dataclass
class JobDef:
    name: str
    raw: LineDict
    needs: list[str]
    axes: dict[str, list[str]]
    exclude: list[dict[str, str]]
    when: str
    retries: int


@dataclass
class Pipeline:
    name: str
    file: str
    source: str
    doc: LineDict
    description: str = ""
    schedule: Schedule | None = None
    parameters: dict[str, Param] = field(default_factory=dict)
    jobs: dict[str, JobDef] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "description": self.description,
                "schedule": self.schedule.describe() if self.schedule else [],
                "parameters": {p.name: p.default for p in self.parameters.values()}}


@dataclass
class JobInstance:
    """One build of a run: a job, or one combination of a job's matrix."""

    name: str
    job: str
    matrix: dict[str, str]
    needs: list[str]
    when: str
    retries: int
    spec: dict[str, Any]


@dataclass
class RunPlan:
    repo: str
    ref: str | None
    tag: dict[str, str] | None
    jobs: list[JobInstance]


# -- parsing ----------------------------------------------------------------------------------------

def parse_file(path: str | Path) -> Pipeline:
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise PipelineInvalid([Problem(str(path), 0, "", f"cannot read the file: {e}")]) from None
    return parse(text, str(path))


def parse(text: str, file: str = "<pipeline>") -> Pipeline:
    """Parse and validate a pipeline; PipelineInvalid lists every problem found."""
    try:
        doc = load(text)
    except SourceError as e:
        raise PipelineInvalid([Problem(file, e.line, "", str(e))]) from None
    v = _Validator(file, doc)
    pipeline = v.pipeline(text)
    if v.problems:
        raise PipelineInvalid(v.problems)
    # A last check with the defaults: the jobs must make valid builds.
    run_plan(pipeline, {}, commit=None, _check=True)
    return pipeline


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _scalar(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float | str):
        return str(v)
    return None


class _Validator:
    def __init__(self, file: str, doc: Any):
        self.file = file
        self.doc = doc
        self.problems: list[Problem] = []

    def add(self, path: tuple, message: str) -> None:
        fld = dotted(path)
        self.problems.append(Problem(self.file, line_of(self.doc, path, 1), fld, message))

    def keys(self, node: LineDict, path: tuple, allowed: tuple[str, ...], what: str) -> None:
        for k in node:
            if k not in allowed:
                self.add(path + (k,), f"unknown key in {what}; {_suggest(k, allowed)}"
                                      f"expected one of: {', '.join(allowed)}")

    def pipeline(self, text: str) -> Pipeline:
        doc = self.doc
        if not isinstance(doc, LineDict):
            self.add((), "a pipeline file is a mapping with name, repo, jobs (and optionally schedule, "
                         "parameters, tag)")
            return Pipeline("", self.file, text, LineDict())
        self.keys(doc, (), TOP_KEYS, "the pipeline")
        name = doc.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            self.add(("name",), "required: the pipeline's name (letters, digits, '.', '_', '-')"
                     if name is None else f"{name!r} is not a valid name (letters, digits, '.', '_', '-')")
            name = ""
        for key in ("repo", "ref", "image", "description"):
            if key in doc and not isinstance(doc[key], str):
                self.add((key,), "must be a string")
        if not doc.get("repo"):
            self.add(("repo",), "required: the git URL to build, e.g. repo: \"${{ params.repo }}\"")
        params = self.parameters(doc.get("parameters"))
        p = Pipeline(name, self.file, text, doc, str(doc.get("description") or ""),
                     self.schedule(doc.get("schedule")), params)
        self.tag(doc.get("tag"))
        p.jobs = self.jobs(doc.get("jobs"))
        self.templates(p)
        return p

    # -- sections ---------------------------------------------------------------------------
    def parameters(self, node: Any) -> dict[str, Param]:
        out: dict[str, Param] = {}
        if node is None:
            return out
        if not isinstance(node, LineDict):
            self.add(("parameters",), "a mapping of NAME: DEFAULT (or NAME: {default: ..., description: ...})")
            return out
        for pname, v in node.items():
            path = ("parameters", pname)
            if not isinstance(pname, str) or not _PARAM.match(pname):
                self.add(path, "a parameter name is letters, digits and '_', not starting with a digit")
                continue
            desc = ""
            if isinstance(v, LineDict):
                self.keys(v, path, ("default", "description"), f"parameter {pname!r}")
                desc = str(v.get("description") or "")
                v = v.get("default")
            if v is None:
                out[pname] = Param(pname, None, desc)
            elif _scalar(v) is None:
                self.add(path, "a default is a string or a number")
            else:
                out[pname] = Param(pname, _scalar(v), desc)
        return out

    def schedule(self, node: Any) -> Schedule | None:
        if node is None:
            return None
        path = ("schedule",)
        if not isinstance(node, LineDict):
            self.add(path, "a mapping: {cron: [\"0 11 * * *\", ...], timezone: Europe/Zurich}")
            return None
        self.keys(node, path, SCHEDULE_KEYS, "schedule")
        crons = node.get("cron")
        if isinstance(crons, str):
            crons = LineList([crons])
            crons.lines = [node.lines.get("cron", node.line)]
        if not isinstance(crons, list) or not crons:
            self.add(path + ("cron",), "required: one cron expression or a list of them, e.g. \"0 11 * * *\"")
            crons = []
        ok = True
        for i, expr in enumerate(crons):
            problem = cron_problem(expr)
            if problem:
                self.add(path + ("cron", i) if len(crons) > 1 or isinstance(node.get("cron"), list) else
                         path + ("cron",), problem)
                ok = False
        tz = node.get("timezone")
        problem = zone_problem(tz)
        if problem:
            self.add(path + ("timezone",), ("required: " if tz is None else "") + problem)
            ok = False
        return Schedule(tuple(c.strip() for c in crons), tz) if ok and crons else None

    def tag(self, node: Any) -> None:
        if node is None:
            return
        if not isinstance(node, LineDict):
            self.add(("tag",), "a mapping: {name: \"v${{ params.version }}\", message: ..., push_url: ...}")
            return
        self.keys(node, ("tag",), TAG_KEYS, "tag")
        if not isinstance(node.get("name"), str) or not node.get("name"):
            self.add(("tag", "name"), "required: the tag to create, e.g. name: \"${{ params.version }}\"")
        for k in ("message", "push_url"):
            if k in node and not isinstance(node[k], str):
                self.add(("tag", k), "must be a string")

    def jobs(self, node: Any) -> dict[str, JobDef]:
        out: dict[str, JobDef] = {}
        if not isinstance(node, LineDict) or not node:
            self.add(("jobs",), "required: a mapping of job name to job (image, steps, needs, ...)")
            return out
        for jname, job in node.items():
            path = ("jobs", jname)
            if not isinstance(jname, str) or not _NAME.match(jname):
                self.add(path, f"{jname!r} is not a valid job name (letters, digits, '.', '_', '-')")
                continue
            if not isinstance(job, LineDict):
                self.add(path, "a job is a mapping with image, steps and optionally needs, matrix, ...")
                continue
            out[jname] = self.job(jname, job, path)
        for j in out.values():
            for i, need in enumerate(j.needs):
                if need not in out:
                    self.add(("jobs", j.name, "needs", i) if isinstance(j.raw.get("needs"), list) else
                             ("jobs", j.name, "needs"),
                             f"job {j.name!r} needs {need!r}, which does not exist; "
                             f"{_suggest(need, out)}jobs are: {', '.join(out)}")
        cycle = find_cycle({n: [x for x in j.needs if x in out] for n, j in out.items()})
        if cycle:
            self.add(("jobs", cycle[0], "needs"), f"needs cycle: {' -> '.join(cycle)}; "
                                                  f"a job cannot wait for itself, remove one of these needs")
        return out

    def job(self, jname: str, job: LineDict, path: tuple) -> JobDef:
        self.keys(job, path, JOB_KEYS, f"job {jname!r}")
        if not job.get("image") and not self.doc.get("image"):
            self.add(path + ("image",), "required: the Docker image to build in (or a pipeline-level image)")
        steps = job.get("steps")
        if isinstance(steps, str):
            pass
        elif not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
            self.add(path + ("steps",), "required: a list of shell lines, e.g. steps: [\"make -j2\", \"make test\"]")
        for key in ("env", "resources"):
            if key in job and not isinstance(job[key], LineDict):
                self.add(path + (key,), "must be a mapping")
        if isinstance(job.get("env"), LineDict):
            for k, v in job["env"].items():
                if _scalar(v) is None:
                    self.add(path + ("env", k), "an environment value is a string or a number")
        for key in ("artifacts", "constraints", "secrets"):
            if key in job and not (isinstance(job[key], list) and all(isinstance(x, str) for x in job[key])):
                self.add(path + (key,), "must be a list of strings")
        needs = job.get("needs", [])
        if isinstance(needs, str):
            needs = [needs]
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            self.add(path + ("needs",), "a list of job names, e.g. needs: [build]")
            needs = []
        if jname in needs:
            self.add(path + ("needs",), f"needs cycle: {jname} -> {jname}; a job cannot need itself")
            needs = [n for n in needs if n != jname]
        when = job.get("when", "on_success")
        if when not in WHEN:
            self.add(path + ("when",), f"{when!r} is not a condition; {_suggest(when, WHEN)}"
                                       f"use one of: {', '.join(WHEN)}")
            when = "on_success"
        retries = job.get("retries", 0)
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
            self.add(path + ("retries",), "a number from 0 to 10 (builds re-run after a failure)")
            retries = 0
        if "timeout" in job and parse_duration(job["timeout"]) is None:
            self.add(path + ("timeout",), "seconds, or a duration such as 90s, 30m, 2h, 1h30m")
        if "priority" in job and job["priority"] not in ("high", "normal", "low"):
            self.add(path + ("priority",), "one of: high, normal, low")
        axes, exclude = self.matrix(job.get("matrix"), path + ("matrix",))
        return JobDef(jname, job, list(dict.fromkeys(needs)), axes, exclude, when, retries)

    def matrix(self, node: Any, path: tuple) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
        axes: dict[str, list[str]] = {}
        exclude: list[dict[str, str]] = []
        if node is None:
            return axes, exclude
        if not isinstance(node, LineDict):
            self.add(path, "a mapping of axis to values, e.g. matrix: {arch: [el9_amd64_gcc13, el9_aarch64_gcc13]}")
            return axes, exclude
        for axis, values in node.items():
            if axis == "exclude":
                continue
            if not isinstance(axis, str) or not _PARAM.match(axis):
                self.add(path + (axis,), "an axis name is letters, digits and '_'")
                continue
            if not isinstance(values, list) or not values or any(_scalar(v) is None for v in values):
                self.add(path + (axis,), "a non-empty list of values, e.g. [1, 2, 3]")
                continue
            vals = [_scalar(v) for v in values]
            if len(set(vals)) != len(vals):
                self.add(path + (axis,), "values repeat; each value must be listed once")
            axes[axis] = list(dict.fromkeys(vals))
        if not axes:
            self.add(path, "a matrix needs at least one axis, e.g. arch: [a, b]")
        size = 1
        for values in axes.values():
            size *= len(values)
        if size > MAX_COMBINATIONS:
            self.add(path, f"the matrix has {size} combinations; at most {MAX_COMBINATIONS} builds per job")
            return {}, []
        ex = node.get("exclude", [])
        if not isinstance(ex, list):
            self.add(path + ("exclude",), "a list of combinations to leave out, e.g. - {arch: a, shard: 3}")
            ex = []
        for i, combo in enumerate(ex):
            p = path + ("exclude", i)
            if not isinstance(combo, LineDict) or not combo:
                self.add(p, "a mapping of axis to value, e.g. {arch: a, shard: 3}")
                continue
            c = {}
            for axis, value in combo.items():
                if axis not in axes:
                    self.add(p + (axis,), f"unknown axis {axis!r}; the axes are: {', '.join(axes)}")
                elif _scalar(value) not in axes[axis]:
                    self.add(p + (axis,), f"{value!r} is not a value of {axis} ({', '.join(axes[axis])})")
                else:
                    c[axis] = _scalar(value)
            if c and len(c) == len(combo):
                exclude.append(c)
        if axes and not expand_matrix(axes, exclude):
            self.add(path + ("exclude",), "every combination is excluded; the job would never run")
        return axes, exclude

    def templates(self, p: Pipeline) -> None:
        """Every ${{ ... }} names a declared parameter or an axis of the job's matrix."""
        def check(value: Any, path: tuple, axes: dict[str, list[str]] | None) -> None:
            if isinstance(value, str):
                if "${{" in value and value.count("${{") != len(_TEMPLATE.findall(value)):
                    self.add(path, f"unclosed template in {value!r}; write ${{{{ params.NAME }}}}")
                for expr in _TEMPLATE.findall(value):
                    m = _REF.match(expr)
                    if not m:
                        self.add(path, f"unknown expression ${{{{{expr}}}}}; use ${{{{ params.NAME }}}} or "
                                       f"${{{{ matrix.AXIS }}}}")
                    elif m[1] == "params" and m[2] not in p.parameters:
                        self.add(path, f"parameter {m[2]!r} is not declared; {_suggest(m[2], p.parameters)}"
                                       f"declare it under parameters: (known: {', '.join(p.parameters) or 'none'})")
                    elif m[1] == "matrix" and not axes:
                        self.add(path, f"${{{{ matrix.{m[2]} }}}} is only known inside a job with a matrix")
                    elif m[1] == "matrix" and m[2] not in axes:
                        self.add(path, f"the job's matrix has no axis {m[2]!r} "
                                       f"(axes: {', '.join(axes) or 'none'})")
            elif isinstance(value, dict):
                for k, v in value.items():
                    check(v, path + (k,), axes)
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    check(v, path + (i,), axes)

        for key in ("repo", "ref", "image", "tag"):
            check(p.doc.get(key), (key,), None)
        for j in p.jobs.values():
            for key, value in j.raw.items():
                if key != "matrix":
                    check(value, ("jobs", j.name, key), j.axes)


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in `graph` (node -> the nodes it needs) as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, []):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in graph:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def parse_duration(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v > 0 else None
    if isinstance(v, str):
        return parse_duration_text(v)
    return None


def expand_matrix(axes: dict[str, list[str]], exclude: list[dict[str, str]]) -> list[dict[str, str]]:
    """Every combination of the axes (in the order written), less those matching an exclude."""
    if not axes:
        return [{}]
    names = list(axes)
    combos = [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]
    return [c for c in combos if not any(all(c[k] == v for k, v in ex.items()) for ex in exclude)]


def instance_name(job: str, combo: dict[str, str]) -> str:
    return f"{job}[{','.join(combo.values())}]" if combo else job


# -- a run's jobs -------------------------------------------------------------------------------------

def resolve_parameters(p: Pipeline, given: dict[str, str]) -> dict[str, str]:
    """The defaults overridden by `given`; ValueError for an unknown or a missing parameter."""
    unknown = [k for k in given if k not in p.parameters]
    if unknown:
        raise ValueError(f"pipeline {p.name!r} has no parameter {unknown[0]!r}; "
                         f"{_suggest(unknown[0], p.parameters)}it takes: {', '.join(p.parameters) or 'none'}")
    values = {k: prm.default for k, prm in p.parameters.items()}
    values.update({k: str(v) for k, v in given.items()})
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ValueError(f"pipeline {p.name!r} needs a value for {', '.join(missing)}: pass "
                         + " ".join(f"-p {k}=VALUE" for k in missing))
    return values  # type: ignore[return-value]


def render(value: Any, params: dict[str, str], matrix: dict[str, str]) -> Any:
    """Substitute ${{ params.X }} then ${{ matrix.Y }} in every string of `value`."""
    if isinstance(value, str):
        def sub(scope: str, table: dict[str, str]):
            def one(m: re.Match) -> str:
                r = _REF.match(m[1])
                if r and r[1] == scope and r[2] in table:
                    return table[r[2]]
                return m[0]
            return one
        out = _TEMPLATE.sub(sub("params", params), value)
        return _TEMPLATE.sub(sub("matrix", matrix), out)
    if isinstance(value, dict):
        return {k: render(v, params, matrix) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, params, matrix) for v in value]
    return value


def run_plan(p: Pipeline, given: dict[str, str], commit: str | None, *, _check: bool = False) -> RunPlan:
    """The jobs of a run with these parameters. With _check (validation), parameters without a
    default get a placeholder, and problems in fields that use them are not reported."""
    doc = p.doc
    if _check:
        params = {k: (v.default if v.default is not None else f"placeholder-{k}") for k, v in p.parameters.items()}
    else:
        params = resolve_parameters(p, given)
    required = {k for k, v in p.parameters.items() if v.default is None}
    problems: list[Problem] = []
    repo = render(doc.get("repo"), params, {})
    ref = render(doc.get("ref"), params, {}) or None
    tag = render(dict(doc["tag"]), params, {}) if doc.get("tag") else None
    if tag is not None:
        tag["push_url"] = tag.get("push_url") or repo
        tag["message"] = tag.get("message") or f"{tag['name']}: built and tested by pipeline {p.name}"
    combos = {name: expand_matrix(j.axes, j.exclude) for name, j in p.jobs.items()}
    jobs: list[JobInstance] = []
    for name in topological(p):
        j = p.jobs[name]
        for combo in combos[name]:
            needs: list[str] = []
            for need in j.needs:
                shared = [a for a in p.jobs[need].axes if a in combo]
                matching = [c for c in combos[need] if all(c[a] == combo[a] for a in shared)]
                if not matching:
                    problems.append(Problem(p.file, line_of(doc, ("jobs", name, "needs")), f"jobs.{name}.needs",
                                            f"{instance_name(name, combo)} needs {need!r}, but {need} has no "
                                            f"instance with {', '.join(f'{a}={combo[a]}' for a in shared)} "
                                            f"(excluded from its matrix)"))
                needs += [instance_name(need, c) for c in matching]
            spec, errs = _spec(p, j, params, combo, repo, ref, commit, required if _check else set())
            problems += errs
            jobs.append(JobInstance(instance_name(name, combo), name, combo, needs, j.when, j.retries, spec))
    if problems:
        seen: set[str] = set()
        problems = [x for x in problems if not (str(x) in seen or seen.add(str(x)))]
        raise PipelineInvalid(problems)
    return RunPlan(repo, ref, tag, jobs)


def topological(p: Pipeline) -> list[str]:
    out: list[str] = []
    done: set[str] = set()

    def visit(n: str) -> None:
        if n in done:
            return
        done.add(n)
        for m in p.jobs[n].needs:
            visit(m)
        out.append(n)

    for n in p.jobs:
        visit(n)
    return out


def _uses(value: Any, names: set[str]) -> bool:
    if isinstance(value, str):
        return any((m := _REF.match(e)) and m[1] == "params" and m[2] in names for e in _TEMPLATE.findall(value))
    if isinstance(value, dict):
        return any(_uses(v, names) for v in value.values())
    if isinstance(value, list):
        return any(_uses(v, names) for v in value)
    return False


def _spec(p: Pipeline, j: JobDef, params: dict[str, str], combo: dict[str, str], repo: str, ref: str | None,
          commit: str | None, placeholders: set[str]) -> tuple[dict[str, Any], list[Problem]]:
    raw = j.raw
    r = lambda v: render(v, params, combo)  # noqa: E731
    steps = raw.get("steps")
    spec: dict[str, Any] = {
        "repo": repo,
        "ref": ref if not commit else None,
        "commit": commit,
        "image": r(raw.get("image") or p.doc.get("image")),
        "steps": r([steps] if isinstance(steps, str) else list(steps or [])),
        "env": {k: r(_scalar(v)) for k, v in (raw.get("env") or {}).items()},
        "resources": r(dict(raw.get("resources") or {})),
        "constraints": [c for c in r(list(raw.get("constraints") or [])) if c.strip()],
        "artifacts": r(list(raw.get("artifacts") or [])),
        "secrets": r(list(raw.get("secrets") or [])),
        "timeout": parse_duration(r(raw.get("timeout", 3600))) or raw.get("timeout"),
        "priority": raw.get("priority", "normal"),
        "team": raw.get("team") or p.doc.get("team"),
    }
    expire_in = raw.get("expire_in", p.doc.get("expire_in"))  # a release keeps its artifacts: never
    if expire_in is not None:
        spec["expire_in"] = r(str(expire_in))
    try:
        spec = BuildSpec.model_validate(spec).model_dump(mode="json", exclude_defaults=True)
    except ValidationError as e:
        problems = []
        for d in describe_errors(e):
            path = tuple(int(x) if x.isdigit() else x for x in d["field"].split("."))
            top = path[0] in ("repo", "ref", "commit")
            yaml_path = path[:1] if top else ("jobs", j.name) + path
            raw_value = p.doc.get(path[0]) if top else raw.get(path[0])
            if placeholders and _uses(raw_value, placeholders):
                continue
            fld = dotted(yaml_path)
            problems.append(Problem(p.file, line_of(p.doc, yaml_path), fld,
                                    f"{instance_name(j.name, combo)}: {d['message']}"))
        return spec, problems
    return spec, []
