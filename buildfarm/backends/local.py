"""The local backend: this host's capacity as one agent, builds as ephemeral Docker containers
(or, with `--isolation process`, plain processes when no Docker engine exists).

Containers are unprivileged, limited to the build's cpus and memory by Docker, carry no Docker
socket and no Redis credentials, and are removed once their end is recorded. They are labelled
with the farm and build id, so a restarted farm finds and adopts them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import agent_contract as contract
from ..agent_contract import AGENT_MOUNT, ASSIGN_MOUNT, CACHE_MOUNT, LABEL_ATTEMPT, LABEL_BUILD, LABEL_FARM, LABEL_WARM
from ..config import Settings
from ..placement import Agent, Offer, Resources
from ..spec import BuildSpec
from .base import LAUNCH_FAILED, LOST, Exit, ExitListener, Found, LaunchError
from .docker_engine import EngineWatch, engine_unreachable

from ..mirrors import MirrorCache

log = logging.getLogger("buildfarm.local")

# Farm-kept mirrors (not "git": builds could write that directory before the farm kept it).
MIRRORS = "mirrors"


def host_capacity(settings: Settings) -> Resources:
    cpus = settings.cpus or float(os.cpu_count() or 1)
    if settings.mem:
        mem = settings.mem
    else:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = max(256, int(pages / 2**20) - 512)  # leave room for the farm itself
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    disk = int(shutil.disk_usage(settings.data_dir).free / 2**20)
    return Resources(cpus, mem, disk)


def _log_unless_gone(what: str, e: Exception) -> None:
    """A container that ended (409 not running) or went (404) meanwhile is what a kill or remove
    wanted: say only other failures."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (404, 409):
        log.debug("%s: %s", what, e)
    else:
        log.warning("%s: %s", what, e)


class LocalBackend:
    name = "local"
    fatal: str | None = None  # never set: a local failure ends one build, not the farm

    def __init__(self, settings: Settings, farm_id: str, bundle: Path, on_exit: ExitListener):
        self.settings = settings
        host = socket.gethostname()
        self.agent = Agent(f"local-{host}", host, host_capacity(settings),
                           {"arch": platform.machine(), "os": "linux", "hostname": host,
                            "isolation": settings.isolation})
        self._alloc: dict[str, Resources] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="launch")
        runner_cls = DockerRunner if settings.isolation == "docker" else ProcessRunner
        self.runner = runner_cls(settings, farm_id, bundle, on_exit)
        # Docker builds read the mirrors the farm keeps; plain processes keep their own (no isolation).
        self.mirrors = MirrorCache(settings.cache_dir / MIRRORS) if settings.isolation == "docker" else None
        self.may_launch: Callable[[], bool] = lambda: True  # the scheduler's lease, when it has one

    # -- capacity -------------------------------------------------------------------------------
    def agents(self) -> list[Agent]:
        return [self.agent]

    def offers(self) -> list[Offer]:
        engine = self.runner.engine
        if engine is not None and not engine.available:  # builds wait in the queue meanwhile
            return []
        with self._lock:
            free = self.agent.capacity
            for r in self._alloc.values():
                free = free.minus(r)
        return [Offer(self.agent.agent_id, free)]

    def allocate(self, build_id: str, spec: BuildSpec) -> None:
        r = spec.resources
        with self._lock:
            self._alloc[build_id] = Resources(r.cpus, r.mem, r.disk)

    def release(self, build_id: str) -> None:
        with self._lock:
            self._alloc.pop(build_id, None)

    # -- builds ---------------------------------------------------------------------------------
    def check_image(self, image: str) -> str | None:
        return self.runner.check_image(image)

    def launch(self, build_id: str, attempt: int, spec: BuildSpec, token: str, agent_id: str) -> None:
        """Reserve the resources now; start the container in the background (a failure to start
        is reported as an Exit with code -1 and the reason)."""
        self.allocate(build_id, spec)
        os.utime(self.runner.bundle)  # in use: an upgraded farm's pruning keeps it (agent_bundle.py)
        self._pool.submit(self._launch, build_id, attempt, spec, token)
        if self.mirrors:
            self._pool.submit(self.mirrors.refresh_soon, spec.repo, spec.commit)

    def _launch(self, build_id: str, attempt: int, spec: BuildSpec, token: str) -> None:
        if not self.may_launch():  # deposed while this waited for a launch thread: the next leader requeues it
            log.warning("not starting build %s: this scheduler is no longer the leader", build_id)
            return
        try:
            self.runner.start(build_id, attempt, spec, token)
        except LaunchError as e:
            self.runner.on_exit(Exit(build_id, attempt, -1, str(e), LAUNCH_FAILED))
        except Exception as e:
            if engine_unreachable(e):  # not the build's fault: it is queued again (LOST while launching)
                self.runner.on_exit(Exit(build_id, attempt, -1, f"the Docker engine did not answer ({e})", LOST))
                return
            # an engine error: report it, never leave the build launching
            log.exception("launch of %s failed", build_id)
            self.runner.on_exit(Exit(build_id, attempt, -1, f"the local backend could not start the build: {e}",
                                     LAUNCH_FAILED))

    def kill(self, build_id: str) -> None:
        self._pool.submit(self.runner.kill, build_id)

    def cleanup(self, build_id: str) -> None:
        self.runner.remove(build_id)
        self.release(build_id)

    def recover(self) -> dict[str, Found]:
        return self.runner.recover()

    def adopt(self, build_id: str, spec: BuildSpec) -> None:
        self.allocate(build_id, spec)
        self.runner.watch(build_id)

    def settle(self, pending: int) -> None:
        """Nothing to answer: the local backend's offers are not held by anyone."""

    def teardown(self) -> None:
        raise LaunchError("--teardown applies to --backend mesos")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.mirrors:
            self.mirrors.close()
        self.runner.close_warm()


