"""The dashboard's pipeline pages in a real browser (Debian's Chromium, Playwright) against the real
pipeline API of a farm started with `buildfarm up`, running real Docker builds.

A run of four jobs (build -> unit and integration side by side -> publish) is followed on its page
while it runs. Two of its jobs wait on gates (HTTP on 127.0.0.1 that the test opens), so each
moment looked at is held still: no assertion depends on timing. Screenshots go to tests/screenshots/.
"""

from __future__ import annotations

import re

import pytest

from .conftest import wait_until
from .webui import GATE_PY, LONG, shot, sign_in

pytestmark = pytest.mark.docker

PIPELINE = """\
name: graph-demo
repo: {repo}
image: buildfarm/builder:latest
jobs:
  build:
    resources: {{cpus: 0.25, mem: 128}}
    steps: ["echo building", "python3 gate.py {gate}/build-{tag}"]
  unit:
    needs: [build]
    resources: {{cpus: 0.25, mem: 128}}
    steps: ["echo unit tests pass"]
  integration:
    needs: [build]
    resources: {{cpus: 0.25, mem: 128}}
    steps: ["python3 gate.py {gate}/integration-{tag}", "echo integration broke; exit 4"]
  publish:
    needs: [unit, integration]
    resources: {{cpus: 0.25, mem: 128}}
    steps: ["echo never published"]
"""


@pytest.fixture(scope="module")
def repo(git_server):
    return git_server.make_repo("webapp-pipelines", {"gate.py": GATE_PY, "README": "pipeline graph tests\n"})


