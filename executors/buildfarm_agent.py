#!/usr/bin/env python3
"""The buildfarm build agent.

It runs inside the ephemeral build container, from any image that has `git` and `python3`:
the farm injects this file and GitPython (a bind mount locally, a fetched bundle on Mesos), so
images stay the users' own. It

1. tells the API it started and receives the build's spec,
2. checks the repository out at the ref or commit with GitPython, through a per-host mirror
   cache so a second build of the same repository fetches only what is new,
3. runs the steps, streaming stdout and stderr (merged, in order) to the API as it comes,
4. uploads the artifacts that match the globs, with their sha256 and size,
5. reports the outcome and the exit status.

It talks to nothing but the API, with a token scoped to its own build. The agent runs as root and
keeps the token in its memory; the build's commands run as an unprivileged user (the image's USER,
else uid 1000), who cannot read it (another uid's /proc/PID/environ is closed to them). Every report
is retried until the API answers, so a farm that restarts in the middle of a build loses neither
output nor result; an answer that the build has ended (409) is final: the agent stops.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

# The contract with the farm: buildfarm/agent_contract.py says the same (this file cannot import
# the farm); tests/test_agent_contract.py keeps the two in step.
ENV_API = "BUILDFARM_API"
ENV_BUILD_ID = "BUILDFARM_BUILD_ID"
ENV_TOKEN = "BUILDFARM_TOKEN"
ENV_CACHE = "BUILDFARM_CACHE"
ENV_CACHE_READONLY = "BUILDFARM_CACHE_READONLY"
ENV_WORKSPACE = "BUILDFARM_WORKSPACE"
ENV_BUILD_USER = "BUILDFARM_BUILD_USER"
ENV_HOME = "BUILDFARM_HOME"
ENV_ON_HOST = "BUILDFARM_ON_HOST"
CACHE_MOUNT = "/buildfarm-cache"
WORKSPACE_DEFAULT = "/workspace"
WARM_FLAG = "--warm"
ASSIGNMENT_FILE = "assignment.json"
ASSIGNMENT_KEYS = ("api", "build_id", "token")

API = os.environ.get(ENV_API, "").rstrip("/")
BUILD_ID = os.environ.get(ENV_BUILD_ID, "")
TOKEN = os.environ.get(ENV_TOKEN, "")
CACHE = os.environ.get(ENV_CACHE, CACHE_MOUNT)
CACHE_READONLY = os.environ.get(ENV_CACHE_READONLY) == "1"  # the farm keeps the mirrors
WORKSPACE = os.environ.get(ENV_WORKSPACE, WORKSPACE_DEFAULT)
REPORT_DEADLINE = float(os.environ.get("BUILDFARM_REPORT_DEADLINE", "900"))
HEARTBEAT_SECONDS = float(os.environ.get("BUILDFARM_HEARTBEAT", "10"))
# Who runs the build's commands when the agent is root: a user name or uid ("1000" by default).
BUILD_USER = os.environ.get(ENV_BUILD_USER, "")
BUILD_HOME = os.environ.get(ENV_HOME, "")  # their HOME, when not their passwd entry's
# Set by `--isolation process`: the agent shares the host, so it edits no /etc/passwd and signals
# only the processes it started.
ON_HOST = os.environ.get(ENV_ON_HOST) == "1"
MAX_WALK = 100_000  # entries of the workspace the artifact globs may visit, all together
MAX_ARTIFACTS = 10_000  # files they may match
CHUNK = 1024 * 1024  # per POST: fewer requests for a chatty build; small output still goes at once


def diag(msg: str) -> None:
    """Diagnostics for `docker logs` of the container, not for the build log."""
    print(f"buildfarm-agent: {msg}", file=sys.stderr, flush=True)


class Rejected(Exception):
    """The API answered with a 4xx: retrying would not help."""

    def __init__(self, status: int, body: bytes):
        super().__init__(f"HTTP {status}: {body[:300].decode('utf-8', 'replace')}")
        self.status = status
        self.body = body


class Ended(Rejected):
    """The farm answered that the build has ended (its token is revoked): nothing more to report."""


def _rejected(status: int, body: bytes) -> Rejected:
    return (Ended if status == 409 and b"has ended" in body else Rejected)(status, body)


class Api:
    def __init__(self, base: str, build_id: str, token: str):
        self.base = f"{base}/api/v1/agent/builds/{build_id}"
        self.token = token

    def call(self, method: str, path: str, data=None, headers=None, length=None, deadline=REPORT_DEADLINE,
             reopen=None) -> bytes:
        """One request, retried with backoff on connection errors and 5xx until `deadline` seconds."""
        end = time.monotonic() + deadline
        delay = 0.2
        while True:
            body = reopen() if reopen else data
            req = urllib.request.Request(self.base + path, data=body, method=method)
            req.add_header("Authorization", f"Bearer {self.token}")
            for k, v in (headers or {}).items():
                req.add_header(k, v)
            if length is not None:
                req.add_header("Content-Length", str(length))
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.read()
            except urllib.error.HTTPError as e:
                payload = e.read()
                if 400 <= e.code < 500:
                    raise _rejected(e.code, payload) from None
                err = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                err = str(e)
            finally:
                if reopen and body is not None and hasattr(body, "close"):
                    body.close()
            if time.monotonic() > end:
                raise TimeoutError(f"{method} {path}: the API did not answer for {deadline:.0f} s ({err})")
            diag(f"{method} {path} failed ({err}); retrying in {delay:.1f} s")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def download(self, path: str, dest: str, deadline=REPORT_DEADLINE) -> str:
        """GET `path` streamed into the file `dest`; returns its sha256. Retried like call()."""
        end = time.monotonic() + deadline
        delay = 0.2
        while True:
            req = urllib.request.Request(self.base + path)
            req.add_header("Authorization", f"Bearer {self.token}")
            try:
                h = hashlib.sha256()
                with urllib.request.urlopen(req, timeout=60) as resp, open(dest + ".part", "wb") as f:
                    while True:
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        h.update(chunk)
                        f.write(chunk)
                os.replace(dest + ".part", dest)
                return h.hexdigest()
            except urllib.error.HTTPError as e:
                if 400 <= e.code < 500:
                    raise _rejected(e.code, e.read()) from None
                err = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                err = str(e)
            if time.monotonic() > end:
                raise TimeoutError(f"GET {path}: the API did not answer for {deadline:.0f} s ({err})")
            diag(f"GET {path} failed ({err}); retrying in {delay:.1f} s")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def json(self, method: str, path: str, obj=None) -> dict:
        data = json.dumps(obj or {}).encode()
        out = self.call(method, path, data=data, headers={"Content-Type": "application/json"})
        return json.loads(out or b"{}")


class Masker:
    """Replaces each secret's value with *** in the output stream, also when a value arrives split
    across reads: a tail that could begin a secret waits for the next read (or the end)."""

    def __init__(self, values):
        self.values = sorted({v.encode() for v in values if v}, key=len, reverse=True)
        self.tail = b""

    def feed(self, data: bytes) -> bytes:
        if not self.values:
            return data
        buf = self.tail + data
        for v in self.values:
            buf = buf.replace(v, b"***")
        hold = 0
        for v in self.values:
            for k in range(min(len(v) - 1, len(buf)), hold, -1):
                if buf.endswith(v[:k]):
                    hold = k
                    break
        self.tail = buf[len(buf) - hold:] if hold else b""
        return buf[:len(buf) - hold] if hold else buf

    def flush(self) -> bytes:
        out, self.tail = self.tail, b""
        return out


class LogSender(threading.Thread):
    """Sends output to the API in numbered chunks, in order, as soon as it arrives.

    Memory is bounded: the queue holds at most 64 chunks; a writer blocks (and so does the
    build's pipe) while the API is slow, rather than the agent growing without limit."""

    def __init__(self, api: Api):
        super().__init__(daemon=True, name="log-sender")
        self.api = api
        self.q: queue.Queue = queue.Queue(maxsize=64)
        self.seq = 0
        self.error: Exception | None = None
        self.last_sent = time.monotonic()
        self.masker = Masker(())

    def mask(self, secrets) -> None:
        """From now on, replace these values with *** in everything sent."""
        self.masker = Masker(secrets)

    def write(self, data: bytes) -> None:
        data = self.masker.feed(data)
        if data:
            self.q.put(data)

    def flush_masked(self) -> None:
        """Send what the masker held back (the end of a step's output)."""
        data = self.masker.flush()
        if data:
            self.q.put(data)

    def line(self, text: str) -> None:
        self.write(f"[buildfarm] {text}\n".encode())

    def close(self) -> None:
        self.flush_masked()
        self.q.put(None)
        self.join()
        if self.error:
            raise self.error

    def run(self) -> None:
        done = False
        while not done:
            try:
                first = self.q.get(timeout=HEARTBEAT_SECONDS)
            except queue.Empty:
                self._heartbeat()
                continue
            parts, size = [], 0
            item = first
            while True:
                if item is None:
                    done = True
                    break
                parts.append(item)
                size += len(item)
                if size >= CHUNK:
                    break
                try:
                    item = self.q.get_nowait()
                except queue.Empty:
                    break
            if parts:
                self._send(b"".join(parts))

    def _send(self, data: bytes) -> None:
        if self.error:
            return
        self.seq += 1
        try:
            self.api.call("POST", f"/log?seq={self.seq}", data=data,
                          headers={"Content-Type": "application/octet-stream"})
            self.last_sent = time.monotonic()
        except Ended as e:
            self._ended(e)
        except Exception as e:  # the build goes on; the outcome report says what happened
            self.error = e
            diag(f"log chunk {self.seq} could not be sent: {e}")

    def _heartbeat(self) -> None:
        if self.error:
            return
        try:
            self.api.call("POST", "/heartbeat", data=b"", deadline=30)
        except Ended as e:
            self._ended(e)
        except Exception as e:
            diag(f"heartbeat failed: {e}")

    def _ended(self, e: Ended) -> None:
        """The farm ended the build (cancelled, timed out): stop its commands, send nothing more."""
        self.error = e
        diag("the farm says the build has ended; stopping it")
        stop_steps()


class BuildError(Exception):
    """An infrastructure or input problem (not the build's own failure): the build ends `error`."""


# -- checkout ---------------------------------------------------------------------------------

def _git_error(e) -> str:
    text = (getattr(e, "stderr", "") or str(e)).strip()
    text = text.replace("stderr:", "").strip().strip("'").strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[-3:]) if lines else str(e)


