"""Fixtures of the web UI tests: headless Chromium driven by Playwright.

The browser is the system's Chromium (``/usr/bin/chromium``). Without it the browser tests skip,
except under ``CI=true`` where they fail: CI must not pass by skipping the browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from artifacts.conftest import in_ci

CHROMIUM = Path("/usr/bin/chromium")
STEP_TIMEOUT_MS = 10_000
"""How long one browser step may wait (a page load, a click, a download)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"Chromium not available at {CHROMIUM} (apt-get install chromium)"
        if in_ci():
            pytest.fail(f"{message} and CI=true", pytrace=False)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield launched
        launched.close()


def new_page(browser: Browser, url: str) -> Page:
    """A page in a fresh context (no cookies) whose relative URLs go to ``url``."""
    context = browser.new_context(base_url=url, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    return page
