"""A private Docker engine for tests that kill or restart dockerd: other tests (and other people's
test runs) use this machine's engine meanwhile, so it is never touched. Loaded as a pytest plugin
(tests/conftest.py); the fixture `private_dockerd` (or `with private_engine() as engine:`) gives a
`PrivateDockerd`:

    engine = private_dockerd
    engine.start(live_restore=False)       # (re)started with that setting
    farm = FarmProcess(data, env=engine.env)   # the farm's docker.from_env() reads DOCKER_HOST
    engine.kill()                          # SIGKILL dockerd (its containerd and shims live on)
    engine.start(live_restore=False)       # the same engine again, as after a crash

Its own --data-root (kept across runs under /var/lib, so the builder image is loaded once; a
second concurrent run takes a fresh one), --exec-root, pidfile, socket and containerd; no iptables
rules (build containers use host networking). Its bridge is one of its own (BRIDGE): a dockerd
started with --bridge=none deletes the machine's `docker0`, shared by every engine in the network
namespace, and the machine's own `docker run` then fails ("could not find bridge docker0") until
its dockerd restarts.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import IMAGE, need, wait_until

CACHED_ROOT = Path("/var/lib/buildfarm-test-dockerd")
BRIDGE, BRIDGE_ADDRESS = "bftest0", "10.213.213.1/24"  # never used: build containers use host networking


def ensure_bridge() -> None:
    """The private engine's bridge, made once (an engine needs one, or it removes docker0)."""
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        return
    for cmd in (["ip", "link", "add", BRIDGE, "type", "bridge"], ["ip", "addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE],
                ["ip", "link", "set", BRIDGE, "up"]):
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0 and "exists" not in out.stderr:  # a concurrent run made it first
            raise AssertionError(f"{' '.join(cmd)}: {out.stderr.strip()}")


class PrivateDockerd:
    def __init__(self, root: Path, run: Path):
        self.root, self.run = root, run
        self.sock = run / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.env = {**os.environ, "DOCKER_HOST": self.host}
        self.proc: subprocess.Popen | None = None
        self.live_restore: bool | None = None

    def docker(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, check=check, **kw)

    def start(self, live_restore: bool = False) -> None:
        """Start dockerd (stopping a running one first if its live-restore setting differs)."""
        if self.proc and self.proc.poll() is None:
            if self.live_restore == live_restore:
                return
            self.stop()
        self.live_restore = live_restore
        ensure_bridge()
        log = open(self.run / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", f"--data-root={self.root}", f"--exec-root={self.run / 'exec'}",
             f"--pidfile={self.run / 'dockerd.pid'}", f"-H={self.host}", f"--bridge={BRIDGE}", "--iptables=false",
             "--ip-masq=false", "--ip6tables=false", f"--cgroup-parent=bftest-{os.getpid()}",
             "--containerd-namespace=bftest", "--containerd-plugins-namespace=bftest-plugins",
             *(["--live-restore"] if live_restore else [])],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.docker("version", check=False).returncode == 0 or self._exited(), 60,
                   what="the private dockerd")

    def _exited(self) -> bool:
        if self.proc.poll() is not None:
            tail = (self.run / "dockerd.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"the private dockerd exited {self.proc.returncode}: {tail}")
        return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """dockerd dies (a crash); the containers' shims live on (its containerd dies with it)."""
        self.proc.send_signal(sig)
        self.proc.wait(60)
        # containerd gets SIGKILL with its parent, but this machine's init may never reap it: a zombie
        # in the pidfile would pass for a running containerd, and the next dockerd would wait for it.
        pidfile = self.run / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(pidfile.read_text())
            wait_until(lambda: _dead(pid), 10, what=f"containerd {pid} to die with dockerd")
            pidfile.unlink()
        except (FileNotFoundError, ValueError):
            pass

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def load_image(self, image: str) -> None:
        """The image from this machine's engine, unless the private one has it already (same id)."""
        want = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", image], capture_output=True,
                              text=True).stdout.strip()
        have = self.docker("image", "inspect", "-f", "{{.Id}}", image, check=False).stdout.strip()
        if want and want == have:
            return
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "load", "-q"], stdin=save.stdout, env=self.env, check=True,
                       capture_output=True)
        assert save.wait() == 0

    def remove_containers(self) -> None:
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)

    def close(self) -> None:
        """Stop dockerd, then the containerd it started (found by its pidfile: ours only)."""
        if self.proc and self.proc.poll() is not None:  # killed by a test: start it to clean up
            try:
                self.start(bool(self.live_restore))
            except AssertionError:
                pass
        if self.proc and self.proc.poll() is None:
            self.remove_containers()
        self.stop()
        pidfile = self.run / "exec" / "containerd" / "containerd.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["umount", "-R", "-l", str(self.run / "exec")], capture_output=True)


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@contextmanager
def private_engine(live_restore: bool = False) -> Iterator[PrivateDockerd]:
    """A private dockerd, started, emptied of containers an earlier killed run left, with the builder
    image; stopped and cleaned up on exit (used by the fixture below and by bench/chaos.py)."""
    run = Path(tempfile.mkdtemp(prefix="bftest-", dir="/run"))  # short: socket paths are at most 107 bytes
    CACHED_ROOT.mkdir(parents=True, exist_ok=True)
    lock = open(CACHED_ROOT.with_suffix(".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        root = CACHED_ROOT
    except BlockingIOError:  # another run uses the cached engine: one of our own, loaded afresh
        root = Path(tempfile.mkdtemp(prefix="buildfarm-test-dockerd-", dir="/var/lib"))
    engine = PrivateDockerd(root, run)
    try:
        engine.start(live_restore)
        engine.remove_containers()  # left by an earlier run that was killed
        engine.load_image(IMAGE)
        yield engine
    finally:
        engine.close()
        shutil.rmtree(run, ignore_errors=True)
        if root != CACHED_ROOT:
            shutil.rmtree(root, ignore_errors=True)
        lock.close()


@pytest.fixture(scope="session")
def private_dockerd(docker_engine):
    need(os.geteuid() == 0 and shutil.which("dockerd") is not None, "root and dockerd (for a private engine)")
    with private_engine() as engine:
        yield engine
