"""Geometry of the image pyramid, in plain Python: ``raydetect plan`` uses it without loading torch."""

from __future__ import annotations

# P-Net sees 12x12 windows with a stride of 2 in the level it runs on.
PNET_WINDOW = 12
PNET_STRIDE = 2


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
