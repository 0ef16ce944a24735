"""End to end, as a user drives it: the `buildfarm` CLI against a running farm (real Redis, the
real Docker engine, repositories served by `git daemon` on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import httpx
import pytest

from .conftest import BASE_IMAGE, IMAGE, containers_of, wait_until

pytestmark = pytest.mark.docker

APP = {
    "Makefile": "all:\n\t@echo compiling\n\t@mkdir -p dist/sub\n\t@echo release-1 > dist/app.txt\n"
                "\t@printf '\\000\\001\\377binary' > dist/sub/blob.bin\n",
    "README": "sample\n",
}


@pytest.fixture(scope="module")
def app_repo(git_server):
    return git_server.make_repo("app", APP, branches={"feature": {"README": "feature branch\n"}}, tags=["v1.0"])


def test_success_streams_the_log_live_and_exits_zero(farm, app_repo):
    out = farm.cli("submit", "--repo", app_repo, "--image", IMAGE, "--wait", "--follow", "--",
                   "sh", "-c", "echo first; sleep 1; echo second >&2; make")
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    # stdout and stderr arrive merged, in order, followed by the farm's closing line
    assert text.index("first") < text.index("second") < text.index("compiling") < text.index("build succeeded")
    assert "checked out default branch at" in text
    assert "succeeded" in out.stderr.decode()


def test_a_failing_command_gives_its_exit_code(farm, app_repo):
    out = farm.cli("submit", "--repo", app_repo, "--image", IMAGE, "--wait", "--json", "--", "sh", "-c",
                   "echo about to fail; exit 7")
    assert out.returncode == 7
    record = json.loads(out.stdout)
    assert record["state"] == "failed" and record["exit_code"] == 7
    assert [h["state"] for h in record["history"]] == ["queued", "launching", "running", "failed"]
    assert "status 7" in record["reason"]


def test_ref_tag_and_commit_are_checked_out(farm, app_repo, git_server):
    out = farm.cli("submit", "--repo", app_repo, "--ref", "feature", "--image", IMAGE, "--wait", "--follow", "--",
                   "cat", "README")
    assert out.returncode == 0 and b"feature branch" in out.stdout
    sha = git_server.head("app", "main")
    out = farm.cli("submit", "--repo", app_repo, "--commit", sha, "--image", IMAGE, "--wait", "--json", "--",
                   "git", "rev-parse", "HEAD")
    assert out.returncode == 0
    assert json.loads(out.stdout)["commit"] == sha
    out = farm.cli("submit", "--repo", app_repo, "--ref", "v1.0", "--image", IMAGE, "--wait", "--follow", "--",
                   "cat", "README")
    assert out.returncode == 0 and b"sample" in out.stdout


def test_timeout_ends_the_build_and_removes_its_container(farm, app_repo):
    out = farm.cli("submit", "--repo", app_repo, "--image", IMAGE, "--timeout", "2", "--wait", "--json", "--",
                   "sh", "-c", "echo sleeping; sleep 60")
    assert out.returncode == 124
    record = json.loads(out.stdout)
    assert record["state"] == "timed_out"
    assert "timed out after 2 s" in record["reason"]
    wait_until(lambda: not containers_of(record["id"]), 30, what="the container to be removed")
    assert b"timed out after 2 s" in farm.log_text(record["id"])


def test_cancel_in_the_middle(farm, app_repo):
    bid = farm.submit(app_repo, "sh", "-c", "echo started; sleep 120")
    wait_until(lambda: b"started" in farm.log_text(bid), 60, what="the build to start")
    assert containers_of(bid)
    out = farm.cli("cancel", bid)
    assert out.returncode == 0 and b"cancelled" in out.stdout
    waited = farm.cli("status", bid, "--wait")
    assert waited.returncode == 130
    assert farm.build(bid)["state"] == "cancelled"
    wait_until(lambda: not containers_of(bid), 30, what="the container to be removed")
    again = farm.cli("cancel", bid)
    assert again.returncode == 2 and b"already ended" in again.stderr


def test_a_long_poll_answers_when_the_state_changes(farm, app_repo):
    """`--wait` learns of the end from the farm: a status request with state_not is held until the
    build's state is another one (here: until the running build has ended), not answered at once."""
    bid = farm.submit(app_repo, "sh", "-c", "echo started; sleep 2; exit 3")
    wait_until(lambda: b"started" in farm.log_text(bid), 60, what="the build to start")
    held = farm.api("GET", f"/api/v1/builds/{bid}", params={"wait": 60, "state_not": "running"}, timeout=90)
    assert held.status_code == 200
    assert (held.json()["state"], held.json()["exit_code"]) == ("failed", 3)
    # A state the build is not in is answered at once; a bad state is refused.
    assert farm.api("GET", f"/api/v1/builds/{bid}", params={"wait": 60, "state_not": "queued"}).json()["state"] \
        == "failed"
    bad = farm.api("GET", f"/api/v1/builds/{bid}", params={"wait": 60, "state_not": "sleeping"})
    assert bad.status_code == 422 and "state_not" in bad.text


