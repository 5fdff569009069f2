"""Face crops for a downstream classifier: a square around each face, fixed size, JPEG bytes."""

from __future__ import annotations

import math

import cv2
import numpy as np


def crop_square(image: np.ndarray, box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """The square around one face, resized to ``size`` x ``size``.

    Args:
        image: (H, W, 3) uint8 frame.
        box: ``x1, y1, x2, y2`` of the face in pixels of ``image``.
        size: side of the returned crop in pixels.
        margin: extra context as a fraction of the face: the square's side is
            ``max(x2 - x1, y2 - y1) * (1 + margin)``, centred on the box's centre.

    Returns:
        (size, size, 3) uint8. The square keeps its centre and scale at the frame's edges:
        the part that falls outside the frame is black (zero padding), never shifted or squeezed.
    """
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    if margin < 0:
        raise ValueError(f"crop margin must be >= 0, got {margin}")
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + margin)
    left = math.floor((x1 + x2 - side) / 2)
    top = math.floor((y1 + y2 - side) / 2)
    side_px = max(1, math.ceil(side))
    height, width = image.shape[:2]

    canvas = np.zeros((side_px, side_px, image.shape[2]), dtype=image.dtype)
    src_x0, src_y0 = max(left, 0), max(top, 0)
    src_x1, src_y1 = min(left + side_px, width), min(top + side_px, height)
    if src_x1 > src_x0 and src_y1 > src_y0:
        canvas[src_y0 - top:src_y1 - top, src_x0 - left:src_x1 - left] = image[src_y0:src_y1, src_x0:src_x1]
    interpolation = cv2.INTER_AREA if side_px > size else cv2.INTER_LINEAR
    return cv2.resize(canvas, (size, size), interpolation=interpolation)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 RGB image."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return encoded.tobytes()


def face_crops(image: np.ndarray, boxes: np.ndarray, size: int, margin: float, quality: int = 90) -> list[bytes]:
    """JPEG crops of every face in one frame. ``boxes``: (N, 4) ``x1, y1, x2, y2`` in pixels of ``image``."""
    return [encode_jpeg(crop_square(image, box, size, margin), quality) for box in boxes]
