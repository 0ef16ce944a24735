"""The web dashboard in a real browser: headless Chromium (Debian's) driven by Playwright, against a
farm started with `buildfarm up`, running real Docker builds of repositories served by `git daemon`.

Builds that must still be running while the page is looked at wait on a gate (an HTTP server on
127.0.0.1 that the test opens), so no assertion depends on timing. Screenshots of every page go to
tests/screenshots/.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from .conftest import IMAGE, wait_until
from .webui import GATE_PY, LONG, shot, sign_in

pytestmark = pytest.mark.docker

@pytest.fixture(scope="module")
def repo(git_server):
    return git_server.make_repo("webapp", {"gate.py": GATE_PY, "README": "dashboard tests\n"})


@pytest.fixture
def admin(new_page, farm):
    return sign_in(new_page(), farm)


def submit(farm, repo, steps: list[str], **extra) -> str:
    spec = {"repo": repo, "image": IMAGE, "steps": steps, "resources": {"cpus": 0.5, "mem": 256}, **extra}
    r = farm.api("POST", "/api/v1/builds", json=spec)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def state_of(farm, build_id: str) -> str:
    return farm.api("GET", f"/api/v1/builds/{build_id}").json()["state"]


def wait_state(farm, build_id: str, state: str, timeout: float = 90) -> None:
    wait_until(lambda: state_of(farm, build_id) == state, timeout, 0.3, what=f"build {build_id} {state}")


@pytest.fixture(scope="module")
def done_build(farm, repo):
    """A build that succeeded (the table, the chart)."""
    bid = submit(farm, repo, ["echo built", "echo '<b>not bold</b>'"], env={"NOTE": "<i>not italic</i>"})
    assert farm.wait_done(bid)["state"] == "succeeded"
    return bid


# -- tests --------------------------------------------------------------------------------------

def test_login_link_signs_in_sets_an_httponly_cookie_and_leaves_the_url(new_page, farm):
    from playwright.sync_api import expect

    page = sign_in(new_page(), farm)
    expect(page.locator("#who-role")).to_have_text("admin")
    assert "token" not in page.url and page.url.endswith("#/builds")
    cookie = {c["name"]: c for c in page.context.cookies()}["bf_session"]
    assert cookie["httpOnly"]
    # A wrong token in the sign-in box says so.
    page.locator("#signout").click()
    page.locator("#token").fill("not-a-token")
    page.locator("#signin-form button").click()
    expect(page.locator("#signin-error")).to_contain_text("not valid")
    shot(page, "signin")


def test_builds_table_shows_a_build_with_its_state_and_filters(admin, farm, done_build):
    from playwright.sync_api import expect

    page = admin
    page.goto(f"{farm.url}/#/builds")
    row = page.locator(f'tr[data-id="{done_build}"]')
    expect(row).to_be_visible()
    expect(row.locator(".state.state-succeeded")).to_have_text("succeeded")
    expect(row).to_contain_text("webapp.git@default branch")
    expect(row).to_contain_text(IMAGE)
    shot(page, "builds")
    # Filtering by state is applied by the API and kept in the URL.
    page.locator("#filters select[name=state]").select_option("failed")
    expect(page).to_have_url(re.compile(r"#/builds\?state=failed$"))
    expect(row).to_have_count(0)
    page.locator("#filters select[name=state]").select_option("succeeded")
    expect(page.locator(f'tr[data-id="{done_build}"]')).to_be_visible()


def test_build_page_follows_the_live_log_with_ansi_colours(admin, farm, repo, gate):
    from playwright.sync_api import expect

    bid = submit(farm, repo, [
        "echo 'first line'",
        r"printf '\033[31mred alert\033[0m and \033[1;32mbold green\033[0m\n'",
        f"python3 gate.py {gate.url('log')}",
        "mkdir -p dist && echo 'the report' > dist/report.txt && echo 'after the gate'",
    ], artifacts=["dist/*.txt"])
    page = admin
    page.goto(f"{farm.url}/#/builds/{bid}")
    log = page.locator("#log")
    expect(log).to_contain_text("first line", timeout=LONG)
    expect(log.locator("span.ansi-red")).to_have_text("red alert")
    expect(log.locator("span.ansi-bold.ansi-green")).to_have_text("bold green")
    # The lines are on the page while the build is still running (it waits on the gate).
    assert state_of(farm, bid) == "running"
    expect(page.locator("#state .state-running")).to_be_visible()
    shot(page, "build-running")

    gate.open("log")
    expect(log).to_contain_text("after the gate", timeout=LONG)
    expect(page.locator("#state .state-succeeded")).to_be_visible(timeout=LONG)
    expect(page.locator("#log-status")).to_contain_text("log complete", timeout=LONG)
    history = page.locator("table.history")
    for state in ("queued", "running", "succeeded"):
        expect(history.locator(f".state-{state}")).to_have_count(1)
    art = farm.api("GET", f"/api/v1/builds/{bid}/artifacts").json()["artifacts"][0]
    link = page.locator("table.artifacts a", has_text="dist/report.txt")
    expect(link).to_be_visible(timeout=LONG)
    expect(page.locator("table.artifacts")).to_contain_text(art["sha256"])
    expect(page.locator("table.artifacts")).to_contain_text(f"{art['size']} B")
    # The download link serves the file with the session cookie.
    href = link.get_attribute("href")
    got = page.request.get(farm.url + href)
    assert got.ok and got.body() == b"the report\n"
    raw_log = page.request.get(farm.url + page.locator("#raw-log").get_attribute("href"))
    assert b"red alert" in raw_log.body()
    shot(page, "build")


def test_log_falls_back_to_range_reads_and_escapes_markup(admin, farm, done_build):
    from playwright.sync_api import expect

    page = admin
    page.route("**/log/events*", lambda route: route.abort())  # as if a proxy dropped the event stream
    reads = []
    page.on("request", lambda r: "/log?offset=" in r.url and reads.append(r.url))
    page.goto(f"{farm.url}/#/builds/{done_build}")
    log = page.locator("#log")
    expect(log).to_contain_text("<b>not bold</b>")
    expect(log.locator("b")).to_have_count(0)
    expect(page.locator("#log-status")).to_contain_text("log complete")
    expect(page.locator("#spec")).to_contain_text("NOTE=<i>not italic</i>")
    expect(page.locator("#spec i")).to_have_count(0)
    assert reads, "the log was not read by range"


def test_build_page_shows_when_the_log_and_artifacts_expire_and_that_they_did(admin, farm, repo, done_build):
    import time

    from playwright.sync_api import expect

    gone = submit(farm, repo, ["echo soon-gone > out.txt"], artifacts=["out.txt"], expire_in="1s")
    ended = farm.wait_done(gone)
    wait_until(lambda: time.time() > ended["finished_at"] + 1.2, 10, what="its expiry to pass")
    assert farm.api("POST", "/api/v1/gc").json()["items"]
    page = admin
    page.goto(f"{farm.url}/#/builds/{gone}")
    expect(page.locator("#log-expiry")).to_contain_text(re.compile(r"^log expired on \d{4}-\d\d-\d\d \d\d:\d\d$"))
    expect(page.locator("#log")).to_contain_text("log expired on")
    expect(page.locator("#artifacts")).to_contain_text("Artifacts expired on")
    expect(page.locator("#history")).to_contain_text("succeeded")  # the record stays
    shot(page, "build-expired")
    # A build within the farm's defaults says when its files will go (the test farm keeps them 90/30 days).
    page.goto(f"{farm.url}/#/builds/{done_build}")
    expect(page.locator("#log-expiry")).to_contain_text(re.compile(r"^expires on \d{4}-"))
    expect(page.locator("#artifacts-expiry")).to_contain_text(re.compile(r"^expire on \d{4}-"))


def test_cancel_button_cancels_a_running_build(admin, farm, repo, gate):
    from playwright.sync_api import expect

    bid = submit(farm, repo, [f"python3 gate.py {gate.url('never')}"])
    wait_state(farm, bid, "running")
    page = admin
    page.goto(f"{farm.url}/#/builds/{bid}")
    expect(page.locator("#state .state-running")).to_be_visible()
    page.once("dialog", lambda d: d.accept())
    page.locator("#cancel").click()
    expect(page.locator("#state .state-cancelled")).to_be_visible()
    assert state_of(farm, bid) == "cancelled"
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#reason")).to_contain_text("cancelled")
    shot(page, "build-cancelled")

    # Rebuild: the same spec again, as a new build whose page says what it rebuilt.
    page.locator("#rebuild").click()
    expect(page).not_to_have_url(re.compile(f"#/builds/{bid}$"))
    again = page.url.rsplit("/", 1)[1]
    try:
        expect(page.locator("#spec")).to_contain_text(f"rebuild of {bid}")
        rec = farm.api("GET", f"/api/v1/builds/{again}").json()
        assert rec["spec"]["trigger"]["kind"] == "rebuild" and rec["spec"]["steps"] == [f"python3 gate.py {gate.url('never')}"]
    finally:
        farm.api("POST", f"/api/v1/builds/{again}/cancel")


def test_submit_form_puts_errors_next_to_fields_and_lands_on_the_new_build(admin, farm, repo):
    from playwright.sync_api import expect

    page = admin
    page.goto(f"{farm.url}/#/submit")
    page.locator("#f-repo").fill(repo)
    page.locator("#f-ref").fill("no-such-branch")
    page.locator("#f-steps").fill("echo from the form")
    page.locator("#f-resources-cpus").fill("0")
    page.locator("#f-resources-mem").fill("256")
    page.locator("#submit-button").click()
    cpus = page.locator('[data-field="resources.cpus"]')
    expect(cpus.locator(".field-error")).to_contain_text("greater than 0")
    expect(cpus).to_have_class(re.compile(r"\binvalid\b"))
    shot(page, "submit-errors")

    page.locator("#f-resources-cpus").fill("0.5")
    page.locator("#submit-button").click()
    expect(page.locator('[data-field="ref"] .field-error')).to_contain_text("no-such-branch")
    expect(cpus.locator(".field-error")).to_be_hidden()

    page.locator("#f-ref").fill("main")
    page.locator("#submit-button").click()
    expect(page).to_have_url(re.compile(r"#/builds/[0-9a-f]{12}$"), timeout=30_000)
    bid = page.url.rsplit("/", 1)[1]
    expect(page.locator("h1")).to_contain_text(bid)
    rec = farm.api("GET", f"/api/v1/builds/{bid}").json()
    assert rec["spec"]["steps"] == ["echo from the form"] and rec["spec"]["ref"] == "main"
    assert rec["spec"]["resources"]["cpus"] == 0.5
    expect(page.locator("#log")).to_contain_text("from the form", timeout=LONG)
    shot(page, "submitted")


def test_a_viewer_sees_no_cancel_rebuild_or_submit(new_page, farm, repo, gate):
    from playwright.sync_api import expect

    out = farm.cli("token", "create", "watcher", "--role", "viewer")
    assert out.returncode == 0, out.stderr.decode()
    token = out.stdout.decode().split()[-1]
    bid = submit(farm, repo, [f"python3 gate.py {gate.url('viewer')}"])
    try:
        page = new_page()
        page.goto(farm.url + "/")
        page.locator("#token").fill(token)
        page.locator("#signin-form button").click()
        expect(page.locator("#who-role")).to_have_text("viewer")
        expect(page.locator("#who-user")).to_have_text("watcher")
        wait_state(farm, bid, "running")
        page.goto(f"{farm.url}/#/builds/{bid}")
        expect(page.locator("#state .state-running")).to_be_visible()
        expect(page.locator("#readonly")).to_contain_text("viewer")
        expect(page.locator("#cancel")).to_be_hidden()
        expect(page.locator("#rebuild")).to_be_hidden()
        shot(page, "viewer-build")
        page.goto(f"{farm.url}/#/submit")
        expect(page.locator("#submit-readonly")).to_contain_text("needs the submitter role")
        expect(page.locator("#submit-button")).to_be_disabled()
        # The farm itself refuses a viewer's cancel, whatever the page shows.
        refused = page.request.post(f"{farm.url}/api/v1/builds/{bid}/cancel", headers={"Origin": farm.url})
        assert refused.status == 403
    finally:
        gate.open("viewer")
    assert farm.wait_done(bid)["state"] == "succeeded"


def test_cluster_page_shows_the_agent_the_queue_and_the_chart(admin, farm, done_build):
    from playwright.sync_api import expect

    agent = farm.api("GET", "/api/v1/agents").json()["agents"][0]
    page = admin
    page.goto(f"{farm.url}/#/cluster")
    card = page.locator(f'.agent[data-agent="{agent["agent_id"]}"]')
    expect(card).to_be_visible()
    expect(card.locator(".tag-local")).to_be_visible()
    expect(card).to_contain_text(f"/ {agent['capacity']['cpus']:g}")
    expect(page.locator("#queue .depth")).to_have_count(3)
    chart = page.locator("svg#throughput-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar-succeeded").first).to_be_attached()
    expect(page.locator("#throughput .legend")).to_contain_text("succeeded")
    leader = farm.api("GET", "/api/v1/schedulers").json()["leader"]
    line = page.locator("#schedulers")
    expect(line).to_contain_text(f"{leader['id']} leads since")
    expect(line).to_contain_text(f"fencing token {leader['fence']}")
    expect(line).to_contain_text("no standby")
    shot(page, "cluster")


def test_pipelines_page_lists_runs_or_says_they_are_off(admin, farm):
    from playwright.sync_api import expect

    page = admin
    page.goto(f"{farm.url}/#/pipelines")
    if farm.api("GET", "/api/v1/pipeline-runs").status_code == 404:
        expect(page.locator("#pipelines-disabled")).to_have_text("pipelines are not enabled on this farm")
    else:
        expect(page.locator("#runs")).to_be_visible()
    shot(page, "pipelines")


def test_assets_have_types_and_revalidate(farm):
    r = httpx.get(farm.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css")):
        r = httpx.get(f"{farm.url}/ui/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype)
        assert r.headers["cache-control"] == "no-cache"
        again = httpx.get(f"{farm.url}/ui/{name}", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
    missing = httpx.get(f"{farm.url}/ui/..%2Fapp.py")
    assert missing.status_code == 404 and "error" in json.loads(missing.text)
