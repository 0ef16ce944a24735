"""BuildSpec: the one schema every trigger, the API and the queue speak. Validated once, here."""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .states import TRIGGER_KINDS

PRIORITIES = ("high", "normal", "low")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")
_CONSTRAINT = re.compile(r"^(?P<key>[A-Za-z0-9_.\-/]+)\s*(?P<op>!=|=|:)\s*(?P<value>[^\s]+)$")
_DURATION = re.compile(r"(\d+)\s*([wdhms])")
_UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
NEVER = "never"


def parse_duration(text: str) -> int | None:
    """Seconds in a duration such as 90s, 30m, 2h, 1h30m, 7d, 2w (or plain seconds); None when
    it is not one (or is zero)."""
    s = text.strip().lower().replace(" ", "")
    if s.isdigit():
        return int(s) or None
    if not s or _DURATION.sub("", s):
        return None
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(s)) or None


def _text(value: str) -> str:
    """Text the farm can store and hand to git, Docker and a shell: no NUL byte, and valid Unicode
    (JSON can carry a lone surrogate such as \\ud800, which UTF-8 cannot; pydantic refuses one in
    a string with a length limit, and this says so for any other)."""
    if "\x00" in value:
        raise ValueError("contains a NUL byte (\\u0000), which no URL, argument or variable can hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(UNICODE) from None
    return value


UNICODE = "is not valid Unicode text (a lone surrogate such as \\ud800); send UTF-8 text"


def Text(max_length: int, min_length: int = 0):  # noqa: N802 (a type, used as one)
    """A string field of at most `max_length` characters that `_text` accepts."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length), AfterValidator(_text)]


# The longest values a spec takes. A step or an argument reaches `sh -c` as one argv string,
# which Linux caps at 128 KB (MAX_ARG_STRLEN); the whole spec is bounded by the API's body limit.
MAX_URL = 2048
MAX_NAME = 256  # a ref, an image, a constraint, a user, a secret or variable name
MAX_STEP = 64 * 1024
MAX_VALUE = 32 * 1024  # an environment variable's value
MAX_ITEMS = 256  # steps, arguments, variables, artifacts, constraints, inputs, secrets
MAX_DETAIL = 32  # a trigger's detail entries (each at most MAX_NAME characters of key, MAX_URL of value)
Url, Name, Step, Value = Text(MAX_URL), Text(MAX_NAME), Text(MAX_STEP), Text(MAX_VALUE)


def Items(item, max_items: int = MAX_ITEMS):  # noqa: N802
    return Annotated[list[item], Field(max_length=max_items)]


def Mapping(value, max_items: int = MAX_ITEMS):  # noqa: N802
    return Annotated[dict[Name, value], Field(max_length=max_items)]


def _check_env_name(name: str) -> None:
    """A name the build's environment can take (env and secret_env)."""
    if not _ENV_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid environment variable name")
    if name.upper().startswith("BUILDFARM_"):
        raise ValueError(f"{name!r}: the BUILDFARM_ prefix is reserved for the farm")


class Priority(str, Enum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return PRIORITIES.index(self.value)


class ResourceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpus: Annotated[float, Field(gt=0, le=1024, description="CPU cores, fractions allowed")] = 1.0
    mem: Annotated[int, Field(ge=16, le=4 * 1024 * 1024, description="memory limit in MB")] = 1024
    disk: Annotated[int, Field(ge=0, description="scratch disk in MB (placement only)")] = 0


class Trigger(BaseModel):
    """What started a build, shown with it: a CLI user, a git hook, a webhook, a pipeline, Jenkins."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal[TRIGGER_KINDS] = Field("api", description="cli, api, hook, webhook, pipeline, jenkins, rebuild")
    user: Name | None = Field(None, description="who: through the API, always the token's name")
    url: Url | None = Field(None, description="e.g. Jenkins' BUILD_URL")
    detail: Mapping(Url, MAX_DETAIL) = Field(
        default_factory=dict, description="free-form detail shown with the build")


class Input(BaseModel):
    """An upstream build whose artifacts the agent downloads into the workspace before the steps."""

    model_config = ConfigDict(extra="forbid")

    build: str = Field(..., pattern=r"^[0-9a-f]{6,40}$", description="the upstream build's id")
    name: Text(200) = Field("", description="what it is, e.g. a pipeline job (shown in the log)")


class BuildSpec(BaseModel):
    """What to build, where, and with what."""

    model_config = ConfigDict(extra="forbid")

    repo: Text(MAX_URL, min_length=1) = Field(..., description="git URL (git://, http(s)://, ssh://, file://) or path")
    ref: Name | None = Field(None, description="branch or tag; the default branch when neither ref nor commit")
    commit: str | None = Field(None, max_length=40, description="commit SHA (7-40 hex digits)")
    image: Text(MAX_NAME, min_length=1) = Field(..., description="Docker image with git and python3")
    command: Items(Step) | None = Field(None, description="argv of one command, run in the checkout")
    steps: Items(Step) | None = Field(None, description="shell steps, run in order with /bin/sh -e -c")
    env: Mapping(Value) = Field(default_factory=dict)
    secrets: Items(Name) = Field(default_factory=list, description="names of farm secrets given to the build as "
                                                                  "environment variables, masked in its log")
    secret_env: Mapping(Value) = Field(
        default_factory=dict, description=(
            "environment variables for this build only, masked in its log, never shown again: the record "
            "keeps the names with *** and the values are dropped when the build ends"))
    resources: ResourceRequest = Field(default_factory=ResourceRequest)
    constraints: Items(Name) = Field(default_factory=list, description="agent attributes: 'arch:x86_64', 'os!=el7'")
    timeout: Annotated[int, Field(ge=1, le=7 * 24 * 3600, description="seconds from start")] = 3600
    artifacts: Items(Name) = Field(default_factory=list, description="globs relative to the checkout")
    inputs: Items(Input) = Field(default_factory=list, description="builds whose artifacts are downloaded first")
    priority: Priority = Priority.NORMAL
    retries: Annotated[int, Field(ge=0, le=10, description="retries after infrastructure failures")] = 0
    wait_for_capacity: bool = Field(False, description="wait instead of failing when no agent can ever fit it")
    expire_in: str | None = Field(None, description=(
        "how long the build's log and artifacts are kept after it ends (e.g. 2h, 7d, 4w), or 'never' to "
        "keep them; default: the farm's --keep-logs and --keep-artifacts"))
    team: str | None = Field(None, max_length=40, description="the team the build is charged to; none: the "
                                                               "submitter's only team")
    preemptible: bool = Field(True, description="false: never preempted, and runs only within its team's guarantee")
    trigger: Trigger = Field(default_factory=Trigger)

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        v = v.strip()
        if any(c.isspace() for c in v):
            raise ValueError("a repository URL cannot contain spaces")
        if v.startswith("-"):
            raise ValueError("a repository URL cannot start with '-'")
        return v

    @field_validator("ref")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v or v.startswith("-") or ".." in v or any(c.isspace() or c in "~^:?*[\\" for c in v):
            raise ValueError(f"{v!r} is not a valid git ref name")
        return v

    @field_validator("commit")
    @classmethod
    def _commit(cls, v: str | None) -> str | None:
        if v is not None and not _SHA.match(v):
            raise ValueError(f"{v!r} is not a commit SHA (7 to 40 hex digits)")
        return v.lower() if v else v

    @field_validator("env", "secret_env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            _check_env_name(name)
        return v

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a secret name (it becomes an environment variable)")
        return list(dict.fromkeys(v))

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: list[str]) -> list[str]:
        for c in v:
            if not _CONSTRAINT.match(c.strip()):
                raise ValueError(f"{c!r} is not a constraint; write ATTRIBUTE:VALUE or ATTRIBUTE!=VALUE, e.g. arch:x86_64")
        return [c.strip() for c in v]

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, v: list[str]) -> list[str]:
        for g in v:
            if not g or g.startswith("/") or g.startswith("~"):
                raise ValueError(f"artifact glob {g!r} must be relative to the workspace")
            if ".." in g.replace("\\", "/").split("/"):
                raise ValueError(f"artifact glob {g!r} points outside the workspace ('..' is not allowed)")
        return v

    @field_validator("expire_in")
    @classmethod
    def _expire_in(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() == NEVER:
            return v and NEVER
        if parse_duration(v) is None:
            raise ValueError(f"{v!r} is not a duration; write e.g. 2h, 7d, 4w (or 'never' to keep them)")
        return v.strip()

    def expire_seconds(self) -> int | None:
        """Seconds the build's files are kept after it ends by its own expire_in: None for the farm's
        default, -1 for never."""
        if self.expire_in is None:
            return None
        return -1 if self.expire_in == NEVER else parse_duration(self.expire_in)

    @model_validator(mode="after")
    def _what_to_run(self) -> BuildSpec:
        if bool(self.command) == bool(self.steps):
            raise ValueError("give exactly one of 'command' (an argv list) or 'steps' (shell lines)")
        if self.steps and any(not s.strip() for s in self.steps):
            raise ValueError("steps cannot be empty strings")
        return self

    def shell_steps(self) -> list[str]:
        """The steps as shell lines (a command argv is quoted into one line)."""
        import shlex

        return list(self.steps) if self.steps else [shlex.join(self.command or [])]

    def parsed_constraints(self) -> tuple[tuple[str, str, str], ...]:
        out = []
        for c in self.constraints:
            m = _CONSTRAINT.match(c)
            assert m
            op = "!=" if m["op"] == "!=" else "=="
            out.append((m["key"], op, m["value"]))
        return tuple(out)


def describe_errors(exc, skip: tuple[str, ...] = (), default: str = "spec") -> list[dict[str, str]]:
    """Pydantic errors (a ValidationError, or FastAPI's RequestValidationError) as [{field, message}]
    a person can act on; `skip` drops location parts such as FastAPI's "body"."""
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ()) if p not in skip) or default
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif err.get("type") == "missing":
            msg = "required"
        elif err.get("type") == "string_unicode":
            msg = UNICODE
        out.append({"field": field, "message": msg})
    return out
