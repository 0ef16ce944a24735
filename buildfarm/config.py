"""Settings, from command-line options and BUILDFARM_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def default_data_dir() -> Path:
    return Path(os.environ.get("BUILDFARM_DATA", Path.home() / ".buildfarm"))


def local_secret(env: str, path: Path, make: Callable[[], str], valid: Callable[[str], bool], *,
                 replace_invalid: bool = False, expected: str = "") -> str:
    """The value of the environment variable `env`, else the contents of `path`, created (mode 0600,
    never replacing a file another process created meanwhile) with `make()` when missing. A file
    that is not `valid` is replaced only with `replace_invalid` (a value nothing depends on yet);
    otherwise it is an error that says what is `expected`."""
    if os.environ.get(env):
        if not valid(os.environ[env]):
            raise ValueError(f"{env} is not valid: {expected or 'see --help'}")
        return os.environ[env]
    path = Path(path)
    if path.exists():
        value = path.read_text().strip()
        if valid(value):
            return value
        if not replace_invalid:
            raise ValueError(f"{path} is not valid ({expected or 'see --help'}); restore it from a backup, "
                             f"or set {env}")
        path.unlink(missing_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make() + "\n")
        f.flush()
        os.fsync(f.fileno())  # on disk before it has its name: a power cut leaves no empty key
    try:
        os.link(tmp, path)  # whole, and only if no other process made one first
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path.read_text().strip()


@dataclass
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    redis_url: str | None = field(default_factory=lambda: os.environ.get("REDIS_URL"))
    host: str = "127.0.0.1"
    port: int = 8080
    # The API address the build agents use (they run with host networking by default).
    agent_api_url: str | None = None
    backend: str = "local"
    isolation: str = "docker"  # or "process" when no Docker engine exists
    network: str = "host"  # Docker network mode of build containers
    cpus: float | None = None  # capacity offered by the local backend; None: this host's
    mem: int | None = None  # MB
    start_timeout: float = 300.0  # launching -> the agent reports it started
    heartbeat_timeout: float = 90.0  # running with no output and no heartbeat
    reclaim_grace: float = 180.0  # seconds a team below its guarantee waits before borrowed builds are preempted
    max_preemptions: int = 2  # times one build may be preempted
    credit_period: float = 3600.0  # seconds between issues of credits to teams (market.py); 0: no market
    warm: int = 2  # idle pre-started agent containers kept per image in use (local Docker backend)
    check_repos: bool = True  # `git ls-remote` at submit time: unknown refs fail fast
    allow_repos: tuple[str, ...] = ()  # URL prefixes builds may come from; empty: any
    max_artifact_bytes: int = 4 * 1024**3
    max_log_chunk: int = 4 * 1024**2
    mesos: object | None = None  # backends.mesos.MesosOptions with --backend mesos
    # Retention (seconds after a build ends; None: kept): a build's own expire_in comes first.
    keep_logs: int | None = 90 * 86400
    keep_artifacts: int | None = 30 * 86400  # GitLab's default for artifacts
    gc_interval: float = 600.0  # seconds between the collector's passes
    lease_ttl: float = 5.0  # seconds a scheduler's lease lasts unrenewed (lease.py)

    @property
    def logs_dir(self) -> Path:
        return Path(self.data_dir) / "logs"

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.data_dir) / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return Path(self.data_dir) / "cache"

    @property
    def api_url(self) -> str:
        return self.agent_api_url or f"http://{self.host}:{self.port}"
