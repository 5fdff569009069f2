"""Area-averaged resampling of many image regions at once, through summed-area tables.

Resizing a region to S x S by area averaging (PyTorch's ``interpolate(mode="area")``,
i.e. adaptive average pooling) makes output cell i the mean of input rows
[floor(i * n / S), ceil((i + 1) * n / S)) of the region, likewise for columns. With a
summed-area table each cell's sum is four look-ups, so every crop of every image is
one gather, whatever the number of faces.
"""

from __future__ import annotations

import torch


class SummedAreaTables:
    """Exact integer summed-area tables of several uint8 RGB images in one flat buffer.

    Args:
        images: sequence of (H, W, 3) uint8 tensors on one device; sizes may differ.
    """

    def __init__(self, images: list[torch.Tensor]) -> None:
        device = images[0].device
        largest = max(int(img.shape[0]) * int(img.shape[1]) for img in images)
        # int32 holds 255 * H * W up to about 8.4 megapixels; larger frames need int64.
        dtype = torch.int32 if largest * 255 < 2**31 - 1 else torch.int64
        tables, bases, strides = [], [], []
        offset = 0
        for image in images:
            height, width = int(image.shape[0]), int(image.shape[1])
            table = torch.zeros((height + 1, width + 1, 3), dtype=dtype, device=device)
            table[1:, 1:] = image.to(dtype).cumsum(0).cumsum(1)
            tables.append(table.reshape(-1, 3))
            bases.append(offset)
            strides.append(width + 1)
            offset += (height + 1) * (width + 1)
        self.flat = torch.cat(tables)
        self.base = torch.tensor(bases, dtype=torch.long, device=device)
        self.row_stride = torch.tensor(strides, dtype=torch.long, device=device)

    def resample(self, image_index: torch.Tensor, regions: torch.Tensor, size: int) -> torch.Tensor:
        """Area-resample each region of its image to size x size.

        Args:
            image_index: (K,) int64 into the images given at construction.
            regions: (K, 4) int64 x0, y0, x1, y1, 0-based half-open, non-empty.
            size: output side S in pixels.

        Returns:
            (K, 3, S, S) float32 in [0, 255], in channels-last memory layout.
        """
        steps = torch.arange(size + 1, device=regions.device)
        rows = _cell_edges(regions[:, 1], regions[:, 3], steps, size)
        cols = _cell_edges(regions[:, 0], regions[:, 2], steps, size)
        base = self.base[image_index][:, None, None]
        stride = self.row_stride[image_index][:, None, None]

        def corner(row_edges, col_edges):
            flat_index = base + row_edges[:, :, None] * stride + col_edges[:, None, :]
            return self.flat[flat_index]  # (K, S, S, 3)

        row_start, row_end = rows
        col_start, col_end = cols
        sums = corner(row_end, col_end) - corner(row_start, col_end) - corner(row_end, col_start) + corner(
            row_start, col_start
        )
        counts = (row_end - row_start)[:, :, None] * (col_end - col_start)[:, None, :]
        means = sums.float() / counts[..., None].float()
        return means.permute(0, 3, 1, 2)


def _cell_edges(start: torch.Tensor, end: torch.Tensor, steps: torch.Tensor, size: int):
    """Per region, the first and one-past-last input index of each of ``size`` cells."""
    length = (end - start)[:, None]
    lower = start[:, None] + (steps[None, :-1] * length) // size
    upper = start[:, None] + (steps[None, 1:] * length + size - 1) // size
    return lower, upper
