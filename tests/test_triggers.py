"""The build file, its filters, the providers' payloads and signatures, and what git reports as
changed: no farm needed (git is real)."""

from __future__ import annotations

import hashlib
import hmac
import subprocess

import pytest

from buildfarm.globs import glob_match, selected
from buildfarm.triggers.buildfile import BuildFileError, Event, parse, builds_for
from buildfarm.triggers.dispatch import superseded
from buildfarm.triggers.gitrepo import GitRepo
from buildfarm.triggers.providers import PROVIDERS, Ignored, Ping

SHA = "a" * 40
GOOD = """\
cancel_superseded: true
builds:
  unit:
    image: buildfarm/builder
    steps: [make test]
    resources: {cpus: 2, mem: 2048}
    artifacts: ["dist/*.tar.gz"]
    branches: [main, "release/*", "!release/old-*"]
    paths: ["src/**", Makefile]
  docs:
    image: buildfarm/builder
    command: [make, docs]
    paths: ["docs/"]
"""


def event(branch="main", changed=None, pr=None, **kw) -> Event:
    return Event(repo="git://127.0.0.1/app.git", commit=SHA, kind="hook", branch=branch, pr=pr, changed=changed,
                 user="alice", detail={"provider": "git", "event": "push", "branch": branch}, **kw)


# -- globs and filters --------------------------------------------------------------------------

@pytest.mark.parametrize("pattern,name,ok", [
    ("src/**", "src/a/b.c", True),
    ("src/**", "src", False),
    ("src/*", "src/a/b.c", False),
    ("*.md", "README.md", True),
    ("*.md", "docs/a.md", False),
    ("**/*.md", "docs/a.md", True),
    ("**/*.md", "a.md", True),
    ("docs/", "docs/x/y.txt", True),
    ("release/*", "release/1.0", True),
    ("release/*", "release/1.0/hotfix", False),
    ("feature/**", "feature/a/b", True),
    ("v?.?", "v1.2", True),
    ("a+b(c)", "a+b(c)", True),
])
def test_glob(pattern, name, ok):
    assert glob_match(pattern, name) is ok


def test_last_matching_pattern_decides_and_only_exclusions_start_from_everything():
    pats = ["release/*", "!release/old-*"]
    assert selected(pats, "release/2")
    assert not selected(pats, "release/old-1")
    assert not selected(pats, "main")
    assert selected(["!wip/*"], "main")
    assert not selected(["!wip/*"], "wip/x")
    assert selected(["**", "!docs/**", "docs/api/**"], "docs/api/x.md")


# -- parsing -------------------------------------------------------------------------------------

def test_mapping_and_list_forms():
    bf = parse(GOOD)
    assert bf.cancel_superseded is True
    assert [b.name for b in bf.builds] == ["unit", "docs"]
    assert bf.builds[0].branches == ["main", "release/*", "!release/old-*"]
    listed = parse("builds:\n  - name: one\n    image: img\n    steps: make\n  - image: img\n    command: [true]\n")
    assert [b.name for b in listed.builds] == ["one", "build2"]
    assert listed.builds[0].spec["steps"] == ["make"]
    assert listed.builds[1].spec["command"] == ["true"]
    assert parse("builds:\n  a:\n    image: i\n    steps: [x]\n    env: {JOBS: 4, DEBUG: yes}\n"
                 ).builds[0].spec["env"] == {"JOBS": "4", "DEBUG": "true"}
    assert listed.cancel_superseded is False


@pytest.mark.parametrize("text,expected", [
    ("builds: [", ".buildfarm.yml, line 1: not valid YAML"),
    ("builds:\n  a:\n    image: i\n    steps: [x]\n    bogus: 1\n", "line 5: build 'a': unknown key 'bogus'"),
    ("builds:\n  a:\n    image: i\n    steps: [x]\n    repo: git://x\n", "unknown key 'repo' (the event decides it)"),
    ("builds:\n  a:\n    image: i\n    steps: [x]\n    resources:\n      cpus: lots\n",
     "line 6: build 'a': resources.cpus: Input should be a valid number"),
    ("builds:\n  a:\n    steps: [x]\n", "line 2: build 'a': image: required"),
    ("builds:\n  a:\n    image: i\n", "exactly one of 'command'"),
    ("builds:\n  a:\n    image: i\n    command: make test\n", "`command` is an argv list"),
    ("builds:\n  a:\n    image: i\n    steps: [x]\n    branches: {main: 1}\n", "line 5: build 'a': `branches` must be a list"),
    ("cancel_superseded: maybe\nbuilds: {}\n", "line 1: cancel_superseded must be true or false"),
    ("build:\n  a: {}\n", "line 1: unknown key 'build'; expected `builds`"),
    ("- a\n", "expected a mapping with `builds:`"),
    ("cancel_superseded: true\n", "missing `builds:`"),
    ("builds:\n  a:\n    image: i\n    steps: [x]\n    env: {bad-name: x}\n", "env: 'bad-name' is not a valid"),
    # One YAML reader with pipelines (yamlsource.py): a repeated key is refused, not silently the last one.
    ("builds:\n  a:\n    image: i\n    image: j\n    steps: [x]\n",
     ".buildfarm.yml, line 4: duplicate key 'image' (first on line 3)"),
])
def test_errors_say_where_and_what(text, expected):
    with pytest.raises(BuildFileError) as e:
        parse(text)
    assert expected in str(e.value)
    assert str(e.value).startswith(".buildfarm.yml")


