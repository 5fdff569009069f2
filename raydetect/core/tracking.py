"""Face tracks: link each person's faces across the sampled frames of one video, end tracks at shot cuts.

One linker serves every path that sees video: :func:`link_tracks` (a whole video at once, as the
offline job calls it after its shards are done) and :class:`FaceTracker` (one frame at a time, as
the HTTP endpoint and library users call it) run the same per-frame step, so they give the same ids.

The step, for each sampled frame in order:

1. At a shot cut every track ends (:func:`find_cuts`, from :func:`frame_signature`).
2. Tracks whose last face is more than ``max_gap_s`` seconds old end. The rule is in seconds, so it
   means the same at any sampling rate; when consecutive samples are further apart than
   ``max_gap_s`` (very sparse sampling: ``--fps 1``, ``--frames-per-video 8`` on a long video),
   no face is ever linked and every face is a track of one.
3. Each live track predicts its box at this frame's time: the centre moves on at constant velocity
   (pixels per second, smoothed over its faces), the size stays that of its last face. So two faces
   that cross keep going their own ways instead of swapping ids, and a face hidden for a moment is
   looked for where it should have got to.
4. Faces are assigned to tracks by optimal assignment (``scipy.optimize.linear_sum_assignment``)
   on a cost of ``1 - IoU(predicted, face)`` plus the centre distance in box sides; pairs outside
   the gates (IoU below ``min_iou`` and centre further than ``max_center_distance`` sides, or a
   size ratio above ``max_scale_change``) never match. As in ByteTrack, confident faces
   (``score >= high_score``) are assigned first, so a doubtful detection beside a face (a hand)
   cannot take that face's track; doubtful faces then go to the tracks left over.
5. Faces left without a track start new tracks.

Ids are numbered 0, 1, ... in the order of each track's first face (by frame, then x1, then y1,
then x2, y2 and score), so they depend only on the faces, never on the order they were given in.
Pure NumPy and SciPy: no torch, no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy.optimize import linear_sum_assignment

from raydetect.core.results import Detections
from raydetect.core.shot_cuts import frame_signature, signature_distances
from raydetect.errors import RaydetectError

__all__ = [
    "TrackingError",
    "TrackingOptions",
    "frame_signature",
    "find_cuts",
    "link_tracks",
    "interpolate_tracks",
    "Interpolated",
    "long_track_faces",
    "FaceTracker",
    "track_frames",
]


class TrackingError(RaydetectError, ValueError):
    """A tracking option or input is invalid (negative gap, min_track_faces below 1, frames out of order, ...)."""


@dataclass(frozen=True)
class TrackingOptions:
    """How faces are linked into tracks; every default is defined here only.

    Attributes:
        max_gap_s: a track resumes if its face reappears within this many seconds (``--track-max-gap``).
        min_track_faces: faces of tracks with fewer faces are dropped by the caller (``--min-track-faces``;
            1 keeps everything). The linker itself never drops a face.
        min_iou: a face may continue a track when its IoU with the track's predicted box reaches this ...
        max_center_distance: ... or when its centre lies within this many box sides (the geometric mean
            of the predicted box's width and height) of the predicted centre.
        max_scale_change: and in either case only when the sides of the face and the predicted box
            differ by at most this factor.
        high_score: faces scoring at least this are assigned to tracks first (ByteTrack's two stages).
        velocity_smoothing: weight of a track's previous velocity when a new face updates it (0: the
            newest displacement only; closer to 1: steadier).
        cut_thumbnail_distance, cut_histogram_distance, cut_jump_ratio: a sampled frame starts a new
            shot when its thumbnail differs from the previous sampled frame's by at least the first (mean
            absolute difference of RGB in [0, 1]), its colour histogram by at least the second (total
            variation), and the thumbnail difference is at least ``cut_jump_ratio`` times the previous
            pair's.
    """

    max_gap_s: float = 0.5
    min_track_faces: int = 1
    min_iou: float = 0.3
    max_center_distance: float = 1.0
    max_scale_change: float = 1.5
    high_score: float = 0.9
    velocity_smoothing: float = 0.5
    cut_thumbnail_distance: float = 0.07
    cut_histogram_distance: float = 0.05
    cut_jump_ratio: float = 2.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", int):
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise TrackingError(f"tracking option {field.name} must be an integer, got {value!r}")
            elif (
                isinstance(value, bool)
                or not isinstance(value, (int, float, np.integer, np.floating))
                or not math.isfinite(value)
            ):
                raise TrackingError(f"tracking option {field.name} must be a finite number, got {value!r}")
        _check(self.max_gap_s >= 0, "max_gap_s", self.max_gap_s, "must be >= 0 seconds")
        _check(self.min_track_faces >= 1, "min_track_faces", self.min_track_faces, "must be >= 1 (1 keeps every face)")
        _check(0 <= self.min_iou <= 1, "min_iou", self.min_iou, "must be in [0, 1]")
        _check(self.max_center_distance >= 0, "max_center_distance", self.max_center_distance, "must be >= 0")
        _check(self.max_scale_change >= 1, "max_scale_change", self.max_scale_change, "must be >= 1")
        _check(0 <= self.high_score <= 1, "high_score", self.high_score, "must be in [0, 1]")
        _check(0 <= self.velocity_smoothing < 1, "velocity_smoothing", self.velocity_smoothing, "must be in [0, 1)")
        for name in ("cut_thumbnail_distance", "cut_histogram_distance"):
            _check(0 < getattr(self, name) <= 1, name, getattr(self, name), "must be in (0, 1]")
        _check(self.cut_jump_ratio >= 0, "cut_jump_ratio", self.cut_jump_ratio, "must be >= 0 (0: thresholds only)")


def _check(ok: bool, name: str, value, rule: str) -> None:
    if not ok:
        raise TrackingError(f"tracking option {name} {rule}, got {value!r}")


DEFAULT_OPTIONS = TrackingOptions()


# ---------------------------------------------------------------------------------------------
# Shot cuts


def _is_cut(thumbnail_distance, histogram_distance, previous_thumbnail_distance, options: TrackingOptions):
    """The cut rule on distances between consecutive sampled frames (arrays or scalars alike)."""
    return (
        (thumbnail_distance >= options.cut_thumbnail_distance)
        & (histogram_distance >= options.cut_histogram_distance)
        & (thumbnail_distance >= options.cut_jump_ratio * previous_thumbnail_distance)
    )


def find_cuts(signatures: np.ndarray, options: TrackingOptions = DEFAULT_OPTIONS) -> np.ndarray:
    """(F, D) float32 signatures of the sampled frames in order -> (F,) bool, True where frame f starts
    a new shot (f = 0 is False).

    Decided between consecutive *sampled* frames, from this pair's distances and the previous pair's
    (so the rule runs as well one frame at a time): a cut is a jump, a change much larger than the one
    just before it; steady fast motion (or a pan) changes every pair alike. With sparse sampling a sudden
    large movement can still look like a cut, which only ends tracks early (never joins two shots).
    """
    signatures = np.asarray(signatures, np.float32)
    if signatures.ndim != 2:
        raise TrackingError(f"signatures must be (F, D), got shape {signatures.shape}")
    cuts = np.zeros(len(signatures), bool)
    if len(signatures) > 1:
        thumbnail, histogram = signature_distances(signatures[:-1], signatures[1:])
        previous = np.concatenate([[0.0], thumbnail[:-1]])
        cuts[1:] = _is_cut(thumbnail, histogram, previous, options)
    return cuts


# ---------------------------------------------------------------------------------------------
# Box geometry, vectorised: (T, 4) tracks against (N, 4) faces by broadcasting


def _centre_size(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 -> (N, 4) cx, cy, w, h."""
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)


