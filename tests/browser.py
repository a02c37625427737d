"""A real headless Chromium for the dashboard's tests: Debian's `chromium` driven by Selenium through
Debian's `chromedriver` (scripts/setup-host.sh installs both; no browser can be downloaded here, so
Selenium Manager is never asked for one). Screenshots go to build/test-artifacts/dashboard/."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("RESEARCHER_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts")) / "dashboard"
WAIT_S = 60.0


def _found(*names: str) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = _found("chromium", "chromium-browser"), _found("chromedriver")
    if not browser or not driver:
        pytest.fail("Debian's chromium and chromium-driver are needed (scripts/setup-host.sh installs them: "
                    "apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    web = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    web.set_page_load_timeout(WAIT_S)
    try:
        yield web
    finally:
        web.quit()


def shoot(web, name: str, folder: Path = SHOTS, full: bool = False) -> Path:
    """A screenshot of the window (full: of the whole page, up to 6000 pixels), kept as a test artifact."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    size = web.get_window_size()
    if full:
        height = web.execute_script("return document.documentElement.scrollHeight")
        web.set_window_size(size["width"], min(max(height, size["height"]), 6000))
    try:
        web.save_screenshot(str(path))
    finally:
        if full:
            web.set_window_size(size["width"], size["height"])
    return path


def wait_for(web, condition: Callable, what: str, timeout: float = WAIT_S):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:  # a live page replaces its live part as events come: an element found may be gone a moment later
        return WebDriverWait(web, timeout, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        shoot(web, "timed-out")
        raise AssertionError(f"{what}: not within {timeout:.0f} s; the page: {web.current_url}\n"
                             f"{web.find_element('tag name', 'body').text[:3000]}\nthe browser's log: "
                             f"{web.get_log('browser')}") from None
