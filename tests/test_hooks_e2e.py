"""Triggers end to end: a real `git push` into a bare repository with the installed post-receive
hook, and real HTTP deliveries to /hooks/* shaped like GitHub's, GitLab's and Gitea's, against a
farm started with `buildfarm up`; the repositories are served to the farm and to the build
containers by `git daemon` on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from .conftest import IMAGE, FarmProcess, free_port, wait_until

ZERO = "0" * 40
GIT = ["git", "-c", "user.email=dev@example.org", "-c", "user.name=dev"]


def buildfile(branches=("main", "release/*"), cancel=False, steps=("test -f src/main.c", "echo built $(cat src/main.c)"),
              paths_any=False):
    return json.dumps({"cancel_superseded": cancel, "builds": {"unit": {
        "image": IMAGE, "steps": list(steps), "resources": {"cpus": 0.5, "mem": 256},
        "branches": list(branches), "paths": ["**"] if paths_any else ["src/**", ".buildfarm.yml"]}}}, indent=1)


class Checkout:
    """A developer's clone of a repository that `git daemon` serves, pushing over the filesystem."""

    def __init__(self, git_server, tmp_path, name: str, files: dict[str, str]):
        self.url = git_server.make_repo(name, files)
        self.bare = git_server.repos / f"{name}.git"
        self.work = tmp_path / f"{name}-clone"
        subprocess.run(["git", "clone", "-q", str(self.bare), str(self.work)], check=True)

    def git(self, *args: str) -> str:
        return subprocess.run(GIT + ["-C", str(self.work), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    def commit(self, files: dict[str, str], branch: str | None = None) -> str:
        if branch:
            self.git("checkout", "-q", "-B", branch)
        for path, text in files.items():
            p = self.work / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-qm", f"change {', '.join(files)}")
        return self.git("rev-parse", "HEAD")

    def push(self, branch: str = "main") -> str:
        """`git push`; returns what the pusher sees (the hook's lines come back as `remote: ...`)."""
        out = subprocess.run(GIT + ["-C", str(self.work), "push", "origin", f"HEAD:refs/heads/{branch}"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout + out.stderr


def queued_ids(push_output: str) -> list[str]:
    return re.findall(r"remote: buildfarm: queued build ([0-9a-f]+) ", push_output)


def all_builds(farm) -> list[dict]:
    out = farm.cli("list", "--limit", "500", "--json")
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def farm(tmp_path_factory, docker_engine, redis_binary):
    """The farm of these tests waits for each delivery to be handled before answering (a busy CI
    machine may take more than the default 4 s); test_a_slow_delivery... covers the other way."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BUILDFARM_WEBHOOK_REPLY_SECONDS", "60")
        f = FarmProcess(tmp_path_factory.mktemp("farm") / "data")
    yield f
    f.stop()


@pytest.fixture(scope="module")
def hook_token(farm) -> str:
    out = farm.cli("token", "create", "git-hook", "--role", "submitter", "--hook")
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()


def install(farm, checkout, token: str, *extra: str) -> None:
    out = farm.cli("hook", "install", str(checkout.bare), "--repo-url", checkout.url, "--token", token, *extra)
    assert out.returncode == 0, out.stderr.decode()
    assert b"installed" in out.stdout and out.stderr == b"", out.stderr.decode()
    token_file = checkout.bare / "hooks" / "buildfarm.token"
    assert token_file.stat().st_mode & 0o777 == 0o600 and token_file.read_text().strip() == token
    assert token not in (checkout.bare / "hooks" / "post-receive").read_text()


# -- the post-receive hook ------------------------------------------------------------------------

def test_push_builds_the_pushed_commit_and_says_so(farm, git_server, tmp_path, hook_token):
    co = Checkout(git_server, tmp_path, "hooked", {".buildfarm.yml": buildfile(), "src/main.c": "v1"})
    install(farm, co, hook_token)
    hook = (co.bare / "hooks" / "post-receive").read_text()
    assert "post-receive" in hook and co.url in hook

    sha = co.commit({"src/main.c": "v2"})
    said = co.push()
    ids = queued_ids(said)
    assert len(ids) == 1, said
    assert f"({'unit'}) for main at {sha[:12]}" in said
    build = farm.wait_done(ids[0])
    assert build["state"] == "succeeded", build
    assert build["commit"] == sha
    assert b"built v2" in farm.log_text(ids[0])
    trigger = build["spec"]["trigger"]
    assert trigger["kind"] == "hook" and trigger["user"]  # the pusher (the OS user on this server)
    assert trigger["detail"]["branch"] == "main" and trigger["detail"]["after"] == sha
    assert trigger["detail"]["job"] == "unit" and len(trigger["detail"]["before"]) == 40


def test_push_touching_no_matching_path_enqueues_nothing(farm, git_server, tmp_path, hook_token):
    co = Checkout(git_server, tmp_path, "docsonly", {".buildfarm.yml": buildfile(), "src/main.c": "v1"})
    install(farm, co, hook_token)
    before = len(all_builds(farm))
    co.commit({"docs/guide.md": "words"})
    said = co.push()
    assert "remote: buildfarm: nothing to build for refs/heads/main: no changed path matches src/**, " \
           ".buildfarm.yml (changed: docs/guide.md)" in said, said
    assert queued_ids(said) == []
    assert len(all_builds(farm)) == before


def test_branch_filters(farm, git_server, tmp_path, hook_token):
    co = Checkout(git_server, tmp_path, "branches", {".buildfarm.yml": buildfile(), "src/main.c": "v1"})
    install(farm, co, hook_token)
    co.commit({"src/main.c": "feature"}, branch="feature/x")
    said = co.push("feature/x")
    assert "nothing to build for refs/heads/feature/x: branch feature/x is not in branches: main, release/*" in said
    sha = co.commit({"src/main.c": "release"}, branch="release/1.0")
    said = co.push("release/1.0")
    ids = queued_ids(said)
    assert len(ids) == 1, said
    build = farm.wait_done(ids[0])
    assert build["state"] == "succeeded" and build["commit"] == sha
    assert build["spec"]["trigger"]["detail"]["branch"] == "release/1.0"
    said = subprocess.run(GIT + ["-C", str(co.work), "push", "origin", ":refs/heads/release/1.0"],
                          capture_output=True, text=True).stderr
    assert "refs/heads/release/1.0 deleted: nothing to build" in said


def test_new_push_cancels_the_branchs_older_build(farm, git_server, tmp_path, hook_token):
    slow = buildfile(cancel=True, steps=("sleep 300",))
    co = Checkout(git_server, tmp_path, "supersede", {".buildfarm.yml": slow, "src/main.c": "v1"})
    install(farm, co, hook_token)
    co.commit({"src/main.c": "v2"})
    [first] = queued_ids(co.push())
    sha = co.commit({"src/main.c": "v3"})
    said = co.push()
    [second] = queued_ids(said)
    assert f"cancelled build {first}: superseded by {sha[:12]}" in said
    ended = farm.wait_done(first, 60)
    assert ended["state"] == "cancelled" and ended["reason"] == "cancelled by git-hook"
    assert farm.build(second)["state"] in ("queued", "launching", "running")
    assert farm.cli("cancel", second).returncode == 0


def test_unreachable_farm_does_not_fail_the_push(farm, git_server, tmp_path):
    co = Checkout(git_server, tmp_path, "nofarm", {".buildfarm.yml": buildfile(), "src/main.c": "v1"})
    out = farm.cli("hook", "install", str(co.bare), "--repo-url", co.url, "--server", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 0 and b"does not answer" in out.stderr
    co.commit({"src/main.c": "v2"})
    said = co.push()  # asserts the push succeeded
    assert "remote: buildfarm: warning: cannot reach the farm" in said and "the push itself succeeded" in said


def test_install_checks_its_token(farm, git_server, tmp_path):
    co = Checkout(git_server, tmp_path, "tokens", {"a": "1"})
    viewer = farm.cli("token", "create", "watcher", "--role", "viewer").stdout.decode().strip()
    out = farm.cli("hook", "install", str(co.bare), "--repo-url", co.url, "--token", viewer)
    assert out.returncode == 0 and b"is a viewer's and cannot submit" in out.stderr
    out = farm.cli("hook", "install", str(co.bare), "--repo-url", co.url, "--token", "not-a-token")
    assert out.returncode == 0 and b"the farm refuses this token" in out.stderr
    out = farm.cli("hook", "install", str(co.bare), "--repo-url", co.url, env={"BUILDFARM_TOKEN": ""})
    assert out.returncode == 0 and b"no --token" in out.stderr
    assert not (co.bare / "hooks" / "buildfarm.token").exists()
    co.commit({"a": "2"})
    said = co.push()  # without a token the farm refuses the builds; the push still succeeds
    assert "remote: buildfarm: nothing to build for refs/heads/main: no .buildfarm.yml at" in said
    co.commit({".buildfarm.yml": buildfile(paths_any=True)})
    said = co.push()
    assert "remote: buildfarm: warning:" in said and "token" in said and "the push itself succeeded" in said
    # A submitter's token not made for a hook is warned about, and cannot record pushes.
    plain = farm.cli("token", "create", "plain-hook", "--role", "submitter").stdout.decode().strip()
    out = farm.cli("hook", "install", str(co.bare), "--repo-url", co.url, "--token", plain)
    assert out.returncode == 0 and b"was not made for a hook (--hook)" in out.stderr
    co.commit({"a": "3"})
    said = co.push()
    assert "remote: buildfarm: warning:" in said and "is recorded by the farm itself" in said, said


def test_install_refuses_a_foreign_hook_and_a_path_as_clone_url(farm, git_server, tmp_path):
    co = Checkout(git_server, tmp_path, "foreign", {"a": "1"})
    (co.bare / "hooks" / "post-receive").write_text("#!/bin/sh\necho mine\n")
    out = farm.cli("hook", "install", str(co.bare), "--repo-url", co.url)
    assert out.returncode == 2 and b"was not written by buildfarm" in out.stderr
    out = farm.cli("hook", "install", str(co.bare), "--repo-url", str(co.bare), "--force")
    assert out.returncode == 2 and b"give a URL build containers can clone" in out.stderr


# -- webhooks -------------------------------------------------------------------------------------

def secret_of(farm) -> str:
    path = farm.data_dir / "webhook.secret"
    assert path.stat().st_mode & 0o777 == 0o600
    return path.read_text().strip()


def push_delivery(provider: str, url: str, before: str, after: str, branch: str = "main") -> tuple[dict, dict]:
    """(headers, payload) of a push as the provider documents it (signature added by `sign`)."""
    delivery = str(uuid.uuid4())
    ref = f"refs/heads/{branch}"
    if provider == "gitlab":
        return ({"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": delivery},
                {"object_kind": "push", "event_name": "push", "ref": ref, "before": before, "after": after,
                 "checkout_sha": after, "user_username": "carol", "user_name": "Carol",
                 "project": {"path_with_namespace": "o/app", "git_http_url": url, "default_branch": "main"},
                 "commits": [{"id": after}], "total_commits_count": 1})
    common = {"ref": ref, "before": before, "after": after, "repository": {"full_name": "o/app", "clone_url": url},
              "head_commit": {"id": after, "message": "change"}, "commits": [{"id": after}]}
    if provider == "github":
        return ({"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery},
                {**common, "pusher": {"name": "alice", "email": "a@example.org"}, "sender": {"login": "alice"}})
    return ({"X-Gitea-Event": "push", "X-Gitea-Delivery": delivery},
            {**common, "pusher": {"login": "erin", "username": "erin"}, "sender": {"login": "erin"}})


def sign(provider: str, headers: dict, body: bytes, secret: str) -> dict:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    extra = {"github": {"X-Hub-Signature-256": f"sha256={digest}"}, "gitea": {"X-Gitea-Signature": digest},
             "gitlab": {"X-Gitlab-Token": secret}}[provider]
    return {**headers, **extra, "Content-Type": "application/json"}


def deliver(farm, provider: str, headers: dict, payload: dict, secret: str | None) -> httpx.Response:
    body = json.dumps(payload).encode()
    if secret is not None:
        headers = sign(provider, headers, body, secret)
    return httpx.post(f"{farm.url}/hooks/{provider}", content=body, headers=headers, timeout=60)


PUSHERS = {"github": "alice", "gitlab": "carol", "gitea": "erin"}


@pytest.mark.parametrize("provider", ["github", "gitlab", "gitea"])
def test_webhook_push_verified_built_and_not_replayed(farm, git_server, tmp_path, provider):
    co = Checkout(git_server, tmp_path, f"wh-{provider}", {".buildfarm.yml": buildfile(), "src/main.c": "v1"})
    before = co.git("rev-parse", "HEAD")
    after = co.commit({"src/main.c": f"from {provider}"})
    co.push()  # no hook installed here: the webhook is the trigger
    secret = secret_of(farm)
    headers, payload = push_delivery(provider, co.url, before, after)
    count = len(all_builds(farm))

    for bad in ("wrong secret", None):
        resp = deliver(farm, provider, headers, payload, bad)
        assert resp.status_code == 401, resp.text
        assert ("missing" if bad is None else "not") in resp.json()["error"]
    assert len(all_builds(farm)) == count
    assert f"refused {provider} delivery {headers[next(h for h in headers if 'Delivery' in h or 'UUID' in h)]}" \
           in farm.up_log()

    resp = deliver(farm, provider, headers, payload, secret)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["result"] == "queued" and body["commit"] == after and body["branch"] == "main"
    [queued] = body["builds"]
    assert queued["name"] == "unit"
    build = farm.wait_done(queued["id"])
    assert build["state"] == "succeeded" and build["commit"] == after
    assert f"built from {provider}".encode() in farm.log_text(queued["id"])
    trigger = build["spec"]["trigger"]
    assert trigger["kind"] == "webhook" and trigger["user"] == PUSHERS[provider]
    assert trigger["detail"]["provider"] == provider and trigger["detail"]["event"] == "push"
    assert trigger["detail"]["after"] == after and trigger["detail"]["delivery"] == body["delivery"]

    again = deliver(farm, provider, headers, payload, secret)
    assert again.status_code == 200 and again.json()["result"] == "duplicate", again.text
    # The same signed body under a new delivery id, or with none, is a replay too.
    id_header = next(h for h in headers if "Delivery" in h or "UUID" in h)
    for replay in ({**headers, id_header: str(uuid.uuid4())}, {k: v for k, v in headers.items() if k != id_header}):
        again = deliver(farm, provider, replay, payload, secret)
        assert again.status_code == 200 and again.json()["result"] == "duplicate", again.text
        assert again.json()["duplicate_of"] == body["delivery"] and "(a replay)" in again.json()["reason"]
    assert len(all_builds(farm)) == count + 1


def test_webhook_nothing_to_build_ping_and_ignored_events(farm, git_server, tmp_path):
    co = Checkout(git_server, tmp_path, "wh-misc", {".buildfarm.yml": buildfile(), "src/main.c": "v1"})
    before = co.git("rev-parse", "HEAD")
    after = co.commit({"README.md": "hello"})
    co.push()
    secret = secret_of(farm)
    headers, payload = push_delivery("github", co.url, before, after)
    resp = deliver(farm, "github", headers, payload, secret)
    assert resp.status_code == 200 and resp.json()["result"] == "nothing to build", resp.text
    assert "no changed path matches" in resp.json()["reason"]
    resp = deliver(farm, "github", {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "p1"}, {"zen": "Keep it simple."},
                   secret)
    assert resp.status_code == 200 and resp.json() == {"result": "pong"}
    resp = deliver(farm, "github", {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "i1"}, {"action": "opened"},
                   secret)
    assert resp.status_code == 202 and resp.json()["result"] == "ignored"
    h, p = push_delivery("gitea", co.url, before, after)
    p["ref"] = "refs/tags/v1"
    resp = deliver(farm, "gitea", h, p, secret)
    assert resp.status_code == 202 and "only branch pushes" in resp.json()["reason"]
    bad = co.commit({".buildfarm.yml": "builds:\n  unit:\n    image: x\n    stepz: [make]\n"})
    co.push()
    h, p = push_delivery("gitlab", co.url, after, bad)
    resp = deliver(farm, "gitlab", h, p, secret)
    assert resp.status_code == 422 and "line 4: build 'unit': unknown key 'stepz'" in resp.json()["error"]
    # A build file nested without end is refused at once, naming the limit (it took a worker 20 s).
    deep = co.commit({".buildfarm.yml": "builds: " + "[" * 120_000})
    co.push()
    resp = deliver(farm, "gitlab", *push_delivery("gitlab", co.url, bad, deep), secret)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == (".buildfarm.yml, line 1: lists and mappings are nested more than 32 levels "
                                    "deep; flatten the file")


def test_pull_request_builds_its_head_commit(farm, git_server, tmp_path):
    co = Checkout(git_server, tmp_path, "wh-pr", {".buildfarm.yml": buildfile(), "src/main.c": "v1"})
    base = co.git("rev-parse", "HEAD")
    head = co.commit({"src/main.c": "from the PR"}, branch="contrib")
    # The contributor's branch is not on the server: only the provider's pull ref holds it.
    co.push("contrib")
    subprocess.run(["git", "-C", str(co.bare), "update-ref", "refs/pull/7/head", head], check=True)
    subprocess.run(["git", "-C", str(co.bare), "update-ref", "-d", "refs/heads/contrib"], check=True)
    payload = {"action": "synchronize", "number": 7, "sender": {"login": "frank"},
               "repository": {"full_name": "o/app", "clone_url": co.url},
               "pull_request": {"number": 7, "state": "open",
                                "head": {"sha": head, "ref": "contrib", "repo": {"clone_url": co.url}},
                                "base": {"sha": base, "ref": "main", "repo": {"clone_url": co.url}}}}
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": str(uuid.uuid4())}
    resp = deliver(farm, "github", headers, payload, secret_of(farm))
    assert resp.status_code == 200, resp.text
    assert resp.json()["pr"] == "7"
    [queued] = resp.json()["builds"]
    build = farm.wait_done(queued["id"])
    assert build["state"] == "succeeded", build
    assert build["commit"] == head and build["spec"]["commit"] == head
    assert b"built from the PR" in farm.log_text(queued["id"])
    detail = build["spec"]["trigger"]["detail"]
    assert detail["pr"] == "7" and detail["branch"] == "main" and detail["event"] == "pull_request"
    assert build["spec"]["trigger"]["user"] == "frank"


def test_webhook_push_cancels_superseded_build(farm, git_server, tmp_path):
    slow = buildfile(cancel=True, steps=("sleep 300",))
    co = Checkout(git_server, tmp_path, "wh-supersede", {".buildfarm.yml": slow, "src/main.c": "v1"})
    secret = secret_of(farm)
    first_sha = co.git("rev-parse", "HEAD")
    second_sha = co.commit({"src/main.c": "v2"})
    co.push()
    resp = deliver(farm, "gitlab", *push_delivery("gitlab", co.url, first_sha, second_sha), secret)
    [first] = resp.json()["builds"]
    third_sha = co.commit({"src/main.c": "v3"})
    co.push()
    resp = deliver(farm, "gitlab", *push_delivery("gitlab", co.url, second_sha, third_sha), secret)
    assert resp.status_code == 200, resp.text
    assert resp.json()["cancelled"] == [first["id"]]
    ended = farm.wait_done(first["id"], 60)
    assert ended["state"] == "cancelled" and ended["reason"] == f"cancelled by {third_sha[:12]}, which superseded it"
    [second] = resp.json()["builds"]
    assert farm.cli("cancel", second["id"]).returncode == 0


@pytest.fixture(scope="module")
def patient_farm(tmp_path_factory, docker_engine, redis_binary):
    """A farm that answers every delivery at once, as it does when a first fetch outlasts the
    few seconds a provider waits."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BUILDFARM_WEBHOOK_REPLY_SECONDS", "0")
        f = FarmProcess(tmp_path_factory.mktemp("patient") / "data")
    yield f
    f.stop()


def test_a_slow_delivery_is_accepted_at_once_and_builds_later(patient_farm, git_server, tmp_path):
    farm = patient_farm
    co = Checkout(git_server, tmp_path, "wh-slow", {".buildfarm.yml": buildfile(), "src/main.c": "v1"})
    before = co.git("rev-parse", "HEAD")
    after = co.commit({"src/main.c": "late but built"})
    co.push()
    headers, payload = push_delivery("github", co.url, before, after)
    resp = deliver(farm, "github", headers, payload, secret_of(farm))
    assert resp.status_code == 202 and resp.json()["result"] == "accepted", resp.text
    delivery = resp.json()["delivery"]
    where = resp.json()["outcome"]
    assert where == f"/api/v1/hooks/deliveries/github/{delivery}"
    assert farm.api("GET", where, headers={}).status_code == 401  # outcomes are for token holders

    outcome = wait_until(lambda: (o := farm.api("GET", where).json())["result"] != "processing" and o, 60,
                         what="the delivery's outcome")
    assert outcome["result"] == "queued" and outcome["status"] == 200 and outcome["commit"] == after, outcome
    [queued] = outcome["builds"]
    assert farm.wait_done(queued["id"])["state"] == "succeeded"
    assert b"built late but built" in farm.log_text(queued["id"])
    assert f"github delivery {delivery}: queued ({queued['id']})" in farm.up_log()
    again = deliver(farm, "github", headers, payload, secret_of(farm))
    assert again.json()["result"] == "duplicate", again.text

    # A delivery whose commit cannot be fetched is recorded with the reason, and may be redelivered.
    headers, payload = push_delivery("github", co.url, before, "f" * 40)
    resp = deliver(farm, "github", headers, payload, secret_of(farm))
    where = resp.json()["outcome"]
    failed = wait_until(lambda: (o := farm.api("GET", where).json())["result"] != "processing" and o, 60,
                        what="the failed delivery's outcome")
    assert failed["status"] == 502 and "cannot read the announced commit" in failed["error"], failed
    assert deliver(farm, "github", headers, payload, secret_of(farm)).json()["result"] == "accepted"
    missing = farm.api("GET", "/api/v1/hooks/deliveries/github/no-such-delivery")
    assert missing.status_code == 404 and "no github delivery 'no-such-delivery'" in missing.text


class _Hanging(BaseHTTPRequestHandler):
    """A git server that never answers: a first fetch of a huge repository, as the farm sees it."""

    def do_GET(self):
        time.sleep(120)

    def log_message(self, *args):
        pass


def test_a_delivery_the_farm_stops_during_is_recorded_and_can_be_redelivered(fresh_farm, monkeypatch, git_server,
                                                                             tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hanging)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("BUILDFARM_WEBHOOK_REPLY_SECONDS", "1")
    farm = fresh_farm()
    try:
        url = f"http://127.0.0.1:{server.server_port}/huge.git"
        headers, payload = push_delivery("github", url, ZERO, "a" * 40)
        resp = deliver(farm, "github", headers, payload, secret_of(farm))
        assert resp.status_code == 202 and resp.json()["result"] == "accepted", resp.text
        where = resp.json()["outcome"]
        again = deliver(farm, "github", headers, payload, secret_of(farm))
        assert again.status_code == 202 and again.json()["result"] == "processing", again.text

        farm.proc.terminate()  # the farm stops while the fetch hangs
        assert farm.proc.wait(30) == 0
        farm.start()
        outcome = farm.api("GET", where).json()
        assert outcome["status"] == 503 and "stopped before it finished this delivery" in outcome["error"], outcome
        assert deliver(farm, "github", headers, payload, secret_of(farm)).json()["result"] == "accepted"
    finally:
        server.shutdown()
