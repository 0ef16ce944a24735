"""Teams: who shares the pool, with what guarantee, limit and weight, and whose builds are whose.

A team is a record in Redis with its guarantee (its own share of the pool, lent to others while
idle), an optional limit (the most it may hold, loans included) and a weight (its weight in fair
share). Its members are API token names. Every build is charged to a team: the one the submitter
names (`--team`, the spec's `team`), else the submitter's only team. A farm with no teams at all
runs builds without a team, as before.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .keys import TEAM_MEMBERS, TEAMS, USER_TEAMS
from .placement import Resources, Team

TEAM_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_AMOUNT = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[kKmMgGtT]?)[bB]?$")
_MB = {"": 1, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


UNLIMITED = Resources(1e12, 1 << 60, 1 << 60)


class Amount(BaseModel):
    """An amount of the pool: cpus and memory in MB. One left out is none in a guarantee, and no
    bound in a limit."""

    model_config = ConfigDict(extra="forbid")
    cpus: float | None = Field(None, ge=0, le=1_000_000)
    mem: int | None = Field(None, ge=0, le=1 << 40, description="MB")

    def resources(self, unset: Resources = Resources(0, 0)) -> Resources:
        return Resources(unset.cpus if self.cpus is None else self.cpus, unset.mem if self.mem is None else self.mem,
                         unset.disk)

    def shown(self) -> str:
        parts = ([f"cpus={self.cpus:g}"] if self.cpus is not None else []) + \
                ([f"mem={_mem_shown(self.mem)}"] if self.mem is not None else [])
        return ",".join(parts)


class TeamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., description="lower-case letters, digits, - and _ (1-40), starting with a letter")
    guarantee: Amount = Field(default_factory=Amount, description="its own share of the pool, lent out while idle")
    limit: Amount | None = Field(None, description="the most it may hold, loans included; none: the pool")
    weight: float = Field(1.0, gt=0, le=1000, description="its weight in fair share")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not TEAM_NAME.match(v):
            raise ValueError(f"{v!r} is not a team name: use lower-case letters, digits, - and _ (1-40), "
                             f"starting with a letter")
        return v

    def core(self) -> Team:
        return Team(self.name, self.guarantee.resources(), self.limit.resources(UNLIMITED) if self.limit else None,
                    self.weight)


class TeamError(ValueError):
    """A team request that cannot be done; the message says why and how to fix it."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_amount(text: str) -> Amount:
    """'cpus=16,mem=64G' (mem in MB unless it names K, M, G or T) as an Amount."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("cpus", "mem"):
            raise ValueError(f"{part!r}: write cpus=N and/or mem=SIZE, e.g. cpus=16,mem=64G")
        if key == "cpus":
            try:
                values["cpus"] = float(value)
            except ValueError:
                raise ValueError(f"cpus={value!r} is not a number") from None
        else:
            m = _AMOUNT.match(value)
            if not m:
                raise ValueError(f"mem={value!r} is not a size; write e.g. 4096 (MB), 64G or 512M")
            values["mem"] = int(float(m["n"]) * _MB[m["unit"].lower()])
    if not values:
        raise ValueError("give cpus=N and/or mem=SIZE, e.g. cpus=16,mem=64G")
    try:
        return Amount(**values)
    except ValidationError as e:  # out of range: say which part, in the terms it was written in
        err = e.errors()[0]
        raise ValueError(f"{err['loc'][0]}={err['input']:g}: {err['msg'].lower()}") from None


def _mem_shown(mb: int) -> str:
    return f"{mb // 1024}G" if mb and mb % 1024 == 0 else f"{mb}M"


class TeamStore:
    def __init__(self, r: redis.Redis):
        self.r = r

    # -- the teams ---------------------------------------------------------------------------
    def create(self, spec: TeamSpec) -> dict[str, Any]:
        if spec.limit and not spec.limit.resources(UNLIMITED).covers(spec.guarantee.resources()):
            raise TeamError(f"team {spec.name}'s limit ({spec.limit.shown()}) is below its guarantee "
                            f"({spec.guarantee.shown()}); raise the limit or lower the guarantee")
        if not self.r.hsetnx(TEAMS, spec.name, json.dumps({**spec.model_dump(), "created_at": time.time()})):
            raise TeamError(f"team {spec.name} exists already; `buildfarm team list` shows it", 409)
        return self.get(spec.name)

    def delete(self, name: str) -> None:
        self._need(name)
        members = self.r.smembers(TEAM_MEMBERS + name)
        pipe = self.r.pipeline()
        pipe.hdel(TEAMS, name)
        pipe.delete(TEAM_MEMBERS + name)
        for user in members:
            pipe.srem(USER_TEAMS + user, name)
        pipe.execute()

    def spec(self, name: str) -> TeamSpec | None:
        raw = self.r.hget(TEAMS, name)
        if not raw:
            return None
        data = json.loads(raw)
        data.pop("created_at", None)
        return TeamSpec.model_validate(data)

    def get(self, name: str) -> dict[str, Any]:
        spec = self._need(name)
        return {**spec.model_dump(), "members": sorted(self.r.smembers(TEAM_MEMBERS + name))}

    def list(self) -> list[dict[str, Any]]:
        return [self.get(n) for n in sorted(self.r.hkeys(TEAMS))]

    def exist(self) -> bool:
        return bool(self.r.hlen(TEAMS))

    def core_teams(self) -> dict[str, Team]:
        """Every team as the placement core sees it."""
        out = {}
        for name, raw in self.r.hgetall(TEAMS).items():
            data = json.loads(raw)
            data.pop("created_at", None)
            out[name] = TeamSpec.model_validate(data).core()
        return out

    def _need(self, name: str) -> TeamSpec:
        spec = self.spec(name)
        if spec is None:
            known = ", ".join(sorted(self.r.hkeys(TEAMS))) or "none yet"
            raise TeamError(f"no team named {name!r} (teams: {known}); an admin creates one with "
                            f"`buildfarm team create NAME --guarantee cpus=N,mem=SIZE`", 404)
        return spec

    # -- members -----------------------------------------------------------------------------
    def add_member(self, name: str, user: str) -> None:
        self._need(name)
        pipe = self.r.pipeline()
        pipe.sadd(TEAM_MEMBERS + name, user)
        pipe.sadd(USER_TEAMS + user, name)
        pipe.execute()

    def remove_member(self, name: str, user: str) -> None:
        self._need(name)
        if not self.r.srem(TEAM_MEMBERS + name, user):
            raise TeamError(f"{user} is not a member of team {name}", 404)
        self.r.srem(USER_TEAMS + user, name)

    def teams_of(self, user: str) -> list[str]:
        return sorted(self.r.smembers(USER_TEAMS + user))

    # -- which team a build is charged to --------------------------------------------------------
    def charge_to(self, asked: str | None, user: str | None, admin: bool) -> str | None:
        """The team a build is charged to: `asked` when the submitter may use it (a member, an
        admin, or a build the farm itself starts), else the submitter's only team. None when the
        farm has no teams (or the submitter is in none)."""
        if asked:
            self._need(asked)
            if user and not admin and not self.r.sismember(TEAM_MEMBERS + asked, user):
                mine = self.teams_of(user)
                raise TeamError(f"{user} is not a member of team {asked}"
                                + (f" (their teams: {', '.join(mine)})" if mine else "")
                                + f"; an admin adds them with `buildfarm team add-member {asked} {user}`", 403)
            return asked
        mine = self.teams_of(user) if user else []
        if len(mine) > 1:
            raise TeamError(f"{user} is a member of teams {', '.join(mine)}: name the one to charge with "
                            f"--team (the spec's `team`)")
        return mine[0] if mine else None

    def check_fits(self, name: str, request: Resources) -> None:
        """Refuse a build larger than its team's limit, naming the limit."""
        spec = self._need(name)
        if spec.limit and not spec.limit.resources(UNLIMITED).covers(request):
            raise TeamError(f"the build asks for cpus={request.cpus:g},mem={request.mem}M, more than team "
                            f"{name}'s limit of {spec.limit.shown()}; lower its resources or ask an admin to "
                            f"raise the limit")
