"""The HTTP API: routes, error answers and streaming, around any detector client.

``create_api(detector, limits, token)`` returns an ASGI app (FastAPI). ``detector`` is
anything with ``async detect(image, min_face_size) -> Detections`` and ``async ready() ->
dict``: the Serve ingress passes a client of the batched detector deployment, and
:class:`InProcessDetector` runs a detector in this process (no Ray).

Endpoints:
    POST /detect          one image (raw body or multipart field ``image``) -> JSON faces
    POST /detect/video    one short clip (raw body or multipart field ``video``) -> NDJSON,
                          one line per sampled frame, each face with its ``track_id``
    GET  /healthz         200 once the detector answers, 503 before
    GET  /                a page to try the two detection routes in a browser
                          (:mod:`raydetect.online.web_page`)

Every refusal is ``{"error": "..."}`` with a 4xx status; the service never fetches a URL or
opens a path named in a request: it reads bodies only.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
from typing import AsyncIterator, Callable, Protocol

import numpy as np
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from raydetect.online.detector_pool import DetectorPool, DetectRequest
from raydetect.errors import InvalidImageError
from raydetect.online.http_body import check_bearer_token, read_upload
from raydetect.online.http_errors import RequestRejected, ServiceUnavailable
from raydetect.online.image_uploads import IMAGE_MEDIA_TYPES, decode_image
from raydetect.online.http_params import parse_detect_params, parse_video_params
from raydetect.online.video_uploads import VIDEO_MEDIA_TYPES, UploadedClip
from raydetect.core.results import Detections
from raydetect.core.tracking import FaceTracker
from raydetect.online.options import RequestLimits
from raydetect.online.web_page import add_page_routes

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 5.0
NDJSON = "application/x-ndjson"


class DetectorClient(Protocol):
    async def detect(self, image: np.ndarray, min_face_size: int) -> Detections: ...

    async def ready(self) -> dict: ...


def create_api(
    detector: DetectorClient, limits: RequestLimits | Callable[[], RequestLimits], token: str | None = None
) -> FastAPI:
    """The ASGI app serving ``detector`` within ``limits``; ``token`` (if set) guards detection.

    ``limits`` may be a callable returning the limits in force, read at each request (the Serve
    ingress changes them at runtime).
    """
    current_limits = limits if callable(limits) else (lambda: limits)
    app = FastAPI(title="raydetect", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestRejected)
    async def rejected(_: Request, exc: RequestRejected) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(_: Request, exc: ServiceUnavailable) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths (404) and wrong methods (405) answer in the same JSON shape.
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("request failed")
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        try:
            info = await asyncio.wait_for(detector.ready(), HEALTH_TIMEOUT_S)
        except Exception as exc:  # not loaded yet, replica gone, timeout: all mean "not ready"
            return JSONResponse({"error": f"detector not ready: {type(exc).__name__}: {exc}"}, status_code=503)
        return JSONResponse({"status": "ok", **info})

    add_page_routes(app, token_required=token is not None)

    @app.post("/detect")
    async def detect(request: Request) -> JSONResponse:
        limits = current_limits()
        check_bearer_token(request.headers.get("authorization"), token)
        params = parse_detect_params(request.query_params.multi_items())
        data, _ = await read_upload(
            request, limit=limits.max_image_bytes, field="image", accepted_types=IMAGE_MEDIA_TYPES, what="image"
        )
        image = await asyncio.to_thread(decode_image, data, limits.max_image_pixels)
        detections = await _detect(detector, image, params.min_face_size)
        body = {"width": int(image.shape[1]), "height": int(image.shape[0]), **detections.to_dict()}
        if params.crops and len(detections):
            crops = await asyncio.to_thread(_encoded_crops, image, detections, limits)
            for face, crop in zip(body["faces"], crops):
                face["crop"] = crop
        return JSONResponse(body)

    @app.post("/detect/video")
    async def detect_video(request: Request) -> StreamingResponse:
        limits = current_limits()
        check_bearer_token(request.headers.get("authorization"), token)
        params = parse_video_params(request.query_params.multi_items())
        data, _ = await read_upload(
            request, limit=limits.max_video_bytes, field="video", accepted_types=VIDEO_MEDIA_TYPES, what="video"
        )
        clip = await asyncio.to_thread(UploadedClip, data, limits.max_video_frames, limits.max_video_pixels)
        del data
        headers = {
            "X-Video-Frames": str(clip.info.frame_count),
            "X-Video-Fps": f"{clip.info.fps:g}",
            "X-Video-Size": f"{clip.info.width}x{clip.info.height}",
        }
        return StreamingResponse(
            _video_lines(detector, clip, params, limits.video_frames_in_flight), media_type=NDJSON, headers=headers
        )

    return app


async def _detect(detector: DetectorClient, image: np.ndarray, min_face_size: int) -> Detections:
    try:
        return await detector.detect(image, min_face_size)
    except InvalidImageError as exc:
        raise RequestRejected(400, f"image refused by the detector: {exc}") from None


def _encoded_crops(image: np.ndarray, detections: Detections, limits: RequestLimits) -> list[str]:
    """Base64 JPEG of the square crop around each face (raydetect.core.crops, as the offline job)."""
    from raydetect.core.crops import face_crops

    crops = face_crops(image, detections.boxes, limits.crop_size, limits.crop_margin)
    return [base64.b64encode(crop).decode("ascii") for crop in crops]


async def _video_lines(
    detector: DetectorClient, clip: UploadedClip, params, in_flight: int
) -> AsyncIterator[bytes]:
    """One JSON line per sampled frame, in frame order, each face with its ``track_id``.

    Faces are linked across the clip's sampled frames by :class:`FaceTracker` (the offline job's
    linker, with its defaults; shot cuts are found from the frames). Up to ``in_flight`` frames
    are sent to the detector before the oldest answer is awaited, so the frames of one clip batch
    together. Once streaming has begun the status is 200; a failure after that ends the stream
    with a last line ``{"error": "..."}``.
    """
    pending: collections.deque = collections.deque()
    tracker = FaceTracker()
    frames = clip.frames(params)
    try:
        while True:
            frame = await asyncio.to_thread(next, frames, None)
            if frame is None:
                break
            task = asyncio.ensure_future(detector.detect(frame.image, params.min_face_size))
            pending.append((frame, task))
            if len(pending) >= in_flight:
                yield await _frame_line(tracker, *pending.popleft())
        while pending:
            yield await _frame_line(tracker, *pending.popleft())
    except Exception as exc:  # decoding failed part-way (truncated file): say so on the stream
        logger.warning("video stream ended early: %s", exc)
        message = str(exc).replace(f"{clip.path}: ", "")
        yield _json_line({"error": f"video decoding stopped: {message}"})
    finally:
        for _, task in pending:
            task.cancel()
        try:
            frames.close()  # releases the capture; a generator object, or a plain iterator
        except (AttributeError, ValueError):
            pass  # no close(), or still running in a thread cancelled mid-read
        await asyncio.to_thread(clip.close)


async def _frame_line(tracker: FaceTracker, frame, task: asyncio.Future) -> bytes:
    """The line of one sampled frame (frames come here in order, as the tracker needs them)."""
    line = {"frame_index": frame.index, "timestamp_s": round(frame.timestamp_s, 6)}
    try:
        detections = await task
    except (InvalidImageError, ServiceUnavailable) as exc:
        line["error"] = f"frame not processed: {exc}"
        detections = Detections.empty()
    track_ids = await asyncio.to_thread(tracker.update, detections, frame.index, frame.timestamp_s, frame.image)
    line.update(detections.to_dict())
    for face, track_id in zip(line["faces"], track_ids):
        face["track_id"] = int(track_id)
    return _json_line(line)


def _json_line(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


class InProcessDetector:
    """A detector client that runs a :class:`DetectorPool` in this process, one request at a
    time in a worker thread: the HTTP API without Ray (development, tests). It does not batch
    across requests; the Serve deployment does."""

    def __init__(self, pool: DetectorPool):
        self._pool = pool
        self._lock = asyncio.Lock()

    async def detect(self, image: np.ndarray, min_face_size: int) -> Detections:
        async with self._lock:
            (result,) = await asyncio.to_thread(self._pool.run, [DetectRequest(image, min_face_size, cost=1)])
        if isinstance(result, Exception):
            raise result
        return result

    async def ready(self) -> dict:
        return {"detector": self._pool.stats()}
