"""Run a batch of requests that may ask for different detector parameters, each group on its own detector.

A ``FaceDetector`` is built for one ``min_face_size``; requests gathered across clients can
ask for several. :class:`DetectorPool` keeps one detector per parameter set (least recently
used dropped past a bound), splits a batch into groups with equal parameters, runs each group
in one ``detect`` call and returns results in request order. No Ray here: the Serve
deployment and the in-process server both use it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from raydetect.errors import InvalidImageError
from raydetect.mtcnn import pyramid
from raydetect.mtcnn.defaults import SCALE_FACTOR
from raydetect.core.results import Detections


@dataclass(frozen=True)
class DetectRequest:
    """One image to search, with the parameters it asks for.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        min_face_size: smallest face to find, in pixels.
        cost: P-Net pixels of its pyramid (see :func:`request_pixels`), used as its share of a
            batch budget.
    """

    image: np.ndarray
    min_face_size: int
    cost: int

    @property
    def parameters(self) -> tuple:
        """Requests with equal parameters may share one ``detect`` call."""
        return (self.min_face_size,)


def request_pixels(height: int, width: int, min_face_size: float) -> int:
    """The work a request adds to a batch: P-Net pixels of its pyramid at the detectors' scale factor
    (:func:`raydetect.mtcnn.pyramid.pyramid_pixels`), at least 1 so that every request has a share."""
    return max(1, pyramid.pyramid_pixels(height, width, min_face_size, SCALE_FACTOR))


def total_cost(requests: Sequence[DetectRequest]) -> int:
    """Budget used by a batch: the ``batch_size_fn`` of the Serve batch."""
    return sum(request.cost for request in requests)


class DetectorPool:
    """FaceDetectors keyed by parameters, built on first use by ``factory(min_face_size)``.

    Args:
        factory: builds a detector for one ``min_face_size`` (e.g. ``lambda m: FaceDetector(min_face_size=m)``).
        max_detectors: detectors kept; the least recently used is dropped past this many.
    """

    def __init__(self, factory: Callable[[int], object], max_detectors: int = 8):
        if max_detectors < 1:
            raise ValueError(f"max_detectors must be >= 1, got {max_detectors}")
        self._factory = factory
        self._max_detectors = max_detectors
        self._detectors: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self.batches = 0
        self.groups = 0
        self.images = 0
        self.largest_batch = 0

    def detector(self, min_face_size: int):
        """The detector for these parameters, built if needed."""
        key = (min_face_size,)
        with self._lock:
            found = self._detectors.get(key)
            if found is not None:
                self._detectors.move_to_end(key)
                return found
        built = self._factory(min_face_size)
        with self._lock:
            self._detectors[key] = built
            self._detectors.move_to_end(key)
            while len(self._detectors) > self._max_detectors:
                self._detectors.popitem(last=False)
        return built

    def run(self, requests: Sequence[DetectRequest]) -> list[Detections | InvalidImageError]:
        """Detections for each request, in order; a request the detector refuses gets its error
        in its place and costs the others nothing."""
        results: list[Detections | InvalidImageError | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for position, request in enumerate(requests):
            groups.setdefault(request.parameters, []).append(position)
        for positions in groups.values():
            detector = self.detector(requests[positions[0]].min_face_size)
            images = [requests[p].image for p in positions]
            try:
                found = detector.detect(images)
            except InvalidImageError:
                # The detector checks its images before any work; one bad image must not fail its
                # neighbours: retry one by one to find it.
                found = [_detect_one(detector, image) for image in images]
            for position, detections in zip(positions, found):
                results[position] = detections
        with self._lock:
            self.batches += 1
            self.groups += len(groups)
            self.images += len(requests)
            self.largest_batch = max(self.largest_batch, len(requests))
        return results

    def stats(self) -> dict:
        """Counters since start: batches run, parameter groups, images, largest batch (images)."""
        with self._lock:
            return {
                "batches": self.batches,
                "groups": self.groups,
                "images": self.images,
                "largest_batch": self.largest_batch,
                "detectors": len(self._detectors),
            }


def _detect_one(detector, image: np.ndarray) -> Detections | InvalidImageError:
    try:
        return detector.detect([image])[0]
    except InvalidImageError as exc:
        return exc
