"""The page at ``GET /`` in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) against a real ``raydetect serve`` on 127.0.0.1.

The page draws on canvases and records what it drew in data attributes; the tests compare those
with the service's own JSON answers and read the canvas pixels where the boxes must be. Set
``RAYDETECT_SCREENSHOT=path.png`` to save the screenshot of the page used in the README
(``docs/img/serve-page.png``).

The checks that need no browser (headers, assets, no route outside the fixed list) run against
the API in this process, served by uvicorn.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from http_helpers import free_port, raydetect_serve
from raydetect.online.options import TOKEN_ENV
from raydetect.online.web_page import ASSET_PREFIX, ASSETS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)
WINDOW = (1000, 900)
TOKEN = "page-test-token-7c3b"
MAX_VIDEO_FRAMES = 30  # the service's clip limit here: the 45-frame clip is refused with 413
BOX_RGB = (0x00, 0xE6, 0x76)  # page.js BOX_COLOUR, faces without a track
ATOL = 0.01  # pixels: a batch of other composition may change the last float bits
SCREENSHOT_ENV = "RAYDETECT_SCREENSHOT"

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
           "apt-get install chromium chromium-driver (.ci/run installs them)",
)


# ---- without a browser: what GET / serves -----------------------------------------------------


@pytest.fixture(scope="module")
def api_url():
    """The HTTP API with a token, in this process (uvicorn); no detector is ever built here."""
    import uvicorn

    from raydetect.online.detector_pool import DetectorPool
    from raydetect.online.http_api import InProcessDetector, create_api
    from raydetect.online.options import RequestLimits

    def no_detector(size: int):
        raise AssertionError("the page's routes must not run the detector")

    app = create_api(InProcessDetector(DetectorPool(no_detector)), RequestLimits(), token=TOKEN)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_page_and_assets_are_self_contained(api_url):
    page = requests.get(f"{api_url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert "http" not in policy and "*" not in policy, policy
    assert 'data-token-required="true"' in page.text  # this API has a token: the field shows at once
    referenced = set(re.findall(r'(?:src|href)="([^"]+)"', page.text))
    assert referenced == {f"{ASSET_PREFIX}{name}" for name in ASSETS} | {"data:,"}, referenced
    for name, media in ASSETS.items():
        asset = requests.get(f"{api_url}{ASSET_PREFIX}{name}", timeout=10)
        assert asset.status_code == 200 and asset.headers["content-type"] == media
        assert asset.headers["content-security-policy"] == policy
        # Nothing loads from elsewhere: no absolute URL, no protocol-relative one, no import.
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}|@import|localStorage|sessionStorage|cookie",
                             asset.text, re.IGNORECASE), name
    assert "${" not in page.text  # every placeholder filled


def test_page_routes_read_no_path(api_url):
    for path in ("/page/index.html", "/page/../pyproject.toml", "/page/%2e%2e/pyproject.toml", "/page/",
                 "/index.html", "/page.js"):
        response = requests.get(f"{api_url}{path}", timeout=10)
        assert response.status_code == 404, path
        assert response.json()["error"]
    assert requests.post(f"{api_url}/", timeout=10).status_code == 405


# ---- in Chromium, against `raydetect serve` -----------------------------------------------------


@pytest.fixture(scope="module")
def served():
    """`raydetect serve` with a bearer token and a 30-frame clip limit on a free port of 127.0.0.1."""
    args = ["--cpus-per-replica", "0.5", "--max-video-frames", str(MAX_VIDEO_FRAMES)]
    with raydetect_serve(free_port(), args, {TOKEN_ENV: TOKEN}) as process:
        yield process


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through the Debian chromedriver, both by path (Selenium Manager is never
    asked to find or download anything), with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, served):
    """The page freshly loaded from the service."""
    browser.get(f"{served.url}/")
    return Page(browser)


class Page:
    """What a person does on the page, and what it shows."""

    def __init__(self, driver):
        self.driver = driver

    def element(self, element_id: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

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


def post(url: str, data: bytes, content_type: str, **params) -> requests.Response:
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"}
    return requests.post(url, data=data, headers=headers, params=params, timeout=120)


@needs_chromium
def test_page_draws_the_faces_of_an_image(page, served, data_dir):
    image_path = data_dir / "multiface.jpg"
    assert page.element("token-field").is_displayed()  # the service asks for a token

    # Without the token: the service's 401, with its message, and the token field focused.
    assert page.choose(image_path) == "error"
    status, text = page.error()
    assert status == "401" and "bearer token" in text, text
    assert page.driver.switch_to.active_element.get_attribute("id") == "token"

    page.set_field("token", TOKEN)
    assert page.press_detect() == "done"
    expected = post(f"{served.url}/detect", image_path.read_bytes(), "image/jpeg").json()
    faces = expected["faces"]
    assert len(faces) >= 4  # the photo holds several faces
    canvas = page.element("image-canvas")
    assert (int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))) == (
        expected["width"], expected["height"])
    drawn = page.canvas_boxes(canvas)
    assert int(canvas.get_attribute("data-faces")) == len(faces)
    np.testing.assert_allclose(drawn, [face["box"] for face in faces], atol=ATOL, rtol=0)
    assert page.element("face-count").text == str(len(faces))
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", page.element("latency").text)
    shown = page.element("json").get_attribute("textContent")
    assert np.allclose(json.loads(shown)["faces"][0]["box"], faces[0]["box"], atol=ATOL)

    # The boxes are on the canvas where the JSON puts them: the middle of each box's bottom edge
    # (clear of the score labels, above the boxes) is the box colour; the middle of the face is not.
    bottoms = [(round((x1 + x2) / 2), round(y2)) for x1, y1, x2, y2 in drawn]
    centres = [(round((x1 + x2) / 2), round((y1 + y2) / 2) - 1) for x1, y1, x2, y2 in drawn]
    for point, rgb in zip(bottoms, page.pixels(canvas, bottoms)):
        assert np.abs(np.subtract(rgb, BOX_RGB)).max() <= 40, (point, rgb)
    assert sum(np.abs(np.subtract(rgb, BOX_RGB)).max() > 40 for rgb in page.pixels(canvas, centres)) >= len(faces) - 1

    screenshot = os.environ.get(SCREENSHOT_ENV)
    if screenshot:
        save_screenshot(page.driver, Path(screenshot))
    assert page.problems() == []


@needs_chromium
def test_page_shows_each_refusal(page, data_dir, tmp_path):
    page.set_field("token", TOKEN)
    assert page.choose(data_dir / "obama-240p.jpg") == "done"
    assert page.element("error").is_displayed() is False
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    assert page.choose(notes) == "error"
    status, text = page.error()
    assert status == "415" and "unsupported Content-Type 'text/plain'" in text, text
    # Nothing of the answer before stays on show beside the message.
    canvas = page.element("image-canvas")
    assert not canvas.is_displayed() and canvas.get_attribute("data-boxes") is None
    assert not page.element("summary").is_displayed() and not page.element("json-box").is_displayed()

    page.set_field("min-face-size", "5")
    assert page.choose(data_dir / "obama-240p.jpg") == "error"
    status, text = page.error()
    assert status == "422" and "'min_face_size' must be between 10 and" in text, text

    page.set_field("min-face-size", "20")
    assert page.choose(data_dir / "hamilton_45f_640x360.avi") == "error"
    status, text = page.error()
    assert status == "413" and f"clip has 45 frames; the limit is {MAX_VIDEO_FRAMES} frames" in text, text
    assert page.problems() == []


@needs_chromium
def test_page_draws_the_frames_of_a_clip(page, served, data_dir):
    clip = data_dir / "street_crowd_24f_640x360.mp4"
    page.set_field("token", TOKEN)
    page.set_field("fps", "5")
    assert page.choose(clip) == "done"
    expected = [json.loads(line) for line in
                post(f"{served.url}/detect/video", clip.read_bytes(), "video/mp4", fps="5").text.splitlines()]
    frames = page.driver.find_elements("css selector", "#frames canvas")
    assert [int(f.get_attribute("data-frame-index")) for f in frames] == [line["frame_index"] for line in expected]
    for frame, line in zip(frames, expected):
        np.testing.assert_allclose(
            np.reshape(page.canvas_boxes(frame), (-1, 4)), np.reshape([face["box"] for face in line["faces"]], (-1, 4)),
            atol=ATOL, rtol=0)
    assert page.element("face-count").text == str(sum(len(line["faces"]) for line in expected))
    shown = page.element("json").get_attribute("textContent").splitlines()
    assert [json.loads(line)["frame_index"] for line in shown] == [line["frame_index"] for line in expected]
    assert page.problems() == []


def save_screenshot(driver, path: Path) -> None:
    """The whole page at the test window's width, as a 256-colour PNG: the committed file stays
    small, and the page's flat colours lose nothing visible."""
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
