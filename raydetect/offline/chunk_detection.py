"""The detection stage of the offline job: one chunk of frames in, staged files and an accounting record out.

:class:`ChunkDetector` holds one :class:`FaceDetector` (built once, in the worker that hosts it),
runs it over the chunk's frames to detect, maps boxes back to full-resolution pixels, cuts crops,
and stages the chunk's face rows and its frames' shot-cut signatures under the chunk's fixed
names (see :mod:`raydetect.offline.output`); the video's finalising step links them into tracks.
It returns a small record the driver uses to know what is done.

With ``--detect-every`` K > 1 the frames between two detected frames get interpolated faces here,
where the frames are (so crops come from the real pictures): the faces of the two detected frames
are matched by the linker on that pair alone, and each matched pair is interpolated over the frames
between (:func:`~raydetect.core.tracking.interpolate_tracks`: never across a cut or a gap longer
than ``max_gap_s``). The rule looks at the two detected frames and the frames between only, so it
gives the same faces however the video is split; the finalising step keeps an interpolated face
only if the video's tracks join its two ends. It knows nothing of Ray; ``job.py`` hosts it in a
Ray Data actor pool.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from raydetect.core.crops import CropOptions, cut_crops, encode_crop
from raydetect.core.results import Detections
from raydetect.core.tracking import TrackingOptions, find_cuts, frame_signature, interpolate_tracks, link_tracks
from raydetect.mtcnn.defaults import MIN_FACE_SIZE, SCALE_FACTOR, THRESHOLDS
from raydetect.offline.output import FRAME_SCHEMA, JobOutput, staged_face_schema
from raydetect.offline.retrying_io import RetryPolicy
from raydetect.offline.shards import chunk_frames, detect_flags, frame_indices
from raydetect.offline.video import fit_max_side

# Fields of a chunk record passed on unchanged to the driver.
ACCOUNTING_FIELDS = (
    "video", "key", "error", "shard_index", "num_shards", "shard_number", "chunk_index",
    "last_chunk", "frames_read", "frame_count", "fps", "width", "height", "io_retries",
)


@dataclass(frozen=True)
class DetectionOptions:
    """What the detection stage does with each chunk.

    Attributes:
        min_face_size, thresholds, scale_factor: the detector's options.
        device: torch device ("cpu", "cuda"; None: CUDA when present).
        budget: per-pass work limits as WorkBudget keyword arguments (None: the device's default).
        max_side: downscale frames larger than this before detection (``--max-side``; the job derives
            the decoders' copy from it).
        crops: cut a crop of every face, shaped by ``crop`` (:class:`CropOptions`).
        torch_threads: intra-op threads for a CPU detector (None: torch's default; the job derives it
            from its resources).
        precision: the networks' precision ("auto", "float32", "bfloat16", "float16"; see ``FaceDetector``).
        compile: torch.compile the networks in each actor (see ``FaceDetector``).
    """

    min_face_size: float = MIN_FACE_SIZE
    thresholds: tuple[float, float, float] = THRESHOLDS
    scale_factor: float = SCALE_FACTOR
    device: str | None = None
    budget: dict | None = None
    max_side: int | None = None
    crops: bool = False
    crop: CropOptions = field(default_factory=CropOptions)
    torch_threads: int | None = None
    precision: str = "auto"
    compile: bool = False

    def result_options(self) -> dict:
        """The options that decide the output's content (recorded in DEST/_job.json)."""
        options = asdict(self)
        # Speed, not which faces: precision changes scores and boxes within rounding, as the device's "auto" does.
        for name in ("device", "budget", "torch_threads", "precision", "compile"):
            options.pop(name)
        options["thresholds"] = list(self.thresholds)
        options.pop("crop")
        if self.crops:  # flat names, so that a refused re-run names the crop option that changed
            options.update({f"crop_{name}": value for name, value in self.crop.recorded().items()})
        return options


class ChunkDetector:
    """Detect, crop and write the faces of chunk records (see :mod:`raydetect.offline.shards`)."""

    def __init__(self, options: DetectionOptions, dest: str, storage_options: dict | None = None,
                 retry: RetryPolicy | None = None, tracking: TrackingOptions = TrackingOptions()):
        import torch

        from raydetect.core.batching import WorkBudget
        from raydetect.core.detector import FaceDetector

        if options.torch_threads:
            torch.set_num_threads(options.torch_threads)
        # Frames arrive as read-only views of the transferred bytes (no copy); the detector only
        # reads them, so torch's warning about tensors over read-only memory does not apply.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        self.options = options
        self.detector = FaceDetector(
            min_face_size=options.min_face_size,
            thresholds=options.thresholds,
            scale_factor=options.scale_factor,
            device=options.device,
            budget=WorkBudget(**options.budget) if options.budget else None,
            precision=options.precision,
            compile=options.compile,
        )
        self.output = JobOutput(dest, storage_options, retry or RetryPolicy())
        self.schema = staged_face_schema(options.crops)
        self.tracking = tracking

    def process(self, record: dict) -> dict:
        """Handle one chunk record; returns its accounting record with ``frames_detected`` and ``faces``."""
        started = time.perf_counter()
        result = {name: record[name] for name in ACCOUNTING_FIELDS}
        result.update(frames_detected=0, faces=0, micro_batches=0, max_batch_images=0)
        frames = chunk_frames(record)
        if record["error"] or len(frames) == 0:
            result["seconds"] = float(record["seconds"]) + time.perf_counter() - started
            return result
        indices = frame_indices(record)
        # The lookahead frame (the next chunk's first) is detected here only to interpolate towards it.
        owned = len(frames) - (1 if record["lookahead"] else 0)
        detected = np.flatnonzero(detect_flags(record))
        try:
            found = dict(zip(detected.tolist(), self._detect([frames[p] for p in detected], record)))
            signatures = np.stack([frame_signature(frame) for frame in frames])
            own = detected[detected < owned]
            faces = [self._rows(record, [indices[p] for p in own], [frames[p] for p in own], [found[p] for p in own])]
            if len(detected) < len(frames):
                faces.append(self._interpolated_rows(record, frames, indices, signatures, found))
            table = pa.concat_tables(faces)
            fps = float(record["fps"])
            frames_table = pa.table(
                {
                    "frame_index": pa.array(indices[:owned], pa.int64()),
                    "timestamp_s": pa.array(indices[:owned] / fps, pa.float64()),
                    "signature": pa.FixedSizeListArray.from_arrays(
                        pa.array(signatures[:owned].reshape(-1)), signatures.shape[1]
                    ).cast(pa.list_(pa.float32())),
                },
                schema=FRAME_SCHEMA,
            )
            self.output.write_staged_chunk(table, frames_table, record["key"], record["shard_index"],
                                           record["chunk_index"])
        except Exception as exc:  # this input fails, the job goes on; the message names the cause
            result["error"] = (
                f"{record['video']}: detection failed on frames {indices[0]}-{indices[-1]}: "
                f"{type(exc).__name__}: {exc}"
            )
            result["seconds"] = float(record["seconds"]) + time.perf_counter() - started
            return result
        stats = self.detector.last_stats
        recent = list(self.detector.controller.records)[-max(1, int(stats.get("micro_batches", 1))):]
        result.update(
            frames_detected=len(own),
            faces=table.num_rows,
            micro_batches=int(stats.get("micro_batches", 0)),
            max_batch_images=max((r.images for r in recent), default=0),
            seconds=float(record["seconds"]) + time.perf_counter() - started,
        )
        return result

    def _detect(self, images: list[np.ndarray], record: dict) -> list[Detections]:
        """Detections in full-resolution pixels. The FaceDetector's controller splits the chunk
        into micro-batches that fit its work budget."""
        if not images:
            return []
        scale_x, scale_y = float(record["scale_x"]), float(record["scale_y"])
        if self.options.max_side is not None and max(images[0].shape[:2]) > self.options.max_side:
            # Full frames were shipped (for crops): downscale here for detection.
            resized = [fit_max_side(image, self.options.max_side) for image in images]
            images = [image for image, _, _ in resized]
            scale_x, scale_y = resized[0][1], resized[0][2]
        found = self.detector.detect(images)
        if (scale_x, scale_y) != (1.0, 1.0):
            found = [d.scaled(scale_x, scale_y) for d in found]
        return found

    def _interpolated_rows(self, record: dict, frames: np.ndarray, indices: np.ndarray, signatures: np.ndarray,
                           found: dict[int, Detections]) -> pa.Table:
        """Faces on the frames between each two consecutive detected frames of the chunk (see the module
        docstring), with the detected faces they lie between."""
        fps = float(record["fps"])
        detected = sorted(found)
        parts = []
        for a, b in zip(detected[:-1], detected[1:]):
            first, last = found[a], found[b]
            if b - a < 2 or not len(first) or not len(last):
                continue
            span = slice(a, b + 1)
            span_indices, span_times = indices[span], indices[span] / fps
            cuts = find_cuts(signatures[span], self.tracking)
            face_frames = np.repeat([indices[a], indices[b]], [len(first), len(last)])
            boxes = np.concatenate([first.boxes, last.boxes])
            scores = np.concatenate([first.scores, last.scores])
            landmarks = np.concatenate([first.landmarks, last.landmarks])
            ids = link_tracks(span_indices, span_times, cuts, face_frames, boxes, scores, self.tracking)
            filled = interpolate_tracks(span_indices, span_times, cuts, face_frames, ids, boxes, landmarks,
                                        self.tracking, scores=scores)
            if not len(filled):
                continue
            # Each local track has one face on each end: the face index (detector's order) of both.
            from_face = {int(t): i for i, t in enumerate(ids[: len(first)])}
            to_face = {int(t): i for i, t in enumerate(ids[len(first):])}
            order = np.lexsort((filled.track_id, filled.frame_index))  # by frame, then local track
            positions = a + np.searchsorted(span_indices, filled.frame_index[order])
            parts.append((indices[a], indices[b], filled, order, positions,
                          [from_face[int(t)] for t in filled.track_id[order]],
                          [to_face[int(t)] for t in filled.track_id[order]]))
        if not parts:
            return self.schema.empty_table()
        tables = []
        for from_frame, to_frame, filled, order, positions, from_faces, to_faces in parts:
            unique_positions, counts = np.unique(positions, return_counts=True)
            per_frame = np.split(order, np.cumsum(counts)[:-1])
            detections = [
                Detections(filled.boxes[rows], filled.score[rows], filled.landmarks[rows]) for rows in per_frame
            ]
            links = {
                "from_frame": np.full(len(order), from_frame, np.int64),
                "from_face": np.asarray(from_faces, np.int32),
                "to_frame": np.full(len(order), to_frame, np.int64),
                "to_face": np.asarray(to_faces, np.int32),
            }
            tables.append(self._rows(record, [indices[p] for p in unique_positions],
                                     [frames[p] for p in unique_positions], detections, links))
        return pa.concat_tables(tables)

    def _rows(self, record: dict, frame_index: list, frames: list[np.ndarray], detections: list[Detections],
              links: dict | None = None) -> pa.Table:
        """Staged rows of the faces ``detections[i]`` on frame ``frame_index[i]``; ``links``: the
        columns of interpolated faces (None: detected faces)."""
        counts = [len(d) for d in detections]
        total = sum(counts)
        if total == 0:
            return self.schema.empty_table()
        boxes = np.concatenate([d.boxes for d in detections]).astype(np.float32)
        landmarks = np.concatenate([d.landmarks for d in detections]).reshape(total, 10).astype(np.float32)
        fps = float(record["fps"])
        frame_index = np.repeat(np.asarray(frame_index, np.int64), counts)
        if links is None:
            face_index = np.concatenate([np.arange(n, dtype=np.int32) for n in counts])
        else:  # numbered by the finalising step, after the faces whose tracks do not join are gone
            face_index = np.full(total, -1, np.int32)
        columns = {
            "video": pa.array([record["video"]] * total, pa.string()),
            "label": pa.array([record["label"] or None] * total, pa.string()),
            "frame_index": pa.array(frame_index, pa.int64()),
            "timestamp_s": pa.array(frame_index / fps, pa.float64()),
            "face_index": pa.array(face_index, pa.int32()),
            "interpolated": pa.array(np.full(total, links is not None), pa.bool_()),
            "x1": pa.array(boxes[:, 0]),
            "y1": pa.array(boxes[:, 1]),
            "x2": pa.array(boxes[:, 2]),
            "y2": pa.array(boxes[:, 3]),
            "score": pa.array(np.concatenate([d.scores for d in detections]).astype(np.float32)),
            "landmarks": pa.FixedSizeListArray.from_arrays(pa.array(landmarks.reshape(-1)), 10).cast(
                pa.list_(pa.float32())
            ),
            "width": pa.array(np.full(total, record["width"], np.int32)),
            "height": pa.array(np.full(total, record["height"], np.int32)),
        }
        for name in ("from_frame", "from_face", "to_frame", "to_face"):
            kind = self.schema.field(name).type
            columns[name] = pa.array(links[name], kind) if links is not None else pa.nulls(total, kind)
        if self.options.crops:
            crops, to_crop = self._crops(frames, detections, record)
            columns["crop"] = pa.array(crops, pa.binary())
            columns["crop_matrix"] = pa.FixedSizeListArray.from_arrays(
                pa.array(to_crop.reshape(-1).astype(np.float32)), 6
            ).cast(pa.list_(pa.float32()))
        return pa.table(columns, schema=self.schema)

    def _crops(self, frames: np.ndarray, detections: list[Detections], record: dict) -> tuple[list[bytes], np.ndarray]:
        face_frames = np.repeat(np.arange(len(detections)), [len(d) for d in detections])
        return chunk_crops(frames, face_frames, np.concatenate([d.boxes for d in detections]),
                           np.concatenate([d.landmarks for d in detections]), record, self.options.crop,
                           self.detector.device)


def chunk_crops(frames: np.ndarray, face_frames: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray,
                record: dict, options: CropOptions, device=None) -> tuple[list[bytes], np.ndarray]:
    """Encoded crops of N faces of one chunk, cut from its frames as shipped in one batched pass on
    ``device``, and (N, 2, 3) maps from original frame pixels to crop pixels.

    Args:
        frames: (F, H, W, 3) uint8, the chunk's frames as shipped; face_frames: (N,) index into them.
        boxes: (N, 4) and landmarks (N, 5, 2), pixels of the original frame.
        record: the chunk record (its ``scale_x``, ``scale_y``: original -> shipped pixels).

    With crops on the pipeline ships full-resolution frames, so the scale is 1; it maps the boxes onto
    frames downscaled at decode."""
    to_shipped = np.array([record["scale_x"], record["scale_y"]], np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) / np.tile(to_shipped, 2)
    landmarks = np.asarray(landmarks, np.float64).reshape(-1, 5, 2) / to_shipped
    images, to_crop = cut_crops(frames, face_frames, boxes, landmarks, options, device)
    to_crop[:, :, :2] /= to_shipped  # from shipped-frame pixels to original pixels
    return [encode_crop(image, options) for image in images], to_crop
