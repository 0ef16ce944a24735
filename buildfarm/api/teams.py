"""Teams (who shares the pool, with what guarantee) and usage (what builds used)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from ..auth import Principal
from ..service import Farm
from ..teams import TeamError, TeamSpec
from ..teamview import overview
from ..usage import BY, parse_since, summarize
from .auth import require
from .errors import ApiError


class LoanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(..., description="the borrowing team")
    cpus: float = Field(..., gt=0, le=1_000_000)
    mem: int = Field(0, ge=0, description="MB of guarantee lent with the cpus")
    until: float = Field(..., description="when the loan ends (epoch seconds)")
    price: float = Field(0.0, ge=0, description="credits the borrower pays, once, when the loan is made")


VIEWER, ADMIN = Depends(require("viewer")), Depends(require("admin"))


def router(farm: Farm) -> APIRouter:
    """Teams and their members, their credits and loans, and usage: one router, three groups of routes."""
    api = APIRouter(prefix="/api/v1")
    team_routes(api, farm)
    credit_routes(api, farm)
    usage_routes(api, farm)
    return api


def run(fn, *a):
    """Call a team store's method; its TeamError is the API's error (its status, its message)."""
    try:
        return fn(*a)
    except TeamError as e:
        raise ApiError(e.status, str(e)) from None


def team_routes(api: APIRouter, farm: Farm) -> None:
    """The teams, their members, and the Teams page's overview."""
    teams, viewer, admin = farm.teams, VIEWER, ADMIN

    @api.get("/teams", tags=["teams"], summary="Teams with their guarantee, limit, weight and members",
             dependencies=[viewer])
    def list_teams() -> dict[str, Any]:
        return {"teams": teams.list()}

    @api.post("/teams", tags=["teams"], status_code=201, summary="Create a team", dependencies=[admin])
    def create_team(body: TeamSpec) -> dict[str, Any]:
        return run(teams.create, body)

    @api.get("/teams-overview", tags=["teams"], dependencies=[viewer],
             summary="The Teams page: shares now and over time, who borrows from whom, waits, balances")
    def teams_overview(hours: float = Query(6.0, gt=0, le=24)) -> dict[str, Any]:
        return overview(farm, hours)

    @api.get("/teams/{team}", tags=["teams"], summary="A team", dependencies=[viewer])
    def get_team(team: str) -> dict[str, Any]:
        return run(teams.get, team)

    @api.delete("/teams/{team}", tags=["teams"], dependencies=[admin],
                summary="Delete a team (its builds keep its name); refused while it has queued or running "
                        "builds, unless forced")
    def delete_team(team: str, force: bool = Query(False, description="cancel its queued builds (reason \"team "
                                                                       "TEAM deleted\"); its running ones end as "
                                                                       "they would")) -> dict[str, Any]:
        return run(farm.delete_team, team, force)

    @api.put("/teams/{team}/members/{user}", tags=["teams"], summary="Add a member (an API token's name)",
             dependencies=[admin])
    def add_member(team: str, user: str) -> dict[str, Any]:
        run(teams.add_member, team, user)
        return run(teams.get, team)

    @api.delete("/teams/{team}/members/{user}", tags=["teams"], summary="Remove a member", dependencies=[admin])
    def remove_member(team: str, user: str) -> dict[str, Any]:
        run(teams.remove_member, team, user)
        return run(teams.get, team)


def credit_routes(api: APIRouter, farm: Farm) -> None:
    """A team's credits (balance, ledger) and the loans of guarantee between teams."""
    teams, viewer = farm.teams, VIEWER

    @api.get("/teams/{team}/ledger", tags=["teams"], dependencies=[viewer],
             summary="A team's credits: its balance and ledger entries (issue, charge, payment)")
    def ledger(team: str, since: float = Query(0.0, ge=0, description="entries from this time (epoch seconds)"),
               limit: int = Query(500, ge=1, le=10_000)) -> dict[str, Any]:
        run(teams.get, team)
        return {"team": team, "balance": farm.ledger.balances().get(team, 0.0),
                "entries": farm.ledger.entries(team, since, limit)}

    @api.post("/teams/{team}/loans", tags=["teams"], status_code=201,
              summary="Lend part of the team's guarantee to another team until a time (its members or an admin)")
    def lend(team: str, body: LoanRequest, who: Principal = Depends(require("submitter"))) -> dict[str, Any]:
        if who.role != "admin" and team not in teams.teams_of(who.user):
            raise ApiError(403, f"only team {team}'s members (or an admin) may lend its guarantee")
        return run(farm.loans.lend, team, body.to, body.cpus, body.mem, body.until, body.price, time.time())

    @api.get("/loans", tags=["teams"], summary="Loans between teams not ended yet", dependencies=[viewer])
    def loans() -> dict[str, Any]:
        return {"loans": [loan.model_dump() for loan in farm.loans.all()]}


def usage_routes(api: APIRouter, farm: Farm) -> None:
    """What builds used, summed by team, user, repo or trigger."""
    viewer = VIEWER

    @api.get("/usage", tags=["teams"], summary="What builds used: reserved cpu- and memory-seconds, summed",
             dependencies=[viewer])
    def usage(since: str = Query("7d", description="how far back, by the builds' submit time: 30m, 12h, 7d, 2w"),
              by: str = Query("team", description=" | ".join(BY)),
              team: str | None = Query(None, description="only this team's builds")) -> dict[str, Any]:
        try:
            start = time.time() - parse_since(since)
            if by not in BY:
                raise ValueError(f"by {by!r}: choose one of {', '.join(BY)}")
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        records = [r for r in farm.builds.get_many(farm.builds.ids_since(start))
                   if team is None or r.get("team") == team]
        if team is not None and not records:  # a deleted team's builds keep its name; a typo has none
            run(farm.teams.get, team)
        return {"since": start, "by": by, "team": team, "rows": summarize(records, by, time.time())}
