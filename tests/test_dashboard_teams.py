"""The dashboard's Teams page in a real browser (Debian's Chromium driven by Playwright), against
a farm of its own with two teams: one borrows the other's idle guarantee with a build that waits
on a gate. The page shows each team's share against its guarantee as a stacked area chart, who
borrows from whom, what waits, the balances and a ledger; the builds table shows a build's team and
the submit form charges the team picked."""

from __future__ import annotations

import re

import pytest

from .conftest import IMAGE, wait_until
from .webui import GATE_PY, LONG, shot, sign_in

pytestmark = pytest.mark.docker


def test_the_teams_page_shows_shares_loans_waits_and_the_ledger(fresh_farm, git_server, new_page, gate):
    from playwright.sync_api import expect

    farm = fresh_farm("--cpus", "2", "--mem", "4096", "--warm", "0", "--reclaim-grace", "3600")
    repo = git_server.make_repo("teams-ui", {"gate.py": GATE_PY, "README": "teams page\n"})
    for name in ("flood", "idle"):
        r = farm.api("POST", "/api/v1/teams", json={"name": name, "guarantee": {"cpus": 1, "mem": 1024}})
        assert r.status_code == 201, r.text

    def submit(team, cpus, steps):
        r = farm.api("POST", "/api/v1/builds", json={"repo": repo, "image": IMAGE, "steps": steps, "team": team,
                                                     "resources": {"cpus": cpus, "mem": 256}})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    # flood runs 1.5 cpus (0.5 beyond its guarantee, lent by idle); a second build waits behind it
    borrower = submit("flood", 1.5, [f"python3 gate.py {gate.url('teams-ui')}"])
    wait_until(lambda: farm.api("GET", f"/api/v1/builds/{borrower}").json()["state"] == "running", 120, 0.3,
               what="the borrower running")
    waiting = submit("flood", 1, ["true"])

    page = sign_in(new_page(), farm)
    page.goto(f"{farm.url}/#/teams")
    expect(page.locator("#nav a[data-nav=teams]")).to_have_class(re.compile("active"))
    flood = page.locator("#team-table tr[data-team=flood]")
    # of a 2-cpu pool: flood holds 75% (1.5 cpus) against a guarantee of 50% (1 cpu); one build waits
    expect(flood.locator("td").nth(1)).to_have_text("75.0%", timeout=LONG)
    expect(flood.locator("td").nth(2)).to_contain_text("50.0%")
    expect(flood.locator("td.waiting")).to_contain_text(re.compile(r"^1 oldest"))
    expect(page.locator("#borrowing li[data-borrower=flood][data-lender=idle]")).to_have_text(
        "flood borrows 0.5 cpus from idle")
    expect(page.locator("#shares-chart polygon.area[data-team=flood]")).to_have_count(1)
    points = page.locator("#shares-chart polygon.area[data-team=flood]").get_attribute("points").split()
    assert min(float(p.split(",")[1]) for p in points) == pytest.approx(50.5)  # it reaches 75% now (y of 0% is 178)
    expect(page.locator("#shares-chart line.guarantee")).to_have_count(2)
    page.locator("#team-table a[data-ledger=idle]").click()
    expect(page.locator("#ledger tr.entry-issue")).to_have_count(1)  # this hour's credits
    expect(page.locator("#ledger")).to_contain_text("Team idle: balance")
    shot(page, "teams")

    page.goto(f"{farm.url}/#/builds")
    expect(page.locator(f"tr:has(a:text('{borrower}')) .team")).to_have_text("team flood")

    page.goto(f"{farm.url}/#/submit")
    expect(page.locator("#f-team option[value=idle]")).to_have_count(1)
    page.fill("#f-repo", repo)
    page.fill("#f-steps", "true")
    page.fill("#f-resources-cpus", "0.25")
    page.fill("#f-resources-mem", "128")
    page.select_option("#f-team", "idle")
    page.click("#submit-button")
    expect(page).to_have_url(re.compile(r"#/builds/[0-9a-f]+$"), timeout=LONG)
    new_id = page.url.rsplit("/", 1)[1]
    assert farm.api("GET", f"/api/v1/builds/{new_id}").json()["team"] == "idle"

    gate.open("teams-ui")
    for bid in (borrower, waiting, new_id):
        assert farm.wait_done(bid, 180)["state"] == "succeeded"
