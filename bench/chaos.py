"""The chaos suite (`make chaos`, `python -m bench --chaos`): a stream of real builds on a real farm
(local Docker backend, then the Mesos backend against the master double of tests/doubles/), with
each fault of the registry below injected at a random point, N times. It prints, per fault:
injections, builds, builds lost, builds run twice, builds left non-terminal and the longest
recovery (fault -> the next build placed).

Each build calls the suite's counter over HTTP on 127.0.0.1 when its command starts, so a build
run twice is seen even if the farm recorded it once. A fault is one function in FAULTS: it breaks
something and returns the build it killed on purpose (its "victim", expected to end `error` with
a reason), if any. A fault with `private_engine` gets a local farm of its own, on a private dockerd
started with live-restore (tests/dockerd.py), since the machine's engine is never restarted.

    python -m bench --chaos [--rounds N] [--builds K] [--backend local|mesos] [--fault NAME ...] [--seed S]
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import BUILDFARM, IMAGE, FarmProcess, GitServer, RunCounter
from tests.dockerd import PrivateDockerd, private_engine

from .common import TERMINAL, say, stop_farm

RECOVERY_TARGET = 5.0  # seconds, for faults of the farm's own parts


@dataclass(frozen=True)
class Pace:
    """How long each build of the stream runs, and when the fault strikes after the stream was
    submitted: seconds, each drawn uniformly from its range."""

    build: tuple[float, float] = (2.0, 5.0)
    strike: tuple[float, float] = (1.0, 4.0)


FULL = Pace()  # `make chaos`: some faults strike a stream in flight, some one that has just ended
# The test suite's run (tests/test_chaos.py): every fault strikes before the stream's shortest build
# could end (while its builds run, or still launch on a loaded machine), and a round takes less.
QUICK = Pace(build=(2.5, 3.5), strike=(1.0, 2.0))


@dataclass
class Rig:
    """What a fault acts on: the farm, its backend, and the builds of the stream."""

    backend: str
    tmp: Path
    farm: FarmProcess
    counter: RunCounter
    repo: str
    master: object | None = None  # the Mesos master double
    engine: PrivateDockerd | None = None  # the farm's own dockerd (else the machine's)
    running: list[str] = field(default_factory=list)  # builds of the current stream

    def log_size(self) -> int:
        return self.log_path().stat().st_size if self.log_path().exists() else 0

    def log_path(self) -> Path:
        return self.farm.data_dir.parent / f"{self.farm.data_dir.name}-up.log"

    def redis_pid(self) -> int:
        return int((self.farm.data_dir / "redis" / "redis.pid").read_text())

    def container_of(self, bid: str) -> str | None:
        if self.backend == "mesos":
            attempt = self.farm.api("GET", f"/api/v1/builds/{bid}").json().get("attempt", 1)
            flt = f"label=mesos.task-id={bid}-{attempt}"
        else:
            flt = f"name=buildfarm-{bid}-"
        return (self.docker("ps", "-q", "--filter", flt) or [None])[0]

    def docker(self, *args: str) -> list[str]:
        """The words `docker ARGS` prints, against the farm's engine."""
        env = self.engine.env if self.engine else None
        return subprocess.run(["docker", *args], capture_output=True, text=True, env=env).stdout.split()


@dataclass
class Fault:
    name: str
    what: str
    inject: Callable[[Rig], str | None] | None  # None: a slot not filled yet
    backends: tuple[str, ...] = ("local", "mesos")
    own: bool = True  # a part of the farm itself: the recovery target applies
    lasting: bool = False  # the fault lasts while inject() runs: recovery counts from its end
    ends_builds: str = ""  # builds ended `error` with this in their reason were ended by the fault, rightly
    private_engine: bool = False  # on a local farm of its own, on a private dockerd with live-restore


FAULTS: dict[str, Fault] = {}


def fault(name: str, what: str, backends: tuple[str, ...] = ("local", "mesos"), own: bool = True,
          lasting: bool = False, ends_builds: str = "", private_engine: bool = False):
    def register(fn: Callable[[Rig], str | None]):
        FAULTS[name] = Fault(name, what, fn, backends, own, lasting, ends_builds, private_engine)
        return fn
    return register


@fault("farm-sigkill", "SIGKILL of `buildfarm up`, then started again on the same data directory")
def _farm_sigkill(rig: Rig) -> None:
    rig.farm.kill9()
    rig.farm.start()


@fault("redis-sigkill", "SIGKILL of the farm's embedded redis-server (the farm starts it again)")
def _redis_sigkill(rig: Rig) -> None:
    os.kill(rig.redis_pid(), signal.SIGKILL)