def checkout(spec: dict, log: LogSender, pinned: str | None = None) -> str:
    """Check `spec['repo']` out into WORKSPACE at its ref or commit (or at `pinned`, the commit
    the ref pointed at when the build was submitted). Returns the commit SHA."""
    import git  # GitPython, injected next to this file

    url = spec["repo"]
    mirror = os.path.join(CACHE, "git", hashlib.sha256(url.encode()).hexdigest()[:32] + ".git")
    if os.path.exists(WORKSPACE) and os.listdir(WORKSPACE):
        shutil.rmtree(WORKSPACE)
    if CACHE_READONLY:
        ws = _clone_readonly_cache(git, url, mirror, pinned or spec.get("commit"), log)
    else:
        _update_mirror(git, url, mirror, pinned, log)
        # On the host as root the build user may not reach the mirror: copy what the clone borrows.
        copy = ["--dissociate"] if ON_HOST and os.geteuid() == 0 else []
        ws = git.Repo.clone_from(mirror, WORKSPACE, multi_options=["--shared", "--no-checkout", *copy])
        ws.git.remote("set-url", "origin", url)
    want = spec.get("commit") or spec.get("ref")
    sha = _resolve(ws, spec.get("ref"), spec.get("commit"), url, pinned)
    ws.git.checkout("--detach", "--quiet", sha)
    subject = ws.git.log("-1", "--format=%s", sha)
    log.line(f"checked out {want or 'default branch'} at {sha[:12]}: {subject}")
    return sha


