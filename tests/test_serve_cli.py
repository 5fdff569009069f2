"""`raydetect serve` end to end: the command in a subprocess with its own local Ray instance, real
HTTP on 127.0.0.1, the page at ``GET /`` in headless Chromium, and a clean stop on SIGINT.

One server for the whole module (its start and stop take most of the time); the tests run in file
order and the last one stops it. Only the process group this module started is ever killed.

In the browser, the page draws on canvases and records what it drew in data attributes; the tests
compare those with the service's own JSON answers and read the canvas pixels where the boxes must
be. ``RAYDETECT_SCREENSHOT=docs/img/serve-page.png`` saves the screenshot shown in the docs.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import requests

from browser import Page, chromium, needs_chromium, save_screenshot
from http_helpers import free_port, raydetect_serve
from raydetect.online.options import TOKEN_ENV

TOKEN = "cli-test-token-41d0"
MAX_VIDEO_FRAMES = 30  # the clip limit given to the command: the 45-frame clip is refused with 413
MAX_IMAGE_MB = 1  # the image body limit given to the command (the test photos are far smaller)
BOX_RGB = (0x00, 0xE6, 0x76)  # page.js BOX_COLOUR, faces without a track
ATOL = 0.01  # pixels: a batch of other composition may change the last float bits
SCREENSHOT_ENV = "RAYDETECT_SCREENSHOT"


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses (hex, as in /proc/net/tcp*) with a listening socket on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.fixture(scope="module")
def served():
    """`raydetect serve` with a bearer token from its environment, a 1 MiB image body limit and a
    30-frame clip limit, on a free port of 127.0.0.1."""
    args = ["--cpus-per-replica", "0.5", "--max-image-mb", str(MAX_IMAGE_MB),
            "--max-video-frames", str(MAX_VIDEO_FRAMES)]
    with raydetect_serve(free_port(), args, {TOKEN_ENV: TOKEN}) as process:
        yield process


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture
def page(browser, served):
    """The page freshly loaded from the service."""
    browser.get(f"{served.url}/")
    return Page(browser)


def post(url: str, data: bytes, content_type: str, **params) -> requests.Response:
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"}
    return requests.post(url, data=data, headers=headers, params=params, timeout=120)


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc to check the listening address")
def test_raydetect_serve_command(served, data_dir):
    port = int(served.url.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"0100007F"}, "Serve must listen on 127.0.0.1 only"
    assert requests.get(f"{served.url}/healthz", timeout=30).status_code == 200
    image = (data_dir / "obama-240p.jpg").read_bytes()
    response = post(f"{served.url}/detect", image, "image/jpeg")
    assert response.status_code == 200, response.text
    assert len(response.json()["faces"]) == 1
    response = requests.post(f"{served.url}/detect", data=image, headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert response.status_code == 401  # the token from the command's environment is enforced


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
    oversize = tmp_path / "oversize.jpg"
    oversize.write_bytes((data_dir / "obama-240p.jpg").read_bytes()[:4] + bytes(2 * MAX_IMAGE_MB * 2**20))
    assert page.choose(oversize) == "error"
    status, text = page.error()
    assert status == "413" and f"image body too large ({oversize.stat().st_size} bytes)" in text, text

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
    # Boxes are coloured by track when the answer has tracks (each frame's canvas records its faces'
    # track ids, null without one), in one colour otherwise.
    for frame, line in zip(frames, expected):
        assert json.loads(frame.get_attribute("data-track-ids")) == [face.get("track_id") for face in line["faces"]]
    tracks = {face["track_id"] for line in expected for face in line["faces"] if "track_id" in face}
    legend = page.element("legend").text
    assert legend == (f"{len(tracks)} tracks, boxes coloured by track" if tracks else ""), legend
    assert page.element("face-count").text == str(sum(len(line["faces"]) for line in expected))
    shown = page.element("json").get_attribute("textContent").splitlines()
    assert [json.loads(line)["frame_index"] for line in shown] == [line["frame_index"] for line in expected]
    assert page.problems() == []


def test_raydetect_serve_stops_cleanly_on_sigint(served):
    """Last in this module: the command stops its application and Ray and exits 0."""
    served.process.send_signal(signal.SIGINT)
    assert served.process.wait(timeout=90) == 0, served.tail()
