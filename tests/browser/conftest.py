"""Browser tests: Playwright driving Debian's chromium (``/usr/bin/chromium``), headless, no download.

A missing chromium skips locally and FAILS under ``CI=true`` (``make setup`` installs it).
Set ``CONVEYOR_SCREENSHOTS_DIR=docs/screenshots`` to save screenshots of the main pages
(``tests.helpers.browser.snap``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Server

CHROMIUM = Path(os.environ.get("CONVEYOR_CHROMIUM", "/usr/bin/chromium"))
VIEWPORT = {"width": 1280, "height": 860}


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: run `make setup` (apt-get install chromium) to run the browser tests"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture
def web_server(shared_server: Server) -> Server:
    """The shared server: the tests name their jobs with unique tags and filter the history by them."""
    return shared_server


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(20_000)
    opened = context.new_page()
    # The server's Content-Security-Policy must not block anything the dashboard does.
    blocked: list[str] = []
    opened.on(
        "console",
        lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
    )
    yield opened
    context.close()
    assert blocked == [], f"the Content-Security-Policy blocked: {blocked}"
