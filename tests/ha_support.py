"""A farm as a deployment runs it, on this machine: a Redis (plain, or a primary, a replica and
sentinels), `buildfarm api` replicas and `buildfarm scheduler`s, each its own process on 127.0.0.1,
all on one data directory. Used by the HA tests and by the failover bench."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import redis

from .conftest import BUILDFARM, IMAGE, free_port, wait_build_done, wait_until


class Role:
    """One `buildfarm ROLE ...` process with REDIS_URL, its output in DIR/NAME.log."""

    def __init__(self, root: Path, name: str, redis_url: str, *args: str):
        self.name, self.args = name, list(args)
        self.logfile = root / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if k != "BUILDFARM_URL"}
        env["REDIS_URL"] = redis_url
        self.proc = subprocess.Popen([BUILDFARM, *args], stdout=open(self.logfile, "ab"),
                                     stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Cluster:
    """API replicas and schedulers on one Redis and one data directory."""

    def __init__(self, root: Path, redis_url: str, lease_ttl: float = 3):
        self.root, self.redis_url, self.lease_ttl = root, redis_url, lease_ttl
        self.data = root / "data"
        self.apis: list[Role] = []
        self.ports: list[int] = []
        self.schedulers: list[Role] = []
        self.token = ""

    def add_api(self) -> str:
        port = free_port()
        role = Role(self.root, f"api{len(self.apis)}", self.redis_url, "api", "--data-dir", str(self.data),
                    "--port", str(port))
        self.apis.append(role)
        self.ports.append(port)
        url = f"http://127.0.0.1:{port}"

        def ready():
            if role.proc.poll() is not None:
                raise AssertionError(f"buildfarm api exited {role.proc.returncode}: {role.log()[-3000:]}")
            try:
                return httpx.get(url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 30, what="buildfarm api")
        self.token = (self.data / "admin.token").read_text().strip()
        return url

    def url(self, i: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def add_scheduler(self, *backend: str) -> Role:
        """A scheduler; `backend` its options [default: --backend local]."""
        role = Role(self.root, f"scheduler{len(self.schedulers)}", self.redis_url, "scheduler",
                    *(backend or ("--backend", "local")), "--data-dir", str(self.data),
                    "--agent-api-url", self.url(0), "--lease-ttl", str(self.lease_ttl))
        self.schedulers.append(role)
        return role

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def api(self, method: str, path: str, i: int = 0, **kw) -> httpx.Response:
        kw.setdefault("timeout", 30)
        return httpx.request(method, self.url(i) + path, headers=self.headers, **kw)

    def leader(self) -> dict | None:
        return self.api("GET", "/api/v1/schedulers").json()["leader"]

    def leading_role(self, timeout: float = 30) -> Role:
        """The scheduler process that leads, once one does."""
        lead = wait_until(self.leader, timeout, 0.2, what="a scheduler to lead")
        pid = int(lead["id"].split(":")[1])
        return next(s for s in self.schedulers if s.pid == pid)

    def cli(self, *args: str, timeout: float = 120, i: int = 0) -> subprocess.CompletedProcess:
        env = dict(os.environ, BUILDFARM_TOKEN=self.token)
        return subprocess.run([BUILDFARM, "--server", self.url(i), *args], capture_output=True, timeout=timeout,
                              env=env, input=b"")

    def submit(self, repo: str, *command: str, options: tuple = (), image: str = IMAGE) -> str:
        out = self.cli("submit", "--repo", repo, "--image", image, "--cpus", "0.2", "--mem", "64", *options,
                       "--", *command)
        assert out.returncode == 0, out.stderr.decode()
        return out.stdout.decode().strip()

    def build(self, build_id: str, i: int = 0) -> dict:
        return self.api("GET", f"/api/v1/builds/{build_id}", i).json()

    def wait_done(self, build_id: str, timeout: float = 120) -> dict:
        return wait_build_done(self.build, build_id, timeout)

    def stop(self) -> None:
        for role in self.schedulers + self.apis:
            role.stop()
        try:
            farm_id = redis_client(self.redis_url).get("bf:farm-id")
        except redis.RedisError:
            farm_id = None
        if farm_id:  # builds that outlived a test that failed half-way
            subprocess.run(["sh", "-c", f"docker ps -aq --filter label=buildfarm.farm={farm_id} | xargs -r docker rm -f"],
                           capture_output=True)


def redis_client(url: str) -> redis.Redis:
    from buildfarm.redis_url import client

    return client(url, decode_responses=True, socket_timeout=5)


class RedisServer:
    def __init__(self, binary: str, root: Path, *extra: str):
        self.port = free_port()
        self.dir = root
        root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(root), *extra],
                                     stdout=open(root / "redis.log", "ab"), stderr=subprocess.STDOUT)
        r = redis.Redis(port=self.port, socket_timeout=2)
        wait_until(lambda: _pings(r), 10, what="redis-server")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class SentinelRedis:
    """A primary, a replica and sentinels (quorum 1) on loopback, as Debian's redis-sentinel runs them."""

    SERVICE = "buildfarm"

    def __init__(self, binary: str, sentinel_binary: str, root: Path, sentinels: int = 1):
        self.primary = RedisServer(binary, root / "primary")
        self.replica = RedisServer(binary, root / "replica", "--replicaof", "127.0.0.1", str(self.primary.port))
        self.sentinels = []
        for i in range(sentinels):
            port = free_port()
            conf = root / f"sentinel{i}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {root}\n"
                            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1\n"
                            f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                            f"sentinel failover-timeout {self.SERVICE} 3000\n"
                            f"sentinel parallel-syncs {self.SERVICE} 1\n")
            proc = subprocess.Popen([sentinel_binary, str(conf)], stdout=open(root / f"sentinel{i}.log", "ab"),
                                    stderr=subprocess.STDOUT)
            self.sentinels.append((port, proc))
        for port, _ in self.sentinels:
            r = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
            wait_until(lambda: _pings(r) and r.sentinel_master(self.SERVICE)["num-slaves"] >= 1, 20,
                       what="the sentinels to see the primary and its replica")
        primary = redis.Redis(port=self.primary.port)
        wait_until(lambda: primary.info("replication")["connected_slaves"] >= 1, 20, what="the replica")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p, _ in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.SERVICE}"

    def primary_port(self) -> int:
        r = redis.Redis(port=self.sentinels[0][0], socket_timeout=2, decode_responses=True)
        return int(r.sentinel_get_master_addr_by_name(self.SERVICE)[1])

    def kill_primary(self) -> float:
        """SIGKILL the current primary once its replica holds what the primary held when asked;
        returns when (time.time()) it died. Replication is asynchronous: without the wait, a loaded
        machine could kill a primary whose replica was still behind by the farm's admin token (seen
        once). What the farm does with writes a failover loses is another test's question."""
        port = self.primary_port()
        server, other = (self.primary, self.replica) if self.primary.port == port else (self.replica, self.primary)
        target = redis.Redis(port=server.port).info("replication")["master_repl_offset"]
        replica = redis.Redis(port=other.port)
        wait_until(lambda: replica.info("replication").get("slave_repl_offset", -1) >= target, 20, 0.05,
                   what="the replica to catch up with the primary")
        server.stop()
        return time.time()

    def stop(self) -> None:
        for _, proc in self.sentinels:
            proc.kill()
            proc.wait(5)
        self.primary.stop()
        self.replica.stop()


def _pings(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.RedisError:
        return False
