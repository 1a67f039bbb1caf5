"""Headless Chromium through Selenium, for the tests that look at the admin dashboard.

Debian's ``chromium`` and ``chromium-driver`` (scripts/install-tools.sh). The
flags keep Chromium off the network except for the pages a test opens: on a
closed network its background requests to Google hosts would only fail, and
they would muddle the record of what a page requested. Every browser gets a
fresh profile directory, so no cookie outlives its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def available() -> bool:
    """Whether Chromium and its driver are installed where the tests look."""
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


def artifacts_dir() -> Path:
    """Where tests leave screenshots: ``$REFRACTIUM_ARTIFACTS``, else build/test-artifacts."""
    directory = Path(os.environ.get("REFRACTIUM_ARTIFACTS", "build/test-artifacts"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """A headless Chromium recording its network events (see :class:`NetworkLog`)."""
    profile = tempfile.mkdtemp(prefix="refractium-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class NetworkLog:
    """What the browser sent and got, from Chromium's performance log (CDP Network events).

    ``driver.get_log`` hands each entry out once, so :meth:`read` keeps them:
    ``requests`` lists every ``(URL requested, URL of the document asking)``,
    Chromium's own pages (its new-tab page) included; ``statuses`` each
    response's status by URL (the last one for a URL requested twice).
    """

    def __init__(self, driver: webdriver.Chrome) -> None:
        self._driver = driver
        self.requests: list[tuple[str, str]] = []
        self.statuses: dict[str, int] = {}

    def read(self) -> NetworkLog:
        for entry in self._driver.get_log("performance"):
            message: dict[str, Any] = json.loads(entry["message"])["message"]
            method = message.get("method")
            params = message.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests.append((params["request"]["url"], params.get("documentURL", "")))
                # A redirect is reported with the request it leads to.
                if "redirectResponse" in params:
                    response = params["redirectResponse"]
                    self.statuses[response["url"]] = response["status"]
            elif method == "Network.responseReceived":
                response = params["response"]
                self.statuses[response["url"]] = response["status"]
        return self
