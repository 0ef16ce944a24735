"""Retention on a real farm: logs and artifacts expire (a build's expire_in, the farm's defaults),
`buildfarm gc` deletes them (or lists them with --dry-run), pinned builds keep theirs, the record
stays, and /metrics shows what the data directory holds."""

from __future__ import annotations

import json
import re
import time

import pytest

from .conftest import wait_until

pytestmark = pytest.mark.docker

DAY = 86400


@pytest.fixture(scope="module")
def repo(git_server):
    return git_server.make_repo("retention", {"Makefile": "all:\n\t@mkdir -p dist\n\t@echo kept > dist/out.txt\n"})


def build(farm, repo, *options: str) -> dict:
    bid = farm.submit(repo, "sh", "-c", "echo the-output-line; make", options=("--artifact", "dist/*", *options))
    b = farm.wait_done(bid)
    assert b["state"] == "succeeded", b
    return b


def gc(farm, *options: str) -> dict:
    out = farm.cli("gc", "--json", *options)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


def expired_for(result: dict) -> set[tuple[str, str]]:
    return {(i["build"], i["what"]) for i in result["items"]}


def test_expired_logs_and_artifacts_are_deleted_by_gc_pins_keep_them_and_records_stay(farm, repo):
    short = build(farm, repo, "--expire-in", "2s")
    pinned = build(farm, repo, "--expire-in", "2s")
    default = build(farm, repo)
    forever = build(farm, repo, "--expire-in", "never")
    out = farm.cli("pin", pinned["id"])
    assert out.returncode == 0 and b"pinned by admin" in out.stdout, out

    # The record says when each build's files go: its own expire_in, else the farm's defaults.
    r = short["retention"]
    assert r["log_expires_at"] == pytest.approx(short["finished_at"] + 2, abs=0.01)
    assert r["artifacts_expire_at"] == pytest.approx(short["finished_at"] + 2, abs=0.01)
    d = default["retention"]
    assert d["log_expires_at"] == pytest.approx(default["finished_at"] + 90 * DAY, abs=0.01)
    assert d["artifacts_expire_at"] == pytest.approx(default["finished_at"] + 30 * DAY, abs=0.01)
    assert forever["retention"]["log_expires_at"] is None and forever["retention"]["artifacts_expire_at"] is None
    assert farm.build(pinned["id"])["retention"]["pinned_by"] == "admin"

    wait_until(lambda: time.time() > r["log_expires_at"] + 0.1, 10, what="the short expiry to pass")
    # A dry run lists the expired build's log and artifacts and deletes nothing.
    dry = gc(farm, "--dry-run")
    assert dry["dry_run"] and expired_for(dry) == {(short["id"], "log"), (short["id"], "artifacts")}
    assert all(i["bytes"] > 0 for i in dry["items"])
    assert b"the-output-line" in farm.log_text(short["id"])

    done = gc(farm)
    assert expired_for(done) == {(short["id"], "log"), (short["id"], "artifacts")}
    assert done["freed_bytes"] == dry["freed_bytes"] > 0
    assert gc(farm)["items"] == []  # nothing is deleted twice

    # The record and its history stay; the files answer 410 saying when they expired.
    after = farm.build(short["id"])
    assert after["state"] == "succeeded" and [h["state"] for h in after["history"]][-1] == "succeeded"
    assert after["retention"]["log_expired_at"] and after["retention"]["artifacts_expired_at"]
    logs = farm.cli("logs", short["id"])
    assert logs.returncode != 0 and re.search(rb"log of build \w+ expired on \d{4}-\d\d-\d\d", logs.stderr), logs
    art = farm.api("GET", f"/api/v1/builds/{short['id']}/artifacts/dist/out.txt")
    assert art.status_code == 410 and "expired on" in art.json()["error"]
    assert not (farm.data_dir / "artifacts" / short["id"]).exists()
    assert not (farm.data_dir / "logs" / f"{short['id']}.log").exists()

    # The pinned build kept everything; unpinned, its passed expiry applies at the next pass.
    assert b"the-output-line" in farm.log_text(pinned["id"])
    assert farm.api("GET", f"/api/v1/builds/{pinned['id']}/artifacts/dist/out.txt").status_code == 200
    assert farm.cli("unpin", pinned["id"]).returncode == 0
    assert expired_for(gc(farm)) == {(pinned["id"], "log"), (pinned["id"], "artifacts")}
    for b in (default, forever):
        assert b"the-output-line" in farm.log_text(b["id"])
    # Nothing left to keep: pinning says so.
    again = farm.cli("pin", short["id"])
    assert again.returncode != 0 and b"nothing left to keep" in again.stderr


def test_expire_in_that_is_not_a_duration_is_refused_with_the_fix(farm, repo):
    out = farm.cli("submit", "--repo", repo, "--image", "buildfarm/builder:latest", "--expire-in", "soon", "--",
                   "true")
    assert out.returncode == 2
    assert b"'soon' is not a duration; write e.g. 2h, 7d, 4w (or 'never' to keep them)" in out.stderr


def test_only_a_submitter_or_admin_pins_and_only_an_admin_collects(farm, repo):
    b = build(farm, repo)
    viewer = farm.cli("token", "create", "ret-viewer", "--role", "viewer").stdout.decode().strip()
    env = {"BUILDFARM_TOKEN": viewer}
    assert farm.cli("pin", b["id"], env=env).returncode == 77
    submitter = farm.cli("token", "create", "ret-submitter", "--role", "submitter").stdout.decode().strip()
    assert farm.cli("pin", b["id"], env={"BUILDFARM_TOKEN": submitter}).returncode == 0
    assert farm.build(b["id"])["retention"]["pinned_by"] == "ret-submitter"
    out = farm.cli("gc", env={"BUILDFARM_TOKEN": submitter})
    assert out.returncode == 77 and b"needs the admin role" in out.stderr


def test_metrics_show_the_bytes_of_logs_and_artifacts_and_the_free_space(farm, repo):
    build(farm, repo)
    text = farm.api("GET", "/metrics").text
    figures = {m[0]: float(m[1]) for m in re.findall(r'^(buildfarm_data_\w+\{kind="\w+"\}) (\S+)$', text, re.M)}
    assert figures['buildfarm_data_bytes{kind="logs"}'] > 0
    assert figures['buildfarm_data_bytes{kind="artifacts"}'] > 0
    for kind in ("data", "logs", "artifacts"):
        assert figures[f'buildfarm_data_free_bytes{{kind="{kind}"}}'] > 0


def test_the_farm_collects_by_itself_and_logs_one_line_per_pass(fresh_farm, git_server):
    repo = git_server.make_repo("retention-bg", {"f": "x\n"})
    farm = fresh_farm("--keep-logs", "1s", "--keep-artifacts", "never", "--gc-interval", "1")
    ids = [farm.submit(repo, "echo", "bye") for _ in range(2)]
    for bid in ids:
        assert farm.wait_done(bid)["state"] == "succeeded"
    wait_until(lambda: all(farm.build(b)["retention"]["log_expired_at"] for b in ids), 30,
               what="the collector to delete both logs")
    lines = [ln for ln in farm.up_log().splitlines() if "buildfarm.gc" in ln]
    assert lines and all(re.search(r"gc: freed [\d.]+ \w+: \d log\(s\) and 0 artifact set\(s\)", ln) for ln in lines)
    assert sum(int(re.search(r"(\d) log", ln)[1]) for ln in lines) == 2