@fault("second-up", "a second `buildfarm up` on the same data directory and port", lasting=True)
def _second_up(rig: Rig) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "BUILDFARM_URL")}
    out = subprocess.run([BUILDFARM, "up", "--data-dir", str(rig.farm.data_dir), "--port", str(rig.farm.port)],
                         capture_output=True, text=True, timeout=60, env=env)
    if out.returncode == 0 or "already runs on" not in out.stderr:
        raise AssertionError(f"the second `up` was not refused (exit {out.returncode}): {out.stderr[-500:]}")


@fault("container-kill", "`docker kill` of a running build's container (the build ends `error`, with the reason)")
def _container_kill(rig: Rig) -> str | None:
    end = time.monotonic() + 30
    while time.monotonic() < end:  # the first build of the stream whose command runs
        for bid in rig.running:
            if rig.counter.hits[bid] and (cid := rig.container_of(bid)):
                subprocess.run(["docker", "kill", cid], capture_output=True)
                return bid
        time.sleep(0.1)
    raise AssertionError("no build of the stream was running to be killed")


@fault("mesos-master-restart", "the Mesos master (double) restarts: streams dropped, 1 s refused, state kept",
       backends=("mesos",), own=False)
def _master_restart(rig: Rig) -> None:
    rig.master.restart(1.0)


LOGS_DISK = "64m"  # the tmpfs mounted on DATA/logs (as root) for the disk-full fault


@fault("disk-full", f"DATA/logs (a {LOGS_DISK} tmpfs) filled for 2 s, then the space given back",
       backends=("local",), lasting=True, ends_builds="no space left")
def _disk_full(rig: Rig) -> None:
    from tests.test_disk_full import fill

    filler = fill(rig.farm.data_dir / "logs")
    time.sleep(2)
    filler.unlink()


@fault("dockerd-restart", "the farm's dockerd (private, live-restore) SIGKILLed and started again; the "
       "running builds keep running", backends=("local",), own=False, private_engine=True)
def _dockerd_restart(rig: Rig) -> None:
    rig.engine.kill()
    rig.engine.start(live_restore=True)


# -- the stream ------------------------------------------------------------------------------------

@dataclass
class Tally:
    fault: Fault
    backend: str
    injections: int = 0
    builds: list[str] = field(default_factory=list)
    victims: set[str] = field(default_factory=set)
    recoveries: list[float] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def submit(rig: Rig, seconds: float, wait: float = 60.0) -> str:
    """One build of the stream, through the API; a farm restarting (refused, 503) is waited for."""
    command = f"curl -fsS {rig.counter.url}/hit/$BUILDFARM_BUILD_ID && sleep {seconds:.1f} && echo done"
    spec = {"repo": rig.repo, "image": IMAGE, "command": ["sh", "-c", command],
            "resources": {"cpus": 0.2, "mem": 128}, "retries": 0, "trigger": {"kind": "api", "user": "chaos"}}
    end = time.monotonic() + wait
    while True:
        try:
            r = rig.farm.api("POST", "/api/v1/builds", json=spec, timeout=30)
            if r.status_code == 201:
                return r.json()["id"]
            problem = f"{r.status_code} {r.text[:300]}"
            if r.status_code != 503:
                raise RuntimeError(f"submit answered {problem}")
        except httpx.ConnectError as e:
            problem = str(e)
        if time.monotonic() > end:
            raise RuntimeError(f"could not submit for {wait:.0f} s: {problem}")
        time.sleep(0.2)


def get(rig: Rig, bid: str) -> dict | None:
    for _ in range(100):
        try:
            r = rig.farm.api("GET", f"/api/v1/builds/{bid}", timeout=30)
            if r.status_code == 200:
                return r.json()
            if r.status_code == 404:
                return None
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the farm did not answer for build {bid}")


def placed_at(build: dict) -> float | None:
    return next((h["at"] for h in build.get("history", []) if h["state"] == "launching"), None)


def one_injection(rig: Rig, tally: Tally, builds: int, rnd: random.Random, pace: Pace = FULL) -> None:
    log_from = rig.log_size()
    rig.running = [submit(rig, rnd.uniform(*pace.build)) for _ in range(builds)]
    tally.builds += rig.running
    time.sleep(rnd.uniform(*pace.strike))  # a random point in the stream's life
    t0 = time.time()
    try:
        victim = tally.fault.inject(rig)
    except Exception as e:  # noqa: BLE001  (reported in the table's notes)
        tally.errors.append(f"{type(e).__name__}: {e}")
        victim = None
    if tally.fault.lasting:
        t0 = time.time()
    tally.injections += 1
    if victim:
        tally.victims.add(victim)
    probe = submit(rig, 0)
    tally.builds.append(probe)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        b = get(rig, probe)
        if b and (at := placed_at(b)):
            tally.recoveries.append(max(0.0, at - t0))
            break
        time.sleep(0.1)
    else:
        tally.errors.append(f"probe build {probe} not placed within 120 s of the fault")
    with open(rig.log_path(), "rb") as f:  # the farm logs a fault once, with its cause: no traceback
        f.seek(log_from)
        if tracebacks := f.read().count(b"Traceback"):
            tally.errors.append(f"{tracebacks} traceback(s) in the farm's log ({rig.log_path()})")


