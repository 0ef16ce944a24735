"""What the triggers read from git (GitPython): the build file at a commit and the paths a push
changed. The post-receive hook reads the bare repository it runs in; the webhooks keep a bare
mirror per repository under DATA_DIR/cache/hooks/ and fetch the pushed commit into it.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import git

ZERO = "0" * 40
FETCH_TIMEOUT = 120


class GitError(RuntimeError):
    """git could not do what a trigger needed; the message says what and where."""


def _git_message(e: git.GitCommandError) -> str:
    text = e.stderr if isinstance(e.stderr, str) else str(e)
    lines = [ln.strip().removeprefix("stderr: ").strip("'") for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[-2:]) or str(e)


class GitRepo:
    def __init__(self, path: str | Path):
        try:
            self.repo = git.Repo(str(path))
        except (git.NoSuchPathError, git.InvalidGitRepositoryError):
            raise GitError(f"{path} is not a git repository") from None
        self.repo.git.update_environment(GIT_TERMINAL_PROMPT="0")
        self.path = Path(path)

    def has(self, commit: str | None) -> bool:
        if not commit or commit == ZERO:
            return False
        try:
            self.repo.git.cat_file("-e", f"{commit}^{{commit}}")
            return True
        except git.GitCommandError:
            return False

    def read(self, commit: str, path: str) -> str | None:
        """The file's text at `commit`, or None when the commit has no such file."""
        try:
            return self.repo.git.show(f"{commit}:{path}", strip_newline_in_stdout=False)
        except git.GitCommandError:
            return None

    def changed_paths(self, before: str | None, after: str, since_merge_base: bool = False) -> list[str]:
        """Paths that differ between `before` and `after` (renames count as both paths). Without a
        usable `before` (a new branch): the paths `after` changed against its first parent, or all
        of its files for a root commit. `since_merge_base`: what `after` changed since it forked
        from `before` (a pull request against its target)."""
        if self.has(before):
            base = before
            if since_merge_base:
                try:
                    base = self.repo.git.merge_base(before, after)
                except git.GitCommandError:
                    pass  # unrelated histories: compare the trees
            return self._diff(base, after)
        parents = self.repo.commit(after).parents
        if parents:
            return self._diff(parents[0].hexsha, after)
        return [p for p in self.repo.git.ls_tree("-r", "--name-only", after).splitlines() if p]

    def _diff(self, a: str, b: str) -> list[str]:
        out = self.repo.git.diff("--name-only", "--no-renames", "-z", a, b)
        return [p for p in out.split("\0") if p]


class Mirror(GitRepo):
    """A bare mirror of one remote repository, for reading what a webhook announced."""

    def __init__(self, cache_dir: str | Path, url: str):
        root = Path(cache_dir) / "hooks"
        root.mkdir(parents=True, exist_ok=True)
        path = root / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".git")
        self.url = url
        self._lock_path = path.with_suffix(".lock")
        if not (path / "HEAD").exists():
            with self.locked():
                if not (path / "HEAD").exists():
                    git.Repo.init(str(path), bare=True)
        super().__init__(path)

    @contextmanager
    def locked(self):
        with open(self._lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def fetch(self, commits: Iterable[str], refs: Iterable[str] = ()) -> None:
        """Make sure `commits` are here: fetch the branches, then the given refs (e.g. a pull
        request's refs/pull/N/head), then the commits themselves. Raises GitError if one is
        still missing."""
        wanted = [c for c in commits if c and c != ZERO]
        with self.locked():
            if all(self.has(c) for c in wanted):
                return
            problems = []
            attempts = [["+refs/heads/*:refs/heads/*"]] + [[f"+{r}:{r}"] for r in refs]
            attempts.append([c for c in wanted])
            for refspecs in attempts:
                try:
                    self.repo.git.fetch("--quiet", "--no-tags", "--", self.url, *refspecs,
                                        kill_after_timeout=FETCH_TIMEOUT)
                except git.GitCommandError as e:
                    problems.append(_git_message(e))
                if all(self.has(c) for c in wanted):
                    return
            missing = ", ".join(c[:12] for c in wanted if not self.has(c))
            why = f" ({problems[-1]})" if problems else ""
            raise GitError(f"cannot fetch {missing} from {self.url}{why}")
