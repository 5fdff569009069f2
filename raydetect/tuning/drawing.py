"""Pictures of what the detector found: boxes, scores and landmarks on frames; contact sheets of crops.

Every function takes and returns (H, W, 3) uint8 RGB arrays and never modifies its input.
Line widths and text sizes follow the image size, so a 4K frame and a 360p frame read alike.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from raydetect.core.results import Detections

BOX_COLOR = (0, 230, 64)  # RGB
GROUND_TRUTH_COLOR = (255, 200, 0)
# Left eye, right eye, nose, left and right mouth corner (the order of Detections.landmarks).
LANDMARK_COLORS = ((255, 64, 64), (64, 128, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255))
TEXT_COLOR = (0, 0, 0)
# Track colours, one per track id modulo their number: bright, far apart in hue, readable under black text.
TRACK_COLORS = (
    (0, 230, 64), (255, 140, 0), (0, 200, 255), (255, 64, 160), (255, 230, 0), (160, 100, 255),
    (0, 255, 200), (255, 90, 90), (150, 230, 0), (90, 160, 255), (255, 180, 220), (200, 200, 200),
)
SHEET_BACKGROUND = (32, 32, 32)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def line_width(image: np.ndarray) -> int:
    """Stroke width in pixels for ``image``: 1 px per 400 px of the shorter side, at least 1."""
    return max(1, round(min(image.shape[:2]) / 400))


def track_color(track_id: int) -> tuple[int, int, int]:
    """The RGB colour of a track (ids further apart than the palette share colours)."""
    return TRACK_COLORS[int(track_id) % len(TRACK_COLORS)]


def draw_detections(
    image: np.ndarray,
    detections: Detections,
    color: tuple[int, int, int] = BOX_COLOR,
    scores: bool = True,
    landmarks: bool = True,
    track_ids: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``image`` with each face's box, its score above it and its five landmarks.

    Args:
        image: (H, W, 3) uint8 RGB.
        detections: faces in pixel coordinates of ``image``.
        color: RGB box colour.
        scores, landmarks: draw the score label / the landmark points.
        track_ids: (N,) int track id of each face, or None; when given each box takes its track's
            colour (:func:`track_color`) and the label reads ``#id score``.
    """
    canvas = _rgb_copy(image)
    width = line_width(canvas)
    if track_ids is not None and len(track_ids) != len(detections):
        raise ValueError(f"{len(track_ids)} track ids for {len(detections)} faces")
    for index in range(len(detections)):
        face_color = color if track_ids is None else track_color(track_ids[index])
        x1, y1, x2, y2 = (int(round(float(v))) for v in detections.boxes[index])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), face_color, width)  # crisp edges, no blending
        if landmarks:
            radius = max(1, min(width + 1, int((x2 - x1) / 25) + 1))
            for (x, y), point_color in zip(detections.landmarks[index], LANDMARK_COLORS):
                cv2.circle(canvas, (int(round(float(x))), int(round(float(y)))), radius, point_color, -1, cv2.LINE_AA)
        if scores or track_ids is not None:
            parts = ([f"#{int(track_ids[index])}"] if track_ids is not None else []) + (
                [f"{float(detections.scores[index]):.2f}"] if scores else []
            )
            _label(canvas, " ".join(parts), (x1, y1), face_color, width)
    return canvas


def draw_boxes(image: np.ndarray, boxes: np.ndarray, color: tuple[int, int, int] = GROUND_TRUTH_COLOR) -> np.ndarray:
    """A copy of ``image`` with plain boxes, e.g. annotated faces; ``boxes`` (N, 4) x1, y1, x2, y2."""
    canvas = _rgb_copy(image)
    width = line_width(canvas)
    for x1, y1, x2, y2 in np.asarray(boxes, float).reshape(-1, 4):
        cv2.rectangle(canvas, (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2))), color, width)
    return canvas


