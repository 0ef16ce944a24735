"""Real parts for the tests: a Docker engine, `redis-server`, repositories served by `git daemon`
on 127.0.0.1, and farms started with the real `buildfarm up` command.

Under CI=true a missing Docker engine or redis-server is a failure, never a skip.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from buildfarm.config import Settings
from buildfarm.samples import write_files
from buildfarm.service import Farm
from buildfarm.states import TERMINAL_STATES

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BUILDFARM = str(BIN / "buildfarm")
IMAGE = os.environ.get("BUILDFARM_TEST_IMAGE", "buildfarm/builder:latest")
BASE_IMAGE = "buildfarm/base:bookworm"  # no python3: for the "image cannot run the agent" case
IN_CI = os.environ.get("CI", "").lower() == "true"

# Fixtures shared by several test files (the browser, the Jenkins double and bridge, a private dockerd).
pytest_plugins = ["tests.webui", "tests.jenkins_support", "tests.dockerd"]


def need(condition: bool, what: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true (make deps installs it)")
    pytest.skip(f"{what} is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_build_done(read, build_id: str, timeout: float = 120) -> dict:
    """The build's record (`read(build_id)`) once it has ended; on a timeout, the record in the error."""
    terminal = TERMINAL_STATES
    try:
        return wait_until(lambda: (b := read(build_id))["state"] in terminal and b, timeout, 0.2,
                          what=f"build {build_id} to end")
    except AssertionError as e:
        raise AssertionError(f"{e}: {json.dumps(read(build_id))[:3000]}") from None


@pytest.fixture(scope="session")
def docker_engine():
    ok = shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    need(ok, "a Docker engine")
    have = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0
    need(have, f"the image {IMAGE} (make images)")
    return True


@pytest.fixture(scope="session")
def redis_binary():
    need(shutil.which("redis-server") is not None, "redis-server")
    return shutil.which("redis-server")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory, redis_binary):
    """A private, memory-only redis-server on a free loopback port, for in-process tests."""
    import redis

    d = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen([redis_binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(d)], stdout=subprocess.DEVNULL)
    r = redis.Redis(port=port)

    def pings() -> bool:
        try:
            return r.ping()
        except redis.ConnectionError:
            return False

    wait_until(pings, 10, what="redis-server")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(5)


@pytest.fixture
def make_farm(redis_url, tmp_path):
    """Makes an in-process `Farm` on the module's private Redis, emptied first; keyword arguments
    are `Settings`' (e.g. reclaim_grace=0). A test file's `farm` fixture says which it needs.
    `join=True` makes another farm on the same Redis as it is (a second process's view), with a
    data directory of its own."""
    made = []

    def make(join: bool = False, **settings) -> Farm:
        f = Farm(Settings(data_dir=tmp_path / f"data{len(made) or ''}", check_repos=False, **settings), redis_url)
        if not join:
            f.r.flushdb()
        made.append(f)
        return f

    return make