# -- planning ------------------------------------------------------------------------------------

def test_plan_builds_matching_jobs_with_their_trigger():
    p = builds_for(GOOD, event(changed=["src/main.c", "README.md"]))
    assert [n for n, _ in p.specs] == ["unit"]
    spec = p.specs[0][1]
    assert spec.commit == SHA and spec.repo == "git://127.0.0.1/app.git"
    assert spec.steps == ["make test"] and spec.resources.cpus == 2 and spec.artifacts == ["dist/*.tar.gz"]
    assert spec.trigger.kind == "hook" and spec.trigger.user == "alice"
    assert spec.trigger.detail == {"provider": "git", "event": "push", "branch": "main", "job": "unit"}
    assert p.skipped == [("docs", "no changed path matches docs/ (changed: src/main.c, README.md)")]
    assert p.cancel_superseded


def test_plan_says_why_nothing_matched():
    p = builds_for(GOOD, event(changed=["README.md"]))
    assert p.specs == []
    assert "unit: no changed path matches src/**, Makefile (changed: README.md)" in p.reason
    p = builds_for(GOOD, event(branch="release/old-2", changed=["Makefile"]))
    assert [n for n, _ in p.skipped] == ["unit", "docs"]
    assert "branch release/old-2 is not in branches: main, release/*, !release/old-*" in p.reason
    p = builds_for(None, event())
    assert p.specs == [] and p.reason == f"no .buildfarm.yml at {SHA[:12]}"


def test_unknown_changes_match_every_path_filter_and_prs_filter_on_their_target():
    assert [n for n, _ in builds_for(GOOD, event(changed=None)).specs] == ["unit", "docs"]
    pr = builds_for(GOOD, event(branch="release/3", pr="7", changed=["src/x.c"]))
    assert [n for n, _ in pr.specs] == ["unit"]
    pr = builds_for(GOOD, event(branch="develop", pr="7", changed=["src/x.c"]))
    assert "branch develop targets not in branches" in pr.reason


def test_pull_requests_from_forks_get_no_secrets():
    text = "builds:\n  deploy:\n    image: i\n    steps: [x]\n    secrets: [DEPLOY_KEY]\n  test:\n    image: i\n    steps: [x]\n"
    fork = builds_for(text, event(pr="3", trusted=False))
    assert [n for n, _ in fork.specs] == ["test"]
    assert "gets no secrets" in dict(fork.skipped)["deploy"]
    assert [n for n, _ in builds_for(text, event(pr="3")).specs] == ["deploy", "test"]


def test_a_build_with_secrets_names_the_branch_whose_code_it_runs():
    """What the farm checks secrets' branch scopes against: a push's branch (also as the build's
    ref, for the git hook's builds), a same-repository pull request's source branch, a fork's none."""
    text = "builds:\n  deploy:\n    image: i\n    steps: [x]\n    secrets: [DEPLOY_KEY]\n  test:\n    image: i\n    steps: [x]\n"
    specs = dict(builds_for(text, event(branch="release/2")).specs)
    assert specs["deploy"].ref == "release/2" and specs["deploy"].commit == SHA and specs["test"].ref is None
    assert event(branch="main").code_branch == "main"
    pr = Event(repo="git://127.0.0.1/app.git", commit=SHA, kind="webhook", branch="main", pr="3",
               detail={"source_branch": "topic"})
    assert pr.code_branch == "topic"
    pr.trusted = False  # from a fork
    assert pr.code_branch is None


