"""Fused CPU loops, compiled by numba, for the steps that ATen runs as several memory-bound passes.

Between the convolutions the networks spend much of their CPU time reading and writing layer
outputs: PReLU writes a full-size copy that max pooling then reads twice; area resampling
gathers corners, subtracts and divides in separate passes. The loops here read each input once
and write only the result, into numpy views of the torch tensors (no copies). Their numbers are
those of the ATen code they replace, bit for bit: maxima, the same products, and the same
integer sums divided once. Timings: docs/benchmarks.md, "Fused CPU kernels".

numba compiles each loop on a process's first use and caches the machine code on disk (the time
it takes is in the docs); ``NUMBA_CPU_NAME`` chooses the instruction set (``haswell`` for AVX2
on a newer CPU). Where numba cannot be imported, :data:`AVAILABLE` is False and callers use ATen
instead.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this keeps the detector usable without it
    numba = None

AVAILABLE = numba is not None


def compiled(fastmath: bool = True):
    """Compile the decorated loop without the GIL (the detector's CPU streams call these side by side).

    ``fastmath`` lets maxima and minima vectorise (the inputs are finite); the resampling loops go
    without it, so that their divisions round as IEEE division does. Division by zero gives inf or
    nan, as in numpy and torch, instead of raising.
    """
    def compile_loop(function):
        if numba is None:  # pragma: no cover
            return function
        options = dict(nogil=True, boundscheck=False, fastmath=fastmath, error_model="numpy")
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:  # no writable cache folder (a read-only install, no home): compile in every process
            return numba.njit(cache=False, **options)(function)

    return compile_loop


@compiled()
def _prelu_max_pool_2(x: np.ndarray, slopes: np.ndarray, out: np.ndarray) -> None:
    """out = max_pool(prelu(x)) over 2x2 windows at stride 2; see :func:`prelu_max_pool`."""
    count, height, width = x.shape[0], x.shape[1], x.shape[2]
    out_height, out_width, channels = out.shape[1], out.shape[2], out.shape[3]
    for n in range(count):
        for i in range(out_height):
            r0 = 2 * i
            r1 = min(r0 + 1, height - 1)  # a window past the edge repeats its last entry: maxima do not change
            for j in range(out_width):
                s0 = 2 * j
                s1 = min(s0 + 1, width - 1)
                for c in range(channels):
                    v0, v1, v2, v3 = x[n, r0, s0, c], x[n, r0, s1, c], x[n, r1, s0, c], x[n, r1, s1, c]
                    high = max(max(v0, v1), max(v2, v3))
                    low = min(min(v0, v1), min(v2, v3))
                    slope = slopes[c]
                    # PReLU falls then rises (or only rises): its maximum over a window is at the window's
                    # maximum or minimum, so two products replace four.
                    out[n, i, j, c] = max(high if high > 0 else slope * high, low if low > 0 else slope * low)


@compiled()
def _prelu_max_pool_3(x: np.ndarray, slopes: np.ndarray, out: np.ndarray) -> None:
    """out = max_pool(prelu(x)) over 3x3 windows at stride 2; see :func:`prelu_max_pool`."""
    count, height, width = x.shape[0], x.shape[1], x.shape[2]
    out_height, out_width, channels = out.shape[1], out.shape[2], out.shape[3]
    for n in range(count):
        for i in range(out_height):
            r0 = 2 * i
            r1 = min(r0 + 1, height - 1)
            r2 = min(r0 + 2, height - 1)
            for j in range(out_width):
                s0 = 2 * j
                s1 = min(s0 + 1, width - 1)
                s2 = min(s0 + 2, width - 1)
                for c in range(channels):
                    v0, v1, v2 = x[n, r0, s0, c], x[n, r0, s1, c], x[n, r0, s2, c]
                    v3, v4, v5 = x[n, r1, s0, c], x[n, r1, s1, c], x[n, r1, s2, c]
                    v6, v7, v8 = x[n, r2, s0, c], x[n, r2, s1, c], x[n, r2, s2, c]
                    high = max(max(max(v0, v1), max(v2, v3)), max(max(v4, v5), max(max(v6, v7), v8)))
                    low = min(min(min(v0, v1), min(v2, v3)), min(min(v4, v5), min(min(v6, v7), v8)))
                    slope = slopes[c]
                    out[n, i, j, c] = max(high if high > 0 else slope * high, low if low > 0 else slope * low)


_POOLS = {2: _prelu_max_pool_2, 3: _prelu_max_pool_3}


def prelu_max_pool(x: np.ndarray, slopes: np.ndarray, kernel: int, out: np.ndarray) -> None:
    """PReLU, then max pooling with ``kernel`` x ``kernel`` windows at stride 2 (``ceil_mode=True``).

    Args:
        x: (N, H, W, C') float32, C-contiguous (a channels-last tensor's memory), H and W at least ``kernel``.
        slopes: (C,) float32 PReLU slopes, C <= C': channels from C on are ignored (zero filters that
            pad a convolution to a faster width).
        kernel: 2 or 3.
        out: (N, H', W', C) float32, C-contiguous, H' = ceil((H - kernel) / 2) + 1 less a window that
            would start past the edge (likewise W'); written in full.
    """
    _POOLS[kernel](x, slopes, out)



@compiled(fastmath=False)
def area_level(table, rows_end, rows_start, cols_end, cols_start, divisor_scale, offset, out):
    """Area-resample a whole image from its summed-area table (a pyramid level):
    out[i, j, k] = (sum of output cell (i, j) in channel k) / (its pixel count * divisor_scale) - offset.

    Args:
        table: (H + 1, W + 1, 3) int32 or int64 summed-area table.
        rows_end, rows_start: (h,) int64 table rows bounding each output row; cols_end, cols_start:
            (w,) the same for columns.
        divisor_scale, offset: np.float32; 1 and 0 give the means.
        out: (h, w, 3) float32, C-contiguous; written in full.
    """
    for i in range(out.shape[0]):
        bottom, top = rows_end[i], rows_start[i]
        rows = bottom - top
        for j in range(out.shape[1]):
            right, left = cols_end[j], cols_start[j]
            divisor = np.float32(rows * (right - left)) * divisor_scale
            for k in range(3):
                total = table[bottom, right, k] - table[bottom, left, k] - table[top, right, k] + table[top, left, k]
                out[i, j, k] = np.float32(total) / divisor - offset


@compiled(fastmath=False)
def area_crops(cells, base, row_stride, regions, divisor_scale, offset, out):
    """Area-resample rectangular regions of several images, each to out's height x width.

    Cell edges as in ``resample._cell_edges``, then four corners per output value, as in
    :func:`area_level`.

    Args:
        cells: the images' summed-area tables in one flat int32 or int64 buffer, channels
            interleaved: channel k of table cell c at 3 * c + k.
        base: (K,) int64 first cell of each region's table; row_stride: (K,) int64 its cells per row.
        regions: (K, 4) int64 x0, y0, x1, y1, 0-based half-open, non-empty.
        divisor_scale, offset: as in :func:`area_level`.
        out: (K, height, width, 3) float32, C-contiguous; written in full.
    """
    height, width = out.shape[1], out.shape[2]
    row_end = np.empty(height, np.int64)
    row_start = np.empty(height, np.int64)
    col_end = np.empty(width, np.int64)
    col_start = np.empty(width, np.int64)
    for n in range(out.shape[0]):
        x0, y0, x1, y1 = regions[n, 0], regions[n, 1], regions[n, 2], regions[n, 3]
        for i in range(height):
            row_start[i] = y0 + i * (y1 - y0) // height
            row_end[i] = y0 + ((i + 1) * (y1 - y0) + height - 1) // height
        for j in range(width):
            col_start[j] = x0 + j * (x1 - x0) // width
            col_end[j] = x0 + ((j + 1) * (x1 - x0) + width - 1) // width
        for i in range(height):
            bottom = (base[n] + row_end[i] * row_stride[n]) * 3
            top = (base[n] + row_start[i] * row_stride[n]) * 3
            rows = row_end[i] - row_start[i]
            for j in range(width):
                right, left = col_end[j] * 3, col_start[j] * 3
                divisor = np.float32(rows * (col_end[j] - col_start[j])) * divisor_scale
                for k in range(3):
                    total = cells[bottom + right + k] - cells[bottom + left + k] - cells[top + right + k] + cells[top + left + k]
                    out[n, i, j, k] = np.float32(total) / divisor - offset
