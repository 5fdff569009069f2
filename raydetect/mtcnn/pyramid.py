"""Geometry of the image pyramid, in plain Python: ``raydetect plan`` uses it without loading torch.

The one owner of the pyramid's rules: the cascade, the detector's work budget, the Serve
batch cost and ``raydetect plan`` all call these functions.
"""

from __future__ import annotations

# P-Net sees 12x12 windows with a stride of 2 in the level it runs on.
PNET_WINDOW = 12
PNET_STRIDE = 2


def check_pyramid_options(min_face_size: float, scale_factor: float) -> None:
    """Raise ValueError unless ``min_face_size >= 1`` pixel and ``0 < scale_factor < 1``."""
    if not min_face_size >= 1:
        raise ValueError(f"min_face_size must be at least 1 pixel, got {min_face_size}")
    if not 0.0 < scale_factor < 1.0:
        raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor}")


def pyramid_scales(height: int, width: int, min_face_size: float, scale_factor: float) -> list[float]:
    """Scales of the image pyramid, largest first: m * f**k while the shorter side stays >= 12 px.

    m = 12 / min_face_size maps the smallest face to P-Net's 12-pixel window. The
    products are accumulated step by step, as the reference does, so that level sizes
    (:func:`level_size`) match it exactly.
    """
    scale = PNET_WINDOW / min_face_size
    shorter = min(height, width) * scale
    scales = []
    while shorter >= PNET_WINDOW:
        scales.append(scale)
        scale *= scale_factor
        shorter *= scale_factor
    return scales


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) in pixels of the pyramid level at ``scale``."""
    return int(height * scale + 1), int(width * scale + 1)


def level_sizes(height: int, width: int, min_face_size: float, scale_factor: float) -> list[tuple[int, int]]:
    """(height, width) in pixels of every pyramid level of a ``height`` x ``width`` image, largest first."""
    return [level_size(height, width, s) for s in pyramid_scales(height, width, min_face_size, scale_factor)]


def pyramid_pixels(height: int, width: int, min_face_size: float, scale_factor: float) -> int:
    """Pixels P-Net processes over every pyramid level of one image (0 when it has no level).

    About ``2 * H * W * (12 / min_face_size)**2``: the measure of P-Net's work that the
    micro-batches and the Serve batches are budgeted in.
    """
    return sum(h * w for h, w in level_sizes(height, width, min_face_size, scale_factor))
