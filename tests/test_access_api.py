"""Issue 4's API on a real farm: tokens and roles on every route, secrets masked in logs, list
filters and paging, rebuild, log ranges and Server-Sent Events, metrics and throughput."""

from __future__ import annotations

import hashlib
import json
import re

import httpx
import pytest
import redis
from cryptography.fernet import Fernet

from tests.conftest import IMAGE

SECRET_VALUE = "hunter2-Zq9-very-secret"


@pytest.fixture(scope="module")
def repo(git_server):
    return git_server.make_repo("access", {"README": "access tests\n"})


@pytest.fixture(scope="module")
def roles(farm):
    """A token per role, made with the CLI as an admin would."""
    out = {}
    for role in ("viewer", "submitter"):
        made = farm.cli("token", "create", f"{role}-1", "--role", role, "--json")
        assert made.returncode == 0, made.stderr.decode()
        out[role] = json.loads(made.stdout)["token"]
    out["admin"] = farm.token
    return out


def _routes(farm):
    """(method, path) of every user route in the OpenAPI document, with path parameters filled."""
    doc = httpx.get(farm.url + "/openapi.json").json()
    for path, ops in doc["paths"].items():
        if not path.startswith("/api/v1/") or path.startswith("/api/v1/agent/") or path == "/api/v1/session":
            continue
        for method in ops:
            yield method.upper(), re.sub(r"\{[^}]+\}", "x1", path)


def test_every_route_needs_a_token_and_roles_are_enforced(farm, roles):
    routes = list(_routes(farm))
    assert len(routes) >= 15
    for method, path in routes:
        r = httpx.request(method, farm.url + path, json={})
        assert r.status_code == 401, (method, path, r.status_code)
        assert "token" in r.json()["error"]
        bad = httpx.request(method, farm.url + path, json={}, headers={"Authorization": "Bearer bf_nope"})
        assert bad.status_code == 401, (method, path)
    viewer = {"Authorization": f"Bearer {roles['viewer']}"}
    submitter = {"Authorization": f"Bearer {roles['submitter']}"}
    for method, path in routes:
        as_viewer = httpx.request(method, farm.url + path, json={}, headers=viewer)
        if method == "GET" and not path.startswith(("/api/v1/tokens", "/api/v1/secrets")):
            assert as_viewer.status_code != 403, (method, path)
        else:
            assert as_viewer.status_code == 403, (method, path, as_viewer.status_code)
            assert "viewer-1 is a viewer" in as_viewer.json()["error"]
        if path.startswith(("/api/v1/tokens", "/api/v1/secrets")):
            assert httpx.request(method, farm.url + path, json={}, headers=submitter).status_code == 403


def test_viewer_cannot_submit_or_cancel_from_the_cli(farm, roles, repo):
    bid = farm.submit(repo, "sleep", "30", options=("--cpus", "0.25", "--mem", "64"))
    env = {"BUILDFARM_TOKEN": roles["viewer"]}
    sub = farm.cli("submit", "--repo", repo, "--image", IMAGE, "--", "true", env=env)
    assert sub.returncode == 77 and "needs the submitter role" in sub.stderr.decode()
    can = farm.cli("cancel", bid, env=env)
    assert can.returncode == 77
    assert farm.cli("status", bid, "--json", env=env).returncode == 0  # viewers read
    assert farm.cli("cancel", bid, env={"BUILDFARM_TOKEN": roles["submitter"]}).returncode == 0
    assert farm.build(bid)["state"] == "cancelled"


def test_a_revoked_token_stops_working_and_agent_tokens_are_not_user_tokens(farm, repo):
    made = json.loads(farm.cli("token", "create", "short-lived", "--role", "viewer", "--json").stdout)
    h = {"Authorization": f"Bearer {made['token']}"}
    assert farm.api("GET", "/api/v1/whoami", headers=h).json() == {"user": "short-lived", "role": "viewer"}
    assert farm.cli("token", "revoke", "short-lived").returncode == 0
    assert farm.api("GET", "/api/v1/whoami", headers=h).status_code == 401
    names = [t["user"] for t in json.loads(farm.cli("token", "list", "--json").stdout)]
    assert "short-lived" not in names and "admin" in names
    dup = farm.cli("token", "create", "admin", "--role", "viewer")
    assert dup.returncode == 2 and "exists" in dup.stderr.decode()


