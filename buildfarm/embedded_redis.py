"""The embedded default's private Redis: a `redis-server` on a free loopback port, with its
persistence (AOF) and a generated password under the data directory. A farm killed with
SIGKILL leaves it running; the next `buildfarm up` finds it by its pid file and reuses it."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir) / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.started_here = False

    @property
    def url(self) -> str:
        port = (self.dir / "port").read_text().strip()
        password = (self.dir / "password").read_text().strip()
        return f"redis://:{password}@127.0.0.1:{port}/0"

    def _alive(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_timeout=1).ping()
        except Exception:
            return False

    def start(self) -> str:
        if (self.dir / "port").exists() and (self.dir / "password").exists() and self._alive():
            return self.url
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not installed: `make deps` (or apt-get install redis-server), "
                               "or point REDIS_URL at a Redis")
        pw_file = self.dir / "password"
        if not pw_file.exists():
            pw_file.write_text(secrets.token_hex(16))
            os.chmod(pw_file, 0o600)
        port = free_port()
        (self.dir / "port").write_text(str(port))
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
            f"requirepass {pw_file.read_text().strip()}",
            "save 60 1",
            "",
        ]))
        os.chmod(conf, 0o600)
        subprocess.run([exe, str(conf)], check=True, stdout=subprocess.DEVNULL)
        self.started_here = True
        deadline = time.monotonic() + 15
        while not self._alive():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not come up; see {self.dir / 'redis.log'}")
            time.sleep(0.05)
        return self.url

    def stop(self, wait: float = 5.0) -> None:
        """Shut it down with a final save; if the save fails (its directory is gone, the disk is
        full) shut down anyway, so no orphan redis-server is left. Waits for the process to end."""
        try:
            pid = int((self.dir / "redis.pid").read_text())
        except (OSError, ValueError):
            pid = None
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=2)
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
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
