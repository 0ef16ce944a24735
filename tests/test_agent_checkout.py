"""The agent's checkout against a real `git daemon`, run in-process: a read-only mirror that has
the commit is used without the network; without it the agent clones from the repository, and a
commit that only a pull request's ref reaches (refs/pull/N/head) is fetched too."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from buildfarm.mirrors import MirrorCache, mirror_name

from .conftest import ROOT, wait_until


class Lines:
    """Collects what the agent would send to the build's log."""

    def __init__(self):
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def agent(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("buildfarm_agent_under_test", ROOT / "executors" / "buildfarm_agent.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mod, "CACHE_READONLY", True)
    monkeypatch.setattr(mod, "WORKSPACE", str(tmp_path / "ws"))
    return mod


@pytest.fixture
def pr_repo(git_server):
    """A repository whose pull request head is reachable only through refs/pull/7/head."""
    url = git_server.make_repo("checkout-pr", {"README": "main\n"}, branches={"topic": {"README": "pr change\n"}})
    bare = git_server.repos / "checkout-pr.git"
    head = git_server.head("checkout-pr", "topic")
    subprocess.run(["git", "-C", str(bare), "update-ref", "refs/pull/7/head", head], check=True)
    subprocess.run(["git", "-C", str(bare), "branch", "-D", "topic"], check=True, capture_output=True)
    return url, head


def test_without_a_mirror_it_clones_and_fetches_a_pull_requests_commit(agent, pr_repo):
    url, head = pr_repo
    log = Lines()
    sha = agent.checkout({"repo": url, "commit": head}, log)
    assert sha == head
    assert "mirror cache miss" in log.text() and "checked out" in log.text()


def test_with_the_farms_mirror_it_checks_out_without_the_network(agent, pr_repo, tmp_path):
    url, head = pr_repo
    MirrorCache(tmp_path / "cache" / "git").refresh(url)  # what the farm does when a build launches
    assert (tmp_path / "cache" / "git" / mirror_name(url) / "HEAD").exists()
    log = Lines()
    assert agent.checkout({"repo": url, "commit": head}, log) == head
    assert "mirror cache hit" in log.text() and "cloning" not in log.text()


def test_the_farm_does_not_mirror_local_paths(tmp_path, pr_repo, git_server):
    cache = MirrorCache(tmp_path / "cache")
    cache.refresh_soon(str(git_server.repos / "checkout-pr.git"))
    cache.refresh_soon("file://" + str(git_server.repos / "checkout-pr.git"))
    cache.close()
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_farm_fetches_into_a_mirror_only_when_a_build_needs_a_commit_it_lacks(tmp_path, git_server):
    url = git_server.make_repo("mirror-skip", {"README": "one\n"})
    old = git_server.head("mirror-skip")
    cache = MirrorCache(tmp_path / "cache")
    cache.refresh(url)
    fetches = []
    cache.refresh = lambda u: (fetches.append(u), MirrorCache.refresh(cache, u))  # count them from here
    bare = str(git_server.repos / "mirror-skip.git")
    new = subprocess.run(["git", "-C", bare, "-c", "user.email=t@t", "-c", "user.name=t", "commit-tree", "-p", old,
                          "-m", "two", f"{old}^{{tree}}"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "-C", bare, "update-ref", "refs/heads/main", new], check=True)
    try:
        cache.refresh_soon(url, old)  # the mirror has it: no fetch
        cache.refresh_soon(url, new)
        wait_until(lambda: cache.has(url, new), 30, what="the fetch of the new commit")
        assert fetches == [url]
    finally:
        cache.close()
