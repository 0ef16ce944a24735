"""`buildfarm up`: Redis (embedded unless REDIS_URL is set), the API and the scheduler with its
backend, in one process. All state of the embedded default lives under the data directory."""

from __future__ import annotations

import logging
import secrets
import threading
from pathlib import Path

import uvicorn

from .agent_bundle import build_bundle
from .api import create_app
from .backends.base import LaunchError
from .config import Settings
from .embedded_redis import EmbeddedRedis
from .scheduler.loop import Scheduler
from .service import Farm

log = logging.getLogger("buildfarm")


def farm_id(farm: Farm) -> str:
    farm.r.set("bf:farm-id", secrets.token_hex(6), nx=True)
    return farm.r.get("bf:farm-id")


def make_backend(settings: Settings, farm: Farm, on_exit):
    if settings.backend != "local":
        raise LaunchError(f"unknown backend {settings.backend!r}; use 'local'")
    from .backends.local import LocalBackend

    bundle = build_bundle(Path(settings.data_dir) / "agent")
    return LocalBackend(settings, farm_id(farm), bundle, on_exit)


def run_up(settings: Settings) -> None:
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    embedded = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedRedis(Path(settings.data_dir))
        url = embedded.start()
    farm = Farm(settings, url)
    farm.r.ping()
    holder: dict = {}
    backend = make_backend(settings, farm, lambda ev: holder["scheduler"].on_exit(ev))
    scheduler = holder["scheduler"] = Scheduler(farm, backend)
    farm.image_check = backend.check_image
    thread = threading.Thread(target=scheduler.run, name="scheduler", daemon=True)
    thread.start()

    app = create_app(farm)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=2))
    a = backend.agents()[0]
    log.warning("buildfarm up: API on http://%s:%s, backend %s/%s (%g cpus, %d MB), data in %s",
                settings.host, settings.port, settings.backend, settings.isolation, a.capacity.cpus,
                a.capacity.mem, settings.data_dir)
    try:
        server.run()
    finally:
        scheduler.stop()
        thread.join(timeout=5)
        backend.close()
        if embedded is not None:  # the embedded default owns its Redis
            embedded.stop()