def test_secrets_reach_the_build_and_are_masked_in_its_log(farm, repo):
    put = farm.cli("secret", "set", "UPLOAD_KEY", input_=SECRET_VALUE.encode())
    assert put.returncode == 0, put.stderr.decode()
    assert "UPLOAD_KEY" in farm.cli("secret", "list").stdout.decode()
    half = len(SECRET_VALUE) // 2
    digest = hashlib.sha256(SECRET_VALUE.encode()).hexdigest()
    # The value is printed whole, then in two writes half a second apart; the spec never holds it.
    script = (f'[ "$(printf %s "$UPLOAD_KEY" | sha256sum | cut -d" " -f1)" = {digest} ] && echo "key is $UPLOAD_KEY"; '
              f'printf "split: "; printf %s "$UPLOAD_KEY" | head -c {half}; sleep 0.5; '
              f'printf %s "$UPLOAD_KEY" | tail -c +{half + 1}; echo " end"')
    bid = farm.submit(repo, "sh", "-c", script, options=("--secret", "UPLOAD_KEY", "--cpus", "0.25"))
    b = farm.wait_done(bid)
    assert b["state"] == "succeeded", b
    log = farm.log_text(bid).decode()
    assert "key is ***" in log and "split: *** end" in log
    assert SECRET_VALUE not in log and SECRET_VALUE[:half] + SECRET_VALUE[half:] not in log
    assert SECRET_VALUE not in json.dumps(b)  # the record keeps the name only
    assert b["spec"]["secrets"] == ["UPLOAD_KEY"]
    missing = farm.cli("submit", "--repo", repo, "--image", IMAGE, "--secret", "NOPE", "--", "true")
    assert missing.returncode == 2 and "no secret named NOPE" in missing.stderr.decode()
    short = farm.cli("secret", "set", "TINY", input_=b"ab")
    assert short.returncode == 2 and "shorter than" in short.stderr.decode()


def test_secrets_are_encrypted_in_redis_and_a_replaced_key_fails_the_build_clearly(farm, repo):
    r = redis.Redis.from_url(farm.redis_url(), decode_responses=True)
    assert farm.cli("secret", "set", "SIGNING_KEY", input_=SECRET_VALUE.encode()).returncode == 0
    stored = r.hget("bf:secrets", "SIGNING_KEY")
    assert stored.startswith("fernet:") and SECRET_VALUE not in stored
    assert oct((farm.data_dir / "secrets.key").stat().st_mode & 0o777) == "0o600"

    # As if the farm's key had been replaced since the secret was set (restored Redis, new data dir):
    r.hset("bf:secrets", "SIGNING_KEY", "fernet:" + Fernet(Fernet.generate_key()).encrypt(b"x" * 8).decode())
    out = farm.cli("submit", "--repo", repo, "--image", IMAGE, "--secret", "SIGNING_KEY", "--cpus", "0.25",
                   "--wait", "--", "sh", "-c", "echo never")
    assert out.returncode == 125, out.stderr.decode()
    assert "secret SIGNING_KEY cannot be decrypted with this farm's key" in out.stderr.decode()
    assert "buildfarm secret set SIGNING_KEY" in out.stderr.decode()


def test_list_filters_pages_and_rebuild(farm, roles, repo, git_server):
    other = git_server.make_repo("access-other", {"README": "x\n"})
    sub = {"BUILDFARM_TOKEN": roles["submitter"]}
    first = farm.cli("submit", "--repo", other, "--image", IMAGE, "--cpus", "0.25", "--", "true", env=sub)
    bid = first.stdout.decode().strip()
    farm.wait_done(bid)
    got = farm.api("GET", "/api/v1/builds", params={"repo": other}).json()
    assert [b["id"] for b in got["builds"]] == [bid] and got["total"] == 1
    assert got["builds"][0]["submitted_by"] == "submitter-1"
    re_out = farm.cli("rebuild", bid, "--wait", env=sub)
    assert re_out.returncode == 0, re_out.stderr.decode()
    page = farm.api("GET", "/api/v1/builds", params={"repo": other, "limit": 1}).json()
    assert page["total"] == 2 and len(page["builds"]) == 1
    newest = page["builds"][0]
    assert newest["id"] != bid and newest["spec"]["trigger"]["kind"] == "rebuild"
    assert newest["spec"]["trigger"]["detail"]["rebuild_of"] == bid
    second = farm.api("GET", "/api/v1/builds", params={"repo": other, "limit": 1, "offset": 1}).json()
    assert [b["id"] for b in second["builds"]] == [bid]
    rebuilt = farm.api("GET", "/api/v1/builds", params={"trigger": "rebuild", "repo": other}).json()
    assert [b["id"] for b in rebuilt["builds"]] == [newest["id"]]
    ok = farm.api("GET", "/api/v1/builds", params={"repo": other, "state": "succeeded"}).json()
    assert ok["total"] == 2
    listed = farm.cli("list", "--repo", other, "--trigger", "cli")
    assert bid.encode() in listed.stdout and newest["id"].encode() not in listed.stdout


