"""What ``GET /`` serves, without a browser: the page, its assets and their headers, and no route
outside the fixed list. The API runs in this process, served by uvicorn on 127.0.0.1.

The page itself is tested in headless Chromium against ``raydetect serve`` in test_serve_cli.py.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests

from http_helpers import free_port
from raydetect.online.web_page import ASSET_PREFIX, ASSETS

TOKEN = "page-test-token-7c3b"



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
    assert referenced == {f"{ASSET_PREFIX.lstrip('/')}{name}" for name in ASSETS} | {"data:,"}, referenced
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