def _clone_readonly_cache(git, url: str, mirror: str, want: str | None, log: LogSender):
    """The farm keeps the mirror (read-only here): use it when it has the commit, else clone from
    the repository, borrowing what objects the mirror has."""
    have_mirror = os.path.isdir(mirror)
    try:
        if have_mirror and want and _has_commit(mirror, want):
            log.line(f"mirror cache hit for {url}: {want[:12]} already there, no fetch")
            ws = git.Repo.clone_from(mirror, WORKSPACE, multi_options=["--shared", "--no-checkout"])
            ws.git.remote("set-url", "origin", url)
            return ws
        log.line(f"mirror cache {'is behind' if have_mirror else 'miss'} for {url}: cloning from the repository")
        t = time.monotonic()
        ws = git.Repo.clone_from(url, WORKSPACE, multi_options=["--no-checkout"]
                                 + (["--reference", mirror] if have_mirror else []))
        if want and not _has_commit(WORKSPACE, want):
            # Not on a branch or tag: a pull request's head (refs/pull/N/head) or another ref.
            ws.git.fetch("origin", "+refs/*:refs/buildfarm/remote/*")
        log.line(f"cloned in {time.monotonic() - t:.2f} s")
        return ws
    except git.GitCommandError as e:
        raise BuildError(f"cannot fetch {url}: {_git_error(e)}") from None


