"""Shot cuts from a cheap per-frame signature: a small thumbnail plus a coarse colour histogram.

A hard cut changes both the layout of a picture (the thumbnail) and its colours (the histogram) at
once; motion inside a shot changes the thumbnail but barely the histogram, and a lighting change
moves the histogram but keeps the layout. A sampled frame starts a new shot when both distances
to the previous sampled frame pass their thresholds (``TrackingOptions.cut_histogram_distance``
and ``cut_thumbnail_distance``). Pure NumPy.
"""

from __future__ import annotations

import numpy as np

# Thumbnail grid (columns, rows): 16x9 keeps a 16:9 frame's layout; other shapes are squeezed,
# which is harmless since only consecutive frames of one video are compared.
THUMBNAIL_COLUMNS, THUMBNAIL_ROWS = 16, 9
THUMBNAIL_SIZE = THUMBNAIL_COLUMNS * THUMBNAIL_ROWS * 3
# 4 levels per RGB channel: a joint histogram of 64 bins.
HISTOGRAM_LEVELS = 4
HISTOGRAM_SIZE = HISTOGRAM_LEVELS**3
SIGNATURE_SIZE = THUMBNAIL_SIZE + HISTOGRAM_SIZE
# Pixels are sampled on a grid of about this many rows before anything else (a 1080p frame: every 8th
# pixel each way, 32k pixels): plenty for a 16x9 thumbnail and a 64-bin histogram, and cheap.
_SAMPLE_ROWS = 128


def frame_signature(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame -> (SIGNATURE_SIZE,) float32 signature for shot-cut detection.

    The first ``THUMBNAIL_SIZE`` values are the frame averaged over a 16x9 grid of blocks
    (RGB in [0, 1]); the last ``HISTOGRAM_SIZE`` a joint RGB histogram of 4 levels per channel,
    normalised to sum to 1. Computed on a grid of pixels (every k-th row and column, k = shorter side
    // 128), so its cost hardly grows with the frame size.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    height, width = frame.shape[:2]
    if height < THUMBNAIL_ROWS or width < THUMBNAIL_COLUMNS:
        raise ValueError(f"a frame must be at least {THUMBNAIL_COLUMNS}x{THUMBNAIL_ROWS} pixels, got {width}x{height}")
    stride = max(1, min(height, width) // _SAMPLE_ROWS)
    frame = frame[::stride, ::stride]
    height, width = frame.shape[:2]
    row_edges = np.linspace(0, height, THUMBNAIL_ROWS + 1).astype(np.int64)
    column_edges = np.linspace(0, width, THUMBNAIL_COLUMNS + 1).astype(np.int64)
    sums = np.add.reduceat(frame, row_edges[:-1], axis=0, dtype=np.float64)
    sums = np.add.reduceat(sums, column_edges[:-1], axis=1)
    counts = np.diff(row_edges)[:, None, None] * np.diff(column_edges)[None, :, None]
    thumbnail = sums / (counts * 255.0)

    sample = frame.reshape(-1, 3) // (256 // HISTOGRAM_LEVELS)
    bins = (sample[:, 0].astype(np.int64) * HISTOGRAM_LEVELS + sample[:, 1]) * HISTOGRAM_LEVELS + sample[:, 2]
    histogram = np.bincount(bins, minlength=HISTOGRAM_SIZE).astype(np.float64)
    histogram /= histogram.sum()
    return np.concatenate([thumbnail.ravel(), histogram]).astype(np.float32)


def signature_distances(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances between signatures, (..., D) and (..., D) -> ((...), (...)) float32:
    the thumbnails' mean absolute difference and the histograms' total variation, both in [0, 1]."""
    previous = np.asarray(previous, np.float32)
    current = np.asarray(current, np.float32)
    if previous.shape[-1] != SIGNATURE_SIZE or current.shape[-1] != SIGNATURE_SIZE:
        raise ValueError(
            f"signatures must have {SIGNATURE_SIZE} values (from frame_signature), got "
            f"{previous.shape} and {current.shape}"
        )
    difference = np.abs(current - previous)
    thumbnail = difference[..., :THUMBNAIL_SIZE].mean(axis=-1)
    histogram = 0.5 * difference[..., THUMBNAIL_SIZE:].sum(axis=-1)
    return thumbnail, histogram