def test_log_ranges_and_server_sent_events(farm, repo):
    bid = farm.submit(repo, "sh", "-c", "for i in 1 2 3; do echo line-$i; sleep 0.3; done; printf 'caf\\303\\251\\n'",
                      options=("--cpus", "0.25"))
    # Follow over SSE while the build runs; the stream ends with an `end` event.
    with httpx.stream("GET", f"{farm.url}/api/v1/builds/{bid}/log/events", headers=farm.headers,
                      timeout=httpx.Timeout(10, read=60)) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = _sse(resp.iter_lines())
    logs = [e for e in events if e.get("event") == "log"]
    text = "".join(e["data"] for e in logs)
    assert "line-1\nline-2\nline-3\ncafé" in text
    assert events[-1]["event"] == "end"  # with the build's outcome: a client needs no other request
    outcome = json.loads(events[-1]["data"])
    assert (outcome["state"], outcome["exit_code"]) == ("succeeded", 0) and outcome["reason"]
    full = farm.log_text(bid)
    assert text == full.decode()
    part = farm.api("GET", f"/api/v1/builds/{bid}/log", params={"offset": 5, "length": 10})
    assert part.status_code == 200 and part.content == full[5:15]
    assert int(part.headers["X-Log-Size"]) == len(full)
    # A reconnecting EventSource sends Last-Event-ID (a byte offset) and gets the rest only.
    after = int(logs[0]["id"])
    resumed = farm.api("GET", f"/api/v1/builds/{bid}/log/events", headers={**farm.headers, "Last-Event-ID": str(after)})
    rest = "".join(e["data"] for e in _sse(resumed.text.split("\n")) if e.get("event") == "log")
    assert rest == full[after:].decode()


def test_a_revoked_token_ends_its_open_log_streams(farm, repo):
    made = json.loads(farm.cli("token", "create", "streamer", "--role", "viewer", "--json").stdout)
    h = {"Authorization": f"Bearer {made['token']}"}
    bid = farm.submit(repo, "sh", "-c", "echo started; sleep 300")
    timeout = httpx.Timeout(10, read=60)  # without the re-check, both streams would wait out the build
    try:
        with httpx.stream("GET", f"{farm.url}/api/v1/builds/{bid}/log/events", headers=h, timeout=timeout) as sse, \
                httpx.stream("GET", f"{farm.url}/api/v1/builds/{bid}/log", params={"follow": "true"}, headers=h,
                             timeout=timeout) as raw:
            lines = sse.iter_lines()
            seen = []
            for line in lines:
                seen.append(line)
                if "started" in line:
                    break
            raw_bytes = raw.iter_bytes()
            first = b""
            while b"started" not in first:
                first += next(raw_bytes)
            assert farm.cli("token", "revoke", "streamer").returncode == 0
            events = _sse(list(lines))
            rest = b"".join(raw_bytes)
        assert events[-1]["event"] == "denied" and "no longer valid" in events[-1]["data"]
        assert b"[buildfarm] build " not in rest  # it ended without the build's end line: the build still runs
        assert farm.build(bid)["state"] == "running"
        assert farm.api("GET", f"/api/v1/builds/{bid}/log/events", headers=h).status_code == 401
    finally:
        farm.cli("cancel", bid)


def _sse(lines) -> list[dict]:
    """Events of a text/event-stream (data lines joined with LF, as EventSource does)."""
    events, event = [], {}
    for line in lines:
        if line == "":
            if event:
                events.append(event)
            event = {}
            continue
        key, _, value = line.partition(": ")
        if key == "data":
            event["data"] = event["data"] + "\n" + value if "data" in event else value
        elif key in ("event", "id"):
            event[key] = value
    return events


