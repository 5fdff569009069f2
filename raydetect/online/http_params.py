"""Query parameters of the HTTP endpoints: parsed strictly, refused with 422 and a clear message.

Unknown and repeated parameters are refused too: a misspelt ``min_facesize`` silently ignored
would return results for the default size, which is worse than an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from raydetect.core.image_checks import MAX_SIDE
from raydetect.mtcnn.defaults import MIN_FACE_SIZE
from raydetect.online.http_errors import RequestRejected

# Stricter than the library (any min_face_size >= 1): below 10 px P-Net sees the frame upscaled
# more than 1.2x (cost grows as (12 / min_face_size)^2), and the MTCNN weights were never trained
# for it; a public endpoint should not let one request cost that much. Above the detector's
# largest image side no face can be found.
MIN_FACE_SIZE_RANGE = (10, MAX_SIDE)
DEFAULT_MIN_FACE_SIZE = int(MIN_FACE_SIZE)  # the query takes whole pixels
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class DetectParams:
    """Query of ``POST /detect``."""

    min_face_size: int = DEFAULT_MIN_FACE_SIZE
    crops: bool = False


@dataclass(frozen=True)
class VideoParams:
    """Query of ``POST /detect/video``: sample every ``every``-th frame or ``fps`` frames per second."""

    min_face_size: int = DEFAULT_MIN_FACE_SIZE
    every: int | None = None
    fps: float | None = None


def parse_detect_params(query: Iterable[tuple[str, str]]) -> DetectParams:
    """``min_face_size`` (int, default :data:`DEFAULT_MIN_FACE_SIZE`) and ``crops`` (bool, default false)."""
    values = _single_values(query, ("min_face_size", "crops"))
    return DetectParams(
        min_face_size=_parse_min_face_size(values.get("min_face_size")),
        crops=_parse_bool("crops", values["crops"]) if "crops" in values else False,
    )


def parse_video_params(query: Iterable[tuple[str, str]], max_fps: float = 240.0) -> VideoParams:
    """``min_face_size``, and at most one of ``every`` (int >= 1) and ``fps`` (0 < fps <= max_fps);
    with neither, every frame is sampled."""
    values = _single_values(query, ("min_face_size", "every", "fps"))
    if "every" in values and "fps" in values:
        raise RequestRejected(422, "give either 'every' or 'fps', not both")
    every = None
    if "every" in values:
        every = _parse_int("every", values["every"])
        if every < 1:
            raise RequestRejected(422, f"'every' must be at least 1, got {every}")
    fps = None
    if "fps" in values:
        try:
            fps = float(values["fps"])
        except ValueError:
            raise RequestRejected(422, f"'fps' must be a number, got {values['fps']!r}") from None
        if not math.isfinite(fps) or not 0 < fps <= max_fps:
            raise RequestRejected(422, f"'fps' must be in (0, {max_fps:g}], got {values['fps']!r}")
    return VideoParams(min_face_size=_parse_min_face_size(values.get("min_face_size")), every=every, fps=fps)


def _single_values(query: Iterable[tuple[str, str]], allowed: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in query:
        if key not in allowed:
            raise RequestRejected(422, f"unknown query parameter {key!r}; allowed: {', '.join(allowed)}")
        if key in values:
            raise RequestRejected(422, f"query parameter {key!r} given more than once")
        values[key] = value
    return values


def _parse_int(name: str, text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise RequestRejected(422, f"{name!r} must be an integer, got {text!r}") from None


def _parse_min_face_size(text: str | None) -> int:
    if text is None:
        return DEFAULT_MIN_FACE_SIZE
    value = _parse_int("min_face_size", text)
    low, high = MIN_FACE_SIZE_RANGE
    if not low <= value <= high:
        raise RequestRejected(422, f"'min_face_size' must be between {low} and {high} pixels, got {value}")
    return value


def _parse_bool(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise RequestRejected(422, f"{name!r} must be true or false, got {text!r}")
