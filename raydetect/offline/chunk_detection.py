"""The detection stage of the offline job: one chunk of frames in, a face file and an accounting record out.

:class:`ChunkDetector` holds one :class:`FaceDetector` (built once, in the worker that hosts it),
runs it over a chunk's frames, maps boxes back to full-resolution pixels, cuts crops, writes the
chunk's face rows to DEST/faces under the chunk's fixed name, and returns a small record the
driver uses to know what is done. It knows nothing of Ray; ``pipeline.py`` hosts it in a Ray
Data actor pool.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from raydetect.core.crops import CropOptions, cut_crops, encode_crop
from raydetect.offline.output import JobOutput, face_schema
from raydetect.offline.retrying_io import RetryPolicy
from raydetect.core.results import Detections
from raydetect.offline.shards import chunk_frames, frame_indices
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
        max_side: downscale frames that arrive larger than this before detection.
        crops: cut a crop of every face, shaped by ``crop`` (:class:`CropOptions`).
        torch_threads: intra-op threads for a CPU detector (None: torch's default).
        precision: the networks' precision ("auto", "float32", "bfloat16", "float16"; see ``FaceDetector``).
        compile: torch.compile the networks in each actor (see ``FaceDetector``).
    """

    min_face_size: float = 20.0
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    scale_factor: float = 0.709
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
                 retry: RetryPolicy | None = None):
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
        self.schema = face_schema(options.crops)

    def process(self, record: dict) -> dict:
        """Handle one chunk record; returns its accounting record with ``frames_detected`` and ``faces``."""
        started = time.perf_counter()
        result = {name: record[name] for name in ACCOUNTING_FIELDS}
        result.update(frames_detected=0, faces=0, micro_batches=0, max_batch_images=0)
        frames = chunk_frames(record)
        if record["error"] or len(frames) == 0:
            result["seconds"] = float(record["seconds"]) + time.perf_counter() - started
            return result
        try:
            detections = self._detect(frames, record)
            table = self._rows(record, frames, detections)
            if table.num_rows:
                self.output.write_face_chunk(table, record["key"], record["shard_index"], record["chunk_index"])
        except Exception as exc:  # this input fails, the job goes on; the message names the cause
            indices = frame_indices(record)
            result["error"] = (
                f"{record['video']}: detection failed on frames {indices[0]}-{indices[-1]}: "
                f"{type(exc).__name__}: {exc}"
            )
            result["seconds"] = float(record["seconds"]) + time.perf_counter() - started
            return result
        stats = self.detector.last_stats
        recent = list(self.detector.controller.records)[-max(1, int(stats.get("micro_batches", 1))):]
        result.update(
            frames_detected=len(frames),
            faces=table.num_rows,
            micro_batches=int(stats.get("micro_batches", 0)),
            max_batch_images=max((r.images for r in recent), default=0),
            seconds=float(record["seconds"]) + time.perf_counter() - started,
        )
        return result

    def _detect(self, frames: np.ndarray, record: dict) -> list[Detections]:
        """Detections in full-resolution pixels. The FaceDetector's controller splits the chunk
        into micro-batches that fit its work budget."""
        scale_x, scale_y = float(record["scale_x"]), float(record["scale_y"])
        images = list(frames)
        if self.options.max_side is not None and max(frames.shape[1:3]) > self.options.max_side:
            # Full frames were shipped (for crops): downscale here for detection.
            resized = [fit_max_side(image, self.options.max_side) for image in images]
            images = [image for image, _, _ in resized]
            scale_x, scale_y = resized[0][1], resized[0][2]
        found = self.detector.detect(images)
        if (scale_x, scale_y) != (1.0, 1.0):
            found = [d.scaled(scale_x, scale_y) for d in found]
        return found

    def _rows(self, record: dict, frames: np.ndarray, detections: list[Detections]) -> pa.Table:
        counts = [len(d) for d in detections]
        total = sum(counts)
        if total == 0:
            return self.schema.empty_table()
        boxes = np.concatenate([d.boxes for d in detections]).astype(np.float32)
        landmarks = np.concatenate([d.landmarks for d in detections]).reshape(total, 10).astype(np.float32)
        fps = float(record["fps"])
        frame_index = np.repeat(frame_indices(record), counts)
        columns = {
            "video": pa.array([record["video"]] * total, pa.string()),
            "label": pa.array([record["label"] or None] * total, pa.string()),
            "frame_index": pa.array(frame_index, pa.int64()),
            "timestamp_s": pa.array(frame_index / fps, pa.float64()),
            "face_index": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in counts]), pa.int32()),
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
        if self.options.crops:
            crops, to_crop = self._crops(frames, detections, record)
            columns["crop"] = pa.array(crops, pa.binary())
            columns["crop_matrix"] = pa.FixedSizeListArray.from_arrays(
                pa.array(to_crop.reshape(-1).astype(np.float32)), 6
            ).cast(pa.list_(pa.float32()))
        return pa.table(columns, schema=self.schema)

    def _crops(self, frames: np.ndarray, detections: list[Detections], record: dict) -> tuple[list[bytes], np.ndarray]:
        """Encoded crops of every face, cut from the frames as shipped in one batched pass on the
        detector's device, and (N, 2, 3) maps from original frame pixels to crop pixels. With crops on
        the pipeline ships full-resolution frames, so ``to_shipped`` is 1; it maps the boxes onto
        frames downscaled at decode."""
        to_shipped = np.array([record["scale_x"], record["scale_y"]], np.float64)
        face_frames = np.repeat(np.arange(len(detections)), [len(d) for d in detections])
        boxes = np.concatenate([d.boxes for d in detections]) / np.tile(to_shipped, 2)
        landmarks = np.concatenate([d.landmarks for d in detections]) / to_shipped
        images, to_crop = cut_crops(frames, face_frames, boxes, landmarks, self.options.crop, self.detector.device)
        to_crop[:, :, :2] /= to_shipped  # from shipped-frame pixels to original pixels
        return [encode_crop(image, self.options.crop) for image in images], to_crop