class GitServer:
    """Bare repositories under a directory, served read-only by `git daemon` on 127.0.0.1."""

    def __init__(self, root: Path):
        self.root = root
        self.repos = root / "repos"
        self.repos.mkdir(parents=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            # Pushes only into repositories that say daemon.receivepack (allow_push).
            ["git", "daemon", "--reuseaddr", "--export-all", "--allow-override=receive-pack",
             f"--base-path={self.repos}", "--listen=127.0.0.1",
             f"--port={self.port}", "--verbose", str(self.repos)],
            stdout=subprocess.DEVNULL, stderr=open(root / "daemon.log", "wb"))
        wait_until(lambda: _port_open(self.port), 10, what="git daemon")

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def make_repo(self, name: str, files: dict[str, str], branches: dict[str, dict[str, str]] | None = None,
                  tags: list[str] = ()) -> str:
        """Create a repository with `files` on main (plus branches with extra files); return its URL."""
        work = self.root / "work" / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        git = ["git", "-c", "user.email=test@buildfarm", "-c", "user.name=test"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
        write_files(work, files)
        subprocess.run(git + ["-C", str(work), "add", "-A"], check=True)
        subprocess.run(git + ["-C", str(work), "commit", "-qm", "initial"], check=True)
        for tag in tags:
            subprocess.run(git + ["-C", str(work), "tag", tag], check=True)
        for branch, extra in (branches or {}).items():
            subprocess.run(git + ["-C", str(work), "checkout", "-qb", branch], check=True)
            for path, text in extra.items():
                (work / path).write_text(text)
            subprocess.run(git + ["-C", str(work), "commit", "-qam", f"on {branch}"], check=True)
            subprocess.run(git + ["-C", str(work), "checkout", "-q", "main"], check=True)
        bare = self.repos / f"{name}.git"
        shutil.rmtree(bare, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
        return self.url(name)

    def allow_push(self, name: str) -> str:
        """Let anyone push to this repository over git:// (as a release pipeline's tag push does)."""
        subprocess.run(["git", "-C", str(self.repos / f"{name}.git"), "config", "daemon.receivepack", "true"],
                       check=True)
        return self.url(name)

    def head(self, name: str, ref: str = "main") -> str:
        return subprocess.run(["git", "-C", str(self.repos / f"{name}.git"), "rev-parse", ref], capture_output=True,
                              text=True, check=True).stdout.strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def git_server(tmp_path_factory):
    need(shutil.which("git") is not None, "git")
    server = GitServer(tmp_path_factory.mktemp("git"))
    yield server
    server.stop()


class FarmProcess:
    """A farm started as a user would: `buildfarm up --data-dir DIR --port PORT`."""

    def __init__(self, data_dir: Path, *extra: str, env: dict | None = None):
        self.data_dir = data_dir
        self.env = env or os.environ  # e.g. DOCKER_HOST of a private dockerd (tests/dockerd.py)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None
        self.farm_id: str | None = None  # its containers' label, kept for stop() (its Redis stops with it)
        self.start()

    def start(self) -> None:
        env = {k: v for k, v in self.env.items() if k not in ("REDIS_URL", "BUILDFARM_URL")}
        self.log = open(self.data_dir.parent / f"{self.data_dir.name}-up.log", "ab")
        self.proc = subprocess.Popen([BUILDFARM, "up", "--data-dir", str(self.data_dir), "--port", str(self.port),
                                      *self.extra], stdout=self.log, stderr=subprocess.STDOUT, env=env)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"buildfarm up exited {self.proc.returncode}: {self.up_log()}")
            try:
                return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 30, what="buildfarm up")
        self.farm_id = self.farm_id or self.redis_get("bf:farm-id")
        self.token = (self.data_dir / "admin.token").read_text().strip()
        self.headers = {"Authorization": f"Bearer {self.token}"}
        # The scheduler publishes the agents on its first round.
        wait_until(lambda: self.api("GET", "/api/v1/agents").json()["agents"], 15, what="agents")

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        """An HTTP call to the farm with the admin token (pass headers= to use another)."""
        kw.setdefault("headers", self.headers)
        kw.setdefault("timeout", 30)
        return httpx.request(method, self.url + path, **kw)

    def up_log(self) -> str:
        return (self.data_dir.parent / f"{self.data_dir.name}-up.log").read_text(errors="replace")[-3000:]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        # Builds of this farm that outlived it (a test that failed half-way). Its id was read while
        # it ran: its embedded Redis has stopped with it.
        if self.farm_id:
            subprocess.run(["sh", "-c", f"docker ps -aq --filter label=buildfarm.farm={self.farm_id} | "
                                        f"xargs -r docker rm -f"], capture_output=True, env=self.env)
        pid = self.data_dir / "redis" / "redis.pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass

    def redis_get(self, key: str) -> str | None:
        """The key in the farm's embedded Redis; None when it cannot be read (at once: redis-py's
        default retries would spend 4 s on a Redis that is not running)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            d = self.data_dir / "redis"
            r = redis.Redis(host="127.0.0.1", port=int((d / "port").read_text()),
                            password=(d / "password").read_text().strip(), decode_responses=True, socket_timeout=2,
                            retry=Retry(NoBackoff(), 0))
            return r.get(key)
        except Exception:
            return None

    def redis_url(self) -> str:
        d = self.data_dir / "redis"
        return f"redis://:{(d / 'password').read_text().strip()}@127.0.0.1:{(d / 'port').read_text().strip()}/0"

    # -- the CLI, as a user runs it ---------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 120, env: dict | None = None,
            input_: bytes | None = None) -> subprocess.CompletedProcess:
        e = {k: v for k, v in os.environ.items() if k not in ("BUILD_URL", "JOB_NAME", "BUILD_NUMBER")}
        e["BUILDFARM_TOKEN"] = self.token
        e.update(env or {})
        return subprocess.run([BUILDFARM, "--server", self.url, *args], capture_output=True, timeout=timeout, env=e,
                              input=input_ if input_ is not None else b"")

    def submit(self, repo: str, *command: str, options: tuple = (), image: str = IMAGE) -> str:
        out = self.cli("submit", "--repo", repo, "--image", image, *options, "--", *command)
        assert out.returncode == 0, out.stderr.decode()
        return out.stdout.decode().strip()

    def build(self, build_id: str) -> dict:
        out = self.cli("status", build_id, "--json")
        assert out.returncode == 0, out.stderr.decode()
        return json.loads(out.stdout)

    def wait_done(self, build_id: str, timeout: float = 120) -> dict:
        return wait_build_done(self.build, build_id, timeout)

    def log_text(self, build_id: str) -> bytes:
        out = self.cli("logs", build_id)
        assert out.returncode == 0, out.stderr.decode()
        return out.stdout


@pytest.fixture(scope="module")
def farm(tmp_path_factory, docker_engine, redis_binary):
    f = FarmProcess(tmp_path_factory.mktemp("farm") / "data")
    yield f
    f.stop()


@pytest.fixture
def fresh_farm(tmp_path, docker_engine, redis_binary):
    """A farm of its own, for tests that kill or restart it."""
    farms = []

    def make(*extra):
        f = FarmProcess(tmp_path / f"data{len(farms)}", *extra)
        farms.append(f)
        return f

    yield make
    for f in farms:
        f.stop()


def containers_of(build_id: str) -> list[str]:
    # by name: a warm container handed a build carries its id in its name, not in a label
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=buildfarm-{build_id}-"],
                         capture_output=True, text=True)
    return out.stdout.split()


class RunCounter:
    """Counts, per build id, how many times a build's command really started (over HTTP on 127.0.0.1).
    `/gate` answers 503 until the test calls `open_gate()`: builds that poll it hold until then, so a
    test decides when they end instead of guessing with a sleep."""

    def __init__(self):
        self.hits: collections.Counter = collections.Counter()
        self.gate = threading.Event()
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/gate":
                    self.send_response(204 if counter.gate.is_set() else 503)
                else:
                    counter.hits[self.path.rsplit("/", 1)[-1]] += 1
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for_gate(self) -> str:
        """A shell line that holds a build until the gate opens."""
        return f"until curl -fs {self.url}/gate 2>/dev/null; do sleep 0.2; done"

    def open_gate(self) -> None:
        self.gate.set()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def counter():
    c = RunCounter()
    yield c
    c.close()
