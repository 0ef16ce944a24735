"""The farm's processes: `buildfarm up` (Redis, embedded unless REDIS_URL is set, the API and a
scheduler with its backend, in one process; all state of the embedded default lives under the
data directory), and for a deployment the roles alone: `buildfarm api` and `buildfarm scheduler`."""

from __future__ import annotations

import logging
import secrets
import signal
import threading
from pathlib import Path

import uvicorn

from . import keys
from .agent_bundle import build_bundle
from .api import create_app
from .backends.base import LaunchError
from .backends.local import host_capacity
from .config import Settings
from .datadir_lock import DataDirLock
from .embedded_redis import EmbeddedRedis
from .pipelines.daemon import start_daemon as start_pipeline_daemon
from .leadership import ElectedScheduler
from .retention import Collector
from .service import Farm
from .states import State

log = logging.getLogger("buildfarm")


def farm_id(farm: Farm) -> str:
    farm.r.set(keys.FARM_ID, secrets.token_hex(6), nx=True)
    return farm.r.get(keys.FARM_ID)


def make_backend(settings: Settings, farm: Farm, on_exit, may_launch=lambda: True):
    bundle = build_bundle(Path(settings.data_dir) / "agent")
    if settings.backend == "local":
        from .backends.local import LocalBackend

        backend = LocalBackend(settings, farm_id(farm), bundle, on_exit)
        backend.may_launch = may_launch
        return backend
    if settings.backend == "mesos":
        from .backends.mesos import MesosBackend

        if settings.mesos is None:
            raise LaunchError("--backend mesos needs --master HOST:PORT")
        return MesosBackend(settings.mesos, farm.r, settings.api_url, on_exit, farm.builds.wake,
                            lambda: launched_tasks(farm), leading=may_launch)
    raise LaunchError(f"unknown backend {settings.backend!r}; use 'local' or 'mesos'")


