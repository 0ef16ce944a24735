"""Issue 10: secrets have a scope. On a real farm (`buildfarm up`), with repositories served by
`git daemon`: who may use a secret (repositories, branches, pipelines, roles, users), refused at
submit with the secret and its scope named, for the CLI, the API, webhooks, the git hook and
pipeline runs; unscoped secrets are for admins only, and the farm says so at start."""

from __future__ import annotations

import hashlib
import json

import pytest

from buildfarm.scopes import Origin, SecretScope, refusal
from buildfarm.spec import BuildSpec

from .conftest import IMAGE, FarmProcess, wait_until
from .test_hooks_e2e import Checkout, deliver, install, push_delivery, queued_ids, secret_of

VALUE = "s3cret-Upload-Zq9-value"
DIGEST = hashlib.sha256(VALUE.encode()).hexdigest()
# Succeeds only when the build was given the value; prints it, which the log masks.
CHECK = f'[ "$(printf %s "$UPLOAD_KEY" | sha256sum | cut -d" " -f1)" = {DIGEST} ] && echo "have $UPLOAD_KEY"'


@pytest.fixture(scope="module")
def pipelines_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pipelines")


@pytest.fixture(scope="module")
def farm(tmp_path_factory, docker_engine, redis_binary, pipelines_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BUILDFARM_WEBHOOK_REPLY_SECONDS", "60")  # wait for each delivery's outcome
        mp.setenv("BUILDFARM_PIPELINES", str(pipelines_dir))
        f = FarmProcess(tmp_path_factory.mktemp("farm") / "data")
    yield f
    f.stop()


@pytest.fixture(scope="module")
def tokens(farm):
    out = {}
    for user in ("alice", "bob"):
        made = farm.cli("token", "create", user, "--role", "submitter", "--json")
        assert made.returncode == 0, made.stderr.decode()
        out[user] = json.loads(made.stdout)["token"]
    return out


@pytest.fixture(scope="module")
def app(git_server):
    """A repository with main and a feature branch."""
    return git_server.make_repo("scoped-app", {"README": "app\n"}, branches={"feature": {"README": "wip\n"}},
                                tags=["v1"])


def as_user(tokens, user):
    return {"BUILDFARM_TOKEN": tokens[user]}


def submit(farm, env, repo, *options):
    return farm.cli("submit", "--repo", repo, "--image", IMAGE, "--cpus", "0.25", "--mem", "128",
                    "--secret", "UPLOAD_KEY", *options, "--", "sh", "-c", CHECK, env=env)


def built(farm, out) -> str:
    """The id of a submitted build, once it succeeded."""
    assert out.returncode == 0, out.stderr.decode()
    bid = out.stdout.decode().strip()
    b = farm.wait_done(bid)
    assert b["state"] == "succeeded", b
    return bid


def set_secret(farm, *scope):
    out = farm.cli("secret", "set", "UPLOAD_KEY", *scope, input_=VALUE.encode())
    assert out.returncode == 0, out.stderr.decode()
    return out.stderr.decode()


def listed(farm, name):
    out = farm.cli("secret", "list", "--json")
    assert out.returncode == 0, out.stderr.decode()
    return next(s for s in json.loads(out.stdout) if s["name"] == name)


def test_a_secret_in_scope_reaches_the_build_masked_and_out_of_scope_is_refused(farm, tokens, app, git_server):
    pattern = app.rsplit("/", 1)[0] + "/scoped-*"
    said = set_secret(farm, "--repo", pattern, "--branch", "main", "--branch", "release/*", "--user", "alice")
    assert f"usable by repositories {pattern} on branches main, release/*, asked for by users alice" in said
    entry = listed(farm, "UPLOAD_KEY")
    assert entry["scope"] == {"repos": [pattern], "branches": ["main", "release/*"], "pipelines": [], "roles": [],
                              "users": ["alice"]}
    assert VALUE not in json.dumps(entry)

    bid = built(farm, submit(farm, as_user(tokens, "alice"), app, "--ref", "main"))
    assert "have ***" in farm.log_text(bid).decode() and VALUE not in farm.log_text(bid).decode()

    scope_text = f"secret UPLOAD_KEY may be used only by repositories {pattern} on branches main, release/*"
    other = git_server.make_repo("elsewhere", {"README": "x\n"})
    feature_tip = git_server.head("scoped-app", "feature")
    main_tip = git_server.head("scoped-app", "main")
    refused = {
        "repository": (submit(farm, as_user(tokens, "alice"), other, "--ref", "main"),
                       f"this build is repo {other} ref main, submitted by alice (submitter): its repository "
                       f"is not one of them"),
        "branch": (submit(farm, as_user(tokens, "alice"), app, "--ref", "feature"), "branch feature is not one of them"),
        "commit alone": (submit(farm, as_user(tokens, "alice"), app, "--commit", main_tip),
                         f"it names no branch (commit {main_tip[:12]} alone is not a branch the farm can verify)"),
        "commit not the tip": (submit(farm, as_user(tokens, "alice"), app, "--ref", "main", "--commit", feature_tip),
                               f"commit {feature_tip[:12]} is not the tip of branch main"),
        "a tag is no branch": (submit(farm, as_user(tokens, "alice"), app, "--ref", "v1"),
                               f"ref v1 is not a branch of {app}"),
        "user": (submit(farm, as_user(tokens, "bob"), app, "--ref", "main"),
                 "bob (submitter) is not among the users or roles it names"),
    }
    for what, (out, reason) in refused.items():
        err = out.stderr.decode()
        assert out.returncode == 77, (what, out.returncode, err)
        assert scope_text in err and reason in err, (what, err)
    # The API says the same, with 403 and the field.
    spec = {"repo": app, "ref": "main", "image": IMAGE, "steps": ["true"], "secrets": ["UPLOAD_KEY"]}
    api = farm.api("POST", "/api/v1/builds", json=spec, headers={"Authorization": f"Bearer {tokens['bob']}"})
    assert api.status_code == 403 and api.json()["details"][0]["field"] == "secrets"
    assert scope_text in api.json()["error"]
    assert not [b for b in json.loads(farm.cli("list", "--json", "--user", "bob").stdout)]  # nothing queued

    # A role admits that role and those above; the scope changes without the value being sent again.
    changed = farm.cli("secret", "scope", "UPLOAD_KEY", "--repo", pattern, "--branch", "main", "--role", "submitter")
    assert changed.returncode == 0, changed.stderr.decode()
    assert listed(farm, "UPLOAD_KEY")["scope"]["roles"] == ["submitter"]
    by_role = built(farm, submit(farm, as_user(tokens, "bob"), app, "--ref", "main"))  # the value set before
    rebuilt = farm.cli("rebuild", by_role, "--wait", env=as_user(tokens, "bob"))
    assert rebuilt.returncode == 0, rebuilt.stderr.decode()


def test_an_unscoped_secret_is_for_admins_only(farm, tokens, app):
    out = farm.cli("secret", "set", "UPLOAD_KEY", input_=VALUE.encode())  # keeps the scope it has
    assert out.returncode == 0 and listed(farm, "UPLOAD_KEY")["scope"] is not None
    assert farm.cli("secret", "scope", "UPLOAD_KEY", "--unscoped").returncode == 0
    entry = listed(farm, "UPLOAD_KEY")
    assert entry["scope"] is None and entry["usable"] == "by admins' builds only (unscoped)"
    no_flags = farm.cli("secret", "scope", "UPLOAD_KEY")
    assert no_flags.returncode == 2 and "give the scope" in no_flags.stderr.decode()

    built(farm, submit(farm, {}, app))
    refused = submit(farm, as_user(tokens, "alice"), app, "--ref", "main")
    assert refused.returncode == 77
    assert ("secret UPLOAD_KEY is not scoped yet, so only admins' builds may use it; an admin scopes it with "
            "`buildfarm secret scope UPLOAD_KEY --repo URL-GLOB --branch BRANCH`") in refused.stderr.decode()


def test_webhook_and_hook_builds_get_a_secret_only_on_its_branches(farm, tokens, git_server, tmp_path):
    build_file = json.dumps({"builds": {"upload": {"image": IMAGE, "steps": [CHECK], "secrets": ["UPLOAD_KEY"],
                                                   "resources": {"cpus": 0.25, "mem": 128}}}})
    co = Checkout(git_server, tmp_path, "scoped-hooked", {".buildfarm.yml": build_file})
    set_secret(farm, "--repo", co.url, "--branch", "main")
    before = co.git("rev-parse", "HEAD")

    # A webhook push of main: built, with the secret.
    main_sha = co.commit({"a": "1"})
    co.push("main")
    resp = deliver(farm, "github", *push_delivery("github", co.url, before, main_sha, "main"), secret_of(farm))
    assert resp.status_code == 200 and resp.json()["result"] == "queued", resp.text
    b = farm.wait_done(resp.json()["builds"][0]["id"])
    assert b["state"] == "succeeded", b
    assert "have ***" in farm.log_text(b["id"]).decode()

    # A webhook push of another branch: skipped, saying why, as a fork's pull request is.
    feature_sha = co.commit({"b": "2"}, branch="feature")
    co.push("feature")
    resp = deliver(farm, "github", *push_delivery("github", co.url, main_sha, feature_sha, "feature"),
                   secret_of(farm))
    got = resp.json()
    assert resp.status_code == 200 and got["result"] == "nothing to build" and got["builds"] == [], got
    assert got["skipped"][0]["name"] == "upload"
    assert ("secret UPLOAD_KEY may be used only by repositories " + co.url + " on branches main, asked for by "
            "webhooks or admins") in got["skipped"][0]["reason"]
    assert "branch feature is not one of them" in got["reason"]

    # Scoped to a person only: no webhook build may use it (no farm user is behind a webhook).
    set_secret(farm, "--user", "alice")
    co.git("checkout", "-q", "main")
    next_sha = co.commit({"c": "3"})
    co.push("main")
    resp = deliver(farm, "github", *push_delivery("github", co.url, main_sha, next_sha, "main"), secret_of(farm))
    assert resp.json()["result"] == "nothing to build", resp.text
    assert "a webhook build has no farm user behind it" in resp.json()["reason"]

    # The git hook submits with its token (a submitter, git-hook): its name must be in the scope.
    made = farm.cli("token", "create", "git-hook", "--role", "submitter", "--hook")
    install(farm, co, made.stdout.decode().strip())
    set_secret(farm, "--repo", co.url, "--branch", "main", "--user", "git-hook")
    co.commit({"d": "4"})
    said = co.push("main")
    ids = queued_ids(said)
    assert len(ids) == 1, said
    assert farm.wait_done(ids[0])["state"] == "succeeded"
    assert "have ***" in farm.log_text(ids[0]).decode()
    co.commit({"e": "5"}, branch="topic")
    said = co.push("topic")
    assert not queued_ids(said)
    assert "nothing to build for refs/heads/topic: secret UPLOAD_KEY may be used only" in said
    assert "branch topic is not one of them" in said


def test_pipelines_use_a_secret_only_when_named_and_from_the_farms_own_file(farm, tokens, app, pipelines_dir):
    text = (f"name: deploy\nrepo: {app}\nref: main\nimage: {IMAGE}\njobs:\n  upload:\n"
            f"    resources: {{cpus: 0.25, mem: 128}}\n    secrets: [UPLOAD_KEY]\n    steps:\n      - {json.dumps(CHECK)}\n")
    (pipelines_dir / "deploy.yaml").write_text(text)
    set_secret(farm, "--repo", app, "--branch", "main", "--pipeline", "deploy")
    alice = {"Authorization": f"Bearer {tokens['alice']}"}

    def run(body) -> dict:
        started = farm.api("POST", "/api/v1/pipeline-runs", json=body, headers=alice)
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        return wait_until(lambda: (r := farm.api("GET", f"/api/v1/pipeline-runs/{run_id}").json())["state"]
                          != "running" and r, 120, 0.3, what="the run to end")

    ours = run({"pipeline": "deploy"})
    assert ours["state"] == "succeeded", ours
    assert "have ***" in farm.log_text(ours["jobs"][0]["build_id"]).decode()
    # The same name posted with another text (here one byte differs) is not the farm's pipeline.
    posted = run({"source": text.replace("mem: 128", "mem: 129")})
    job = posted["jobs"][0]
    assert posted["state"] == "failed" and job["state"] == "error" and job["build_id"] is None
    assert ("could not submit: secret UPLOAD_KEY may be used only by repositories " + app + " on branches main, "
            "asked for by pipelines deploy, webhooks or admins") in job["reason"]
    assert "a pipeline posted with its run is not one of the farm's pipeline files" in job["reason"]


def test_the_farm_names_its_unscoped_secrets_at_start(fresh_farm):
    f = fresh_farm()
    assert f.cli("secret", "set", "OLD_KEY", input_=VALUE.encode()).returncode == 0
    assert f.cli("secret", "set", "NEW_KEY", "--role", "submitter", input_=VALUE.encode()).returncode == 0
    f.stop()
    f.start()
    line = next(ln for ln in f.up_log().splitlines() if "secrets without a scope" in ln)
    assert "usable by admins' builds only until an admin scopes them" in line
    assert line.endswith(": OLD_KEY")


def test_scope_rules_without_a_farm():
    spec = BuildSpec(repo="git://git.example/app.git", ref="main", image="i", steps=["true"], secrets=["K"])
    scope = SecretScope(repos=["git://git.example/*"], branches=["main"])
    on_main = lambda: ("main", "")  # noqa: E731
    hook = Origin("webhook", "alice", branch="main")
    assert refusal("K", scope, spec, hook, on_main) is None
    # A GitHub user called admin is no farm admin; dot segments leave a repository pattern.
    assert refusal("K", SecretScope(users=["admin"]), spec, Origin("webhook", "admin"), on_main)
    dotted = spec.model_copy(update={"repo": "git://git.example/app/../../evil/x.git"})
    assert "its repository is not one of them" in refusal("K", scope, dotted, hook, on_main)
    # The branch is asked for only when the scope names branches, and after the cheaper checks.
    asked = []
    refusal("K", SecretScope(users=["alice"]), spec, Origin.token("alice", "submitter"), lambda: asked.append(1))
    refusal("K", scope, spec, Origin.token("bob", "submitter"), lambda: asked.append(1))
    assert asked == []
    assert refusal("K", SecretScope(roles=["submitter"]), spec, Origin.token("root", "admin"), on_main) is None
    with pytest.raises(ValueError, match="unknown role 'owner'"):
        SecretScope(roles=["owner"])
    with pytest.raises(ValueError, match="'al ice' is not a token name"):
        SecretScope(users=["alice", "al ice"])
    named = SecretScope(roles=["viewer", "viewer"], users=["alice", "bob", "alice"])
    assert (named.roles, named.users) == (["viewer"], ["alice", "bob"])
