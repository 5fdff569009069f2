"""The detector's result type: the faces found in one image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, highest score first.

    Attributes:
        boxes: float32 (N, 4), ``x1, y1, x2, y2`` in pixels of the image as given.
        scores: float32 (N,), O-Net face probability in [0, 1].
        landmarks: float32 (N, 5, 2), ``(x, y)`` pixels for left eye, right eye, nose,
            left mouth corner, right mouth corner (the subject's left and right as seen
            in the image: "left" is the point with the smaller x on a frontal face).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.landmarks.shape != (n, 5, 2):
            raise ValueError(
                f"inconsistent detections: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"landmarks {self.landmarks.shape}"
            )

    @classmethod
    def empty(cls) -> "Detections":
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
        )

    def __len__(self) -> int:
        return len(self.scores)

    def scaled(self, factor_x: float, factor_y: float | None = None) -> "Detections":
        """Coordinates multiplied by ``factor`` (e.g. to map a downscaled frame back)."""
        fy = factor_x if factor_y is None else factor_y
        xy = np.array([factor_x, fy], np.float32)
        return Detections(
            boxes=(self.boxes.reshape(-1, 2, 2) * xy).reshape(-1, 4).astype(np.float32),
            scores=self.scores,
            landmarks=(self.landmarks * xy).astype(np.float32),
        )

    def to_dict(self) -> dict:
        """JSON-ready form: ``{"faces": [{"box": [...], "score": s, "landmarks": [[x, y] * 5]}]}``."""
        return {
            "faces": [
                {
                    "box": [float(v) for v in box],
                    "score": float(score),
                    "landmarks": [[float(x), float(y)] for x, y in points],
                }
                for box, score, points in zip(self.boxes, self.scores, self.landmarks)
            ]
        }