class DockerRunner:
    def __init__(self, settings: Settings, farm_id: str, bundle: Path, on_exit: ExitListener):
        import docker

        self.settings = settings
        self.farm_id = farm_id
        self.bundle = bundle
        self.on_exit = on_exit
        try:
            self.client = docker.from_env(max_pool_size=64, timeout=120)
            self.client.ping()
        except Exception as e:
            raise LaunchError(f"no Docker engine answers ({e}); start dockerd, or run with --isolation process") from None
        self.engine = EngineWatch(self.client.ping)
        self.engine.on_back.append(self._rebuild_warm_pool)
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self._warm: dict[str, list] = {}  # image -> idle warm containers
        self._warming: dict[str, int] = {}  # image -> warm containers being started

    def check_image(self, image: str) -> str | None:
        import docker

        try:
            self.client.images.get(image)
            return None
        except docker.errors.ImageNotFound:
            return (f"image {image!r} is not on this host; build it (`make images` builds buildfarm/builder) "
                    f"or load it with `docker load`")
        except docker.errors.APIError as e:
            return f"image {image!r} cannot be used: {e.explanation or e}"
        except Exception as e:
            if engine_unreachable(e):
                return "the Docker engine on the farm's host does not answer (restarting?); submit again once it is back"
            raise

    def _create(self, image: str, name: str, labels: dict, command: list[str], env: dict, r=None, volumes=None):
        """A build container: unprivileged, limited, with the agent bundle and the mirror cache."""
        s = self.settings
        s.cache_dir.mkdir(parents=True, exist_ok=True)
        (s.cache_dir / MIRRORS).mkdir(parents=True, exist_ok=True)
        # The mirrors only, read-only: the farm keeps them (buildfarm/mirrors.py).
        mounts = {str(self.bundle): {"bind": AGENT_MOUNT, "mode": "ro"},
                  str(s.cache_dir / MIRRORS): {"bind": CACHE_MOUNT + "/git", "mode": "ro"}}
        mounts.update(volumes or {})
        limits = {}
        if r is not None:
            limits = {"nano_cpus": int(r.cpus * 1e9), "mem_limit": f"{r.mem}m", "memswap_limit": f"{r.mem}m"}
        env = {contract.ENV_CACHE: CACHE_MOUNT, contract.ENV_CACHE_READONLY: "1", contract.ENV_WORKSPACE: contract.WORKSPACE,
               "PYTHONPATH": AGENT_MOUNT, "PYTHONDONTWRITEBYTECODE": "1", **env}
        # The agent runs as root and keeps the build's token; the build's commands run as the
        # image's own USER, or uid 1000 when the image runs as root (executors/buildfarm_agent.py).
        build_user = self._image_user(image)
        if build_user:
            env[contract.ENV_BUILD_USER] = build_user
        return self.client.containers.create(
            image, command=command, name=name, labels={LABEL_FARM: self.farm_id, **labels}, environment=env, user="0:0",
            pids_limit=4096, network_mode=s.network, volumes=mounts, security_opt=["no-new-privileges"],
            cap_drop=["NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP", "SYS_CHROOT"], privileged=False, init=True,
            working_dir="/", entrypoint=[], **limits)

    def _image_user(self, image: str) -> str | None:
        """The image's USER (name or uid, without a group) when it is not root."""
        try:
            user = (self.client.images.get(image).attrs.get("Config") or {}).get("User") or ""
        except Exception:  # the create that follows says what is wrong with the image
            return None
        user = user.split(":")[0]
        return user if user not in ("", "0", "root") else None

    def start(self, build_id: str, attempt: int, spec: BuildSpec, token: str) -> None:
        import docker

        if self._start_warm(build_id, attempt, spec, token):
            return
        env = contract.agent_env(self.settings.api_url, build_id, token)
        try:
            container = self._create(spec.image, f"buildfarm-{build_id}-{attempt}",
                                     contract.build_labels(build_id, attempt),
                                     ["python3", f"{AGENT_MOUNT}/{contract.AGENT_SCRIPT}"], env, spec.resources)
        except docker.errors.ImageNotFound:
            raise LaunchError(f"image {spec.image!r} is not on this host; build it or `docker load` it") from None
        except docker.errors.APIError as e:
            if e.status_code == 409:  # this attempt's container exists: a restart got here first
                self.watch(build_id)
                return
            raise LaunchError(f"docker could not create the build container: {e.explanation or e}") from None
        try:
            container.start()
        except docker.errors.APIError as e:
            container.remove(force=True)
            raise LaunchError(f"docker could not start the build container: {e.explanation or e}") from None
        self.watch(build_id)
        self._replenish(spec.image)

    # -- warm containers: started before their build, so a build skips Docker's start --------------
    def _warm_dir(self, name: str) -> Path:
        return Path(self.settings.data_dir) / "warm" / name

    def _replenish(self, image: str) -> None:
        """Keep `settings.warm` idle agent containers of each image that was used."""
        if self.settings.warm <= 0:
            return
        with self._lock:
            idle = self._warm.setdefault(image, [])
            missing = self.settings.warm - len(idle) - self._warming.get(image, 0)
            if missing <= 0:
                return
            self._warming[image] = self._warming.get(image, 0) + missing
        for _ in range(missing):
            threading.Thread(target=self._start_one_warm, args=(image,), daemon=True).start()

    def _start_one_warm(self, image: str) -> None:
        import secrets

        name = f"buildfarm-warm-{self.farm_id}-{secrets.token_hex(4)}"
        d = self._warm_dir(name)
        try:
            d.mkdir(parents=True)
            os.chmod(d, 0o700)
            c = self._create(image, name, {LABEL_WARM: "1"},
                             ["python3", f"{AGENT_MOUNT}/{contract.AGENT_SCRIPT}", contract.WARM_FLAG, ASSIGN_MOUNT], {},
                             volumes={str(d): {"bind": ASSIGN_MOUNT, "mode": "rw"}})  # the agent deletes it
            c.start()
            with self._lock:
                self._warm.setdefault(image, []).append(c)
        except Exception as e:  # no warm container: builds start cold, as before
            log.info("warm container for %s not started: %s", image, e)
            shutil.rmtree(d, ignore_errors=True)
        finally:
            with self._lock:
                self._warming[image] = max(0, self._warming.get(image, 1) - 1)

    def _start_warm(self, build_id: str, attempt: int, spec: BuildSpec, token: str) -> bool:
        """Hand the build to an idle warm container of its image: rename it, apply the build's
        limits with `docker update`, then write its assignment. False when none is idle."""
        with self._lock:
            idle = self._warm.get(spec.image) or []
            c = idle.pop(0) if idle else None
        if c is None:
            return False
        r = spec.resources
        warm_name = c.name
        try:
            c.reload()
            if c.status != "running":
                raise RuntimeError(f"warm container {warm_name} is {c.status}")
            c.update(cpu_period=100000, cpu_quota=int(r.cpus * 100000), mem_limit=f"{r.mem}m",
                     memswap_limit=f"{r.mem}m")
            c.rename(f"buildfarm-{build_id}-{attempt}")
        except Exception as e:
            log.info("warm container unusable (%s); starting cold", e)
            try:
                c.remove(force=True)
            except Exception:
                pass
            shutil.rmtree(self._warm_dir(warm_name), ignore_errors=True)
            return False
        d = self._warm_dir(warm_name)
        tmp = d / f".{contract.ASSIGNMENT_FILE}"
        tmp.write_text(json.dumps(contract.assignment(self.settings.api_url, build_id, token)))
        os.chmod(tmp, 0o600)
        tmp.rename(d / contract.ASSIGNMENT_FILE)
        self.watch(build_id)
        self._replenish(spec.image)
        return True

    def _rebuild_warm_pool(self) -> None:
        """After the engine came back: drop the idle warm containers that died with it (all of them
        without live-restore) and start new ones."""
        with self._lock:
            pools = {image: list(cs) for image, cs in self._warm.items()}
        for image, idle in pools.items():
            for c in idle:
                try:
                    c.reload()
                    if c.status == "running":
                        continue
                except Exception:
                    pass
                with self._lock:
                    if c in self._warm.get(image, []):
                        self._warm[image].remove(c)
                try:
                    c.remove(force=True)
                except Exception as e:
                    _log_unless_gone(f"remove warm container {c.name}", e)
                shutil.rmtree(self._warm_dir(c.name), ignore_errors=True)
            self._replenish(image)

    def close_warm(self) -> None:
        with self._lock:
            idle = [c for cs in self._warm.values() for c in cs]
            self._warm.clear()
        for c in idle:
            try:
                c.remove(force=True)
            except Exception:
                pass
            shutil.rmtree(self._warm_dir(c.name), ignore_errors=True)

    def _containers(self, build_id: str | None = None, all: bool = True):
        """This farm's build containers (of one build, if given); idle warm ones are not builds."""
        found = self.client.containers.list(all=all, ignore_removed=True,
                                            filters={"label": [f"{LABEL_FARM}={self.farm_id}"]})
        out = []
        for c in found:
            ident = identity(c)
            if ident and (build_id is None or ident[0] == build_id):
                out.append(c)
        return out

    def watch(self, build_id: str) -> None:
        with self._lock:
            if build_id in self._watched:
                return
            self._watched.add(build_id)
        threading.Thread(target=self._wait, args=(build_id,), daemon=True, name=f"wait-{build_id}").start()

    def _wait(self, build_id: str) -> None:
        try:
            while True:
                try:
                    containers = self._containers(build_id)
                    break
                except Exception as e:
                    if not engine_unreachable(e):
                        raise
                    self.engine.lost(e)
            for c in containers:
                attempt = identity(c)[1]
                code, interrupted = self._wait_one(c)
                if interrupted and code != 0:
                    # Its container died with the engine (no live-restore): infrastructure, retried
                    # per the build's retries; one that kept running was simply waited for again.
                    detail = f"the Docker engine restarted during the build and its container ended (status {code})"
                    self.on_exit(Exit(build_id, attempt, code, detail, LOST))
                else:
                    self.on_exit(Exit(build_id, attempt, code, self._detail(c)))
        except Exception as e:  # never leave a build unwatched without saying so
            log.warning("watching build %s failed: %s", build_id, e)
        finally:
            with self._lock:
                self._watched.discard(build_id)

    def _wait_one(self, c) -> tuple[int, bool]:
        """(exit status, whether the engine went away meanwhile) of one container."""
        import docker

        interrupted = False
        while True:
            try:
                status = _wait_or_look(c)
            except docker.errors.NotFound:
                return -1, interrupted
            except Exception as e:
                if not engine_unreachable(e):
                    raise
                interrupted = True
                self.engine.lost(e)
                continue
            if status is not None:
                return status, interrupted

    def _detail(self, c) -> str:
        try:
            c.reload()
            state = c.attrs["State"]
            if state.get("OOMKilled"):
                mem = c.attrs["HostConfig"].get("Memory", 0) // 2**20
                return f"killed: out of memory (limit {mem} MB)"
            tail = c.logs(stdout=True, stderr=True, tail=5).decode("utf-8", "replace").strip()
            return tail[-600:]
        except Exception:
            return ""

    def kill(self, build_id: str) -> None:
        for c in self._containers(build_id, all=False):
            try:
                c.kill()
            except Exception as e:
                _log_unless_gone(f"kill {build_id}", e)

    def remove(self, build_id: str) -> None:
        for c in self._containers(build_id):
            try:
                c.remove(force=True)
            except Exception as e:
                _log_unless_gone(f"remove {build_id}", e)

    def recover(self) -> dict[str, Found]:
        # Idle warm containers of an earlier run are not builds: start the pool afresh.
        warm = {"label": [f"{LABEL_FARM}={self.farm_id}", f"{LABEL_WARM}=1"]}
        for c in self.client.containers.list(all=True, ignore_removed=True, filters=warm):
            if identity(c) is None:
                c.remove(force=True)
                shutil.rmtree(self._warm_dir(c.name), ignore_errors=True)
        found = {}
        for c in self._containers():
            bid, attempt = identity(c)
            running = c.status in ("running", "created", "restarting")
            code = None if running else int(c.attrs["State"].get("ExitCode", -1))
            prev = found.get(bid)
            if prev is None or attempt >= prev.attempt:
                found[bid] = Found(bid, attempt, running, code)
        return found