def _update_mirror(git, url: str, mirror: str, pinned: str | None, log: LogSender) -> None:
    """Without a farm-kept cache (process isolation, Mesos agents) the agent keeps the mirror."""
    os.makedirs(os.path.dirname(mirror), exist_ok=True)
    with open(mirror + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.path.isdir(mirror) and pinned and _has_commit(mirror, pinned):
                log.line(f"mirror cache hit for {url}: {pinned[:12]} already there, no fetch")
            elif os.path.isdir(mirror):
                log.line(f"mirror cache hit for {url}: fetching new commits")
                t = time.monotonic()
                git.Repo(mirror).git.fetch("--prune", "--tags", "origin")
                log.line(f"mirror cache updated in {time.monotonic() - t:.2f} s")
            else:
                log.line(f"mirror cache miss for {url}: cloning")
                t = time.monotonic()
                tmp = mirror + ".tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                repo = git.Repo.clone_from(url, tmp, mirror=True)
                repo.git.config("gc.auto", "0")  # workspaces borrow its objects
                os.rename(tmp, mirror)
                log.line(f"mirror cache filled in {time.monotonic() - t:.2f} s")
        except git.GitCommandError as e:
            raise BuildError(f"cannot fetch {url}: {_git_error(e)}") from None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _has_commit(mirror: str, sha: str) -> bool:
    return subprocess.run(["git", "-C", mirror, "cat-file", "-e", f"{sha}^{{commit}}"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False).returncode == 0


def _resolve(ws, ref: str | None, commit: str | None, url: str, pinned: str | None = None) -> str:
    import git

    def rev(name: str) -> str | None:
        try:
            return ws.git.rev_parse("--verify", "--quiet", name + "^{commit}")
        except git.GitCommandError:
            return None

    if commit:
        sha = rev(commit)
        if not sha:
            raise BuildError(f"commit {commit} not found in {url}")
        if ref and not _contains(ws, ref, sha):
            raise BuildError(f"commit {commit} is not on {ref} in {url}")
        return sha
    if pinned and rev(pinned):
        return rev(pinned)
    if ref is None:
        sha = rev("refs/remotes/origin/HEAD") or rev("HEAD")
        if not sha:
            raise BuildError(f"{url} has no default branch; pass --ref")
        return sha
    for name in (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref):
        sha = rev(name)
        if sha:
            return sha
    branches = sorted(r.name.removeprefix("origin/") for r in ws.remotes.origin.refs if not r.name.endswith("/HEAD"))
    tags = sorted(t.name for t in ws.tags)
    known = ", ".join(branches[:10]) or "none"
    known_tags = (", tags: " + ", ".join(tags[:10])) if tags else ""
    raise BuildError(f"ref {ref!r} not found in {url} (branches: {known}{known_tags})")


def _contains(ws, ref: str, sha: str) -> bool:
    import git

    for name in (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}"):
        try:
            ws.git.merge_base("--is-ancestor", sha, name)
            return True
        except git.GitCommandError:
            continue
    return False


# -- inputs: artifacts of upstream builds (pipelines) ----------------------------------------------

def fetch_inputs(api: Api, spec: dict, log: LogSender) -> None:
    """Download the artifacts of the builds this one needs into the workspace, at the paths they
    had in their own workspace (sha256 checked). Two inputs with the same path are an error."""
    names = {i["build"]: i.get("name") or i["build"] for i in spec.get("inputs") or []}
    try:
        listing = json.loads(api.call("GET", "/inputs"))["inputs"]
    except Ended:
        raise
    except Rejected as e:
        raise BuildError(f"the farm refused the inputs' list: {e}") from None
    root = os.path.realpath(WORKSPACE)
    came_from: dict[str, str] = {}
    for inp in listing:
        up = inp["build"]
        if not inp["artifacts"]:
            log.line(f"input {names.get(up, up)} (build {up}) has no artifacts")
        for a in inp["artifacts"]:
            rel = a["path"]
            dest = os.path.realpath(os.path.join(WORKSPACE, rel))
            if not dest.startswith(root + os.sep):
                raise BuildError(f"input artifact {rel!r} of build {up} would land outside the workspace")
            if rel in came_from:
                raise BuildError(f"inputs {came_from[rel]} and {names.get(up, up)} both have {rel!r}; "
                                 f"give the artifacts distinct paths (e.g. with ${{{{ matrix.AXIS }}}} in them)")
            came_from[rel] = names.get(up, up)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            try:
                sha = api.download(f"/inputs/{up}/{urllib.parse.quote(rel)}", dest)
            except Ended:
                raise
            except Rejected as e:
                raise BuildError(f"input artifact {rel!r} of build {up}: {e}") from None
            if sha != a["sha256"]:
                raise BuildError(f"input artifact {rel!r} of build {up}: sha256 {sha} is not {a['sha256']}")
        if inp["artifacts"]:
            log.line(f"input {names.get(up, up)} (build {up}): {len(inp['artifacts'])} artifact(s) downloaded")


# -- the build user ---------------------------------------------------------------------------

class BuildUser:
    """The unprivileged user the build's commands run as, so they cannot read the agent's token."""

    def __init__(self, uid: int, gid: int, name: str, home: str):
        self.uid, self.gid, self.name, self.home = uid, gid, name, home

    def popen_args(self) -> dict:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def env(self) -> dict:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}

    def own(self, path: str) -> None:
        """Give `path` and everything under it to the build user (symlinks themselves, not their targets)."""
        os.lchown(path, self.uid, self.gid)
        for d, dirs, files in os.walk(path):
            for name in dirs + files:
                os.lchown(os.path.join(d, name), self.uid, self.gid)


def build_user() -> BuildUser | None:
    """The user for the build's commands (BUILDFARM_BUILD_USER, else uid 1000), with a HOME of
    their own. None when the agent is not root: it cannot change user, so the commands run as it."""
    import pwd

    if os.geteuid() != 0:
        return None
    want = BUILD_USER or "1000"
    try:
        e = pwd.getpwuid(int(want)) if want.isdigit() else pwd.getpwnam(want)
        user = BuildUser(e.pw_uid, e.pw_gid, e.pw_name, e.pw_dir)
    except KeyError:
        if not want.isdigit():
            raise BuildError(f"the build user {want!r} does not exist in the image") from None
        user = BuildUser(int(want), int(want), "buildfarm", "/home/buildfarm")
        if not ON_HOST:  # a name for the uid, so whoami, ssh and getpass work
            _add_account(user)
    if user.uid == 0:
        return None
    user.home = BUILD_HOME or user.home
    if not os.path.isdir(user.home):
        os.makedirs(user.home, mode=0o700)
        os.chown(user.home, user.uid, user.gid)
    return user


def _add_account(user: BuildUser) -> None:
    try:
        with open("/etc/passwd", "a") as f:
            f.write(f"{user.name}:x:{user.uid}:{user.gid}:buildfarm build:{user.home}:/bin/sh\n")
        with open("/etc/group") as f:
            known = any(ln.split(":")[2:3] == [str(user.gid)] for ln in f)
        if not known:
            with open("/etc/group", "a") as f:
                f.write(f"{user.name}:x:{user.gid}:\n")
    except OSError as e:  # a read-only /etc: the uid works without a name
        diag(f"could not name uid {user.uid} in /etc/passwd: {e}")


# -- steps ------------------------------------------------------------------------------------

_current: subprocess.Popen | None = None


def run_steps(spec: dict, log: LogSender, secrets: dict | None = None, user: BuildUser | None = None) -> int:
    """Run the steps in order (as `user` when given), stopping at the first that fails."""
    global _current
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILDFARM_") and k != "PYTHONPATH"}
    env.update(user.env() if user else {})
    env.update(spec.get("env") or {})
    env.update(secrets or {})
    env.update({"CI": "true", "BUILDFARM": "true", ENV_BUILD_ID: BUILD_ID, ENV_WORKSPACE: WORKSPACE})
    groups = []
    try:
        for step in spec["steps"]:
            log.line(f"$ {step}")
            proc = subprocess.Popen(["/bin/sh", "-ec", step], cwd=WORKSPACE, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                    **(user.popen_args() if user else {}))
            _current = proc
            groups.append(proc.pid)
            fd = proc.stdout.fileno()
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                log.write(data)
            log.flush_masked()
            code = proc.wait()
            _current = None
            if code < 0:
                code = 128 - code
            if code != 0:
                log.line(f"step exited with status {code}")
                return code
        return 0
    finally:
        stop_leftovers(user, groups)


def stop_steps() -> None:
    """Kill the running step and what it started (a cancel, the farm saying the build ended)."""
    if _current is not None:
        try:
            os.killpg(_current.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_leftovers(user: BuildUser | None, groups: list[int]) -> None:
    """Once the steps are done nothing of the build runs on, so nothing changes the workspace while
    the agent (root) reads its artifacts. In a container: every process of the build user; on the
    host (`--isolation process`): the steps' process groups."""
    if user and not ON_HOST:
        subprocess.run(["/bin/sh", "-c", "kill -KILL -1 2>/dev/null; true"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, **user.popen_args())
        return
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- artifacts --------------------------------------------------------------------------------

class _Walk:
    """How much of the workspace the artifact globs may visit, and whether they stopped early."""

    def __init__(self, max_entries: int, max_files: int):
        self.left, self.files_left = max_entries, max_files
        self.max_entries, self.max_files = max_entries, max_files
        self.stopped = ""

    def visit(self) -> bool:
        self.left -= 1
        if self.left < 0 and not self.stopped:
            self.stopped = f"visited {self.max_entries} entries of the workspace"
        return not self.stopped

    def scandir(self, path: str):
        try:
            with os.scandir(path) as it:
                for entry in it:
                    if not self.visit():
                        return
                    yield entry
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return


def _glob(walk: _Walk, rel: str, parts: list[str], out: list[str]) -> None:
    """Relative paths under `rel` that match the pattern's `parts` (`*` within a name, `**` any
    depth); symlinked directories are matched but never descended."""
    import fnmatch

    if not parts:
        out.append(rel)
        return
    head, rest = parts[0], parts[1:]
    base = os.path.join(WORKSPACE, rel)
    if head == "**" and not rest:  # the directory itself: collect_artifacts takes all below it
        out.append(rel)
    elif head == "**":
        _glob(walk, rel, rest, out)
        for e in walk.scandir(base):
            if e.is_dir(follow_symlinks=False) and not e.name.startswith("."):
                _glob(walk, os.path.join(rel, e.name), parts, out)
    elif not any(c in head for c in "*?["):
        path = os.path.join(rel, head)
        if rest and os.path.isdir(os.path.join(WORKSPACE, path)) and not os.path.islink(os.path.join(WORKSPACE, path)):
            _glob(walk, path, rest, out)
        elif not rest and os.path.lexists(os.path.join(WORKSPACE, path)):
            out.append(path)
    else:
        for e in walk.scandir(base):
            if fnmatch.fnmatchcase(e.name, head) and (head.startswith(".") or not e.name.startswith(".")):
                if not rest:
                    out.append(os.path.join(rel, e.name))
                elif e.is_dir(follow_symlinks=False):
                    _glob(walk, os.path.join(rel, e.name), rest, out)


def _files_under(walk: _Walk, rel: str) -> list[str]:
    """Every file below the directory `rel`, without descending symlinked directories."""
    out, todo = [], [rel]
    while todo and not walk.stopped:
        d = todo.pop()
        for e in walk.scandir(os.path.join(WORKSPACE, d)):
            path = os.path.join(d, e.name)
            (todo if e.is_dir(follow_symlinks=False) else out).append(path)
    return out


def collect_artifacts(globs: list[str], log: LogSender) -> list[tuple[str, str]]:
    """(relative path, absolute path) of each file to upload; refuses what leaves the workspace.
    The walk is bounded (entries visited, files matched) and says in the log when it stops early."""
    walk = _Walk(MAX_WALK, MAX_ARTIFACTS)
    root = os.path.realpath(WORKSPACE)
    found: dict[str, str] = {}
    for pattern in globs:
        if walk.stopped:
            log.line(f"artifact glob {pattern!r} not looked at: the walk stopped early")
            continue
        matches: list[str] = []
        _glob(walk, "", [p for p in pattern.split("/") if p not in ("", ".")], matches)
        if not matches and not walk.stopped:
            log.line(f"artifact glob {pattern!r} matched nothing")
        for m in sorted(set(matches)):
            full = os.path.join(WORKSPACE, m)
            files = _files_under(walk, m) if os.path.isdir(full) and not os.path.islink(full) else [m]
            for rel in files:
                rel = os.path.normpath(rel)
                real = os.path.realpath(os.path.join(WORKSPACE, rel))
                if not real.startswith(root + os.sep):
                    log.line(f"artifact {rel!r} refused: it resolves to {real}, outside the workspace")
                    continue
                if not os.path.isfile(real) or rel in found:
                    continue
                if len(found) >= walk.max_files:
                    walk.stopped = walk.stopped or f"matched {walk.max_files} files"
                    break
                found[rel] = real
        if walk.stopped:
            log.line(f"artifact glob {pattern!r}: stopped early, having {walk.stopped} (the limit); "
                     f"{len(found)} file(s) found so far are uploaded")
    return sorted(found.items())


def sha256_file(path: str) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            size += len(b)
            h.update(b)
    return size, h.hexdigest()


def upload_artifacts(api: Api, files: list[tuple[str, str]], log: LogSender) -> None:
    for rel, real in files:
        size, sha = sha256_file(real)
        quoted = urllib.parse.quote(rel)
        try:
            api.call("PUT", f"/artifacts/{quoted}", headers={"X-Checksum-Sha256": sha,
                                                             "Content-Type": "application/octet-stream"},
                     length=size, reopen=lambda real=real: open(real, "rb"))
            log.line(f"artifact {rel} ({size} bytes, sha256 {sha[:16]}...) uploaded")
        except Ended:
            raise
        except Rejected as e:
            log.line(f"artifact {rel} refused by the farm: {e.body.decode('utf-8', 'replace')[:300]}")


# -- main -------------------------------------------------------------------------------------

def _on_term(signum, frame):
    stop_steps()
    sys.exit(128 + signum)


def wait_for_assignment(directory: str) -> None:
    """Warm mode: the container was started before its build existed. Import what a build
    needs, then wait for the farm to write the assignment (API, build id, token), read it and
    delete it: the token then lives in this process's memory only."""
    global API, BUILD_ID, TOKEN
    import git  # noqa: F401  (the point: pay for the import before the build arrives)

    path = os.path.join(directory, ASSIGNMENT_FILE)
    while not os.path.exists(path):
        time.sleep(0.02)
    with open(path) as f:
        assignment = json.load(f)
    try:
        os.unlink(path)
    except OSError as e:  # the directory stays closed to the build user (mode 0700, the farm's)
        diag(f"could not delete the assignment: {e}")
    api, BUILD_ID, TOKEN = (assignment[k] for k in ASSIGNMENT_KEYS)
    API = api.rstrip("/")


def run_build(api: Api, start: dict, log: LogSender) -> tuple[str, int | None, str, str | None]:
    """Check out, fetch the inputs, run the steps as the build user, upload the artifacts.
    Returns (outcome, exit code, reason, commit); Ended goes through (nothing more to report)."""
    spec = start["spec"]
    code, sha = None, None
    try:
        user = build_user()
        if user is None:
            log.line(f"warning: the agent runs as uid {os.geteuid()}, not root, so the build's commands run as "
                     f"the same user and could read the build's token")
        sha = checkout(spec, log, start.get("pinned_commit"))
        api.json("POST", "/progress", {"commit": sha})
        if spec.get("inputs"):
            fetch_inputs(api, spec, log)
        if user:
            user.own(WORKSPACE)
        code = run_steps(spec, log, start.get("secrets"), user)
        if spec.get("artifacts"):
            upload_artifacts(api, collect_artifacts(spec["artifacts"], log), log)
        if code == 0:
            return "succeeded", 0, "all steps passed", sha
        return "failed", code, f"a step exited with status {code}", sha
    except Ended:
        raise
    except BuildError as e:
        reason = str(e)
    except Exception as e:  # the agent's own bug: report it rather than leave the build hanging
        reason = f"agent failure: {type(e).__name__}: {e}"
    log.line(f"error: {reason}")
    return "error", code, reason, sha


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == WARM_FLAG:
        wait_for_assignment(sys.argv[2])
    if not (API and BUILD_ID and TOKEN):
        diag("BUILDFARM_API, BUILDFARM_BUILD_ID and BUILDFARM_TOKEN must be set")
        return 2
    signal.signal(signal.SIGTERM, _on_term)
    # GitPython takes ~0.15 s to import: do it while the start report is in flight.
    threading.Thread(target=__import__, args=("git",), daemon=True).start()
    api = Api(API, BUILD_ID, TOKEN)
    try:
        start = api.json("POST", "/start", {"host": os.uname().nodename, "python": sys.version.split()[0]})
    except Ended:
        diag("the build ended before it started (cancelled?); nothing to do")
        return 0
    except Rejected as e:
        diag(f"the farm will not run this build: {e}")
        return 3
    log = LogSender(api)
    log.mask((start.get("secrets") or {}).values())
    log.start()
    if len(sys.argv) == 3 and sys.argv[1] == WARM_FLAG:
        log.line("running in a warm container (started before the build was submitted)")
    # The order matters: the last log chunks and the artifacts are delivered before /finish ends
    # the build, since the farm refuses everything of a build that has ended.
    try:
        outcome, code, reason, sha = run_build(api, start, log)
        try:
            log.close()
        except Ended:
            raise
        except Exception as e:
            outcome, reason = "error", f"log could not be delivered: {e}"
    except Ended:
        diag("the farm says the build has ended (cancelled or timed out); stopping")
        return 0
    try:
        api.json("POST", "/finish", {"outcome": outcome, "exit_code": code, "reason": reason[:8000], "commit": sha,
                                     "cpu_seconds": cpu_seconds()})
    except Ended:  # a finish retried after its reply was lost: the farm has it already
        diag("the farm had already recorded the build's end")
    return 0


def cpu_seconds() -> float:
    """The CPU time the build used, user and system: this agent's and every process of the
    checkout and the steps it waited for (the kernel's accounting, as `time` reports it)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime, 3)


if __name__ == "__main__":
    sys.exit(main())
