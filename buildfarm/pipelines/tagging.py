"""Tag a repository at a built commit (GitPython): fetch into a scratch bare repository, make an
annotated tag at the commit, push it. A tag that already exists at that commit is fine (a retried
push); one at another commit is refused, never moved."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

_BAD_TAG = re.compile(r"(^[-.]|\.\.|[\x00-\x20~^:?*\[\\]|@\{|\.lock$|/$|\.$|//)")


class TagError(Exception):
    pass


def tag_problem(name: str) -> str | None:
    if not name or _BAD_TAG.search(name):
        return f"{name!r} is not a valid git tag name (no spaces, '..', '~^:?*[\\', or a leading '-' or '.')"
    return None


GIT_TIMEOUT = 120  # seconds per git command: well under the run lock's lifetime (store.py)


def _git_env() -> dict[str, str]:
    # The farm's own credentials push the tag, so only to network remotes, never a host path.
    return {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "GIT_ALLOW_PROTOCOL": "git:http:https:ssh",
            "GIT_AUTHOR_NAME": "buildfarm", "GIT_AUTHOR_EMAIL": "buildfarm@localhost",
            "GIT_COMMITTER_NAME": "buildfarm", "GIT_COMMITTER_EMAIL": "buildfarm@localhost"}


def remote_tag(push_url: str, name: str) -> str | None:
    """The commit tag `name` points at in `push_url`, or None."""
    import git

    out = git.Git().execute(["git", "ls-remote", "--tags", "--", push_url, f"refs/tags/{name}",
                             f"refs/tags/{name}^{{}}"], env={**os.environ, **_git_env()},
                             kill_after_timeout=GIT_TIMEOUT)
    refs = dict(reversed(line.split("\t", 1)) for line in out.splitlines() if "\t" in line)
    return refs.get(f"refs/tags/{name}^{{}}") or refs.get(f"refs/tags/{name}")


def create_tag(repo_url: str, push_url: str, commit: str, name: str, message: str, workdir: Path) -> str:
    """Tag `commit` as `name` and push it to `push_url`; returns what was done."""
    import git

    problem = tag_problem(name)
    if problem:
        raise TagError(problem)
    try:
        existing = remote_tag(push_url, name)
        if existing == commit:
            return f"tag {name} already at {commit[:12]} in {push_url}"
        if existing:
            raise TagError(f"tag {name} already exists in {push_url} at {existing[:12]}, not at the built "
                           f"commit {commit[:12]}; it is never moved: choose another version")
        Path(workdir).mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="tag-", dir=workdir)
        try:
            repo = git.Repo.init(tmp, bare=True)
            env = _git_env()
            with repo.git.custom_environment(**env):
                repo.git.fetch("--quiet", "--", repo_url, "+refs/heads/*:refs/remotes/origin/*",
                               kill_after_timeout=GIT_TIMEOUT)
                try:
                    repo.git.cat_file("-e", f"{commit}^{{commit}}")
                except git.GitCommandError:
                    raise TagError(f"commit {commit[:12]} is on no branch of {repo_url} any more; "
                                   f"not tagging") from None
                repo.git.tag("-a", name, commit, "-m", message)
                repo.git.push("--quiet", "--", push_url, f"refs/tags/{name}:refs/tags/{name}",
                              kill_after_timeout=GIT_TIMEOUT)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except git.GitCommandError as e:
        lines = [ln.strip() for ln in str(e.stderr or e).splitlines() if ln.strip()]
        raise TagError(f"git {e.command[1] if len(e.command) > 1 else ''} failed: "
                       f"{' '.join(lines[-2:]).strip(chr(39))}") from None
    return f"tagged {commit[:12]} as {name} in {push_url}"
