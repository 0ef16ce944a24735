"""The embedded default's private Redis: a `redis-server` on a free loopback port, with its
persistence (AOF) and a generated password under the data directory.

The farm that holds the data directory's lock owns it: it started it, or adopted the one an
earlier farm killed with SIGKILL left running (found by its port and password files). The owner
supervises it (when the process dies, it is started again from its AOF on the same port and
password) and stops it when the farm stops. Nobody else ever stops it."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis

from .redis_outage import answers

log = logging.getLogger("buildfarm.redis")

CHECK_SECONDS = 0.5
RETRY_SECONDS = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir) / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.pid: int | None = None  # of the redis-server this farm owns
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        port = (self.dir / "port").read_text().strip()
        password = (self.dir / "password").read_text().strip()
        return f"redis://:{password}@127.0.0.1:{port}/0"

    def _alive(self) -> bool:
        try:
            return answers(redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1))
        except OSError:  # port or password file gone
            return False

    def start(self) -> str:
        """Start it (or adopt the one an earlier farm of this data directory left running)."""
        if (self.dir / "port").exists() and (self.dir / "password").exists() and self._alive():
            self.pid = self._pid_file()
            log.info("adopting the embedded Redis an earlier farm left running (pid %s)", self.pid)
            return self.url
        pw_file = self.dir / "password"
        if not pw_file.exists():
            pw_file.write_text(secrets.token_hex(16))
            os.chmod(pw_file, 0o600)
        (self.dir / "port").write_text(str(free_port()))
        self._launch()
        return self.url

    def _launch(self, wait: float = 15.0) -> None:
        """redis-server on the recorded port and password, loading its AOF."""
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not installed: `make deps` (or apt-get install redis-server), "
                               "or point REDIS_URL at a Redis")
        port = int((self.dir / "port").read_text())
        conf = self.dir / "redis.conf"
        conf.write_text("\n".join([
            "bind 127.0.0.1",
            f"port {port}",
            f"dir {self.dir}",
            "appendonly yes",
            "appendfsync everysec",
            "daemonize yes",
            f"pidfile {self.dir / 'redis.pid'}",
            f"logfile {self.dir / 'redis.log'}",
            f"requirepass {(self.dir / 'password').read_text().strip()}",
            "save 60 1",
            "",
        ]))
        os.chmod(conf, 0o600)
        subprocess.run([exe, str(conf)], check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + wait
        while not self._alive():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not come up on 127.0.0.1:{port}; the end of "
                                   f"{self.dir / 'redis.log'}: {self.log_tail()}")
            time.sleep(0.05)
        self.pid = self._pid_file()

    def _pid_file(self) -> int | None:
        try:
            return int((self.dir / "redis.pid").read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        """Whether the owned redis-server process exists (stopped or busy counts: it holds the port)."""
        return self.pid is not None and _process_alive(self.pid)

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = (self.dir / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no redis.log)"
        tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
        return " | ".join(tail) or "(redis.log is empty)"

    # -- supervision ---------------------------------------------------------------------------------
    def supervise(self) -> None:
        """Watch the owned redis-server from a thread; start it again when it dies."""
        self._watcher = threading.Thread(target=self._watch, name="redis-supervisor", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        failing = False
        while not self._stopping.wait(CHECK_SECONDS):
            if self.running():
                continue
            if not failing:
                log.warning("the embedded Redis (pid %s) is gone; starting it again from its AOF on the same "
                            "port. The end of %s: %s", self.pid, self.dir / "redis.log", self.log_tail())
            try:
                self._launch(wait=10.0)
            except Exception as e:  # the port taken, the disk full: say so once, try again
                if not failing:
                    log.error("the embedded Redis could not be started again (%s); retrying every %.0f s",
                              e, RETRY_SECONDS)
                failing = True
                self._stopping.wait(RETRY_SECONDS)
                continue
            failing = False
            log.info("the embedded Redis is back (pid %s)", self.pid)

    def stop(self, wait: float = 5.0) -> None:
        """Stop supervising, then shut it down with a final save; if the save fails (its directory is
        gone, the disk is full) shut down anyway, so no orphan redis-server is left. Waits for the
        process to end; one that does not answer (stopped with SIGSTOP) is sent SIGTERM."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=15)
        pid = self.pid or self._pid_file()
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
        except OSError:  # port or password file gone
            client = None
        for nosave in (False, True):
            try:
                if client is not None:
                    client.shutdown(nosave=nosave, save=not nosave)
                break
            except redis.ResponseError:  # the save failed: Redis refuses to stop unless told nosave
                continue
            except redis.RedisError:
                break
        deadline = time.monotonic() + wait
        while pid and _process_alive(pid):
            if time.monotonic() > deadline:
                log.warning("the embedded Redis (pid %s) did not stop when asked; sending it SIGTERM", pid)
                os.kill(pid, signal.SIGTERM)  # delivered when it runs again, if it is stopped
                return
            time.sleep(0.05)


def _process_alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a killed daemon nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