def _corners(state: np.ndarray) -> np.ndarray:
    """(N, 4) cx, cy, w, h -> (N, 4) x1, y1, x2, y2."""
    half = state[:, 2:] / 2
    return np.concatenate([state[:, :2] - half, state[:, :2] + half], axis=1)


def _pair_costs(predicted: np.ndarray, faces: np.ndarray, options: TrackingOptions) -> np.ndarray:
    """(T, 4) predicted boxes and (N, 4) face boxes, x1 y1 x2 y2 -> (T, N) float64 costs, inf where gated out."""
    p = predicted[:, None, :]
    f = faces[None, :, :]
    overlap = np.clip(np.minimum(p[..., 2:], f[..., 2:]) - np.maximum(p[..., :2], f[..., :2]), 0, None).prod(-1)
    area_p = (p[..., 2:] - p[..., :2]).clip(0, None).prod(-1)
    area_f = (f[..., 2:] - f[..., :2]).clip(0, None).prod(-1)
    iou = overlap / np.maximum(area_p + area_f - overlap, 1e-9)
    side_p = np.sqrt(np.maximum(area_p, 1e-9))
    side_f = np.sqrt(np.maximum(area_f, 1e-9))
    centre_shift = np.linalg.norm((p[..., :2] + p[..., 2:]) / 2 - (f[..., :2] + f[..., 2:]) / 2, axis=-1) / side_p
    scale = np.maximum(side_p, side_f) / np.minimum(side_p, side_f)
    near = (iou >= options.min_iou) | (centre_shift <= options.max_center_distance)
    allowed = near & (scale <= options.max_scale_change)
    return np.where(allowed, (1.0 - iou) + centre_shift, np.inf)