def test_metrics_and_throughput(farm, repo):
    bid = farm.submit(repo, "true", options=("--cpus", "0.25"))
    farm.wait_done(bid)
    m = httpx.get(farm.url + "/metrics")  # open, like a Prometheus target
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    body = m.text
    succeeded = re.search(r'^buildfarm_builds\{state="succeeded"\} (\S+)$', body, re.M)
    assert succeeded and float(succeeded.group(1)) >= 1
    assert re.search(r'^buildfarm_queue_depth\{priority="high"\} \d', body, re.M)
    count = re.search(r"^buildfarm_submit_to_start_seconds_count (\S+)$", body, re.M)
    assert count and float(count.group(1)) >= 1
    assert re.search(r'^buildfarm_submit_to_start_seconds_bucket\{le="\+Inf"\} ', body, re.M)
    assert re.search(r"^buildfarm_agents 1\.0$", body, re.M)
    assert re.search(r'^buildfarm_agent_capacity\{agent="[^"]+",resource="cpus"\} ', body, re.M)
    t = farm.api("GET", "/api/v1/stats/throughput", params={"hours": 1}).json()
    assert t["bucket_seconds"] == 600 and sum(b["succeeded"] for b in t["buckets"]) >= 1


def test_dashboard_session_cookie_is_refused_from_another_origin(farm, roles, repo):
    bid = farm.submit(repo, "sleep", "30", options=("--cpus", "0.25", "--mem", "64"))
    with httpx.Client(base_url=farm.url) as browser:
        signed = browser.post("/api/v1/session", json={"token": roles["submitter"]})
        assert signed.status_code == 200 and "httponly" in signed.headers["set-cookie"].lower()
        assert browser.get("/api/v1/whoami").json()["user"] == "submitter-1"
        forged = browser.post(f"/api/v1/builds/{bid}/cancel", headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403
        ours = browser.post(f"/api/v1/builds/{bid}/cancel", headers={"Origin": farm.url})
        assert ours.status_code == 200 and ours.json()["state"] == "cancelled"
        assert browser.post("/api/v1/session", json={"token": "bf_wrong"}).status_code == 401


def test_one_time_secrets_of_a_build_are_masked_shown_as_stars_and_dropped(farm, repo):
    value = "one-time-Xy7-value"
    spec = {"repo": repo, "image": IMAGE, "resources": {"cpus": 0.25, "mem": 128},
            "steps": ['[ "$DEPLOY_KEY" = "' + value[:4] + '"' + '"' + value[4:] + '" ] && echo "have $DEPLOY_KEY"'],
            "secret_env": {"DEPLOY_KEY": value}}
    made = farm.api("POST", "/api/v1/builds", json=spec)
    assert made.status_code == 201, made.text
    bid = made.json()["id"]
    b = farm.wait_done(bid)
    assert b["state"] == "succeeded", b
    assert b["spec"]["secret_env"] == {"DEPLOY_KEY": "***"} and value not in json.dumps(b)
    assert "have ***" in farm.log_text(bid).decode()
    assert farm.redis_get(f"bf:build:{bid}:secrets") is None  # dropped when the build ended
    again = farm.api("POST", f"/api/v1/builds/{bid}/rebuild")
    assert again.status_code == 400 and "one-time secrets" in again.json()["error"]
    short = farm.api("POST", "/api/v1/builds", json={**spec, "secret_env": {"K": "abc"}})
    assert short.status_code == 400 and short.json()["details"][0]["field"] == "secret_env"
    assert "cannot be masked" in short.json()["error"]


def test_secrets_an_earlier_version_kept_in_clear_are_encrypted_at_start(fresh_farm, repo):
    farm = fresh_farm()
    redis.Redis.from_url(farm.redis_url()).hset("bf:secrets", "OLD_TOKEN", SECRET_VALUE)  # as before encryption
    farm.stop()
    farm.start()
    stored = redis.Redis.from_url(farm.redis_url(), decode_responses=True).hget("bf:secrets", "OLD_TOKEN")
    assert stored.startswith("fernet:") and SECRET_VALUE not in stored
    digest = hashlib.sha256(SECRET_VALUE.encode()).hexdigest()
    out = farm.cli("submit", "--repo", repo, "--image", IMAGE, "--secret", "OLD_TOKEN", "--cpus", "0.25", "--wait",
                   "--follow", "--", "sh", "-c", f'[ "$(printf %s "$OLD_TOKEN" | sha256sum | cut -d" " -f1)" = {digest} ]'
                                                 ' && echo "still $OLD_TOKEN"')
    assert out.returncode == 0, out.stderr.decode()
    assert b"still ***" in out.stdout