def test_superseded_picks_unfinished_builds_of_the_same_branch_or_pr():
    def rec(i, state, branch="main", pr="", repo="git://127.0.0.1/app.git", kind="hook"):
        return {"id": i, "number": 10 if i == "new" else 1, "state": state, "spec": {"repo": repo, "trigger": {
            "kind": kind, "detail": {"branch": branch, "pr": pr}}}}

    records = [rec("a", "running"), rec("b", "queued"), rec("c", "succeeded"), rec("d", "queued", branch="dev"),
               rec("e", "queued", pr="7"), rec("f", "queued", repo="git://other"), rec("g", "queued", kind="cli"),
               rec("new", "queued")]
    assert superseded(records, event(), newest=10) == ["a", "b"]
    assert superseded(records, event(pr="7"), newest=10) == ["e"]
    assert superseded(records, event(), newest=1) == []  # builds of a later push are not touched


# -- providers ----------------------------------------------------------------------------------

def _sig(body: bytes, secret="s3cret") -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_signatures():
    body = b'{"ref": "refs/heads/main"}'
    gh, gl, gt = PROVIDERS["github"], PROVIDERS["gitlab"], PROVIDERS["gitea"]
    assert gh.verify({"X-Hub-Signature-256": "sha256=" + _sig(body)}, body, "s3cret") is None
    assert "does not match" in gh.verify({"X-Hub-Signature-256": "sha256=" + _sig(body, "x")}, body, "s3cret")
    assert "missing X-Hub-Signature-256" in gh.verify({}, body, "s3cret")
    assert gt.verify({"X-Gitea-Signature": _sig(body)}, body, "s3cret") is None
    assert "does not match" in gt.verify({"X-Gitea-Signature": _sig(body + b" ")}, body, "s3cret")
    assert gl.verify({"X-Gitlab-Token": "s3cret"}, body, "s3cret") is None
    assert "not the farm's webhook secret" in gl.verify({"X-Gitlab-Token": "nope"}, body, "s3cret")
    assert "missing X-Gitlab-Token" in gl.verify({}, body, "s3cret")


def test_github_push_and_pull_request():
    gh = PROVIDERS["github"]
    push = {"ref": "refs/heads/main", "before": "b" * 40, "after": SHA,
            "repository": {"clone_url": "https://github.com/o/app.git"}, "pusher": {"name": "alice"}}
    a = gh.announced({"X-GitHub-Event": "push", "X-GitHub-Delivery": "d1"}, push)
    assert (a.event.commit, a.event.branch, a.event.user, a.fetch_url, a.before) == \
        (SHA, "main", "alice", "https://github.com/o/app.git", "b" * 40)
    assert a.event.detail["delivery"] == "d1" and a.event.kind == "webhook"
    with pytest.raises(Ignored, match="deleted"):
        gh.announced({"X-GitHub-Event": "push"}, {**push, "after": "0" * 40})
    with pytest.raises(Ignored, match="only branch pushes"):
        gh.announced({"X-GitHub-Event": "push"}, {**push, "ref": "refs/tags/v1"})
    with pytest.raises(Ping):
        gh.announced({"X-GitHub-Event": "ping"}, {"zen": "hi"})
    with pytest.raises(Ignored, match="'issues' builds nothing"):
        gh.announced({"X-GitHub-Event": "issues"}, {})
    pr = {"action": "synchronize", "number": 7, "sender": {"login": "bob"},
          "pull_request": {"head": {"sha": SHA, "ref": "feature", "repo": None},
                           "base": {"sha": "c" * 40, "ref": "main", "repo": {"clone_url": "https://github.com/o/app.git"}}}}
    a = gh.announced({"X-GitHub-Event": "pull_request"}, pr)
    assert not a.event.trusted  # no head repository given: treated as a fork
    assert (a.event.pr, a.event.branch, a.event.commit, a.before, a.refs, a.since_merge_base) == \
        ("7", "main", SHA, "c" * 40, ["refs/pull/7/head"], True)
    with pytest.raises(Ignored, match="'closed'"):
        gh.announced({"X-GitHub-Event": "pull_request"}, {**pr, "action": "closed"})


def test_gitlab_push_and_merge_request():
    gl = PROVIDERS["gitlab"]
    push = {"object_kind": "push", "ref": "refs/heads/dev", "before": "0" * 40, "after": SHA, "checkout_sha": SHA,
            "project": {"git_http_url": "https://gitlab.example/o/app.git"}, "user_username": "carol"}
    a = gl.announced({"X-Gitlab-Event": "Push Hook"}, push)
    assert (a.event.branch, a.event.user, a.fetch_url) == ("dev", "carol", "https://gitlab.example/o/app.git")
    mr = {"object_kind": "merge_request", "user": {"username": "dan"},
          "project": {"git_http_url": "https://gitlab.example/o/app.git"},
          "object_attributes": {"iid": 3, "action": "update", "oldrev": "e" * 40, "source_branch": "f",
                                "target_branch": "main", "last_commit": {"id": SHA},
                                "source_project_id": 1, "target_project_id": 1}}
    a = gl.announced({"X-Gitlab-Event": "Merge Request Hook"}, mr)
    assert (a.event.pr, a.event.commit, a.before, a.refs) == ("3", SHA, "refs/heads/main", ["refs/merge-requests/3/head"])
    assert a.event.trusted  # source and target are the same project
    no_commits = {**mr, "object_attributes": {**mr["object_attributes"], "oldrev": None}}
    with pytest.raises(Ignored, match="without new commits"):
        gl.announced({"X-Gitlab-Event": "Merge Request Hook"}, no_commits)