def _assign(costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal assignment on a (T, N) cost matrix with inf for forbidden pairs -> matched (rows, cols)."""
    if costs.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    finite = np.isfinite(costs)
    if not finite.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # linear_sum_assignment needs finite entries: a forbidden pair costs more than any allowed set.
    big = costs[finite].max() * (min(costs.shape) + 1) + 1.0
    rows, cols = linear_sum_assignment(np.where(finite, costs, big))
    keep = finite[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


# ---------------------------------------------------------------------------------------------
# The linker's state and its per-frame step (the one implementation behind link_tracks and FaceTracker)


class _Linker:
    """Live tracks as parallel arrays: id (T,), state (T, 4) cx cy w h at its last face, velocity
    (T, 4) pixels per second (only the centre's is used to predict), last_time (T,) seconds."""

    def __init__(self, options: TrackingOptions) -> None:
        self.options = options
        self.next_id = 0
        self.ids = np.zeros(0, np.int64)
        self.state = np.zeros((0, 4), np.float64)
        self.velocity = np.zeros((0, 4), np.float64)
        self.has_velocity = np.zeros(0, bool)
        self.last_time = np.zeros(0, np.float64)

    def _keep(self, mask: np.ndarray) -> None:
        self.ids, self.state, self.velocity = self.ids[mask], self.state[mask], self.velocity[mask]
        self.has_velocity, self.last_time = self.has_velocity[mask], self.last_time[mask]

    def step(self, boxes: np.ndarray, scores: np.ndarray, time_s: float, cut: bool) -> np.ndarray:
        """One sampled frame's faces, (N, 4) boxes and (N,) scores in canonical order -> (N,) track ids."""
        options = self.options
        if cut:
            self._keep(np.zeros(len(self.ids), bool))
        else:
            self._keep(time_s - self.last_time <= options.max_gap_s + 1e-9)
        n = len(scores)
        ids = np.full(n, -1, np.int64)
        if n == 0:
            return ids
        observed = _centre_size(boxes.astype(np.float64))
        elapsed = (time_s - self.last_time)[:, None]
        # The centre moves on at its velocity; the size stays (extrapolating size changes over a gap
        # inflates or shrinks the box from a few frames' jitter; a zoom is slow enough for the scale gate).
        predicted = self.state.copy()
        predicted[:, :2] += self.velocity[:, :2] * elapsed
        costs = _pair_costs(_corners(predicted), boxes.astype(np.float64), options)

        track_taken = np.zeros(len(self.ids), bool)
        matched_tracks, matched_faces = [], []
        confident = scores >= options.high_score
        for stage_faces in (np.flatnonzero(confident), np.flatnonzero(~confident)):
            free_tracks = np.flatnonzero(~track_taken)
            rows, cols = _assign(costs[np.ix_(free_tracks, stage_faces)])
            track_taken[free_tracks[rows]] = True
            matched_tracks.append(free_tracks[rows])
            matched_faces.append(stage_faces[cols])
        tracks_m = np.concatenate(matched_tracks)
        faces_m = np.concatenate(matched_faces)

        if len(tracks_m):
            dt = np.maximum(time_s - self.last_time[tracks_m], 1e-9)[:, None]
            new_velocity = (observed[faces_m] - self.state[tracks_m]) / dt
            old = self.has_velocity[tracks_m][:, None]
            w = options.velocity_smoothing
            self.velocity[tracks_m] = np.where(old, w * self.velocity[tracks_m] + (1 - w) * new_velocity, new_velocity)
            self.has_velocity[tracks_m] = True
            self.state[tracks_m] = observed[faces_m]
            self.last_time[tracks_m] = time_s
            ids[faces_m] = self.ids[tracks_m]

        new_faces = np.flatnonzero(ids < 0)  # in canonical order, so new ids follow (x1, y1, ...)
        new_ids = self.next_id + np.arange(len(new_faces), dtype=np.int64)
        self.next_id += len(new_faces)
        ids[new_faces] = new_ids
        self.ids = np.concatenate([self.ids, new_ids])
        self.state = np.concatenate([self.state, observed[new_faces]])
        self.velocity = np.concatenate([self.velocity, np.zeros((len(new_faces), 4))])
        self.has_velocity = np.concatenate([self.has_velocity, np.zeros(len(new_faces), bool)])
        self.last_time = np.concatenate([self.last_time, np.full(len(new_faces), float(time_s))])
        return ids


def _canonical_order(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Order of one frame's faces by x1, then y1, x2, y2, score (the rule ids are numbered by)."""
    return np.lexsort((-scores, boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0]))


# ---------------------------------------------------------------------------------------------
# Input checks


def _frames(frame_indices, timestamps_s, cuts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame_indices = np.asarray(frame_indices, np.int64).reshape(-1)
    timestamps_s = np.asarray(timestamps_s, np.float64).reshape(-1)
    cuts = np.asarray(cuts, bool).reshape(-1)
    if not (len(frame_indices) == len(timestamps_s) == len(cuts)):
        raise TrackingError(
            f"frame_indices, timestamps_s and cuts must have one value per sampled frame, got "
            f"{len(frame_indices)}, {len(timestamps_s)} and {len(cuts)}"
        )
    if np.any(np.diff(frame_indices) <= 0):
        raise TrackingError("frame_indices must be strictly increasing")
    if not np.all(np.isfinite(timestamps_s)) or np.any(np.diff(timestamps_s) < 0):
        raise TrackingError("timestamps_s must be finite and never decrease")
    return frame_indices, timestamps_s, cuts


def _faces(frame_indices, face_frames, boxes, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked face arrays plus each face's position in frame_indices."""
    face_frames = np.asarray(face_frames, np.int64).reshape(-1)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4), np.float32)
    scores = np.asarray(scores, np.float32).reshape(-1)
    if not (len(face_frames) == len(boxes) == len(scores)):
        raise TrackingError(
            f"face_frames, boxes and scores must have one row per face, got {len(face_frames)}, "
            f"{len(boxes)} and {len(scores)}"
        )
    if not np.all(np.isfinite(boxes)):
        raise TrackingError("boxes must be finite")
    position = np.searchsorted(frame_indices, face_frames)
    known = position < len(frame_indices)
    known[known] = frame_indices[position[known]] == face_frames[known]
    if not known.all():
        raise TrackingError(f"face_frames {np.unique(face_frames[~known])[:5].tolist()} are not in frame_indices")
    return face_frames, boxes, scores, position


# ---------------------------------------------------------------------------------------------
# Whole-video API


def link_tracks(
    frame_indices, timestamps_s, cuts, face_frames, boxes, scores, options: TrackingOptions = DEFAULT_OPTIONS
) -> np.ndarray:
    """Track ids for every face of one video.

    frame_indices (F,) int64: the sampled frames, strictly increasing; timestamps_s (F,) float64
    seconds; cuts (F,) bool (from :func:`find_cuts`); face_frames (N,) int64: each face's frame
    index (a value of frame_indices), faces in any order; boxes (N, 4) float32 x1, y1, x2, y2
    pixels; scores (N,) float32.

    Returns (N,) int64 track ids, numbered 0, 1, ... in order of each track's first face (by frame,
    then by x1, then y1), so the result depends only on the inputs, never on how they were split.
    """
    frame_indices, timestamps_s, cuts = _frames(frame_indices, timestamps_s, cuts)
    face_frames, boxes, scores, position = _faces(frame_indices, face_frames, boxes, scores)
    # Faces sorted by (frame, x1, y1, x2, y2, -score): each frame's faces are then a contiguous,
    # canonically ordered run.
    order = np.lexsort((-scores, boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], position))
    starts = np.searchsorted(position[order], np.arange(len(frame_indices) + 1))
    linker = _Linker(options)
    track_ids = np.empty(len(face_frames), np.int64)
    for f in range(len(frame_indices)):
        run = order[starts[f]:starts[f + 1]]
        if len(run) == 0 and not cuts[f]:
            continue  # nothing to link and nothing ends here (gaps are measured from face times)
        track_ids[run] = linker.step(boxes[run], scores[run], float(timestamps_s[f]), bool(cuts[f]))
    return track_ids


def long_track_faces(track_ids, options: TrackingOptions = DEFAULT_OPTIONS) -> np.ndarray:
    """(N,) int64 track ids -> (N,) bool: True for the faces of tracks with at least
    ``options.min_track_faces`` faces (``--min-track-faces``; the default 1 keeps every face)."""
    track_ids = np.asarray(track_ids, np.int64).reshape(-1)
    _, inverse, counts = np.unique(track_ids, return_inverse=True, return_counts=True)
    return counts[inverse] >= options.min_track_faces


@dataclass(frozen=True)
class Interpolated:
    """Faces filled in between two detected faces of a track (``--detect-every K``).

    Attributes:
        frame_index: int64 (M,) the sampled frame each filled-in face belongs to.
        track_id: int64 (M,).
        boxes: float32 (M, 4) x1, y1, x2, y2 pixels, linear in time between the two detected faces.
        landmarks: float32 (M, 5, 2) pixels, linear in time likewise.
        score: float32 (M,) the lower of the two detected faces' scores.
    """

    frame_index: np.ndarray
    track_id: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.frame_index)


