"""Browser-test fixtures: ``web/`` served as the gateway serves it, and Debian's Chromium driven by Playwright.

- ``static_server`` (session): ``web/`` at ``/`` and ``node_modules/`` at ``/vendor/`` (as the
  gateway mounts them), plus this folder's ``pages/`` test harnesses at ``/test/``.
- ``browser`` (session): Debian's Chromium (``/usr/bin/chromium``, or ``$STERLING_CHROMIUM``);
  Playwright's own browser download is not used, so nothing is fetched at run time.
- ``page`` (function): a fresh context and page; on failure a screenshot is saved to the
  gitignored top-level ``screenshots/`` folder, and an uncaught page error fails the test.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

REPO = Path(__file__).resolve().parents[2]
PAGES = Path(__file__).resolve().parent / "pages"
SCREENSHOTS = REPO / "screenshots"
CHROMIUM = Path(os.environ.get("STERLING_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's Chromium through Playwright (tests/web)")


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so ``page`` knows whether the test failed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def static_app() -> Starlette:
    """The static part of the gateway, mounted the same way."""
    return Starlette(
        routes=[
            Mount("/vendor", app=StaticFiles(directory=REPO / "node_modules"), name="vendor"),
            Mount("/test", app=StaticFiles(directory=PAGES, html=True), name="test-pages"),
            Mount("/", app=StaticFiles(directory=REPO / "web", html=True), name="web"),
        ]
    )


@pytest.fixture(scope="session")
def static_server() -> Iterator[str]:
    """Serve the static app on a free local port in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(static_app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the static test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; fails (never skips) when it is missing."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: run `make setup` (installs Debian's chromium) or set STERLING_CHROMIUM")
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page; screenshot on failure; uncaught page errors fail the test."""
    context = browser.new_context()
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    reports = request.node.stash.get(_REPORTS, {})
    if "call" in reports and reports["call"].failed:
        SCREENSHOTS.mkdir(exist_ok=True)
        pg.screenshot(path=SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.nodeid)}.png", full_page=True)
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
