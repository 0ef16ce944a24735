"""What the figures share: the result record and its printing, the bare `docker run` baselines,
the API calls the benchmarks make with httpx, and an RSS sampler for the farm process."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from buildfarm.states import TERMINAL_STATES
from tests.conftest import IMAGE, FarmProcess

TERMINAL = TERMINAL_STATES
# Every container a benchmark starts itself carries this label, so cleanup finds it.
BENCH_LABEL = "buildfarm.bench"
# Idle pre-started agent containers a farm may keep per image (`buildfarm up --warm N`); a warm
# container handed a build is renamed buildfarm-BUILDID-ATTEMPT.
WARM_PREFIX = "buildfarm-warm-"


@dataclass
class Figure:
    key: str  # the --only name
    name: str  # what is measured, for people
    value: float
    unit: str
    baseline: float | None
    baseline_what: str
    ratio: float | None
    target: str
    ok: bool | None  # None: informational, no target
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    shown: str = ""  # the value as the table shows it (defaults to value + unit)
    baseline_shown: str = ""

    def value_text(self) -> str:
        return self.shown or f"{fmt(self.value)} {self.unit}"

    def baseline_text(self) -> str:
        if self.baseline is None:
            return self.baseline_what
        return self.baseline_shown or f"{self.baseline_what}: {fmt(self.baseline)} {self.unit}"

    def verdict(self) -> str:
        return "informational" if self.ok is None else ("met" if self.ok else "MISSED")

    def line(self) -> str:
        ratio = "" if self.ratio is None else f" = {self.ratio:.2f}x"
        base = "" if self.baseline is None else f" vs {self.baseline_text()}"
        return f"{self.name}: {self.value_text()}{base}{ratio} (target {self.target}) [{self.verdict()}]"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict()
        return d


def fmt(x: float) -> str:
    """A number with 3 significant digits, thousands separated."""
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}" if x >= 1 else f"{x:.2f}"


def say(text: str = "") -> None:
    print(text, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


# -- the bare baselines ------------------------------------------------------------------------------

def docker_run(*cmd: str, network: str | None = None, image: str = IMAGE) -> float:
    """Seconds for one bare `docker run --rm IMAGE CMD` (the docker CLI included, as a user runs it)."""
    args = ["docker", "run", "--rm", "--label", BENCH_LABEL]
    if network:
        args += ["--network", network]
    t = time.perf_counter()
    subprocess.run(args + [image, *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def remove_bench_containers() -> None:
    subprocess.run(["sh", "-c", f"docker ps -aq --filter label={BENCH_LABEL} | xargs -r docker rm -f"],
                   capture_output=True, check=False)


# -- the farm's life ------------------------------------------------------------------------------

def stop_farm(farm: FarmProcess, timeout: float = 10.0) -> None:
    """FarmProcess.stop, then wait for the farm's embedded redis-server to exit before its data
    directory may be removed: a Redis whose final save fails (its directory gone) keeps running."""
    pid_file = farm.data_dir / "redis" / "redis.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        pid = None
    farm.stop()
    if pid is None:
        return
    end = time.monotonic() + timeout
    while _is_redis(pid) and time.monotonic() < end:
        time.sleep(0.1)
    if _is_redis(pid):
        os.kill(pid, signal.SIGKILL)


def _is_redis(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"redis-server" in f.read()
    except OSError:
        return False


# -- the farm, through its API ------------------------------------------------------------------------

class Api:
    """The calls the benchmarks make, with httpx against the farm's API."""

    def __init__(self, farm: FarmProcess, repo: str):
        self.farm = farm
        self.repo = repo
        self.http = httpx.Client(base_url=farm.url, timeout=60, headers=farm.headers)
        self._farm_id: str | None = None

    def close(self) -> None:
        self.http.close()

    def submit(self, command: list[str], cpus: float = 1.0, mem: int = 512, **extra) -> str:
        spec = {"repo": self.repo, "image": IMAGE, "command": command, "resources": {"cpus": cpus, "mem": mem},
                "trigger": {"kind": "api", "user": "bench"}, **extra}
        r = self.http.post("/api/v1/builds", json=spec)
        if r.status_code != 201:
            raise RuntimeError(f"submit answered {r.status_code}: {r.text[:500]}")
        return r.json()["id"]

    def get(self, bid: str) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/builds/{bid}")
        r.raise_for_status()
        return r.json()

    def states(self, limit: int = 500) -> dict[str, str]:
        r = self.http.get("/api/v1/builds", params={"limit": limit})
        r.raise_for_status()
        return {b["id"]: b["state"] for b in r.json()["builds"]}

    def wait_end(self, bid: str, timeout: float = 600, interval: float = 0.05) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            b = self.get(bid)
            if b["state"] in TERMINAL:
                return b
            time.sleep(interval)
        raise TimeoutError(f"build {bid} did not end within {timeout} s: {self.get(bid)}")

    def capacity_cpus(self) -> float:
        agents = self.http.get("/api/v1/agents").json()["agents"]
        return sum(a["capacity"]["cpus"] for a in agents)

    def farm_id(self) -> str:
        if self._farm_id is None:
            self._farm_id = self.farm.redis_get("bf:farm-id") or "?"
        return self._farm_id

    def containers(self) -> list[tuple[str, str]]:
        """(name, state) of every container of this farm, idle warm ones included."""
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=buildfarm.farm={self.farm_id()}",
                              "--format", "{{.Names}} {{.State}}"], capture_output=True, text=True, check=False)
        return [tuple(line.split(None, 1)) for line in out.stdout.splitlines() if line.strip()]

    def build_containers(self) -> list[str]:
        """Containers of builds: not the idle pre-started ("warm") ones a farm may keep per image."""
        return [name for name, _ in self.containers() if not name.startswith(WARM_PREFIX)]

    def warm_containers(self) -> int:
        return sum(1 for name, state in self.containers() if name.startswith(WARM_PREFIX) and state == "running")

    def quiesce(self, timeout: float = 60) -> float:
        """Wait until the farm has no build container left and no idle warm container still being
        started, so the previous build's removal is not charged to the next measurement. Returns
        the seconds waited."""
        t = time.perf_counter()
        end = time.monotonic() + timeout
        while True:
            cs = self.containers()
            busy = [n for n, st in cs if not n.startswith(WARM_PREFIX) or st != "running"]
            if not busy:
                return time.perf_counter() - t
            if time.monotonic() > end:
                raise TimeoutError(f"the farm still has build containers after {timeout} s: {busy}")
            time.sleep(0.05)


