"""Issue 10's hostile input on a real farm: changes without a token refused before their body is
read, bodies limited per route, bad fields and artifact paths answered 4xx (never 5xx), nested
YAML refused at once, forged triggers refused, and lists of builds that stay small."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import quote

import pytest
import redis

from buildfarm.records import build_key, new_agent_token, token_digest
from tests.conftest import IMAGE

MB = 1024 * 1024


@pytest.fixture(scope="module")
def repo(git_server):
    return git_server.make_repo("hostile", {"README": "hostile input\n"})


@pytest.fixture(scope="module")
def submitter(farm) -> str:
    made = farm.cli("token", "create", "sam", "--role", "submitter", "--json")
    assert made.returncode == 0, made.stderr.decode()
    return json.loads(made.stdout)["token"]


def raw_request(farm, method: str, path: str, headers: dict[str, str], body: bytes = b"",
                chunks: list[bytes] = ()) -> tuple[int, dict]:
    """Send a request by hand: its headers, `body` (which may be shorter than the Content-Length
    the headers claim: the farm must answer without waiting for the rest), then `chunks` in the
    chunked encoding; returns the status and JSON answer the farm sent."""
    with socket.create_connection(("127.0.0.1", farm.port), timeout=20) as s:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        try:
            s.sendall(head.encode() + b"\r\n" + body)
            for c in chunks:
                s.sendall(f"{len(c):x}\r\n".encode() + c + b"\r\n")
        except OSError:
            pass  # the farm answered and closed before taking all of it
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            got = s.recv(65536)
            if not got:
                break
            answer += got
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload[:_length(answer)] or b"{}")


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_change_without_a_token_is_refused_before_its_body_is_read(farm):
    # 100 MB announced, 1 KB sent: the answer comes without the rest.
    status, answer = raw_request(farm, "POST", "/api/v1/builds",
                                 {"Content-Type": "application/json", "Content-Length": str(100 * MB)}, b"{" * 1024)
    assert status == 401 and "needs an API token" in answer["error"], answer
    status, answer = raw_request(farm, "POST", "/api/v1/pipeline-runs",
                                 {"Authorization": "Bearer bf_nope", "Content-Length": str(100 * MB)}, b" " * 1024)
    assert status == 401 and "not valid" in answer["error"], answer


def test_bodies_are_limited_per_route_while_they_stream(farm, submitter):
    token = {"Authorization": f"Bearer {submitter}", "Content-Type": "application/json"}
    # Announced too large: refused before any of it is read.
    status, answer = raw_request(farm, "POST", "/api/v1/builds", {**token, "Content-Length": str(2 * MB)}, b"{")
    assert status == 413 and answer["error"] == ("the request body is larger than 1 MB, the limit for a build spec"), answer
    status, answer = raw_request(farm, "POST", "/hooks/github",
                                 {"X-Hub-Signature-256": "sha256=00", "Content-Length": str(250 * MB)}, b"{")
    assert status == 413 and "5 MB, the limit for a webhook delivery" in answer["error"], answer
    # Sent without a length (chunked): counted as it comes, refused once past the limit.
    status, answer = raw_request(farm, "POST", "/api/v1/builds", {**token, "Transfer-Encoding": "chunked"},
                                 chunks=[b" " * 256 * 1024] * 8 + [b""])
    assert status == 413 and "1 MB, the limit for a build spec" in answer["error"], answer
    status, answer = raw_request(farm, "PUT", "/api/v1/secrets/BIG", {**farm.headers, "Transfer-Encoding": "chunked"},
                                 chunks=[b" " * 32 * 1024] * 4 + [b""])
    assert status == 413 and "64 KB, the limit for this route" in answer["error"], answer
    # An unsigned webhook is refused before its body is read.
    status, answer = raw_request(farm, "POST", "/hooks/github", {"Transfer-Encoding": "chunked"}, chunks=[b"{"])
    assert status == 401 and "missing X-Hub-Signature-256" in answer["error"], answer
    assert farm.api("GET", "/healthz").status_code == 200


def spec(repo: str, **fields) -> dict:
    return {"repo": repo, "image": IMAGE, "steps": ["true"], **fields}


def test_bad_fields_are_refused_with_a_4xx_naming_them(farm, repo):
    cases = [(spec("git://127.0.0.1/a\x00b.git"), "repo", "NUL byte"),
             (spec(repo, steps=["echo ok", "x" * (64 * 1024 + 1)]), "steps.1", "at most 65536 characters"),
             (spec("git://127.0.0.1/" + "a" * 200_000), "repo", "at most 2048 characters"),
             (spec(repo, env={"A": "1\x002"}), "env.A", "NUL byte"),
             (spec(repo, trigger={"kind": "cli", "detail": {"k": "v" * 5000}}), "trigger.detail.k", "at most 2048")]
    for body, field, message in cases:
        r = farm.api("POST", "/api/v1/builds", json=body)
        assert r.status_code == 422, (field, r.status_code, r.text[:300])
        [detail] = r.json()["details"]
        assert detail["field"] == field and message in detail["message"], detail
    # A lone surrogate, as JSON can carry it and UTF-8 cannot.
    raw = ('{"repo": "%s", "image": "%s", "steps": ["echo \\ud800"]}' % (repo, IMAGE)).encode()
    r = farm.api("POST", "/api/v1/builds", content=raw, headers={**farm.headers, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["details"] == [
        {"field": "steps.0", "message": "is not valid Unicode text (a lone surrogate such as \\ud800); send UTF-8 text"}]
    # JSON nested deeper than Python's parser goes.
    r = farm.api("POST", "/api/v1/builds", content=b"[" * 100_000,
                 headers={**farm.headers, "Content-Type": "application/json"})
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"], r.text[:300]


def test_bad_artifact_paths_are_refused_with_a_4xx(farm, repo):
    """The agent's artifact route, with a real build token (one that waits: it never runs)."""
    r = farm.api("POST", "/api/v1/builds", json=spec(repo, resources={"cpus": 1000}, wait_for_capacity=True))
    assert r.status_code == 201, r.text
    build_id = r.json()["id"]
    token = new_agent_token()  # as a launch gives one to the build's agent
    redis.Redis.from_url(farm.redis_url()).hset(build_key(build_id), "token_sha", token_digest(token))

    def put(path: str):
        return farm.api("PUT", f"/api/v1/agent/builds/{build_id}/artifacts/{quote(path)}", content=b"data",
                        headers={"Authorization": f"Bearer {token}"})

    assert put("out/a").status_code == 200
    for path, message in [("out/a/b", "goes through a file this build uploaded before"),
                          ("out", "is a directory of artifacts"),
                          ("x" * 300, "is longer than 255 bytes"),
                          ("/".join(["d"] * 2000), "is longer than 1024 bytes"),
                          ("a\x00b", "NUL byte")]:
        r = put(path)
        assert r.status_code == 400 and message in r.json()["error"], (path[:20], r.status_code, r.text[:300])
    assert farm.cli("cancel", build_id).returncode == 0


