"""The dashboard tests' parts: headless Chromium (Debian's, driven by Playwright), a page per test
whose JavaScript errors fail it, sign-in, screenshots, and a gate builds wait on. Loaded as a pytest
plugin (tests/conftest.py), so every dashboard test file shares them."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import ROOT, need

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "tests" / "screenshots"
LONG = 60_000  # ms: a build on a busy machine

GATE_PY = """\
import sys, time, urllib.request
while True:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2)
        break
    except Exception:
        time.sleep(0.3)
"""


class Gate:
    """GET /NAME answers 404 until the test opens NAME; builds wait on it with gate.py."""

    def __init__(self):
        self.opened: set[str] = set()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path.strip("/") in gate.opened else 404)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def open(self, name: str) -> None:
        self.opened.add(name)


@pytest.fixture(scope="module")
def gate():
    g = Gate()
    yield g
    g.server.shutdown()


@pytest.fixture(scope="module")
def browser():
    need(os.path.exists(CHROMIUM), f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright package (pip install -e '.[test]')")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def new_page(browser):
    """A page in a context of its own (its own cookies); JavaScript errors fail the test."""
    contexts, errors = [], []

    def make():
        ctx = browser.new_context(viewport={"width": 1366, "height": 860})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda e: errors.append(str(e)))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def sign_in(page, farm, token: str | None = None):
    """Sign in with a one-time login link, as an admin would send one."""
    from playwright.sync_api import expect

    page.goto(f"{farm.url}/#token={token or farm.token}")
    expect(page.locator("#who-user")).to_be_visible()
    return page


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