def phases(build: dict[str, Any]) -> dict[str, float]:
    """Seconds spent in each state, from the build's recorded history (the farm's own clock)."""
    hist = {}
    for h in build.get("history", []):
        hist.setdefault(h["state"], h["at"])
    out = {}
    order = ["queued", "launching", "running"]
    for a, b in zip(order, order[1:] + ["end"]):
        t_b = hist.get(b) if b != "end" else build.get("finished_at")
        if a in hist and t_b:
            out[a] = t_b - hist[a]
    return out


# -- memory of the farm process -------------------------------------------------------------------

def vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Samples /proc/PID/status VmRSS every `interval` seconds in a thread; `mark(name)` starts a
    new phase, so peaks can be told apart (ingest vs read-back)."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, str, int]] = []
        self.phase = "before"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def start(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def mark(self, phase: str) -> None:
        self.phase = phase
        self._sample()

    def _sample(self) -> None:
        try:
            self.samples.append((time.monotonic(), self.phase, vm_rss_kb(self.pid)))
        except (FileNotFoundError, ProcessLookupError):
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        self._thread.join(2)

    def peak(self, phase: str) -> int:
        return max((kb for _, p, kb in self.samples if p == phase), default=0)

    def first(self, phase: str) -> int:
        return next((kb for _, p, kb in self.samples if p == phase), 0)

    def count(self, phase: str) -> int:
        return sum(1 for _, p, _ in self.samples if p == phase)
