"""Shared fixtures of the games tests: a headless Chromium driven through Selenium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

#: Set (to anything) where a browser must be present, e.g. in CI, whose set-up installs it:
#: the end-to-end tests then fail instead of being skipped when Chromium is missing.
REQUIRE_BROWSER = "WEIGHTSPACE_REQUIRE_BROWSER"


@dataclass(frozen=True)
class Browser:
    """A headless Chromium session and the Selenium helpers a test needs."""

    driver: Any
    by: Any
    ec: Any
    wait_type: Any

    def wait(self, timeout: float) -> Any:
        """A ``WebDriverWait`` on this driver with ``timeout`` seconds."""
        return self.wait_type(self.driver, timeout)


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A headless Chromium (Debian ``chromium`` + ``chromium-driver``), quit after the test."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        message = "needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)"
        if os.environ.get(REQUIRE_BROWSER):
            pytest.fail(f"{message}; {REQUIRE_BROWSER} is set, so this is an error")
        pytest.skip(message)
    webdriver = pytest.importorskip("selenium.webdriver")
    by = pytest.importorskip("selenium.webdriver.common.by").By
    wait_mod = pytest.importorskip("selenium.webdriver.support.wait")
    ec = pytest.importorskip("selenium.webdriver.support.expected_conditions")
    service_mod = pytest.importorskip("selenium.webdriver.chrome.service")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=service_mod.Service(chromedriver), options=options)
    try:
        yield Browser(driver=driver, by=by, ec=ec, wait_type=wait_mod.WebDriverWait)
    finally:
        driver.quit()