def test_nested_yaml_is_refused_at_once_naming_the_limit(farm, submitter):
    for source in ("[" * 120_000, "jobs:\n" + "".join("  " * i + "- a:\n" for i in range(1, 60))):
        started = time.monotonic()
        r = farm.api("POST", "/api/v1/pipeline-runs", json={"source": source},
                     headers={"Authorization": f"Bearer {submitter}"})
        assert r.status_code == 422, r.text[:300]
        assert "nested more than 32 levels deep" in r.json()["error"], r.text[:300]
        assert time.monotonic() - started < 10  # not minutes (the limit itself is checked in microseconds)


def test_a_submitter_cannot_forge_a_builds_trigger(farm, repo, submitter):
    as_sam = {"Authorization": f"Bearer {submitter}"}
    for kind in ("webhook", "hook", "pipeline", "rebuild"):
        r = farm.api("POST", "/api/v1/builds", json=spec(repo, trigger={"kind": kind, "user": "admin"}), headers=as_sam)
        assert r.status_code == 403, r.text
        assert f"trigger kind {kind!r} is recorded by the farm itself" in r.json()["error"]
    # Another user's name is not recorded: the build is the token's, with the detail the client gave.
    r = farm.api("POST", "/api/v1/builds", headers=as_sam,
                 json=spec(repo, trigger={"kind": "jenkins", "user": "admin", "detail": {"job": "nightly"}}))
    assert r.status_code == 201, r.text
    trigger = r.json()["spec"]["trigger"]
    assert trigger == {"kind": "jenkins", "user": "sam", "url": None,
                       "detail": {"job": "nightly"}}
    listed = farm.cli("list", "--user", "admin", "--json")
    assert r.json()["id"] not in [b["id"] for b in json.loads(listed.stdout)]
    assert r.json()["id"] in farm.cli("list", "--user", "sam").stdout.decode()
    # The post-receive hook's token records pushes, with the pusher as the user.
    made = json.loads(farm.cli("token", "create", "hook-1", "--role", "submitter", "--hook", "--json").stdout)
    r = farm.api("POST", "/api/v1/builds", headers={"Authorization": f"Bearer {made['token']}"},
                 json=spec(repo, trigger={"kind": "hook", "user": "pat", "detail": {"branch": "main"}}))
    assert r.status_code == 201 and r.json()["spec"]["trigger"]["user"] == "pat", r.text
    assert r.json()["submitted_by"] == "hook-1"


def test_lists_show_summaries_and_the_build_its_whole_spec(farm, repo):
    steps = [f"echo {i} " + "x" * 60_000 for i in range(15)]  # 900 KB of steps
    r = farm.api("POST", "/api/v1/builds", json=spec(repo, steps=steps, resources={"cpus": 1000},
                                                     wait_for_capacity=True))
    assert r.status_code == 201, r.text
    build_id = r.json()["id"]
    listed = farm.api("GET", "/api/v1/builds?limit=50")
    assert len(listed.content) < 100_000, len(listed.content)
    [b] = [b for b in listed.json()["builds"] if b["id"] == build_id]
    assert b["spec"]["run"].startswith("echo 0 xxx") and len(b["spec"]["run"]) == 200
    assert b["spec"]["repo"] == repo and b["spec"]["image"] == IMAGE and b["spec"]["resources"]["cpus"] == 1000
    assert "steps" not in b["spec"] and b["spec"]["summary"] is True
    assert farm.api("GET", f"/api/v1/builds/{build_id}").json()["spec"]["steps"] == steps
    queue = farm.api("GET", "/api/v1/queue")
    assert len(queue.content) < 100_000 and build_id in queue.text
    out = farm.cli("list", "--state", "queued")
    assert out.returncode == 0 and build_id in out.stdout.decode() and f"{repo}@HEAD" in out.stdout.decode()
    assert farm.cli("cancel", build_id).returncode == 0
