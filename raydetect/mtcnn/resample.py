"""Area-averaged resampling of many image regions at once, through summed-area tables.

Resizing a region to h x w by area averaging (PyTorch's ``interpolate(mode="area")``,
i.e. adaptive average pooling) makes output row i the mean of input rows
[floor(i * n / h), ceil((i + 1) * n / h)) of the region, likewise for columns. With a
summed-area table each output cell's sum is four look-ups, exact in integers, so
every pyramid level and every face crop of every image is one gather, whatever the
number of faces, and no level re-reads the full-resolution frame. On the CPU the look-ups,
the division and the normalisation run as one compiled loop
(:mod:`raydetect.mtcnn.cpu_kernels`), with the same numbers.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from raydetect.mtcnn import cpu_kernels
from raydetect.mtcnn.nets import PIXEL_MEAN, PIXEL_SCALE

try:  # OpenCV's integral image is several times faster than torch's strided cumsum on the CPU.
    import cv2
except ImportError:  # pragma: no cover - opencv-python-headless is a dependency
    cv2 = None


class SummedAreaTables:
    """Exact integer summed-area tables of several uint8 RGB images.

    All tables live in one flat buffer, channels interleaved: whole tables are views of
    it for pyramid levels (row and column gathers), and its three channel planes are
    strided views of it for crops of any image (a 1-D gather per channel is far faster
    than gathering 3-wide rows, and as fast from a stride of 3 as from a copied plane).

    Args:
        images: sequence of (H, W, 3) uint8 tensors on one device; sizes may differ.
    """

    def __init__(self, images: list[torch.Tensor]) -> None:
        device = images[0].device
        largest = max(int(img.shape[0]) * int(img.shape[1]) for img in images)
        # int32 holds 255 * H * W up to about 8.4 megapixels; larger frames need int64.
        dtype = torch.int32 if largest * 255 < 2**31 - 1 else torch.int64
        self.sizes: list[tuple[int, int]] = [(int(img.shape[0]), int(img.shape[1])) for img in images]
        cells = [(height + 1) * (width + 1) for height, width in self.sizes]
        flat = torch.empty(sum(cells) * 3, dtype=dtype, device=device)
        self.whole_tables: list[torch.Tensor] = []  # (H + 1, (W + 1) * 3) per image, channels interleaved
        bases, strides = [], []
        offset = 0
        for image, (height, width), count in zip(images, self.sizes, cells):
            table = flat[offset * 3 : (offset + count) * 3].view(height + 1, width + 1, 3)
            _integral_into(image, table)
            self.whole_tables.append(table.view(height + 1, (width + 1) * 3))
            bases.append(offset)
            strides.append(width + 1)
            offset += count
        self.cells = flat  # (3 * total cells,): channel k of cell i at 3 * i + k
        self.planes = flat.as_strided((3, offset), (1, 3))  # (3, total cells): channel k of cell i at 3 * i + k
        self.index_dtype = torch.int32 if offset < 2**31 else torch.int64
        self.base = torch.tensor(bases, dtype=torch.long, device=device)
        self.row_stride = torch.tensor(strides, dtype=torch.long, device=device)
        self.heights = torch.tensor([height for height, _ in self.sizes], dtype=torch.long, device=device)

    def resample(self, image_index: torch.Tensor, regions: torch.Tensor, height: int, width: int | None = None,
                 normalized: bool = False):
        """Area-resample each region of its image to height x width.

        Args:
            image_index: (K,) int64 into the images given at construction.
            regions: (K, 4) int64 x0, y0, x1, y1, 0-based half-open, non-empty.
            height, width: output size in pixels (width defaults to height).
            normalized: return the networks' input, ``normalize(means)``, instead of the means.

        Returns:
            (K, 3, height, width) float32 means in [0, 255] (or normalised), in channels-last memory layout.

        Raises:
            ValueError: a region is empty or reaches outside its image (the look-ups would read
                another row's or another image's cells).
        """
        width = height if width is None else width
        self._check_regions(image_index, regions)
        if self._runs_compiled:
            out = torch.empty((len(regions), height, width, 3), dtype=torch.float32)
            cpu_kernels.area_crops(
                self.cells.numpy(), self.base.index_select(0, image_index).numpy(),
                self.row_stride.index_select(0, image_index).numpy(), regions.contiguous().numpy(),
                *_normalization(normalized), out.numpy(),
            )
            return out.permute(0, 3, 1, 2)
        row_start, row_end = _cell_edges(regions[:, 1], regions[:, 3], height)
        col_start, col_end = _cell_edges(regions[:, 0], regions[:, 2], width)
        stride = self.row_stride.index_select(0, image_index)[:, None]
        base = self.base.index_select(0, image_index)[:, None]
        # Flat offsets of the corner rows (2, K, height) and columns (2, K, width). The index is read once per
        # channel, so its width matters: int32 when the cells allow, already for the broadcast sum below.
        rows = torch.stack([base + row_end * stride, base + row_start * stride]).to(self.index_dtype)
        cols = torch.stack([col_end, col_start]).to(self.index_dtype)
        # Corners in the order bottom-right, bottom-left, top-right, top-left: (2, 2, K, height, width).
        index = (rows[:, None, :, :, None] + cols[None, :, :, None, :]).reshape(-1)
        channel_sums = []
        for plane in self.planes:
            corner = plane.index_select(0, index).view(2, 2, -1, height, width)
            channel_sums.append((corner[0, 0] - corner[0, 1]).sub_(corner[1, 0]).add_(corner[1, 1]))
        sums = torch.stack(channel_sums, dim=-1)  # (K, height, width, 3)
        counts = ((row_end - row_start)[:, :, None] * (col_end - col_start)[:, None, :]).to(torch.float32)
        return _means(sums, counts[..., None], normalized).permute(0, 3, 1, 2)

    def resample_whole(self, image_indices: list[int], height: int, width: int, normalized: bool = False):
        """Area-resample whole images of one size to height x width: pyramid levels.

        The same sums as :meth:`resample` over the full frame, taken separably (a gather
        of whole table rows, then of columns) so that each output cell costs two
        subtractions instead of four random look-ups.

        Args:
            image_indices: images given at construction, all of the same size.
            normalized: return the networks' input, ``normalize(means)``, instead of the means.

        Returns:
            (len(image_indices), 3, height, width) float32 means in [0, 255] (or normalised), channels-last.
        """
        source_height, source_width = self.sizes[image_indices[0]]
        if any(self.sizes[index] != (source_height, source_width) for index in image_indices):
            raise ValueError("resample_whole takes images of one size")
        if self._runs_compiled:
            out = torch.empty((len(image_indices), height, width, 3), dtype=torch.float32)
            edges = [edges.numpy() for edges in _level_edges(source_height, source_width, height, width)]
            for position, index in enumerate(image_indices):
                table = self.whole_tables[index].numpy().reshape(source_height + 1, source_width + 1, 3)
                cpu_kernels.area_level(table, *edges, *_normalization(normalized), out[position].numpy())
            return out.permute(0, 3, 1, 2)
        rows_end, rows_start, cols_end, cols_start, counts, scaled_counts = _level_geometry(
            source_height, source_width, height, width, self.planes.device
        )
        levels = []
        for index in image_indices:
            table = self.whole_tables[index]
            row_sums = table.index_select(0, rows_end).sub_(table.index_select(0, rows_start))  # (height, (W + 1) * 3)
            sums = row_sums.gather(1, cols_end).sub_(row_sums.gather(1, cols_start))  # (height, width * 3)
            levels.append(_means(sums.view(height, width, 3), counts, normalized, scaled_counts))
        means = levels[0].unsqueeze(0) if len(levels) == 1 else torch.stack(levels)
        return means.view(len(image_indices), height, width, 3).permute(0, 3, 1, 2)

    def _check_regions(self, image_index: torch.Tensor, regions: torch.Tensor) -> None:
        image_widths = self.row_stride.index_select(0, image_index) - 1
        image_heights = self.heights.index_select(0, image_index)
        x0, y0, x1, y1 = regions.unbind(1)
        bad = (x0 < 0) | (y0 < 0) | (x1 <= x0) | (y1 <= y0) | (x1 > image_widths) | (y1 > image_heights)
        if bool(bad.any()):
            row = int(torch.nonzero(bad)[0, 0])
            raise ValueError(
                f"region {row} (x0, y0, x1, y1 = {regions[row].tolist()}) is empty or outside its image "
                f"{int(image_index[row])} of {int(image_widths[row])}x{int(image_heights[row])} pixels"
            )

    @property
    def _runs_compiled(self) -> bool:
        """Whether the compiled CPU loops resample (else ATen's gathers, on any device)."""
        return cpu_kernels.AVAILABLE and self.cells.device.type == "cpu"


# The compiled loops' divisor scale and offset: 1 / PIXEL_SCALE and PIXEL_MEAN * PIXEL_SCALE for the networks'
# input (see _means), 1 and 0 for means.
_NORMALIZED = (np.float32(1.0 / PIXEL_SCALE), np.float32(PIXEL_MEAN * PIXEL_SCALE))
_MEANS = (np.float32(1.0), np.float32(0.0))


def _normalization(normalized: bool) -> tuple[np.float32, np.float32]:
    return _NORMALIZED if normalized else _MEANS


@functools.lru_cache(maxsize=48)  # a few frame sizes' levels
def _level_edges(source_height: int, source_width: int, height: int, width: int):
    """The table rows ending and starting each output row of a level (height,), and likewise its columns
    (width,): int64 CPU tensors, cached (a video's frames share their levels)."""
    full = torch.tensor([[0, source_height, source_width]])
    row_start, row_end = (edges[0] for edges in _cell_edges(full[:, 0], full[:, 1], height))
    col_start, col_end = (edges[0] for edges in _cell_edges(full[:, 0], full[:, 2], width))
    return row_end, row_start, col_end, col_start


@functools.lru_cache(maxsize=48)  # a few frame sizes' levels
def _level_geometry(source_height: int, source_width: int, height: int, width: int, device: torch.device):
    """Index tensors of one pyramid level, cached: a video's frames share their levels.

    Returns the table rows ending and starting each output row (height,), the
    interleaved table columns ending and starting each output value (height, width * 3,
    broadcast views), the pixel count of each output cell (height, width, 1), and that
    count divided by the networks' pixel scale (see :func:`_means`).
    """
    row_end, row_start, col_end, col_start = (
        edges.to(device) for edges in _level_edges(source_height, source_width, height, width)
    )
    counts = ((row_end - row_start)[:, None] * (col_end - col_start)[None, :]).to(torch.float32)[:, :, None]
    # Column c of channel k sits at 3 * c + k in a row of the interleaved table.
    channel = torch.arange(3, device=device)
    cols_end = (col_end[:, None] * 3 + channel).reshape(1, -1).expand(height, -1)
    cols_start = (col_start[:, None] * 3 + channel).reshape(1, -1).expand(height, -1)
    return row_end, row_start, cols_end, cols_start, counts, counts / PIXEL_SCALE


def _means(sums: torch.Tensor, counts: torch.Tensor, normalized: bool,
           scaled_counts: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 ``sums / counts``, or ``normalize`` of that, bit for bit, in one pass less.

    Dividing by 128 * counts (``scaled_counts`` when the caller has them) scales the rounded
    quotient by an exact power of two, and the subtraction then rounds once, as
    ``(mean - 127.5) / 128`` does.
    """
    if not normalized:
        return torch.div(sums, counts)
    divisor = counts / PIXEL_SCALE if scaled_counts is None else scaled_counts
    return torch.div(sums, divisor).sub_(PIXEL_MEAN * PIXEL_SCALE)


def _integral_into(image: torch.Tensor, table: torch.Tensor) -> None:
    """Fill the (H + 1, W + 1, 3) ``table`` so that entry (y, x) sums image[:y, :x]."""
    if image.device.type == "cpu" and cv2 is not None and table.dtype == torch.int32:
        written = cv2.integral(np.ascontiguousarray(image.numpy()), sum=table.numpy(), sdepth=cv2.CV_32S)
        if written.ctypes.data != table.data_ptr():  # OpenCV chose to allocate after all
            table.copy_(torch.from_numpy(written))
        return
    table[0].zero_()
    table[1:, 0].zero_()
    table[1:, 1:].copy_(image.to(table.dtype).cumsum(0).cumsum(1))


def _cell_edges(start: torch.Tensor, end: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per region, the first and one-past-last input index of each of ``size`` output cells."""
    steps = torch.arange(size + 1, device=start.device)
    length = (end - start)[:, None]
    lower = start[:, None] + (steps[None, :-1] * length) // size
    upper = start[:, None] + (steps[None, 1:] * length + size - 1) // size
    return lower, upper
