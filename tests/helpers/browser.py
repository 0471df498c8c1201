"""Steps the browser tests share: signing in to the dashboard and saving screenshots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.helpers import Server


def login(page: Any, server: Server, key: str | None = None) -> None:
    page.goto(f"{server.url}/login")
    page.get_by_label("API key").fill(key or server.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/")


def snap(page: Any, name: str) -> None:
    """Save a screenshot when CONVEYOR_SCREENSHOTS_DIR is set (docs/screenshots in the README)."""
    target = os.environ.get("CONVEYOR_SCREENSHOTS_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=False)
