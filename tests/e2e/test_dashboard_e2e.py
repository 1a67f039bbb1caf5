"""The admin dashboard in a real browser (headless Chromium through Selenium).

A ``refractium run`` subprocess with an ``[admin]`` token and three routes,
two of them named ``https`` (ids ``https#1`` and ``https#2``), relays real
connections while the page is open: the test checks what a person would
see (route ids, backends up and down, the open-connection figure moving
without a reload, charts with content), that the page asks nothing of any
other host, and the token's way in (401, ``?token=`` once, then the cookie).
Chromium's calls block, so they run in a thread while the backends and
clients run in the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.kit import browser
from tests.kit.backends import free_port, http_backend, tls_backend
from tests.kit.proxy import running_proxy

HOST = "127.0.0.1"
TOKEN = "e2e-dashboard-token"
WAIT_S = 10.0
T = TypeVar("T")

CONFIG = """
[server]
bind = ["127.0.0.1"]
port = [0]

[server.health_check]
interval_ms = 100
fall = 1

[admin]
bind = "127.0.0.1:{admin}"
token = "{token}"

[[protocols]]
name = "http"
forward_to = "127.0.0.1:{web}"

[[protocols]]
name = "https"
sni = ["a.example"]
forward_to = "127.0.0.1:{a}"

[[protocols]]
name = "https"
sni = ["b.example"]
forward_to = ["127.0.0.1:{b}", "127.0.0.1:{dead}"]
health_check = true
"""


def wait(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], T]) -> T:
    """Poll ``condition`` until it is truthy (or fail after :data:`WAIT_S`).

    The page rebuilds its tables every second, so an element found a moment
    ago may be gone: such a look is simply tried again.
    """
    waiting = WebDriverWait(
        driver, WAIT_S, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    return waiting.until(condition)


def text_of(element_id: str) -> Callable[[webdriver.Chrome], str]:
    return lambda d: d.find_element(By.ID, element_id).text


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(function, *args)


async def hold_http(port: int, n: int) -> list[asyncio.StreamWriter]:
    """``n`` connections identified as HTTP whose request never ends: relayed, open."""
    writers = []
    for _ in range(n):
        _, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n")
        await writer.drain()
        writers.append(writer)
    return writers


async def get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    async with asyncio.timeout(5):
        data = await reader.read()
    writer.close()
    return data


async def test_dashboard_in_chromium() -> None:
    assert browser.available(), "needs chromium and chromedriver: run scripts/install-tools.sh"
    admin_port, dead = free_port(), free_port()
    async with (
        http_backend("web") as web,
        tls_backend("a", ["a.example"]) as a,
        tls_backend("b", ["b.example"]) as b,
    ):
        config = CONFIG.format(
            admin=admin_port, token=TOKEN, web=web.port, a=a.port, b=b.port, dead=dead
        )
        async with running_proxy("run", config=config) as proxy:
            await proxy.wait_for(r"admin API listening on http://127\.0\.0\.1:\d+")
            origin = f"http://{HOST}:{admin_port}"
            with browser.chromium() as driver:
                await look(driver, origin, proxy.port, [web.port, a.port, b.port, dead])


async def look(driver: webdriver.Chrome, origin: str, proxy: int, backends: list[int]) -> None:
    network = browser.NetworkLog(driver)

    # -- the token ---------------------------------------------------------
    await in_thread(driver.get, origin + "/")
    assert "needs the admin token" in driver.find_element(By.TAG_NAME, "h1").text
    await in_thread(driver.get, origin + "/?token=wrong")
    assert "needs the admin token" in driver.find_element(By.TAG_NAME, "h1").text
    network.read()
    assert network.statuses[origin + "/"] == 401
    assert network.statuses[origin + "/?token=wrong"] == 401
    assert driver.get_cookies() == []

    await in_thread(driver.get, f"{origin}/?token={TOKEN}")
    network.read()
    assert network.statuses[f"{origin}/?token={TOKEN}"] == 303
    # The token left the address bar; the cookie stays out of scripts' reach.
    assert driver.current_url == origin + "/"
    (cookie,) = driver.get_cookies()
    assert cookie["name"] == "refractium_admin" and TOKEN not in cookie["value"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"

    # -- routes and backends -------------------------------------------------
    # Read in one script call each: the tables are rebuilt every second.
    rows = await in_thread(
        wait,
        driver,
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#routes tr[data-route]')]"
            ".map((row) => [row.dataset.route, row.querySelector('td b').innerText])"
        ),
    )
    assert rows == [["http", "http"], ["https#1", "https#1"], ["https#2", "https#2"]]

    expected = {
        f"{HOST}:{backends[0]}": "UP",
        f"{HOST}:{backends[1]}": "UP",
        f"{HOST}:{backends[2]}": "UP",
        f"{HOST}:{backends[3]}": "DOWN",
    }
    last: list[dict[str, str]] = []

    def badges(d: webdriver.Chrome) -> bool:
        shown: dict[str, str] = d.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#routes .backend')]"
            ".map((b) => [b.dataset.address, b.querySelector('.badge').innerText]))"
        )
        last[:] = [shown]
        # Once the checks have run; a live backend whose check timed out on a busy
        # machine comes back UP two checks later, as the page shows too.
        return shown == expected

    try:
        await in_thread(wait, driver, badges)
    except TimeoutException:
        raise AssertionError(f"badges: {last} != {expected}") from None

    # -- the open-connection figure follows traffic without a reload -------------
    await in_thread(wait, driver, lambda d: text_of("open-connections")(d) == "0")
    for _ in range(5):
        assert (await get(proxy)).endswith(b"web\n")
    held = await hold_http(proxy, 3)
    await in_thread(wait, driver, lambda d: text_of("open-connections")(d) == "3")
    active = '#routes tr[data-route="http"] .route-active'
    await in_thread(wait, driver, lambda d: d.find_element(By.CSS_SELECTOR, active).text == "3")
    for writer in held:
        writer.close()
    await in_thread(wait, driver, lambda d: text_of("open-connections")(d) == "0")
    assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1

    # -- the charts have content ------------------------------------------------
    def drawn(d: webdriver.Chrome) -> str:
        seen = d.execute_script(
            "return window.refractium.samples.some((s) => s.connections > 0 && s.bytes_out > 0)"
        )
        path = d.find_element(By.CSS_SELECTOR, "#chart-connections path.series-connections")
        shape = path.get_attribute("d") or ""
        return shape if seen and "L" in shape else ""

    shape = await in_thread(wait, driver, drawn)
    assert shape.startswith("M")
    points = driver.execute_script(
        "return document.querySelector('#chart-bytes path.series-bytes_out').dataset.points"
    )
    assert int(points) >= 2
    assert driver.find_element(By.ID, "total-connections").text == "8"

    # -- nothing from anywhere else ---------------------------------------------
    network.read()
    ours = [url for url, document in network.requests if document.startswith(origin + "/")]
    assert any(url.startswith(origin + "/dashboard.json?since=") for url in ours)
    # What our pages asked for, and any web request at all (Chromium's own
    # new-tab page asks only for chrome:// resources), stayed on the admin address.
    assert [url for url in ours if not url.startswith(origin + "/")] == []
    web = [url for url, _ in network.requests if url.startswith(("http:", "https:", "ws"))]
    assert [url for url in web if not url.startswith(origin + "/")] == []

    artifacts = browser.artifacts_dir()
    shot = Path(artifacts) / "dashboard.png"
    driver.save_screenshot(str(shot))
    print(f"dashboard screenshot: {shot.resolve()}")
