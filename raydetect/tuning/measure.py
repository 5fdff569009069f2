"""Run a detector over in-memory frames and account for its work and time (no Ray here)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from raydetect.core.results import Detections

STAT_KEYS = ("images", "pnet_pixels", "rnet_candidates", "onet_candidates", "faces")


@dataclass
class DetectionRun:
    """Detections of a set of frames plus what finding them cost.

    Attributes:
        detections: frame key -> faces found.
        seconds: wall time spent inside ``detector.detect`` (decoding excluded).
        batch_seconds: wall time of each detect call, with ``batch_sizes`` frames each.
        stats: ``detector.last_stats`` summed over calls (P-Net pixels, candidates per stage, faces).
    """

    detections: dict[str, Detections] = field(default_factory=dict)
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAT_KEYS, 0))

    @property
    def frames(self) -> int:
        return len(self.detections)

    @property
    def ms_per_frame(self) -> float:
        """Mean wall milliseconds per frame (total time / frames)."""
        return 1000 * self.seconds / self.frames if self.frames else float("nan")

    @property
    def median_ms_per_frame(self) -> float:
        """Median over detect calls of that call's milliseconds per frame (robust to stray pauses)."""
        if not self.batch_seconds:
            return float("nan")
        return float(np.median([1000 * s / n for s, n in zip(self.batch_seconds, self.batch_sizes)]))

    def per_frame(self, key: str) -> float:
        """A summed stat divided by the number of frames."""
        return self.stats.get(key, 0) / self.frames if self.frames else float("nan")

    @property
    def faces(self) -> int:
        return sum(len(d) for d in self.detections.values())


def run_detector(detector, frames: Mapping[str, np.ndarray], batch_size: int = 8, warmup: bool = True) -> DetectionRun:
    """Detect faces in ``frames`` (key -> (H, W, 3) uint8 RGB; any mapping, e.g. one that reads
    files on access), ``batch_size`` frames per call.

    ``warmup`` runs the first frame once untimed so one-off costs (allocation, kernel
    selection) do not land on the first configuration measured.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    keys = list(frames)
    run = DetectionRun()
    if warmup and keys:
        detector.detect([frames[keys[0]]])
    for start in range(0, len(keys), batch_size):
        chunk = keys[start:start + batch_size]
        pixels = [frames[k] for k in chunk]  # may read from disk: outside the timed region
        began = time.perf_counter()
        found = detector.detect(pixels)
        _synchronize(detector)
        elapsed = time.perf_counter() - began
        run.seconds += elapsed
        run.batch_seconds.append(elapsed)
        run.batch_sizes.append(len(chunk))
        for key in STAT_KEYS:
            run.stats[key] = run.stats.get(key, 0) + int((detector.last_stats or {}).get(key, 0))
        run.detections.update(zip(chunk, found))
    return run


def _synchronize(detector) -> None:
    if str(getattr(detector, "device", "cpu")).startswith("cuda"):
        import torch

        torch.cuda.synchronize()
