"""The git mirror cache of the local Docker backend, kept by the farm and read-only to builds.

Build containers mount `CACHE/git` read-only: a build's own commands cannot rewrite a mirror that
later builds of other users check out from. The farm refreshes a repository's mirror in the
background whenever one of its builds launches with a commit the mirror lacks, so the next build
finds its commit there and skips the network; a build whose commit is not in the mirror yet clones
from the repository, borrowing the objects the mirror has.

Only anonymous network URLs are fetched here (git, http, https), with no credentials of the
farm's user (no ~/.ssh, ~/.netrc or git credential helpers) and no hooks: a build can only cause
the farm to mirror what anyone could read, never a host repository or a private one the farm's
own keys reach. Builds of other repositories (ssh://, local paths) clone on their own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger("buildfarm.mirrors")
ANONYMOUS_SCHEMES = ("git://", "http://", "https://")
NETWORK_SCHEMES = ANONYMOUS_SCHEMES + ("ssh://",)
_EMPTY_HOME = "/nonexistent"  # no ~/.gitconfig, ~/.netrc, ~/.ssh or credential store of the farm's user


def anonymous_git_env() -> dict[str, str]:
    """The environment of git commands the farm runs on a user's behalf."""
    return {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false",
            "HOME": _EMPTY_HOME, "XDG_CONFIG_HOME": _EMPTY_HOME, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_SSH_COMMAND": "ssh -F /dev/null -o IdentitiesOnly=yes -o IdentityFile=none -o BatchMode=yes "
                               "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/dev/null",
            "GIT_ALLOW_PROTOCOL": "git:http:https:ssh", "PATH": "/usr/bin:/bin:/usr/local/bin"}


def mirror_name(url: str) -> str:
    """The mirror's directory name; the agent (executors/buildfarm_agent.py) derives the same."""
    return hashlib.sha256(url.encode()).hexdigest()[:32] + ".git"


class MirrorCache:
    def __init__(self, root: Path, timeout: float = 600.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mirror")
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}  # url -> "running" | "again" while a refresh is under way

    def refresh_soon(self, url: str, commit: str | None = None) -> None:
        """Fetch `url` into its mirror in the background, unless the mirror already has `commit`.
        Requests that come while one runs are coalesced into a single further fetch."""
        if not url.startswith(ANONYMOUS_SCHEMES) or (commit and self.has(url, commit)):
            return
        with self._lock:
            if url in self._state:
                self._state[url] = "again"
                return
            self._state[url] = "running"
        self._pool.submit(self._run, url)

    def _run(self, url: str) -> None:
        while True:
            try:
                self.refresh(url)
            except Exception as e:  # the build clones on its own; the next launch tries again
                log.warning("mirror of %s not refreshed: %s", url, e)
            with self._lock:
                if self._state.get(url) != "again":
                    self._state.pop(url, None)
                    return
                self._state[url] = "running"

    def has(self, url: str, commit: str) -> bool:
        """Whether the mirror of `url` holds `commit` (a local lookup of a few milliseconds)."""
        mirror = self.root / mirror_name(url)
        if not mirror.is_dir():
            return False
        return subprocess.run(["git", "-C", str(mirror), "cat-file", "-e", f"{commit}^{{commit}}"],
                              capture_output=True, env=anonymous_git_env(), check=False).returncode == 0

    def refresh(self, url: str) -> None:
        mirror = self.root / mirror_name(url)
        if mirror.is_dir():
            self._git(["-C", str(mirror), "-c", "core.hooksPath=/dev/null", "fetch", "--prune", "--tags", "origin"])
            return
        tmp = mirror.with_name(mirror.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self._git(["-c", "core.hooksPath=/dev/null", "clone", "--mirror", "--quiet", "--", url, str(tmp)])
            self._git(["-C", str(tmp), "config", "gc.auto", "0"])  # workspaces borrow its objects
            tmp.rename(mirror)  # readers see a whole mirror or none
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _git(self, args: list[str]) -> None:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=self.timeout,
                             env=anonymous_git_env(), check=False)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"git {args[0]} failed")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
