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

It talks to nothing but the API, with a token scoped to its own build; the token is not passed
on to the build's own commands. Every report is retried until the API answers, so a farm that
restarts in the middle of a build loses neither output nor result.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

API = os.environ.get("BUILDFARM_API", "").rstrip("/")
BUILD_ID = os.environ.get("BUILDFARM_BUILD_ID", "")
TOKEN = os.environ.get("BUILDFARM_TOKEN", "")
CACHE = os.environ.get("BUILDFARM_CACHE", "/buildfarm-cache")
CACHE_READONLY = os.environ.get("BUILDFARM_CACHE_READONLY") == "1"  # the farm keeps the mirrors
WORKSPACE = os.environ.get("BUILDFARM_WORKSPACE", "/workspace")
REPORT_DEADLINE = float(os.environ.get("BUILDFARM_REPORT_DEADLINE", "900"))
HEARTBEAT_SECONDS = float(os.environ.get("BUILDFARM_HEARTBEAT", "10"))
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
                    raise Rejected(e.code, payload) from None
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
                    raise Rejected(e.code, e.read()) from None
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
        except Exception as e:  # the build goes on; the outcome report says what happened
            self.error = e
            diag(f"log chunk {self.seq} could not be sent: {e}")

    def _heartbeat(self) -> None:
        try:
            self.api.call("POST", "/heartbeat", data=b"", deadline=30)
        except Exception as e:
            diag(f"heartbeat failed: {e}")


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
        ws = git.Repo.clone_from(mirror, WORKSPACE, multi_options=["--shared", "--no-checkout"])
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
            except Rejected as e:
                raise BuildError(f"input artifact {rel!r} of build {up}: {e}") from None
            if sha != a["sha256"]:
                raise BuildError(f"input artifact {rel!r} of build {up}: sha256 {sha} is not {a['sha256']}")
        if inp["artifacts"]:
            log.line(f"input {names.get(up, up)} (build {up}): {len(inp['artifacts'])} artifact(s) downloaded")


# -- steps ------------------------------------------------------------------------------------

_current: subprocess.Popen | None = None


def run_steps(spec: dict, log: LogSender, secrets: dict | None = None) -> int:
    global _current
    env = {k: v for k, v in os.environ.items() if k not in ("BUILDFARM_TOKEN", "BUILDFARM_API", "PYTHONPATH")}
    env.update(spec.get("env") or {})
    env.update(secrets or {})
    env.update({"CI": "true", "BUILDFARM": "true", "BUILDFARM_BUILD_ID": BUILD_ID, "BUILDFARM_WORKSPACE": WORKSPACE})
    for step in spec["steps"]:
        log.line(f"$ {step}")
        proc = subprocess.Popen(["/bin/sh", "-ec", step], cwd=WORKSPACE, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        _current = proc
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


# -- artifacts --------------------------------------------------------------------------------

def collect_artifacts(globs: list[str], log: LogSender) -> list[tuple[str, str]]:
    """(relative path, absolute path) of each file to upload; refuses what leaves the workspace."""
    root = os.path.realpath(WORKSPACE)
    found: dict[str, str] = {}
    for pattern in globs:
        matches = sorted(glob.glob(os.path.join(WORKSPACE, pattern), recursive=True))
        if not matches:
            log.line(f"artifact glob {pattern!r} matched nothing")
        for m in matches:
            files = [m]
            if os.path.isdir(m) and not os.path.islink(m):
                files = [os.path.join(d, f) for d, _, fs in os.walk(m) for f in fs]
            for f in files:
                rel = os.path.relpath(f, WORKSPACE)
                real = os.path.realpath(f)
                if not real.startswith(root + os.sep):
                    log.line(f"artifact {rel!r} refused: it resolves to {real}, outside the workspace")
                    continue
                if not os.path.isfile(real):
                    continue
                found[rel] = real
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
        except Rejected as e:
            log.line(f"artifact {rel} refused by the farm: {e.body.decode('utf-8', 'replace')[:300]}")


# -- main -------------------------------------------------------------------------------------

def _on_term(signum, frame):
    if _current is not None:
        try:
            os.killpg(_current.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sys.exit(128 + signum)


def wait_for_assignment(directory: str) -> None:
    """Warm mode: the container was started before its build existed. Import what a build
    needs, then wait for the farm to write the assignment (API, build id, token)."""
    global API, BUILD_ID, TOKEN
    import git  # noqa: F401  (the point: pay for the import before the build arrives)

    path = os.path.join(directory, "assignment.json")
    while not os.path.exists(path):
        time.sleep(0.02)
    with open(path) as f:
        assignment = json.load(f)
    API, BUILD_ID, TOKEN = assignment["api"].rstrip("/"), assignment["build_id"], assignment["token"]


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--warm":
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
    except Rejected as e:
        diag(f"the farm will not run this build: {e}")
        return 3
    spec = start["spec"]
    log = LogSender(api)
    log.mask((start.get("secrets") or {}).values())
    log.start()
    if len(sys.argv) == 3 and sys.argv[1] == "--warm":
        log.line("running in a warm container (started before the build was submitted)")
    outcome, code, reason, sha = "error", None, "", None
    try:
        sha = checkout(spec, log, start.get("pinned_commit"))
        api.json("POST", "/progress", {"commit": sha})
        if spec.get("inputs"):
            fetch_inputs(api, spec, log)
        code = run_steps(spec, log, start.get("secrets"))
        outcome = "succeeded" if code == 0 else "failed"
        reason = "all steps passed" if code == 0 else f"a step exited with status {code}"
        if spec.get("artifacts"):
            upload_artifacts(api, collect_artifacts(spec["artifacts"], log), log)
    except BuildError as e:
        reason = str(e)
        log.line(f"error: {reason}")
    except Exception as e:  # the agent's own bug: report it rather than leave the build hanging
        reason = f"agent failure: {type(e).__name__}: {e}"
        log.line(f"error: {reason}")
    try:
        log.close()
    except Exception as e:
        outcome, reason = "error", f"log could not be delivered: {e}"
    api.json("POST", "/finish", {"outcome": outcome, "exit_code": code, "reason": reason, "commit": sha})
    return 0


if __name__ == "__main__":
    sys.exit(main())
