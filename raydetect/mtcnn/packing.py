"""Packing the pyramid levels' P-Net stem features into one canvas.

P-Net's trunk has no padding and no pooling, so each output cell sees only a 5x5
window of stem features. Levels laid side by side in one canvas therefore give,
in every cell whose window lies inside one level, exactly what that level gives on
its own; cells straddling two levels are simply not read back. On a GPU one trunk
pass over the canvas replaces a dozen small launches per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    """Where one level's features sit in the canvas, in feature cells."""

    top: int
    left: int
    height: int
    width: int


def shelf_layout(sizes: list[tuple[int, int]]) -> tuple[int, int, list[Placement]]:
    """Lay (height, width) rectangles, largest first, left to right on shelves.

    The canvas is as wide as the widest rectangle; a rectangle that does not fit on
    the current shelf opens a new one below. For a pyramid with ratio 0.709 about 80%
    of the canvas is covered.

    Returns:
        canvas height, canvas width, and one Placement per rectangle in input order.
    """
    canvas_width = max(width for _, width in sizes)
    placements = []
    shelf_top = shelf_height = cursor = 0
    for height, width in sizes:
        if cursor + width > canvas_width:
            shelf_top, shelf_height, cursor = shelf_top + shelf_height, 0, 0
        placements.append(Placement(shelf_top, cursor, height, width))
        cursor += width
        shelf_height = max(shelf_height, height)
    return shelf_top + shelf_height, canvas_width, placements


def pack(features: list[torch.Tensor]) -> tuple[torch.Tensor, list[Placement]]:
    """Copy (N, C, h_k, w_k) feature maps into one zeroed (N, C, H, W) canvas."""
    height, width, placements = shelf_layout([(int(f.shape[2]), int(f.shape[3])) for f in features])
    first = features[0]
    canvas = first.new_zeros((first.shape[0], first.shape[1], height, width)).contiguous(
        memory_format=torch.channels_last
    )
    for feature, place in zip(features, placements):
        canvas[:, :, place.top : place.top + place.height, place.left : place.left + place.width] = feature
    return canvas, placements


def unpack(output: torch.Tensor, place: Placement, shrink: int) -> torch.Tensor:
    """The cells of ``output`` (..., H - shrink, W - shrink) that belong to one placed level."""
    return output[..., place.top : place.top + place.height - shrink, place.left : place.left + place.width - shrink]