def _wait_or_look(c) -> int | None:
    """The container's exit status; None when a long wait timed out and it still runs."""
    import docker

    try:
        return int(c.wait(timeout=3600).get("StatusCode", -1))
    except docker.errors.NotFound:
        raise
    except Exception as e:
        if engine_unreachable(e):
            raise
    c.reload()  # a read timeout on a long build: look, then wait again
    if c.status in ("running", "created", "restarting"):
        return None
    return int(c.attrs["State"].get("ExitCode", -1))


_NAME = re.compile(r"^/?buildfarm-([0-9a-f]{12})-(\d+)$")


def identity(c) -> tuple[str, int] | None:
    """(build id, attempt) of a build container: from its labels, or from its name for a warm
    container that was handed a build (labels cannot change after creation)."""
    if c.labels.get(LABEL_BUILD):
        return c.labels[LABEL_BUILD], int(c.labels.get(LABEL_ATTEMPT, "0"))
    m = _NAME.match(c.name or "")
    return (m.group(1), int(m.group(2))) if m else None


class ProcessRunner:
    """Builds as local processes: for machines without a Docker engine. The image is ignored,
    and cpu/memory limits are not enforced (only the timeouts are); say so in the log."""

    def __init__(self, settings: Settings, farm_id: str, bundle: Path, on_exit: ExitListener):
        self.settings = settings
        self.farm_id = farm_id
        self.bundle = bundle
        self.on_exit = on_exit
        self.root = Path(settings.data_dir) / "workspaces"
        self.root.mkdir(parents=True, exist_ok=True)
        self._procs: dict[str, subprocess.Popen] = {}
        self.engine: EngineWatch | None = None  # no engine to watch: processes run on the host

    def check_image(self, image: str) -> str | None:
        return None

    def _build_dir(self, build_id: str) -> Path:
        """Where a build's workspace and HOME go. A farm running as root runs the build's commands
        as `nobody`, who must reach them: not under the data directory (often in /root, mode 0700)
        but in a directory of this farm's under the system's temporary directory."""
        if os.geteuid() != 0:
            return self.root / build_id
        return Path(tempfile.gettempdir()) / f"buildfarm-{self.farm_id}" / build_id

    def close_warm(self) -> None:
        """No warm pool: a process starts in milliseconds."""

    def start(self, build_id: str, attempt: int, spec: BuildSpec, token: str) -> None:
        d = self.root / build_id
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        work = self._build_dir(build_id)
        if work != d:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            os.chmod(work.parent, 0o711)
            os.chmod(work, 0o711)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "LANG": "C.UTF-8",
            **contract.agent_env(self.settings.api_url, build_id, token, str(self.settings.cache_dir),
                                 str(work / "workspace")),
            contract.ENV_ON_HOST: "1",
            "PYTHONPATH": str(self.bundle),
        }
        if work != d:  # root: the build's commands run as nobody (executors/buildfarm_agent.py)
            env.update({contract.ENV_BUILD_USER: "nobody", contract.ENV_HOME: str(work / "home")})
        proc = subprocess.Popen([sys.executable, str(self.bundle / contract.AGENT_SCRIPT)], env=env, cwd=d,
                                stdin=subprocess.DEVNULL, stdout=open(d / "agent.out", "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        (d / "pid").write_text(f"{proc.pid} {attempt}")
        self._procs[build_id] = proc
        threading.Thread(target=self._wait, args=(build_id, attempt, proc), daemon=True).start()

    def _wait(self, build_id: str, attempt: int, proc: subprocess.Popen) -> None:
        code = proc.wait()
        self.on_exit(Exit(build_id, attempt, code if code >= 0 else 128 - code, ""))

    def watch(self, build_id: str) -> None:
        pid, attempt = self._pid(build_id)
        if pid is None:
            return

        def poll():
            while _alive(pid):
                time.sleep(0.5)
            self.on_exit(Exit(build_id, attempt, -1, "adopted process ended"))

        threading.Thread(target=poll, daemon=True).start()

    def _pid(self, build_id: str) -> tuple[int | None, int]:
        try:
            pid, attempt = (self.root / build_id / "pid").read_text().split()
            return int(pid), int(attempt)
        except (FileNotFoundError, ValueError):
            return None, 0

    def kill(self, build_id: str) -> None:
        pid, _ = self._pid(build_id)
        if pid and _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self, build_id: str) -> None:
        self._procs.pop(build_id, None)
        shutil.rmtree(self.root / build_id, ignore_errors=True)
        shutil.rmtree(self._build_dir(build_id), ignore_errors=True)

    def recover(self) -> dict[str, Found]:
        found = {}
        for d in self.root.iterdir() if self.root.exists() else []:
            pid, attempt = self._pid(d.name)
            if pid is not None:
                running = _alive(pid)
                found[d.name] = Found(d.name, attempt, running, None if running else -1)
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as ended
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