def interpolate_tracks(
    frame_indices,
    timestamps_s,
    cuts,
    face_frames,
    track_ids,
    boxes,
    landmarks,
    options: TrackingOptions = DEFAULT_OPTIONS,
    *,
    scores=None,
) -> Interpolated:
    """Boxes and landmarks of each track on the sampled frames between two of its detected faces.

    frame_indices (F,) int64: the sampled frames that should get faces (detected or not), strictly
    increasing; timestamps_s (F,) float64; cuts (F,) bool; the detected faces as in
    :func:`link_tracks`: face_frames (N,), track_ids (N,) int64, boxes (N, 4), landmarks (N, 5, 2),
    scores (N,) float32 (keyword; without them every filled-in score is NaN).

    A frame strictly between two consecutive faces of one track gets a face, linear in time,
    unless a cut lies between them (a cut at the later face's frame or any frame in between) or
    they are more than ``max_gap_s`` seconds apart (the track would not have linked them), or
    the track already has a face on that frame. Returns :class:`Interpolated` ordered by track,
    then frame.
    """
    frame_indices, timestamps_s, cuts = _frames(frame_indices, timestamps_s, cuts)
    if scores is None:
        scores = np.full(len(np.asarray(face_frames).reshape(-1)), np.nan, np.float32)
    face_frames, boxes, scores, position = _faces(frame_indices, face_frames, boxes, scores)
    track_ids = np.asarray(track_ids, np.int64).reshape(-1)
    landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    if len(track_ids) != len(face_frames) or len(landmarks) != len(face_frames):
        raise TrackingError(
            f"track_ids and landmarks must have one row per face ({len(face_frames)}), got "
            f"{len(track_ids)} and {len(landmarks)}"
        )
    order = np.lexsort((position, track_ids))
    same_track = track_ids[order[1:]] == track_ids[order[:-1]]
    start, end = order[:-1][same_track], order[1:][same_track]  # consecutive faces of one track
    cuts_before = np.cumsum(cuts)  # cuts among frames 0..f
    no_cut = cuts_before[position[end]] == cuts_before[position[start]]
    near = timestamps_s[position[end]] - timestamps_s[position[start]] <= options.max_gap_s + 1e-9
    keep = no_cut & near & (position[end] - position[start] > 1)
    start, end = start[keep], end[keep]
    between = position[end] - position[start] - 1  # sampled frames strictly between each pair
    pair = np.repeat(np.arange(len(start)), between)
    offset = np.arange(len(pair)) - np.repeat(np.cumsum(between) - between, between) + 1
    frame_position = position[start][pair] + offset
    t0 = timestamps_s[position[start]][pair]
    t1 = timestamps_s[position[end]][pair]
    span = t1 - t0
    weight = np.where(span > 0, (timestamps_s[frame_position] - t0) / np.where(span > 0, span, 1.0), 0.5)
    a, b = start[pair], end[pair]
    w = weight.astype(np.float32)
    return Interpolated(
        frame_index=frame_indices[frame_position],
        track_id=track_ids[a],
        boxes=(boxes[a] * (1 - w)[:, None] + boxes[b] * w[:, None]).astype(np.float32),
        landmarks=(landmarks[a] * (1 - w)[:, None, None] + landmarks[b] * w[:, None, None]).astype(np.float32),
        score=np.minimum(scores[a], scores[b]).astype(np.float32),
    )


