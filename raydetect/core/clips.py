"""Per-track clips: which faces of one track form the T-frame sequences a sequence model trains on.

The rule, for one track's faces in frame order:

1. Rate (``fps``): with a clip rate the track is thinned greedily: its first face is kept, then each
   face at least ``1 / fps`` seconds after the last kept one (less a thousandth of that interval, so
   that a 29.97 fps video gives 15 fps clips from every second frame). Without a rate every face counts.
2. Runs: the kept faces are split where two neighbours are further apart than ``1.5 x`` the step,
   the larger of ``1 / fps`` and the kept faces' median step (a track sampled more sparsely than
   ``fps``, e.g. detected on every 6th frame, makes clips at its own rate): a clip never spans a
   stretch where the face was lost.
3. Clips of ``frames`` faces each:
   - ``contiguous``: consecutive faces of one run, non-overlapping, from the run's start; the faces
     left over at a run's end, fewer than ``frames``, make no clip;
   - ``even``: one clip per track, ``frames`` faces evenly spaced over the whole track (the middle face
     of each of ``frames`` equal parts of the kept faces, as ``--frames-per-video`` picks frames);
     runs do not apply.
   A track with fewer kept faces than ``frames`` gives no clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from raydetect.errors import RaydetectError

CLIP_SPACINGS = ("contiguous", "even")
# A gap longer than this many steps ends a run (the face was lost or a sampled frame skipped).
RUN_GAP_STEPS = 1.5


class ClipError(RaydetectError, ValueError):
    """Clip options out of range, or a track's frames out of order."""


@dataclass(frozen=True)
class ClipOptions:
    """``frames``: faces per clip (T >= 1); ``fps``: clip rate (None: every face of the track);
    ``spacing``: ``contiguous`` or ``even`` (see the module docstring)."""

    frames: int
    fps: float | None = None
    spacing: str = "contiguous"

    def __post_init__(self) -> None:
        if isinstance(self.frames, bool) or not isinstance(self.frames, (int, np.integer)) or self.frames < 1:
            raise ClipError(f"clip frames must be a whole number >= 1, got {self.frames!r}")
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps)
                                         and self.fps > 0):
            raise ClipError(f"clip fps must be a positive number, got {self.fps!r}")
        if self.spacing not in CLIP_SPACINGS:
            raise ClipError(f"clip spacing must be one of {', '.join(CLIP_SPACINGS)}, got {self.spacing!r}")


def track_clips(frame_indices: np.ndarray, timestamps_s: np.ndarray, options: ClipOptions) -> list[np.ndarray]:
    """The clips of one track.

    Args:
        frame_indices: (M,) int64, the frames of the track's faces, strictly increasing.
        timestamps_s: (M,) float64 seconds of those frames.

    Returns:
        A list of (T,) int64 arrays of frame indices, in order of their first frame.
    """
    frames = np.asarray(frame_indices, np.int64).reshape(-1)
    times = np.asarray(timestamps_s, np.float64).reshape(-1)
    if frames.shape != times.shape:
        raise ClipError(f"{len(frames)} frame indices but {len(times)} timestamps")
    if len(frames) > 1 and (np.diff(frames) <= 0).any():
        raise ClipError("a track's frame indices must be strictly increasing")
    kept = _thinned(times, options.fps)
    frames, times = frames[kept], times[kept]
    size = options.frames
    if len(frames) < size:
        return []
    if options.spacing == "even":
        picks = ((np.arange(size) + 0.5) * len(frames) / size).astype(np.int64)
        return [frames[picks]]
    clips = []
    for run in _runs(times, options.fps):
        run_frames = frames[run]
        clips.extend(run_frames[start:start + size] for start in range(0, len(run_frames) - size + 1, size))
    return clips


def _thinned(times: np.ndarray, fps: float | None) -> np.ndarray:
    """Indices of the faces kept at about ``fps`` (all without a rate)."""
    if fps is None or len(times) == 0:
        return np.arange(len(times))
    interval = (1.0 / fps) * (1 - 1e-3)
    kept, last = [0], times[0]
    for index in range(1, len(times)):
        if times[index] - last >= interval:
            kept.append(index)
            last = times[index]
    return np.array(kept, np.int64)


def _runs(times: np.ndarray, fps: float | None) -> list[np.ndarray]:
    """Index ranges of the stretches without a gap longer than RUN_GAP_STEPS steps."""
    if len(times) < 2:
        return [np.arange(len(times))]
    steps = np.diff(times)
    step = max(1.0 / fps if fps is not None else 0.0, float(np.median(steps)))
    breaks = np.flatnonzero(steps > RUN_GAP_STEPS * step) + 1
    return np.split(np.arange(len(times)), breaks)
