"""Headless Chromium for the tests (not a test module): Debian's ``chromium`` driven by Selenium
through Debian's ``chromedriver``, both given by path so Selenium Manager never looks for or
downloads anything, and a :class:`Page` object for the page at ``GET /``."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)
WINDOW = (1000, 900)

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
           "apt-get install chromium chromium-driver (.ci/run installs them)",
)


@contextlib.contextmanager
def chromium(profile_dir: Path) -> Iterator:
    """A Selenium driver of headless Chromium with a fresh profile in ``profile_dir``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """What a person does on the page, and what it shows."""

    def __init__(self, driver):
        self.driver = driver

    def element(self, element_id: str):
        return self.driver.find_element("id", element_id)

    def state(self) -> tuple[str, int]:
        body = self.driver.find_element("tag name", "body")
        return body.get_attribute("data-state"), int(body.get_attribute("data-runs"))

    def set_field(self, element_id: str, value: str) -> None:
        field = self.element(element_id)
        field.clear()
        field.send_keys(value)

    def wait_for_run(self, start, runs_before: int, timeout_s: float = 120) -> str:
        """Perform ``start()`` and wait until the page has finished one more run; its end state."""
        from selenium.webdriver.support.ui import WebDriverWait

        start()
        WebDriverWait(self.driver, timeout_s).until(lambda _: self.state()[1] > runs_before)
        return self.state()[0]

    def choose(self, path: Path) -> str:
        """Choose a file (the page sends it at once); the page's state once the answer is shown."""
        return self.wait_for_run(lambda: self.element("file").send_keys(str(path)), self.state()[1])

    def press_detect(self) -> str:
        return self.wait_for_run(lambda: self.element("run").click(), self.state()[1])

    def error(self) -> tuple[str, str]:
        box = self.element("error")
        return box.get_attribute("data-status"), box.text

    def canvas_boxes(self, canvas) -> list[list[float]]:
        return json.loads(canvas.get_attribute("data-boxes"))

    def pixels(self, canvas, points: list[tuple[int, int]]) -> list[list[int]]:
        """RGB of ``points`` (x, y) of a canvas's own pixels, read in the page."""
        return self.driver.execute_script(
            "const context = arguments[0].getContext('2d');"
            "return arguments[1].map(([x, y]) => Array.from(context.getImageData(x, y, 1, 1).data.slice(0, 3)));",
            canvas, [list(p) for p in points],
        )

    def problems(self) -> list[str]:
        """Browser log lines that mean a broken page: script errors, anything the CSP refused."""
        entries = self.driver.get_log("browser")
        return [e["message"] for e in entries
                if e["level"] == "SEVERE" and "Failed to load resource: the server responded" not in e["message"]]


def save_screenshot(driver, path: Path) -> None:
    """The whole page at the test window's width, as a 256-colour PNG (small enough to commit)."""
    from PIL import Image

    height = driver.execute_script("return document.documentElement.scrollHeight")
    chrome = driver.execute_script("return window.outerHeight - window.innerHeight")
    driver.set_window_size(WINDOW[0], height + chrome)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        png = driver.get_screenshot_as_png()
    finally:
        driver.set_window_size(*WINDOW)
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
        path, optimize=True)