# ---------------------------------------------------------------------------------------------
# Streaming API


class FaceTracker:
    """The same linker as :func:`link_tracks`, fed one sampled frame at a time.

    Feeding a video's frames in order through :meth:`update` (with the same cuts) gives exactly
    the ids :func:`link_tracks` gives for the whole video.
    """

    def __init__(self, options: TrackingOptions = DEFAULT_OPTIONS) -> None:
        if not isinstance(options, TrackingOptions):
            raise TrackingError(f"options must be TrackingOptions, got {type(options).__name__}")
        self.options = options
        self._linker = _Linker(options)
        self._last_frame_index: int | None = None
        self._last_timestamp_s: float | None = None
        self._last_signature: np.ndarray | None = None
        self._last_thumbnail_distance = 0.0

    def update(
        self,
        faces: Detections,
        frame_index: int,
        timestamp_s: float,
        frame: np.ndarray | None = None,
        cut: bool | None = None,
    ) -> np.ndarray:
        """Track ids (N,) int64 for this frame's faces, in the order of ``faces``.

        frame_index must increase from call to call and timestamp_s (seconds) never decrease.
        cut=None: decided from ``frame``'s signature ((H, W, 3) uint8 RGB) against the previous
        frame given (no frame, or none before: no cut).
        """
        frame_index = int(frame_index)
        timestamp_s = float(timestamp_s)
        if self._last_frame_index is not None and frame_index <= self._last_frame_index:
            raise TrackingError(f"frame_index must increase: {frame_index} after {self._last_frame_index}")
        previous = self._last_timestamp_s
        if not math.isfinite(timestamp_s) or (previous is not None and timestamp_s < previous):
            raise TrackingError(f"timestamp_s must be finite and never decrease: {timestamp_s} after {previous}")
        signature = frame_signature(frame) if frame is not None else None
        if signature is not None and self._last_signature is not None:
            thumbnail, histogram = signature_distances(self._last_signature, signature)
            if cut is None:
                cut = bool(_is_cut(thumbnail, histogram, self._last_thumbnail_distance, self.options))
            self._last_thumbnail_distance = float(thumbnail)
        cut = bool(cut)
        if signature is not None:
            self._last_signature = signature
        self._last_frame_index, self._last_timestamp_s = frame_index, timestamp_s

        boxes = np.asarray(faces.boxes, np.float32)
        scores = np.asarray(faces.scores, np.float32)
        if not np.all(np.isfinite(boxes)):
            raise TrackingError("boxes must be finite")
        order = _canonical_order(boxes, scores)
        ids = np.empty(len(scores), np.int64)
        ids[order] = self._linker.step(boxes[order], scores[order], timestamp_s, bool(cut))
        return ids


def track_frames(detector, frames, timestamps_s=None, options: TrackingOptions = DEFAULT_OPTIONS, fps: float = 30.0):
    """Detect and track faces over a sequence of frames without Ray.

    ``detector`` is a :class:`~raydetect.core.detector.FaceDetector`; ``frames`` a sequence of
    (H, W, 3) uint8 RGB frames in order; ``timestamps_s`` their times in seconds (default: frame
    number / ``fps``). Returns a list with one ``(Detections, track_ids (N,) int64)`` per frame;
    cuts are found from the frames themselves.
    """
    frames = list(frames)
    if timestamps_s is None:
        timestamps_s = np.arange(len(frames)) / float(fps)
    if len(timestamps_s) != len(frames):
        raise TrackingError(
            f"timestamps_s must have one value per frame, got {len(timestamps_s)} for {len(frames)} frames"
        )
    tracker = FaceTracker(options)
    detections = detector.detect(frames) if frames else []
    return [
        (faces, tracker.update(faces, index, timestamp, frame=frame))
        for index, (faces, timestamp, frame) in enumerate(zip(detections, timestamps_s, frames))
    ]
