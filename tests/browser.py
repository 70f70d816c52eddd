"""A real headless Chromium (Debian's `chromium` and `chromium-driver` packages) driven through Selenium, for
checking pages the way a reader's browser shows them."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# CI installs them (apt-get install chromium chromium-driver); elsewhere the browser tests are skipped, saying why.
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver packages"
)


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[object]:
    """A headless Chromium with no network of its own (no updates, no background requests) and a throw-away
    profile; its console messages are kept for `console_errors`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                     f"--user-data-dir={profile}", f"--window-size={width},{height}"):  # fmt: skip
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def open_file(driver, path: Path) -> None:
    driver.get(path.resolve().as_uri())


def highlights(driver) -> dict[str, str]:
    """Each highlighted quote's text as the browser renders it: the text of its pieces (`mark` elements sharing a
    `data-q` id), in page order."""
    return driver.execute_script(
        "var out = {};"
        "document.querySelectorAll('mark').forEach(function (m) {"
        "  m.getAttribute('data-q').split(' ').forEach(function (id) { out[id] = (out[id] || '') + m.textContent; });"
        "});"
        "return out;"
    )