def settle(rig: Rig, tally: Tally, timeout: float = 240) -> None:
    """Wait for every build of the tally to end, then count what went wrong."""
    end = time.monotonic() + timeout
    records: dict[str, dict | None] = {}
    for bid in tally.builds:
        while True:
            b = get(rig, bid)
            if b is None or b["state"] in TERMINAL or time.monotonic() > end:
                records[bid] = b
                break
            time.sleep(0.2)
    for bid, b in records.items():
        hits = rig.counter.hits[bid]
        if hits > 1:
            tally.twice.append(bid)
        if b is None:
            tally.lost.append(bid)
        elif b["state"] not in TERMINAL:
            tally.stuck.append(bid)
        elif tally.fault.ends_builds and b["state"] == "error" and tally.fault.ends_builds in (b["reason"] or ""):
            tally.victims.add(bid)
        elif bid in tally.victims:
            if b["state"] != "error" or not b.get("reason"):
                tally.lost.append(bid)
                tally.errors.append(f"{bid}, whose container was killed, ended {b['state']}: {b.get('reason')}")
        elif b["state"] != "succeeded" or hits == 0:
            tally.lost.append(bid)
            tally.errors.append(f"{bid} ended {b['state']}: {b.get('reason')}")


# -- a run -------------------------------------------------------------------------------------------

def start_rig(backend: str, tmp: Path, counter: RunCounter, repo: str, faults: list[str],
              engine: PrivateDockerd | None = None) -> Rig:
    if "disk-full" in faults and backend in FAULTS["disk-full"].backends:
        logs = tmp / f"{backend}-data" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={LOGS_DISK},mode=0755", "tmpfs", str(logs)],
                       check=True)
    master = None
    extra: tuple[str, ...] = ()
    if backend == "mesos":
        from tests.doubles.mesos import AgentSpec, MesosDouble

        master = MesosDouble([AgentSpec("chaos-agent", "chaos-host", cpus=2, mem=4096)], heartbeat_seconds=5,
                             kill_grace=1, update_retry_seconds=2).start()
        extra = ("--backend", "mesos", "--master", master.address, "--mesos-cache-path", str(tmp / "mesos-cache"))
    farm = FarmProcess(tmp / f"{backend}{'-own-dockerd' if engine else ''}-data", *extra,
                       env=engine.env if engine else None)
    return Rig(backend, tmp, farm, counter, repo, master, engine)


def stop_rig(rig: Rig) -> list[str]:
    """Stop the farm (and the master double); the containers the farm left behind."""
    farm_id = rig.farm.redis_get("bf:farm-id")
    stop_farm(rig.farm)
    subprocess.run(["umount", "-l", str(rig.farm.data_dir / "logs")], capture_output=True)
    if rig.master is not None:
        rig.master.stop()
    left = rig.docker("ps", "-aq", "--filter", f"label=buildfarm.farm={farm_id}")
    if left:
        rig.docker("rm", "-f", *left)
    return left


def run(backends: list[str], faults: list[str], rounds: int, builds: int, seed: int | None = None,
        tmp: Path | None = None, pace: Pace = FULL) -> list[Tally]:
    """Every selected fault, `rounds` times, on each backend; the tallies, one per (backend, fault)."""
    rnd = random.Random(seed)
    own_tmp = tmp is None
    tmp = tmp or Path(tempfile.mkdtemp(prefix="buildfarm-chaos-"))
    git = GitServer(tmp / "git")
    counter = RunCounter()
    tallies: list[Tally] = []
    try:
        repo = git.make_repo("chaos", {"README": "chaos\n"})
        for backend in backends:
            for private in (False, True):  # the faults on the machine's engine, then those on a private one
                group = [name for name in faults
                         if backend in FAULTS[name].backends and FAULTS[name].private_engine == private]
                if group:
                    with engine_for(private) as engine:
                        rig = start_rig(backend, tmp, counter, repo, group, engine)
                        tallies += run_rig(rig, group, rounds, builds, rnd, pace)
    finally:
        counter.close()
        git.stop()
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return tallies


