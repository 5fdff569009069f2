"""Box operations of the MTCNN cascade, tensors in and out.

Boxes are float tensors ``(N, 4)`` as x1, y1, x2, y2 in pixels of the original image.
The arithmetic follows the original MTCNN code (including its float32 rounding), so
that the cascade finds the same faces with the published weights.
"""

from __future__ import annotations

import torch

from raydetect.mtcnn.pyramid import PNET_STRIDE, PNET_WINDOW


def pnet_proposals(
    face_prob: torch.Tensor, offsets: torch.Tensor, scale: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn P-Net's output grid into candidate boxes in image pixels.

    Args:
        face_prob: (N, H', W') face probability per output cell.
        offsets: (N, 4, H', W') box offsets per cell.
        scale: the pyramid level's scale (level pixels per image pixel).
        threshold: cells with probability >= threshold become candidates.

    Returns:
        image_index (K,) int64 into the N images, boxes (K, 4) float32, scores (K,),
        offsets (K, 4).
    """
    mask = face_prob >= threshold
    image_index, cell_y, cell_x = torch.nonzero(mask, as_tuple=True)
    scores = face_prob[mask]
    cell_offsets = offsets.permute(0, 2, 3, 1)[mask]
    cells = torch.stack([cell_x, cell_y], dim=1).to(face_prob.dtype)
    top_left = torch.floor((PNET_STRIDE * cells + 1) / scale)
    bottom_right = torch.floor((PNET_STRIDE * cells + PNET_WINDOW) / scale)
    return image_index, torch.cat([top_left, bottom_right], dim=1), scores, cell_offsets


def calibrate(boxes: torch.Tensor, offsets: torch.Tensor, inclusive: bool) -> torch.Tensor:
    """Move each edge by its offset times the box's width or height.

    ``inclusive`` measures width as x2 - x1 + 1 (R-Net and O-Net); P-Net's proposals
    use x2 - x1.
    """
    extra = 1.0 if inclusive else 0.0
    width = boxes[:, 2] - boxes[:, 0] + extra
    height = boxes[:, 3] - boxes[:, 1] + extra
    size = torch.stack([width, height, width, height], dim=1)
    return boxes + offsets * size


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Squares with side max(width, height) around each box's centre."""
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(width, height)
    x1 = boxes[:, 0] + width * 0.5 - side * 0.5
    y1 = boxes[:, 1] + height * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def crop_regions(
    boxes: torch.Tensor, image_heights: torch.Tensor, image_widths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel regions that R-Net and O-Net see for each box.

    Each box is truncated to integers and clipped to [1, w] x [1, h] in 1-based pixel
    coordinates; the clipped part of the image is resampled, with no zero padding.

    Args:
        boxes: (K, 4) float.
        image_heights, image_widths: (K,) int, the size of each box's image.

    Returns:
        regions (K, 4) int64 as x0, y0, x1, y1, 0-based and half-open; valid (K,) bool,
        False where the region holds no pixel (the box lies outside its image).
    """
    corners = boxes.trunc().long()
    x0 = corners[:, 0].clamp(min=1) - 1
    y0 = corners[:, 1].clamp(min=1) - 1
    x1 = torch.minimum(corners[:, 2], image_widths)
    y1 = torch.minimum(corners[:, 3], image_heights)
    valid = (x1 > x0) & (y1 > y0)
    return torch.stack([x0, y0, x1, y1], dim=1), valid


def landmarks_in_image(boxes: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """O-Net's landmark outputs (K, 10: five x fractions, five y fractions of the box)
    as (K, 5, 2) pixel coordinates, measured on the box O-Net saw."""
    width = boxes[:, 2:3] - boxes[:, 0:1] + 1
    height = boxes[:, 3:4] - boxes[:, 1:2] + 1
    xs = width * fractions[:, :5] + boxes[:, 0:1] - 1
    ys = height * fractions[:, 5:] + boxes[:, 1:2] - 1
    return torch.stack([xs, ys], dim=2)