def test_cancel_a_queued_build(farm, app_repo):
    bid = farm.submit(app_repo, "true", options=("--cpus", "64", "--wait-for-capacity"))
    assert farm.build(bid)["state"] == "queued"
    assert farm.cli("cancel", bid).returncode == 0
    record = farm.build(bid)
    assert record["state"] == "cancelled" and "cancelled by" in record["reason"]


def test_artifacts_with_checksums_download_verified(farm, app_repo, tmp_path):
    out = farm.cli("submit", "--repo", app_repo, "--image", IMAGE, "--artifact", "dist/**", "--wait", "--json",
                   "--", "make")
    assert out.returncode == 0, out.stderr
    bid = json.loads(out.stdout)["id"]
    listed = json.loads(farm.cli("artifacts", bid, "--json").stdout)
    by_path = {a["path"]: a for a in listed}
    assert set(by_path) == {"dist/app.txt", "dist/sub/blob.bin"}
    blob = b"\x00\x01\xffbinary"
    assert by_path["dist/sub/blob.bin"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert by_path["dist/sub/blob.bin"]["size"] == len(blob)
    got = farm.cli("artifacts", bid, "--download", str(tmp_path / "dl"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "dl/dist/sub/blob.bin").read_bytes() == blob
    assert (tmp_path / "dl/dist/app.txt").read_text() == "release-1\n"
    only_txt = farm.cli("artifacts", bid, "--download", str(tmp_path / "txt"), "--glob", "*.txt")
    assert only_txt.returncode == 0
    assert [p.name for p in (tmp_path / "txt").rglob("*") if p.is_file()] == ["app.txt"]


def test_artifacts_that_escape_the_workspace_are_refused(farm, app_repo):
    bad = farm.cli("submit", "--repo", app_repo, "--image", IMAGE, "--artifact", "../secrets/*", "--", "true")
    assert bad.returncode == 2
    assert b"points outside the workspace" in bad.stderr
    out = farm.cli("submit", "--repo", app_repo, "--image", IMAGE, "--artifact", "out/*", "--wait", "--json", "--",
                   "sh", "-c", "mkdir out && ln -s /etc/passwd out/passwd && echo ok > out/fine.txt")
    assert out.returncode == 0
    bid = json.loads(out.stdout)["id"]
    assert [a["path"] for a in json.loads(farm.cli("artifacts", bid, "--json").stdout)] == ["out/fine.txt"]
    assert b"artifact 'out/passwd' refused: it resolves to /etc/passwd, outside the workspace" in farm.log_text(bid)


def test_artifact_globs_do_not_follow_symlinked_directories_and_stop_at_their_limit(farm, app_repo):
    script = ("mkdir -p out big && ln -s / out/root && echo ok > out/real.txt && cd big && seq 100500 | xargs touch")
    out = farm.cli("submit", "--repo", app_repo, "--image", IMAGE, "--artifact", "out/**", "--artifact",
                   "big/**/*.keep", "--wait", "--json", "--", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    bid = json.loads(out.stdout)["id"]
    assert [a["path"] for a in json.loads(farm.cli("artifacts", bid, "--json").stdout)] == ["out/real.txt"]
    log = farm.log_text(bid).decode()
    assert "artifact 'out/root' refused: it resolves to /, outside the workspace" in log
    assert ("artifact glob 'big/**/*.keep': stopped early, having visited 100000 entries of the workspace "
            "(the limit); 1 file(s) found so far are uploaded") in log


def test_a_hundred_thousand_lines_lose_none(farm, app_repo):
    out = farm.cli("submit", "--repo", app_repo, "--image", IMAGE, "--wait", "--follow", "--", "seq", "1", "100000")
    assert out.returncode == 0
    lines = [ln for ln in out.stdout.decode().splitlines() if not ln.startswith("[buildfarm]")]
    assert lines == [str(i) for i in range(1, 100001)]


def test_binary_and_non_utf8_output_survive(farm, app_repo):
    out = farm.cli("submit", "--repo", app_repo, "--image", IMAGE, "--wait", "--follow", "--", "sh", "-c",
                   r"printf 'caf\351 \000\377\376 end\n'")
    assert out.returncode == 0
    assert b"caf\xe9 \x00\xff\xfe end\n" in out.stdout


def test_second_build_of_a_repo_uses_the_mirror_cache(farm, git_server):
    url = git_server.make_repo("cached", {"f": "x\n"})
    first = farm.cli("submit", "--repo", url, "--image", IMAGE, "--wait", "--follow", "--", "true")
    assert first.returncode == 0, first.stderr.decode()
    # The farm fills the mirror in the background when the first build launches (the first build
    # itself may clone from the repository, or find the mirror already there).
    mirrors = farm.data_dir / "cache" / "mirrors"
    wait_until(lambda: [p for p in mirrors.glob("*.git") if (p / "HEAD").exists()], 60, what="the mirror")
    second = farm.cli("submit", "--repo", url, "--image", IMAGE, "--wait", "--follow", "--", "true")
    assert second.returncode == 0
    assert b"mirror cache hit" in second.stdout and b"cloning" not in second.stdout
    # The mirror had the commit the branch pointed at: the farm fetched nothing for the second build
    # (a `git fetch` would have left FETCH_HEAD; the first build's `clone --mirror` does not).
    [mirror] = [p for p in mirrors.glob("*.git") if (p / "HEAD").exists() and url in (p / "config").read_text()]
    assert not (mirror / "FETCH_HEAD").exists()


def test_builds_cannot_write_into_the_shared_mirror_cache(farm, git_server):
    url = git_server.make_repo("poison", {"f": "x\n"})
    farm.cli("submit", "--repo", url, "--image", IMAGE, "--wait", "--", "true")
    mirrors = farm.data_dir / "cache" / "mirrors"
    wait_until(lambda: list(mirrors.glob("*.git/HEAD")), 60, what="the mirror")
    out = farm.cli("submit", "--repo", url, "--image", IMAGE, "--wait", "--follow", "--", "sh", "-c",
                   "ls /buildfarm-cache; for m in /buildfarm-cache/git/*.git; do "
                   "echo evil > $m/refs/heads/main && echo POIS''ONED; done; touch /buildfarm-cache/git/x && echo WR''OTE; true")
    assert out.returncode == 0, out.stderr.decode()
    log = out.stdout.decode()
    assert "Read-only file system" in log and "POISONED" not in log and "WROTE" not in log
    assert "hooks" not in log.split("$ sh -c", 1)[1].split("\n", 2)[1]  # only the mirrors are mounted


# Prints the limits Docker enforces on the build (cgroup v1 or v2).
CGROUP_LIMITS = ("if [ -f /sys/fs/cgroup/cpu.max ]; then echo cpu=$(cat /sys/fs/cgroup/cpu.max) "
                 "mem=$(cat /sys/fs/cgroup/memory.max); else echo cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) "
                 "mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); fi")


def test_twenty_builds_at_once_respect_limits_and_all_finish(farm, app_repo):
    ids = [farm.submit(app_repo, "sh", "-c", CGROUP_LIMITS + "; sleep 1", options=("--cpus", "0.5", "--mem", "256")) for _ in range(20)]
    records = [farm.wait_done(b, 300) for b in ids]
    assert [r["state"] for r in records] == ["succeeded"] * 20
    for r in records:
        log = farm.log_text(r["id"]).decode()
        assert ("cpu=50000" in log) and (f"mem={256 * 2**20}" in log), log
    # The host offers 2 cpus: never more than 4 builds of 0.5 cpus ran at the same time.
    spans = [(r["started_at"], r["finished_at"]) for r in records]
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert 1 <= peak <= 4


def test_warm_containers_take_the_builds_limits(farm, app_repo):
    logs = []
    for _ in range(3):  # the farm keeps warm containers of an image once it has been used
        out = farm.cli("submit", "--repo", app_repo, "--image", IMAGE, "--cpus", "0.75", "--mem", "300", "--wait",
                       "--follow", "--", "sh", "-c", CGROUP_LIMITS)
        assert out.returncode == 0
        logs.append(out.stdout.decode())
        time.sleep(1)
    warm = [log for log in logs if "running in a warm container" in log]
    assert warm, logs
    for log in logs:
        assert ("cpu=75000" in log) and (f"mem={300 * 2**20}" in log), log


def test_bad_input_gets_a_clear_message(farm, app_repo):
    cases = [
        (("--repo", app_repo, "--image", IMAGE, "--cpus", "-1", "--", "true"), b"resources.cpus"),
        (("--repo", app_repo, "--image", IMAGE, "--ref", "nope", "--", "true"), b"ref 'nope' not found"),
        (("--repo", app_repo, "--image", "no/such-image:1", "--", "true"), b"image 'no/such-image:1' is not on this host"),
        (("--repo", "git://127.0.0.1:1/none.git", "--image", IMAGE, "--", "true"), b"cannot read repository"),
        (("--repo", app_repo, "--image", IMAGE, "--cpus", "64", "--", "true"), b"asks for more than any agent has"),
        (("--repo", app_repo, "--image", IMAGE, "--constraint", "arch:sparc", "--", "true"), b"no agent has the attributes arch:sparc"),
        (("--repo", app_repo, "--image", IMAGE, "--env", "NOEQUALS", "--", "true"), b"write KEY=VALUE"),
        (("--repo", app_repo, "--image", IMAGE), b"nothing to run"),
    ]
    for args, message in cases:
        out = farm.cli("submit", *args)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert b"Traceback" not in out.stderr
    assert farm.cli("status", "doesnotexist").returncode == 2


def test_problems_found_only_at_run_time_end_the_build_with_error(farm, app_repo):
    # The base image has no python3: the agent cannot run in it.
    out = farm.cli("submit", "--repo", app_repo, "--image", BASE_IMAGE, "--wait", "--json", "--", "true")
    assert out.returncode == 125
    record = json.loads(out.stdout)
    assert record["state"] == "error" and "python3" in record["reason"]
    out = farm.cli("submit", "--repo", app_repo, "--commit", "1234567", "--image", IMAGE, "--wait", "--json", "--", "true")
    assert out.returncode == 125
    assert "commit 1234567 not found" in json.loads(out.stdout)["reason"]


def test_unreachable_farm_is_an_infrastructure_error(app_repo):
    from .conftest import BUILDFARM, free_port

    out = subprocess.run([BUILDFARM, "--server", f"http://127.0.0.1:{free_port()}", "submit", "--repo", app_repo,
                          "--image", IMAGE, "--wait", "--", "true"], capture_output=True)
    assert out.returncode == 125 and b"cannot reach the farm" in out.stderr


def test_builds_are_rq_jobs_that_rq_info_shows(farm, app_repo):
    bid = farm.submit(app_repo, "true", options=("--cpus", "64", "--wait-for-capacity", "--priority", "low"))
    rq = str(__import__("pathlib").Path(__import__("sys").executable).parent / "rq")
    info = subprocess.run([rq, "info", "--url", farm.redis_url(), "--only-queues"], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "buildfarm-low" in info.stdout
    lines = {ln.split()[0]: ln for ln in info.stdout.splitlines() if ln.startswith("buildfarm-")}
    assert "█ 1," in lines["buildfarm-low"]  # the queued build
    # builds that ended earlier in this module are in RQ's finished and failed registries
    normal = lines["buildfarm-normal"]
    assert " 0 finished" not in normal and " 0 failed" not in normal, normal
    farm.cli("cancel", bid)


def test_api_errors_are_json_and_the_openapi_document_describes_it(farm):
    doc = httpx.get(farm.url + "/openapi.json").json()
    for path in ("/api/v1/builds", "/api/v1/builds/{build_id}", "/api/v1/builds/{build_id}/log",
                 "/api/v1/builds/{build_id}/cancel", "/api/v1/builds/{build_id}/artifacts"):
        assert path in doc["paths"]
    bad = farm.api("POST", "/api/v1/builds", json={"repo": "x", "image": "y", "command": ["true"], "bogus": 1})
    assert bad.status_code == 422
    assert bad.json()["details"] == [{"field": "bogus", "message": "unknown field"}]
    missing = farm.api("GET", "/api/v1/builds/nosuch")
    assert missing.status_code == 404 and "buildfarm list" in missing.json()["error"]


def test_agent_endpoints_need_the_builds_own_token(farm, app_repo):
    bid = farm.submit(app_repo, "true")
    farm.wait_done(bid)
    r = httpx.post(f"{farm.url}/api/v1/agent/builds/{bid}/log?seq=99", content=b"forged",
                   headers={"Authorization": "Bearer not-the-token"})
    assert r.status_code == 401
    assert b"forged" not in farm.log_text(bid)


def test_list_shows_recent_builds(farm, app_repo):
    bid = farm.submit(app_repo, "true")
    farm.wait_done(bid)
    out = farm.cli("list", "--limit", "5")
    assert out.returncode == 0 and bid.encode() in out.stdout
    as_json = json.loads(farm.cli("list", "--json", "--state", "succeeded").stdout)
    assert all(b["state"] == "succeeded" for b in as_json) and {"id", "state"} <= set(as_json[0])


def test_a_queued_record_that_no_longer_validates_ends_in_error_and_blocks_nobody(farm, app_repo):
    import redis

    stuck = farm.submit(app_repo, "true", options=("--cpus", "64", "--wait-for-capacity"))
    r = redis.Redis.from_url(farm.redis_url(), decode_responses=True)
    spec = json.loads(r.hget(f"bf:build:{stuck}", "spec"))
    spec["resources"]["cpus"] = -1  # what an older or hand-edited record could hold
    r.hset(f"bf:build:{stuck}", "spec", json.dumps(spec))
    ok = farm.submit(app_repo, "true")
    assert farm.wait_done(ok)["state"] == "succeeded"
    bad = farm.wait_done(stuck)
    assert bad["state"] == "error" and "stored spec is not valid" in bad["reason"], bad