@contextmanager
def engine_for(private: bool) -> Iterator[PrivateDockerd | None]:
    """A private dockerd with live-restore, or None: the machine's engine."""
    with private_engine(live_restore=True) if private else nullcontext() as engine:
        yield engine


def run_rig(rig: Rig, faults: list[str], rounds: int, builds: int, rnd: random.Random,
            pace: Pace = FULL) -> list[Tally]:
    """The faults, `rounds` times each, on one farm; then the farm stopped."""
    on = f" (its own dockerd, {rig.engine.host})" if rig.engine else ""
    say(f"\n{rig.backend}: farm pid {rig.farm.proc.pid} on {rig.farm.url}{on}, data in {rig.farm.data_dir}")
    mine = [Tally(FAULTS[name], rig.backend) for name in faults]
    try:
        for tally in mine:
            if tally.fault.inject is None:
                continue
            for i in range(rounds):
                one_injection(rig, tally, builds, rnd, pace)
                say(f"  {tally.fault.name} #{i + 1}: recovered in {tally.recoveries[-1]:.2f} s"
                    if len(tally.recoveries) > i else f"  {tally.fault.name} #{i + 1}: {tally.errors[-1]}")
        for tally in mine:
            settle(rig, tally)
    finally:
        left = stop_rig(rig)
        if left:
            mine[-1].errors.append(f"{len(left)} container(s) left behind after the farm stopped")
    return mine


def table(tallies: list[Tally]) -> str:
    rows = ["| backend | fault | injections | builds | lost | run twice | non-terminal | longest recovery |",
            "|---|---|---|---|---|---|---|---|"]
    for t in tallies:
        if t.fault.inject is None:
            rows.append(f"| {t.backend} | {t.fault.name} | not yet | | | | | |")
            continue
        worst = max(t.recoveries) if t.recoveries else None
        rec = "-" if worst is None else f"{worst:.2f} s"
        if worst is not None and t.fault.own:
            rec += "" if worst < RECOVERY_TARGET else " (over 5 s)"
        rows.append(f"| {t.backend} | {t.fault.name} | {t.injections} | {len(t.builds)} | {len(t.lost)} | "
                    f"{len(t.twice)} | {len(t.stuck)} | {rec} |")
    return "\n".join(rows)


def failures(tallies: list[Tally], timings: bool = True) -> list[str]:
    """What misses the targets: a lost, twice-run or stuck build, a fault that could not be
    injected, and (with timings) a slow recovery of the farm's own part."""
    out = []
    for t in tallies:
        where = f"{t.backend}/{t.fault.name}"
        out += [f"{where}: {e}" for e in t.errors]
        for what, ids in (("lost", t.lost), ("run twice", t.twice), ("left non-terminal", t.stuck)):
            if ids:
                out.append(f"{where}: {len(ids)} build(s) {what}: {', '.join(ids[:5])}")
        if timings and t.fault.own and t.recoveries and max(t.recoveries) >= RECOVERY_TARGET:
            out.append(f"{where}: recovery {max(t.recoveries):.2f} s (target under {RECOVERY_TARGET:.0f} s)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench --chaos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="injections of each fault per backend [3]")
    ap.add_argument("--builds", type=int, default=3, help="builds in the stream at each injection [3]")
    ap.add_argument("--backend", action="append", choices=["local", "mesos"], help="[both]")
    ap.add_argument("--fault", action="append", choices=sorted(FAULTS), help="[all]")
    ap.add_argument("--seed", type=int, help="for the random points of injection")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (the farms' logs and data)")
    args = ap.parse_args(argv)
    backends = args.backend or ["local", "mesos"]
    faults = args.fault or list(FAULTS)
    def unwind(signum, frame):  # like Ctrl-C: the farms, the double and their containers are cleaned up
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, unwind)
    started, load0 = time.time(), os.getloadavg()[0]
    say(f"chaos: {', '.join(faults)} x {args.rounds} on {', '.join(backends)}, {args.builds} builds a stream")
    tmp = Path(tempfile.mkdtemp(prefix="buildfarm-chaos-")) if args.keep else None
    tallies = run(backends, faults, args.rounds, args.builds, args.seed, tmp)
    if tmp:
        say(f"kept {tmp}")
    say(f"\nchaos, {datetime.date.today().isoformat()}, {time.time() - started:.0f} s, {os.cpu_count()} cpus, "
        f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}:\n")
    say(table(tallies))
    bad = failures(tallies)
    for line in bad:
        say(f"MISSED {line}")
    return 1 if bad else 0
