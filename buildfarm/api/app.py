"""The farm's HTTP face: the REST API under /api/v1 (the CLI's and the dashboard's only way in),
the agent's report endpoints, health checks and metrics. Each part is a router of its own."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..keys import LOG_CHANNEL, RUN_CHANGED, STATE_CHANNEL
from ..notify import Notifier, Subscription
from ..service import Farm
from . import access, agent, builds, errors, pipelines
from . import farm as farm_routes
from . import hooks, retention, teams, web
from .limits import BodyLimits


def create_app(farm: Farm) -> FastAPI:
    # Builds' state changes and pipeline runs' changes, from any process, wake this one's long polls.
    changes = Notifier()
    subscription = Subscription(farm.r, [STATE_CHANNEL, RUN_CHANGED], changes)
    # Logs appended through another replica wake this one's followers.
    log_growth = Subscription(farm.r, [LOG_CHANNEL], farm.logs.notifier)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        subscription.start()
        log_growth.start()
        yield
        subscription.stop()
        log_growth.stop()

    app = FastAPI(title="buildfarm", version=__version__, lifespan=lifespan,
                  description="A CI build farm: submit builds, follow their logs, fetch their artifacts. "
                              "Every /api/v1 route needs an API token (`Authorization: Bearer TOKEN`) "
                              "with the role it names: viewer reads, submitter changes builds, admin "
                              "manages tokens and secrets. A change is refused (401) before its body "
                              "is read when the token is missing or invalid; bodies are limited per "
                              "route (413): a build spec or pipeline run 1 MB, a webhook delivery "
                              "5 MB, anything else 64 KB.")
    app.state.farm = farm
    errors.install(app)
    app.add_middleware(BodyLimits, settings=farm.settings)
    app.include_router(builds.router(farm, changes))
    app.include_router(farm_routes.router(farm))
    app.include_router(access.router(farm))
    app.include_router(agent.router(farm))
    app.include_router(pipelines.router(farm, changes))
    app.include_router(retention.router(farm))
    app.include_router(teams.router(farm))
    app.include_router(hooks.router(farm))
    app.include_router(web.router())
    return app


__all__ = ["create_app"]
