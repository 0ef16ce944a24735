"""`buildfarm up`: Redis (embedded unless REDIS_URL is set), the API and the scheduler with its
backend, in one process. All state of the embedded default lives under the data directory."""

from __future__ import annotations

import logging
import secrets
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from .agent_bundle import build_bundle
from .api import create_app
from .backends.base import LaunchError
from .config import Settings
from .datadir_lock import DataDirLock
from .embedded_redis import EmbeddedRedis
from .pipelines.daemon import start_daemon as start_pipeline_daemon
from .retention import Collector
from .scheduler.loop import Scheduler
from .service import Farm
from .states import State

log = logging.getLogger("buildfarm")


def farm_id(farm: Farm) -> str:
    farm.r.set("bf:farm-id", secrets.token_hex(6), nx=True)
    return farm.r.get("bf:farm-id")


def make_backend(settings: Settings, farm: Farm, on_exit):
    bundle = build_bundle(Path(settings.data_dir) / "agent")
    if settings.backend == "local":
        from .backends.local import LocalBackend

        return LocalBackend(settings, farm_id(farm), bundle, on_exit)
    if settings.backend == "mesos":
        from .backends.mesos import MesosBackend

        if settings.mesos is None:
            raise LaunchError("--backend mesos needs --master HOST:PORT")
        return MesosBackend(settings.mesos, farm.r, settings.api_url, on_exit, farm.builds.wake,
                            lambda: launched_tasks(farm))
    raise LaunchError(f"unknown backend {settings.backend!r}; use 'local' or 'mesos'")


def launched_tasks(farm: Farm) -> list[str]:
    """Task ids (build-attempt) of the builds the farm believes launching or running."""
    out = []
    for bid in farm.builds.active_ids():
        h = farm.r.hmget(f"bf:build:{bid}", "state", "attempt")
        if h[0] in ("launching", "running"):
            out.append(f"{bid}-{h[1]}")
    return out


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM (systemd, docker stop, kill) ends the farm like Ctrl-C: through its `finally`
    blocks, so warm containers, the pipeline daemon and the embedded Redis are stopped. (uvicorn
    re-raises a SIGTERM it handled once it has shut down, which would otherwise kill the process
    on the spot.)"""
    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


def run_scheduler(settings: Settings, teardown: bool = False) -> None:
    """The scheduler alone (the API runs elsewhere, against the same Redis)."""
    stop_cleanly_on_sigterm()
    with _backend_failure_explained(settings):
        _schedule(settings, teardown)


def _schedule(settings: Settings, teardown: bool) -> None:
    if not settings.redis_url:
        raise LaunchError("`buildfarm scheduler` needs REDIS_URL (the farm's Redis)")
    farm = Farm(settings, settings.redis_url)
    holder: dict = {}
    backend = make_backend(settings, farm, lambda ev: holder["scheduler"].on_exit(ev))
    if teardown:
        if not hasattr(backend, "teardown"):
            raise LaunchError("--teardown applies to --backend mesos")
        backend.teardown()
        for bid in farm.builds.active_ids():
            farm.end(bid, State.ERROR, "the Mesos framework was torn down", close_log=True)
            farm.builds.drop_active(bid)
        return
    scheduler = holder["scheduler"] = Scheduler(farm, backend)
    pipelines = start_pipeline_daemon(farm)
    try:
        scheduler.run()
    except KeyboardInterrupt:
        pass
    finally:
        pipelines.stop()
        scheduler.stop()
        backend.close()


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
        with _backend_failure_explained(settings):
            _serve(settings, url)
    finally:
        if embedded is not None:
            embedded.stop()
    if backend_failure(settings):  # it stopped the server: say why
        raise LaunchError(mesos_hint(backend_failure(settings)))


def _serve(settings: Settings, url: str) -> None:
    """The API, the scheduler and the pipeline daemon, until the server is stopped."""
    farm = Farm(settings, url)
    farm.r.ping()
    farm.tokens.bootstrap_admin(Path(settings.data_dir) / "admin.token")
    farm.secrets.check_key()
    if sealed := farm.secrets.seal_plain():
        log.info("encrypted %d secret(s) an earlier version kept in clear", sealed)
    if unscoped := [name for name, scope in farm.secrets.listing() if not scope]:
        log.warning("secrets without a scope, usable by admins' builds only until an admin scopes them "
                    "(`buildfarm secret scope NAME --repo URL-GLOB --branch BRANCH`): %s", ", ".join(unscoped))
    farm.builds.backfill_index()
    holder: dict = {}
    backend = make_backend(settings, farm, lambda ev: holder["scheduler"].on_exit(ev))
    scheduler = holder["scheduler"] = Scheduler(farm, backend)
    if settings.backend == "local":
        farm.image_check = backend.check_image
    thread = threading.Thread(target=scheduler.run, name="scheduler", daemon=True)
    pipelines = start_pipeline_daemon(farm, start=False)
    collector = Collector(farm.retention, settings.gc_interval)
    app = create_app(farm)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=2))
    if settings.backend == "mesos":
        where = f"Mesos master {settings.mesos.master}"
    else:
        capacity = backend.agents()[0].capacity
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
        scheduler.stop()
        collector.stop()
        for t in (thread, pipelines):  # both are done with Redis before it stops
            if t.is_alive():
                t.join(timeout=5)
        backend.close()


@contextmanager
def _backend_failure_explained(settings: Settings):
    """pymesos ends a refused subscription by raising its error in the main thread, anywhere:
    replace whatever that interrupted with the cause."""
    try:
        yield
    except Exception:
        if backend_failure(settings):
            raise LaunchError(mesos_hint(backend_failure(settings))) from None
        raise


def backend_failure(settings: Settings) -> str | None:
    """Why the Mesos backend's connection ended for good, if it did."""
    if settings.backend != "mesos":
        return None
    from .backends.mesos import connection_failure

    return connection_failure()


def mesos_hint(fatal: str) -> str:
    if "HTTP 401" in fatal or "HTTP 403" in fatal:
        return f"{fatal}; check --principal and --secret (BUILDFARM_MESOS_SECRET)"
    return fatal

