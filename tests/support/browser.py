"""A real headless Chromium for the console's tests and screenshots: Debian's ``chromium`` and
``chromium-driver`` (installed by ``scripts/bootstrap-system.sh``), driven by Selenium.

Both executables are named explicitly, so Selenium Manager never tries to download a driver or a browser
(the machine's network is closed, and a test must not depend on it). The flags keep the browser from
reaching anything but the pages it is sent to (no sync, component updates, background networking or
QUIC) and work as root in a container (``--no-sandbox``); each browser gets a fresh profile folder,
removed when it closes, so no cookie or cache outlives a test.

``signed_in`` goes through the console's own sign-in form, as a person would; waits are conditions
(``WebDriverWait``), never sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

T = TypeVar("T")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # /dev/shm is small in containers
)


def executables() -> tuple[str, str]:
    """(chromium, chromedriver); an AssertionError naming what is missing and how to get it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert browser and driver, "no Chromium or no chromedriver: make system-deps (chromium chromium-driver)"
    return browser, driver


@contextlib.contextmanager
def chromium(width: int = 1440, height: int = 1000) -> Iterator[webdriver.Chrome]:
    browser, driver_path = executables()
    profile = Path(tempfile.mkdtemp(prefix="aoetl-chromium-"))
    options = Options()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(
    driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 30.0, what: str = ""
) -> T:
    """``condition(driver)`` once it is truthy (Selenium's WebDriverWait: polled, never a fixed sleep)."""
    # the live part of a page is replaced while it is read: an element may vanish between two calls
    ignored = (NoSuchElementException, StaleElementReferenceException)
    wait = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored)
    return wait.until(condition, f"waited {timeout}s for {what}")


def signed_in(driver: WebDriver, base_url: str, token: str) -> None:
    """Open the console, be sent to its sign-in form, sign in with ``token``, land on the runs."""
    driver.get(f"{base_url}/ui/runs")
    wait_for(driver, lambda d: d.current_url.endswith("/ui/login"), what="the sign-in form")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    wait_for(driver, lambda d: d.current_url.endswith("/ui/runs"), what="the runs after signing in")


def screenshot(driver: webdriver.Chrome, folder: Path | None, name: str) -> Path | None:
    """The whole page, below the window's fold too, as ``folder/name.png`` (nothing when ``folder`` is
    None): Chromium's own capture through the DevTools protocol, clipped to the page's content."""
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    content = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": content["width"], "height": content["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