def start_run(farm, repo_url: str, gate_base: str, tag: str) -> str:
    r = farm.api("POST", "/api/v1/pipeline-runs", json={
        "source": PIPELINE.format(repo=repo_url, gate=gate_base, tag=tag), "file": "graph-demo.yaml"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def api_run(farm, run_id: str) -> dict:
    r = farm.api("GET", f"/api/v1/pipeline-runs/{run_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_jobs(farm, run_id: str, want: dict[str, str], timeout: float = 90) -> dict:
    """Wait until the API shows these job states; return the run."""
    def ok():
        run = api_run(farm, run_id)
        states = {j["name"]: j["state"] for j in run["jobs"]}
        return all(states[k] == v for k, v in want.items()) and run

    return wait_until(ok, timeout, 0.3, what=f"jobs {want} in run {run_id}")


def expect_graph(page, want: dict[str, str]) -> None:
    """Each job's box shows its name and its state (class, data-state and the text under the name)."""
    from playwright.sync_api import expect

    for name, state in want.items():
        g = page.locator(f'svg#pipeline-graph g.job[data-job="{name}"]')
        expect(g).to_have_attribute("data-state", state, timeout=LONG)
        expect(g.locator("rect.job-box")).to_have_class(f"job-box state-{state}")
        expect(g.locator("text.job-name")).to_have_text(name)
        expect(g.locator("text.job-sub")).to_have_text(state.replace("_", " "))


def fill_of(page, name: str) -> str:
    return page.locator(f'g.job[data-job="{name}"] rect').evaluate("r => getComputedStyle(r).fill")


def badge_colour(page, state: str) -> str:
    """The background of the state badge the jobs table shows for `state`."""
    return page.locator(f"#jobs .state-{state}").first.evaluate("e => getComputedStyle(e).backgroundColor")


def test_run_graph_follows_a_run_live_and_links_to_builds(new_page, farm, repo, gate):
    from playwright.sync_api import expect

    run_id = start_run(farm, repo, gate.base, "live")
    page = sign_in(new_page(), farm)
    page.goto(f"{farm.url}/#/pipelines/{run_id}")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    expect(page.locator("h1")).to_contain_text(run_id)

    # 1. build runs (held by its gate); everything after it waits.
    run = wait_jobs(farm, run_id, {"build": "running"})
    graph = page.locator("svg#pipeline-graph")
    expect(graph.locator("g.job")).to_have_count(4)
    edges = sum(len(j["needs"]) for j in run["jobs"])
    assert edges == 4
    expect(graph.locator("path.edge")).to_have_count(edges)
    expect_graph(page, {"build": "running", "unit": "pending", "integration": "pending", "publish": "pending"})
    expect(page.locator("#run-state .state-running")).to_have_text("running")
    expect(page.locator("#run-meta")).to_contain_text("graph-demo · api by ")
    expect(page.locator("#run-meta")).not_to_have_text(re.compile(r"· started$"))  # not "started ... · started"
    expect(page.locator("#run-cancel")).to_be_visible()
    assert fill_of(page, "build") == badge_colour(page, "running")
    assert fill_of(page, "unit") != fill_of(page, "build")
    # Edges run from a job to the jobs that need it: left to right, one column per depth.
    x = {j["name"]: float(graph.locator(f'g.job[data-job="{j["name"]}"] rect').get_attribute("x"))
         for j in run["jobs"]}
    assert x["build"] < x["unit"] == x["integration"] < x["publish"]
    shot(page, "pipeline-run-running")

    # 2. build passed; unit passed while integration runs (held by its gate); publish still waits.
    gate.open("build-live")
    wait_jobs(farm, run_id, {"build": "succeeded", "unit": "succeeded", "integration": "running"})
    expect_graph(page, {"build": "succeeded", "unit": "succeeded", "integration": "running", "publish": "pending"})
    expect(page.locator("#run-state .state-running")).to_be_visible()
    shot(page, "pipeline-run-half-way")

    # 3. integration fails: publish is skipped, the run failed.
    gate.open("integration-live")
    run = wait_until(lambda: (r := api_run(farm, run_id))["state"] != "running" and r, 90, 0.3,
                     what="the run to end")
    assert run["state"] == "failed"
    api_states = {j["name"]: j["state"] for j in run["jobs"]}
    assert api_states == {"build": "succeeded", "unit": "succeeded", "integration": "failed", "publish": "skipped"}
    expect_graph(page, api_states)
    expect(page.locator("#run-state .state-failed")).to_have_text("failed")
    expect(page.locator("#run-cancel")).to_be_hidden()
    expect(page.locator("#run-meta")).to_contain_text(" · finished ")
    expect(page.locator("#run-meta")).to_contain_text("1 job(s) failed: integration")
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of updating"
    # The colours: a box that ran is filled like its state's badge; a skipped one is dashed.
    for name in ("build", "unit", "integration"):
        assert fill_of(page, name) == badge_colour(page, api_states[name]), name
    assert fill_of(page, "build") != fill_of(page, "integration")
    dashes = page.locator('g.job[data-job="publish"] rect').evaluate("r => getComputedStyle(r).strokeDasharray")
    assert dashes not in ("", "none"), dashes
    skipped = page.locator('g.job[data-job="publish"]')
    expect(skipped.locator("title")).to_contain_text("skipped: integration failed")
    shot(page, "pipeline-run-failed")

    # A job that ran links to its build's page; the skipped one has no build and no link.
    by_name = {j["name"]: j for j in run["jobs"]}
    assert by_name["publish"]["build_id"] is None
    expect(page.locator('svg#pipeline-graph a:has(g[data-job="publish"])')).to_have_count(0)
    for name in ("build", "unit", "integration"):
        link = page.locator(f'svg#pipeline-graph a:has(g[data-job="{name}"])')
        expect(link).to_have_attribute("href", f"#/builds/{by_name[name]['build_id']}")
    page.locator('g.job[data-job="integration"]').click()
    bid = by_name["integration"]["build_id"]
    expect(page).to_have_url(f"{farm.url}/#/builds/{bid}")
    expect(page.locator("h1")).to_contain_text(bid)
    expect(page.locator("#state .state-failed")).to_be_visible()
    expect(page.locator("#log")).to_contain_text("integration broke", timeout=LONG)
    shot(page, "pipeline-job-build")

    # The runs list shows the run, with its state and job counts, linked to its page.
    page.goto(f"{farm.url}/#/pipelines")
    row = page.locator("tr.run-row", has=page.locator(f'a[href="#/pipelines/{run_id}"]'))
    expect(row).to_be_visible()
    expect(row).to_contain_text("graph-demo")
    expect(row.locator(".state-failed")).to_have_text("failed")
    for counted in ("2 succeeded", "1 failed", "1 skipped"):
        expect(row).to_contain_text(counted)
    shot(page, "pipeline-runs")
    row.locator(f'a[href="#/pipelines/{run_id}"]').click()
    expect(page.locator("svg#pipeline-graph g.job")).to_have_count(4)
    page.goto(f"{farm.url}/#/pipelines/no-such-run")
    expect(page.locator(".banner.error")).to_have_text("There is no pipeline run no-such-run.")