def launched_tasks(farm: Farm) -> list[str]:
    """Task ids (build-attempt) of the builds the farm believes launching or running."""
    ids = farm.builds.active_ids()
    return [f"{bid}-{h['attempt']}" for bid, h in zip(ids, farm.builds.raw_many(ids))
            if h.get("state") in (State.LAUNCHING.value, State.RUNNING.value)]


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM (systemd, docker stop, kill) ends the farm like Ctrl-C: through its `finally`
    blocks, so warm containers, the pipeline daemon and the embedded Redis are stopped. (uvicorn
    re-raises a SIGTERM it handled once it has shut down, which would otherwise kill the process
    on the spot.)"""
    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


def run_scheduler(settings: Settings, teardown: bool = False) -> None:
    """A scheduler (the API runs elsewhere, against the same Redis): a candidate for the lease that
    schedules while it leads, a pipeline daemon and the retention collector (which run in every
    scheduler: each run's advance, each schedule's tick and each expired file are claimed once in
    Redis)."""
    stop_cleanly_on_sigterm()
    _schedule(settings, teardown)  # a backend that cannot go on ends its loop with a LaunchError saying why


def _schedule(settings: Settings, teardown: bool) -> None:
    if not settings.redis_url:
        raise LaunchError("`buildfarm scheduler` needs REDIS_URL (the farm's Redis)")
    farm = Farm(settings, settings.redis_url)
    if teardown:
        _teardown(settings, farm)
        return
    elected = elected_scheduler(settings, farm)
    pipelines = start_pipeline_daemon(farm)
    collector = Collector(farm.retention, settings.gc_interval)  # safe in every scheduler: one deletes each file
    collector.start()
    try:
        elected.run()
    except KeyboardInterrupt:
        pass
    finally:
        pipelines.stop()
        collector.stop()
        elected.stop()


def elected_scheduler(settings: Settings, farm: Farm) -> ElectedScheduler:
    return ElectedScheduler(farm, lambda f, on_exit, may_launch: make_backend(settings, f, on_exit, may_launch),
                            settings.lease_ttl)


def _teardown(settings: Settings, farm: Farm) -> None:
    backend = make_backend(settings, farm, lambda ev: None)
    backend.teardown()  # a LaunchError from a backend without a framework to end
    for bid in farm.builds.active_ids():
        farm.end(bid, State.ERROR, "the Mesos framework was torn down", close_log=True)
        farm.builds.drop_active(bid)


def run_api(settings: Settings) -> None:
    """An API replica: the whole API, the dashboard, log streams and webhooks; no scheduler, no
    pipeline daemon. Any number run behind a load balancer, on one Redis and one data directory."""
    stop_cleanly_on_sigterm()
    if not settings.redis_url:
        raise LaunchError("`buildfarm api` needs REDIS_URL (the farm's Redis)")
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    farm = Farm(settings, settings.redis_url)
    prepare(farm, settings)
    server = uvicorn.Server(uvicorn.Config(create_app(farm), host=settings.host, port=settings.port,
                                           log_level="warning", access_log=False, timeout_graceful_shutdown=2))
    log.info("buildfarm api on http://%s:%s, data in %s", settings.host, settings.port, settings.data_dir)
    server.run()


def run_up(settings: Settings) -> None:
    """The whole farm. Its first act is to take the data directory's lock, so a second `up` on the
    same directory fails before it touches Redis, containers or the port."""
    stop_cleanly_on_sigterm()
    lock = DataDirLock(Path(settings.data_dir))
    lock.acquire(f"http://{settings.host}:{settings.port}")
    try:
        _run_owned(settings)
    finally:
        lock.release()  # after the embedded Redis stopped: the next owner never adopts a stopping one


def _run_owned(settings: Settings) -> None:
    embedded = None
    url = settings.redis_url
    if not url:  # the embedded default: this farm owns its Redis, watches it and stops it
        embedded = EmbeddedRedis(Path(settings.data_dir))
        url = embedded.start()
        embedded.supervise()
    try:
        _serve(settings, url)
    finally:
        if embedded is not None:
            embedded.stop()
    if backend_failure(settings):  # it stopped the server: say why
        raise LaunchError(backend_failure(settings))


def prepare(farm: Farm, settings: Settings) -> None:
    """What a process that serves the API checks and sets up first (each replica does it: every
    step is safe to repeat and to race)."""
    farm.r.ping()
    farm.tokens.bootstrap_admin(Path(settings.data_dir) / "admin.token")
    farm.secrets.check_key()
    if sealed := farm.secrets.seal_plain():
        log.info("encrypted %d secret(s) an earlier version kept in clear", sealed)
    if unscoped := [name for name, scope in farm.secrets.listing() if not scope]:
        log.warning("secrets without a scope, usable by admins' builds only until an admin scopes them "
                    "(`buildfarm secret scope NAME --repo URL-GLOB --branch BRANCH`): %s", ", ".join(unscoped))
    farm.builds.backfill_index()


def _serve(settings: Settings, url: str) -> None:
    """The API, the scheduler and the pipeline daemon, until the server is stopped."""
    farm = Farm(settings, url)
    prepare(farm, settings)
    elected = elected_scheduler(settings, farm)
    if settings.backend == "local":
        make_backend(settings, farm, lambda ev: None).close()  # fail now, not in the thread, without Docker
        farm.image_check = elected.check_image
    else:  # pymesos sets a SIGINT handler when imported, which only the main thread may do
        import pymesos  # noqa: F401

    def scheduling() -> None:
        try:
            elected.run()
        except Exception as e:  # the backend cannot go on: stop the farm, saying why once
            if not backend_failure(settings):  # (that one the farm says as it exits)
                log.error("the scheduler stopped: %s", e)
            server.should_exit = True

    thread = threading.Thread(target=scheduling, name="scheduler", daemon=True)
    pipelines = start_pipeline_daemon(farm, start=False)
    collector = Collector(farm.retention, settings.gc_interval)
    app = create_app(farm)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=2))
    if settings.backend == "mesos":
        where = f"Mesos master {settings.mesos.master}"
    else:
        capacity = host_capacity(settings)
        where = f"local/{settings.isolation} ({capacity.cpus:g} cpus, {capacity.mem} MB)"
    try:
        thread.start()
        pipelines.start()
        collector.start()
        log.info("buildfarm up: API and dashboard on http://%s:%s, backend %s, data in %s; the admin token "
                    "is in %s", settings.host, settings.port, where, settings.data_dir,
                    Path(settings.data_dir) / "admin.token")
        server.run()
    finally:
        # None of this needs Redis: warm containers go even when Redis is gone. Build containers
        # stay, for the next `up` to adopt (see the README, "When a part dies").
        pipelines.stop()
        elected.stop()
        collector.stop()
        for t in (thread, pipelines):  # both are done with Redis before it stops
            if t.is_alive():
                t.join(timeout=5)


def backend_failure(settings: Settings) -> str | None:
    """Why the Mesos backend's connection ended for good, if it did."""
    if settings.backend != "mesos":
        return None
    from .backends.mesos import connection_failure

    return connection_failure()