def draw_caption(image: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``image`` with ``text`` in a band at the top left (e.g. frame index, face count)."""
    canvas = _rgb_copy(image)
    _label(canvas, text, (0, 0), (255, 255, 255), line_width(canvas), inside=True)
    return canvas


def contact_sheet(
    tiles: Sequence[np.ndarray],
    captions: Sequence[str] | None = None,
    columns: int = 8,
    tile_size: int = 112,
    padding: int = 4,
) -> np.ndarray:
    """A grid of face crops, each resized to ``tile_size`` square, with an optional caption below.

    Args:
        tiles: (h, w, 3) uint8 RGB images (any sizes).
        captions: one short text per tile, or None.
        columns: tiles per row (fewer when there are fewer tiles).

    Returns:
        (H, W, 3) uint8 RGB sheet.
    """
    if not len(tiles):
        raise ValueError("no face crops to put on a contact sheet")
    if columns < 1 or tile_size < 8 or padding < 0:
        raise ValueError(f"bad sheet layout: columns {columns}, tile size {tile_size}, padding {padding}")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} tiles")
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    font_scale = tile_size / 320
    caption_height = int(cv2.getTextSize("Ag", _FONT, font_scale, 1)[0][1] * 2.2) if captions else 0
    cell_w, cell_h = tile_size + padding, tile_size + caption_height + padding
    sheet = np.empty((rows * cell_h + padding, columns * cell_w + padding, 3), np.uint8)
    sheet[:] = SHEET_BACKGROUND
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        top, left = padding + row * cell_h, padding + column * cell_w
        interpolation = cv2.INTER_AREA if max(tile.shape[:2]) > tile_size else cv2.INTER_LINEAR
        sheet[top:top + tile_size, left:left + tile_size] = cv2.resize(
            _rgb_copy(tile), (tile_size, tile_size), interpolation=interpolation
        )
        if captions:
            baseline = top + tile_size + int(caption_height * 0.75)
            text = _fit_text(captions[index], tile_size, font_scale)
            cv2.putText(sheet, text, (left, baseline), _FONT, font_scale, (230, 230, 230), 1, cv2.LINE_AA)
    return sheet


def track_sheet(
    rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[str]]],
    tile_size: int = 112,
    padding: int = 4,
) -> np.ndarray:
    """One row per track: a title line, then the track's face crops left to right in time.

    Args:
        rows: ``(title, tiles, captions)`` per track: tiles (h, w, 3) uint8 RGB crops in time order,
            one short caption per tile (e.g. the face's time).

    Returns:
        (H, W, 3) uint8 RGB sheet, as wide as the longest row.
    """
    if not len(rows):
        raise ValueError("no tracks to put on a track sheet")
    if tile_size < 8 or padding < 0:
        raise ValueError(f"bad sheet layout: tile size {tile_size}, padding {padding}")
    strips = [contact_sheet(tiles, captions, columns=len(tiles), tile_size=tile_size, padding=padding)
              for _, tiles, captions in rows]
    width = max(strip.shape[1] for strip in strips)
    scale = max(tile_size / 224, 0.35)
    title_h = int(cv2.getTextSize("Ag", _FONT, scale, 1)[0][1] * 2.2) + padding
    sheet = np.empty((len(rows) * title_h + sum(strip.shape[0] for strip in strips), width, 3), np.uint8)
    sheet[:] = SHEET_BACKGROUND
    top = 0
    for (title, _, _), strip in zip(rows, strips):
        text = _fit_text(title, width - 2 * padding, scale)
        cv2.putText(sheet, text, (padding, top + title_h - padding - 2), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
        top += title_h
        sheet[top:top + strip.shape[0], :strip.shape[1]] = strip
        top += strip.shape[0]
    return sheet


def titled(sheet: np.ndarray, title: str, padding: int = 4) -> np.ndarray:
    """``sheet`` (H, W, 3) uint8 RGB under a band with ``title`` (what the whole sheet shows), as wide as the
    sheet, the text wrapped at spaces onto as many lines as it needs (:func:`title_height` pixels)."""
    canvas = _rgb_copy(sheet)
    width = canvas.shape[1]
    scale, line_h = _title_scale(width), _title_line_height(width)
    lines = _wrapped(title, width - 2 * padding, scale)
    band = np.empty((title_height(title, width, padding), width, 3), np.uint8)
    band[:] = SHEET_BACKGROUND
    for number, line in enumerate(lines):
        baseline = padding + (number + 1) * line_h - line_h // 4
        cv2.putText(band, line, (padding, baseline), _FONT, scale, (255, 255, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, canvas])


def title_height(title: str, width: int, padding: int = 4) -> int:
    """Pixels of the band :func:`titled` puts with ``title`` over a sheet ``width`` pixels wide."""
    lines = _wrapped(title, width - 2 * padding, _title_scale(width))
    return len(lines) * _title_line_height(width) + 2 * padding


def _title_scale(width: int) -> float:
    return min(max(width / 900, 0.35), 0.8)


def _title_line_height(width: int) -> int:
    return int(cv2.getTextSize("Ag", _FONT, _title_scale(width), 1)[0][1] * 2)


def _wrapped(text: str, width: int, scale: float) -> list[str]:
    """``text`` cut at spaces into lines that fit ``width`` pixels (a word longer than a line is shortened)."""
    lines: list[str] = []
    for word in text.split():
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(joined, _FONT, scale, 1)[0][0] <= width:
            lines[-1] = joined
        else:
            lines.append(_fit_text(word, width, scale))
    return lines or [""]


def decode_jpeg(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB from JPEG (or PNG) bytes; ValueError if they do not decode."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{len(data)} bytes that do not decode as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _label(canvas: np.ndarray, text: str, corner: tuple[int, int], color, width: int, inside: bool = False) -> None:
    """``text`` on a filled ``color`` band just above ``corner`` (below it when there is no room)."""
    scale = 0.4 * width
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, width)
    x, y = corner
    band_h = text_h + baseline + 2 * width
    top = y if inside or y - band_h < 0 else y - band_h
    cv2.rectangle(canvas, (x, top), (x + text_w + 2 * width, top + band_h), color, -1)
    cv2.putText(canvas, text, (x + width, top + text_h + width), _FONT, scale, TEXT_COLOR, width, cv2.LINE_AA)


def _fit_text(text: str, width: int, scale: float) -> str:
    """``text``, shortened from the left with an ellipsis until it fits ``width`` pixels."""
    shown = text
    while len(shown) > 1 and cv2.getTextSize(shown, _FONT, scale, 1)[0][0] > width:
        shown = shown[2:] if shown.startswith("..") else ".." + shown[3:]
    return shown


def _rgb_copy(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array).copy()
