"""Adaptive micro-batching: keep the work of every forward pass within a budget.

The cost of a frame is only partly known in advance. P-Net's work is the pixel
count of the frame's pyramid, known before running; R-Net's and O-Net's work is the
number of face candidates, which goes from none (an empty corridor) to thousands (a
stadium). The controller groups consecutive images into micro-batches whose
pyramid pixels fit the P-Net budget and whose *expected* candidates fit one R-Net
and one O-Net pass, the expectation being the candidates per pyramid pixel measured
on recent batches. Crowded frames therefore shrink the next micro-batches, empty
ones let them grow back. The cascade itself also cuts every R-Net and O-Net pass at
the budget, so a surprise crowd costs more passes, never a larger one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class WorkBudget:
    """Upper bounds on the work of one forward pass.

    Attributes:
        pnet_pixels: pyramid pixels through P-Net per pass (all levels of all images
            in a micro-batch; a single larger image still runs alone).
        rnet_crops: 24x24 crops per R-Net pass.
        onet_crops: 48x48 crops per O-Net pass.
        max_images: images per micro-batch at most.
    """

    # CPU defaults, sized so that a pass's activations stay in the caches: past that, every
    # elementwise layer (PReLU, pooling) turns memory-bound (docs/benchmarks.md, Pass sizes).
    pnet_pixels: int = 1_000_000
    rnet_crops: int = 512
    onet_crops: int = 64
    max_images: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"WorkBudget.{name} must be a positive integer, got {value!r}")

    @classmethod
    def for_device(cls, device_type: str) -> "WorkBudget":
        """A starting budget: GPUs take far larger passes than CPUs."""
        if device_type == "cuda":
            return cls(pnet_pixels=64_000_000, rnet_crops=32_768, onet_crops=8_192, max_images=256)
        return cls()


@dataclass(frozen=True)
class BatchRecord:
    """What one micro-batch held and cost, for monitoring and benchmarks."""

    images: int
    pnet_pixels: int
    rnet_candidates: int
    onet_candidates: int
    faces: int
    seconds: float


class BatchController:
    """Plans micro-batches from pyramid sizes and the candidate rates measured so far.

    Args:
        budget: the per-pass limits.
        smoothing: weight of the newest batch in the running candidate rates (0-1].
        history: how many BatchRecords to keep.
    """

    def __init__(self, budget: WorkBudget, smoothing: float = 0.5, history: int = 256) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.budget = budget
        self.smoothing = smoothing
        self.rnet_per_pixel = 0.0  # R-Net candidates per P-Net pixel, running estimate
        self.onet_per_pixel = 0.0
        self.records: deque[BatchRecord] = deque(maxlen=history)

    def plan(self, pyramid_pixels: list[int]) -> list[range]:
        """Split images (given their pyramid pixel counts, in order) into consecutive micro-batches."""
        batches: list[range] = []
        start = 0
        pixels = 0
        for index, cost in enumerate(pyramid_pixels):
            count = index - start
            if count and not self._fits(count + 1, pixels + cost):
                batches.append(range(start, index))
                start, pixels = index, 0
            pixels += cost
        if start < len(pyramid_pixels):
            batches.append(range(start, len(pyramid_pixels)))
        return batches

    def _fits(self, images: int, pixels: int) -> bool:
        budget = self.budget
        return (
            images <= budget.max_images
            and pixels <= budget.pnet_pixels
            and pixels * self.rnet_per_pixel <= budget.rnet_crops
            and pixels * self.onet_per_pixel <= budget.onet_crops
        )

    def observe(self, stats: dict, seconds: float) -> None:
        """Update the candidate rates from one finished micro-batch's cascade stats."""
        pixels = max(int(stats["pnet_pixels"]), 1)
        weight = self.smoothing
        self.rnet_per_pixel += weight * (stats["rnet_candidates"] / pixels - self.rnet_per_pixel)
        self.onet_per_pixel += weight * (stats["onet_candidates"] / pixels - self.onet_per_pixel)
        self.records.append(
            BatchRecord(
                images=int(stats["images"]),
                pnet_pixels=int(stats["pnet_pixels"]),
                rnet_candidates=int(stats["rnet_candidates"]),
                onet_candidates=int(stats["onet_candidates"]),
                faces=int(stats["faces"]),
                seconds=seconds,
            )
        )
