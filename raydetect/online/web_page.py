"""The page at ``GET /``: try the detector in a browser, on the service's own detection routes.

Three fixed files from ``raydetect/online/page/`` (package data), read once when the app is built:
``index.html`` at ``/``, ``page.js`` and ``page.css`` under ``/page/``. Nothing else is served
here: no route takes a path or a URL from the request. The page calls ``POST /detect`` and
``POST /detect/video`` from the browser, as any client does, and keeps a bearer token in memory
only (sent as the ``Authorization`` header, never stored).

Every answer carries a Content-Security-Policy that allows the page's own origin alone (plus
``blob:`` for the user's chosen file, drawn on a canvas), so nothing can load from elsewhere.
"""

from __future__ import annotations

from importlib import resources
from string import Template

from fastapi import FastAPI
from starlette.responses import Response

from raydetect.online.http_params import DEFAULT_MIN_FACE_SIZE, MIN_FACE_SIZE_RANGE

PAGE_PACKAGE = "raydetect.online.page"  # a folder of data files, installed as package data
ASSET_PREFIX = "/page/"
# Static assets: file name -> media type. Fixed list; a request can name nothing else.
ASSETS = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",  # the chosen image (blob:), the empty favicon (data:)
    "media-src 'self' blob:",  # the chosen clip, decoded by the browser to draw its frames
    "connect-src 'self'",  # POST /detect and /detect/video on this origin only
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def read_page_file(name: str) -> str:
    """Text of one file of the page, from the installed package."""
    return resources.files(PAGE_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def render_index(token_required: bool) -> str:
    """index.html with the service's parameter range and whether it asks for a token filled in."""
    low, high = MIN_FACE_SIZE_RANGE
    return Template(read_page_file("index.html")).substitute(
        default_min_face_size=DEFAULT_MIN_FACE_SIZE,
        min_face_size_low=low,
        min_face_size_high=high,
        token_required="true" if token_required else "false",
        # Relative: the page also works under a Serve route prefix other than "/" (opened with its
        # trailing slash).
        asset_prefix=ASSET_PREFIX.lstrip("/"),
    )


def add_page_routes(app: FastAPI, token_required: bool) -> None:
    """Register ``GET /`` and the page's assets on ``app``; ``token_required`` shows the token field."""
    index = render_index(token_required).encode()
    assets = {name: (read_page_file(name).encode(), media) for name, media in ASSETS.items()}

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(index, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    for name, (body, media) in assets.items():
        app.add_api_route(
            ASSET_PREFIX + name, _asset_endpoint(body, media), methods=["GET"], include_in_schema=False
        )


def _asset_endpoint(body: bytes, media: str):
    async def asset() -> Response:
        return Response(body, media_type=media, headers=SECURITY_HEADERS)

    return asset