def test_gitea_pull_request_uses_its_action_names():
    gt = PROVIDERS["gitea"]
    pr = {"action": "synchronized", "number": 2, "sender": {"login": "eve"},
          "pull_request": {"head": {"sha": SHA, "ref": "f"}, "base": {"sha": "c" * 40, "ref": "main",
                                                                    "repo": {"clone_url": "http://gitea/o/a.git"}}}}
    a = gt.announced({"X-Gitea-Event": "pull_request", "X-Gitea-Delivery": "x"}, pr)
    assert a.event.detail["provider"] == "gitea" and a.event.pr == "2"


# -- git -------------------------------------------------------------------------------------------

def test_changed_paths_of_pushes_new_branches_and_root_commits(tmp_path):
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-C", str(tmp_path)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)

    def commit(files: dict[str, str]) -> str:
        for p, t in files.items():
            (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / p).write_text(t)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-qm", "c"], check=True)
        return subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()

    root = commit({"a.txt": "1", "src/x.c": "1"})
    second = commit({"docs/r.md": "1"})
    third = commit({"src/x.c": "2", "a.txt": "2"})
    repo = GitRepo(tmp_path)
    assert repo.changed_paths("0" * 40, root) == ["a.txt", "src/x.c"]  # root: every file
    assert repo.changed_paths("0" * 40, third) == ["a.txt", "src/x.c"]  # new branch: against the first parent
    assert repo.changed_paths(root, third) == ["a.txt", "docs/r.md", "src/x.c"]
    assert repo.changed_paths(second, third, since_merge_base=True) == ["a.txt", "src/x.c"]
    assert repo.read(second, "docs/r.md") == "1" and repo.read(root, "docs/r.md") is None


def test_build_files_cannot_take_other_builds_artifacts_or_secret_values():
    for key, value in (("inputs", "[{build: abcdef12}]"), ("secret_env", "{TOKEN: abcdefgh}")):
        with pytest.raises(BuildFileError) as e:
            parse(f"builds:\n  unit:\n    image: img\n    steps: [make]\n    {key}: {value}\n")
        assert f"unknown key '{key}' (a build file cannot set it)" in str(e.value)
        assert "line 5" in str(e.value)


def test_a_yaml_alias_bomb_is_refused_at_once():
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"l{i}: &l{i} [{', '.join([f'*{p}'] * 9)}]" for i, p in enumerate(["a"] + [f"l{j}" for j in range(7)])]
    with pytest.raises(BuildFileError) as e:
        parse("\n".join(levels) + "\nbuilds: []\n")  # 9 levels: minutes and gigabytes if expanded
    assert "line 1: YAML anchors and aliases" in str(e.value)


@pytest.mark.parametrize("text, line", [
    ("builds: " + "[" * 120_000, 1),  # 17 s of CPU for 12 KB, then a RecursionError, before the limit
    ("builds:\n  unit:\n    env: {a: " + "{a: " * 40 + "}" * 41 + "}\n", 3),
    ("builds:\n" + "".join("  " * i + "- a:\n" for i in range(1, 40)), 17),
    ("builds:\n  - " + "- " * 60_000 + "x\n", 2),
])
def test_deeply_nested_build_files_are_refused_before_they_are_read(text, line):
    with pytest.raises(BuildFileError) as e:
        parse(text)
    assert str(e.value) == (f".buildfarm.yml, line {line}: lists and mappings are nested more than 32 levels deep; "
                            f"flatten the file")


def test_brackets_in_quotes_and_comments_do_not_count_as_nesting():
    quoted = '"' + "[" * 40 + '"'
    text = (f"builds:\n  unit:\n    image: img\n    steps: [{quoted}, 'it''s ]]]]', it's]\n"
            f"    # {'[' * 40}\n")
    assert parse(text).builds[0].spec["steps"] == ["[" * 40, "it's ]]]]", "it's"]
