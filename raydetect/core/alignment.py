"""Face alignment: the similarity transform that maps a face's 5 landmarks onto a fixed template.

The template is insightface's ArcFace 5-point template (``arcface_dst`` in insightface's
``face_align.py``; the layout its ``norm_crop`` aligns to), defined on a 112 x 112 crop: left eye,
right eye, nose, left mouth corner, right mouth corner, in the order of :data:`LANDMARK_NAMES`.

Margin rule: on a ``width`` x ``height`` crop the template is scaled by ``min(width, height) / 112``
and then shrunk about the crop's centre by ``1 / (1 + margin)``; ``margin=0`` at 112 x 112 is exactly
insightface's framing, a larger margin adds context around the face the way ``--crop-margin`` does
for the square crop.

Coordinates: a point ``(x, y)`` is in continuous pixels, pixel ``(i, j)`` covering ``[i, i+1) x
[j, j+1)`` (the boxes' convention); insightface's template is in pixel-index coordinates (pixel
centre at ``i``), hence the half pixel below.
"""

from __future__ import annotations

import numpy as np

from raydetect.core.results import LANDMARK_NAMES

ARCFACE_TEMPLATE_SIZE = 112
# (5, 2) x, y on a 112 x 112 crop, pixel-index coordinates; rows in the order of LANDMARK_NAMES.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
assert len(ARCFACE_TEMPLATE) == len(LANDMARK_NAMES)


def template_points(width: int, height: int, margin: float) -> np.ndarray:
    """(5, 2) float64: where the landmarks go on a ``width`` x ``height`` crop (continuous pixels)."""
    scale = min(width, height) / ARCFACE_TEMPLATE_SIZE / (1.0 + margin)
    centre = ARCFACE_TEMPLATE_SIZE / 2
    return (ARCFACE_TEMPLATE + 0.5 - centre) * scale + np.array([width / 2, height / 2])


def similarity_transforms(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms (rotation, uniform scale, translation; no reflection)
    taking each point set in ``source`` onto ``target``.

    Umeyama's closed form; in 2-D it is the complex linear regression ``w = a z + b`` (``a`` holds
    scale and rotation), solved for every face at once.

    Args:
        source: (N, P, 2) points, e.g. the landmarks of N faces.
        target: (P, 2) or (N, P, 2) points.

    Returns:
        (N, 2, 3) float64 matrices ``M`` with ``target ~= M @ [x, y, 1]``. A face whose points all
        coincide (no scale to estimate) gets NaN.
    """
    source = np.asarray(source, np.float64)
    z = source[..., 0] + 1j * source[..., 1]
    target = np.broadcast_to(np.asarray(target, np.float64), source.shape)
    w = target[..., 0] + 1j * target[..., 1]
    z_mean, w_mean = z.mean(axis=1, keepdims=True), w.mean(axis=1, keepdims=True)
    spread = (np.abs(z - z_mean) ** 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(spread > 1e-12, ((w - w_mean) * np.conj(z - z_mean)).sum(axis=1) / spread, np.nan)
    b = w_mean[:, 0] - a * z_mean[:, 0]
    return np.stack(
        [np.stack([a.real, -a.imag, b.real], axis=-1), np.stack([a.imag, a.real, b.imag], axis=-1)], axis=1
    )


def invert_similarities(matrices: np.ndarray) -> np.ndarray:
    """(N, 2, 3) -> (N, 2, 3): the inverse of each affine map (any invertible one, not only similarities)."""
    linear = matrices[:, :, :2]
    inverse = np.linalg.inv(linear)
    return np.concatenate([inverse, -inverse @ matrices[:, :, 2:]], axis=2)


def alignment_matrices(landmarks: np.ndarray, width: int, height: int, margin: float) -> np.ndarray:
    """(N, 5, 2) landmarks in frame pixels -> (N, 2, 3) float64 maps from frame pixels to crop pixels
    that put the landmarks on :func:`template_points` (NaN for a face with degenerate landmarks)."""
    return similarity_transforms(landmarks, template_points(width, height, margin))
