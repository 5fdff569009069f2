"""What a detect job will cost, from its probed shards, before any frame is decoded (``--dry-run``).

Input: the shard rows of the planning stage (:func:`raydetect.offline.shards.plan_shards`), which hold
each video's frame count, rate and size from its container, or the error that kept it from being
probed. Output: :class:`JobEstimate`: videos, frames, sampled frames, shards, detector time from
``raydetect plan``'s calibrated cost model (:mod:`raydetect.tuning.calibration`) and output size.

Detector time is P-Net's work, which follows from the frame size alone, plus R-Net and O-Net
candidates at the typical density of the calibration's sample video: content with more faces (or
face-like texture) costs more. The output size counts one face per sampled frame, unless told
another density. No Ray here.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from raydetect.offline.shards import ShardOptions
from raydetect.offline.video import VideoInfo

# Parquet bytes of one face row without its crop, and of a 224-pixel JPEG crop at quality 90, both
# measured on the bundled sample's output (docs/accuracy.md, "Dry-run estimate").
FACE_ROW_BYTES = 100
CROP_BYTES_224_Q90 = 6_700


@dataclass
class JobEstimate:
    """What ``--dry-run`` reports.

    Attributes:
        videos: inputs to do; skipped: inputs DEST already holds as done; probed: those whose
            container could be read.
        failed: ``(video, error)`` of each input that could not be probed.
        frames: frames of the probed videos (containers' counts); sampled: frames the detector would see.
        shards: decode tasks.
        detector_ms: expected detector milliseconds over all sampled frames on the calibrated device,
            with the calibration's torch threads (None: no calibration asked).
        threads: torch threads of the calibration (CPU core-hours = hours x threads).
        device, device_name: what the calibration measured.
        output_bytes: the faces table's expected size at ``faces_per_frame`` faces per sampled frame.
        sizes: sampled frames per detection size (width, height) after ``--max-side``.
        reused, reused_sampled: DFDC fakes that take their original's faces (``--reuse-original-boxes``)
            and their sampled frames: decoded and cropped, not detected (not in ``sampled``).
    """

    videos: int = 0
    skipped: int = 0
    probed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 0
    sampled: int = 0
    shards: int = 0
    detector_ms: float | None = None
    threads: int = 1
    device: str = "cpu"
    device_name: str = ""
    faces_per_frame: float = 1.0
    output_bytes: int = 0
    sizes: Counter = field(default_factory=Counter)
    reused: int = 0
    reused_sampled: int = 0

    @property
    def device_hours(self) -> float | None:
        """CPU-core-hours on a CPU (hours x torch threads), GPU-hours on a GPU."""
        if self.detector_ms is None:
            return None
        hours = self.detector_ms / 3.6e6
        return hours if self.device.startswith("cuda") else hours * self.threads

    def text(self) -> str:
        lines = [
            f"videos: {self.videos} to do ({self.skipped} already done), {self.probed} probed, "
            f"{len(self.failed)} could not be probed",
            f"frames: {self.frames} in the videos, {self.sampled} sampled for detection, in {self.shards} shards",
        ]
        if self.reused:
            lines.append(f"  {self.reused} DFDC fakes take their original's faces: {self.reused_sampled} sampled "
                         "frames decoded and cropped, not detected")
        for (width, height), count in self.sizes.most_common(5):
            lines.append(f"  {count} frames detected at {width}x{height}")
        if self.device_hours is not None:
            unit = "GPU-hours" if self.device.startswith("cuda") else "CPU-core-hours"
            per_frame = self.detector_ms / self.sampled if self.sampled else 0.0
            lines.append(
                f"detector time: about {self.device_hours:.3g} {unit} ({per_frame:.1f} ms per frame on "
                f"{self.device_name}, {self.threads} threads, from `raydetect plan`'s calibration; more "
                f"faces or face-like texture cost more)"
            )
        lines.append(
            f"output: about {_size(self.output_bytes)} of faces at {self.faces_per_frame:g} face per sampled frame"
        )
        for video, error in self.failed[:20]:
            lines.append(f"cannot probe: {error}")
        if len(self.failed) > 20:
            lines.append(f"... and {len(self.failed) - 20} more inputs that cannot be probed")
        return "\n".join(lines)


def sampled_frames(info: VideoInfo, options: ShardOptions) -> int:
    """How many frames of a video the sampling picks (from its announced frame count)."""
    sampling = options.sampling
    if sampling.every is not None:
        return math.ceil(info.frame_count / sampling.every)
    if sampling.count is not None:
        return min(sampling.count, info.frame_count)
    selector = sampling.selector(info)
    return sum(1 for i in range(info.frame_count) if selector.wants(i))


def detection_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) the detector sees after ``--max-side`` (the rounding of ``fit_max_side``)."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def estimate(shard_rows: list[dict], videos: int, options: ShardOptions, crops: bool = False,
             crop_pixels: int = 224 * 224, faces_per_frame: float = 1.0,
             reusing: Callable[[str, dict], bool] | None = None) -> JobEstimate:
    """Count the work of ``shard_rows`` (every shard of every listed video; a failed probe is one row
    with ``error``). ``crop_pixels``: width x height of one crop. ``reusing(video, row)``: whether that
    probed video takes its original's faces instead of being detected (``--reuse-original-boxes``).
    Detector time is added by :func:`add_detector_time`."""
    result = JobEstimate(videos=videos, faces_per_frame=faces_per_frame)
    seen: set[str] = set()
    for row in shard_rows:
        result.shards += 0 if row["error"] else 1
        if row["video"] in seen:
            continue
        seen.add(row["video"])
        if row["error"]:
            result.failed.append((row["video"], row["error"]))
            continue
        info = VideoInfo(row["frame_count"], row["fps"], row["width"], row["height"])
        result.probed += 1
        result.frames += info.frame_count
        count = sampled_frames(info, options)
        if reusing is not None and reusing(row["video"], row):
            result.reused += 1
            result.reused_sampled += count
            continue
        result.sampled += count
        result.sizes[detection_size(info.width, info.height, options.max_side)] += count
    per_face = FACE_ROW_BYTES + (CROP_BYTES_224_Q90 * crop_pixels / (224 * 224) if crops else 0)
    result.output_bytes = int((result.sampled + result.reused_sampled) * faces_per_frame * per_face)
    return result


def add_detector_time(result: JobEstimate, calibration, min_face_size: float, scale_factor: float) -> None:
    """Fill ``detector_ms`` from a :class:`raydetect.tuning.calibration.Calibration`."""
    from raydetect.tuning.pyramid_plan import plan_pyramid

    total = 0.0
    for (width, height), count in result.sizes.items():
        plan = plan_pyramid(height, width, min_face_size, scale_factor)
        total += count * calibration.estimate_ms(plan)["ms"] if plan.levels else 0.0
    result.detector_ms = total
    result.threads = int(calibration.hardware.get("torch_threads") or 1)
    result.device = calibration.hardware["device"]
    result.device_name = calibration.hardware["device_name"]


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
