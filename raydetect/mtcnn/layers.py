"""The networks' layers on channels-last CPU tensors: PReLU, max pooling, and convolutions in a
chosen precision.

ATen's elementwise CPU kernels vectorise along the innermost dimension, which for a
channels-last (N, C, H, W) tensor is C: over P-Net's 10 channels the inner loop is shorter
than one vector register. ``prelu`` and ``max_pool`` give exactly ATen's numbers but arrange
the work in long contiguous runs (PReLU over rows of several pixels, pooling as two strided
maxima that also skip the int64 indices ATen's ``max_pool2d`` writes). Other layouts, and code
being compiled by ``torch.compile`` (inductor fuses these itself), fall back to ATen.
``conv2d`` and ``pointwise_conv`` run convolutions in the networks' ``conv_dtype``.
``conv_prelu_max_pool`` runs a convolution, its PReLU and the pooling after it; in float32 on
the CPU the last two are one fused pass (:mod:`raydetect.mtcnn.cpu_kernels`).
Timings behind these choices: docs/benchmarks.md, "Layer kernels" and "Fused CPU kernels".
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from raydetect.mtcnn import cpu_kernels

# PReLU folds k consecutive pixels into one row of k * C values, k the largest divisor of the
# pixel count in this range: 16 pixels of P-Net's 10 channels make 160 floats.
_MAX_PIXELS_PER_ROW = 16
_MIN_PIXELS_PER_ROW = 4
# In float32 ATen's own kernel is as fast or faster from 16 channels on; in bfloat16 it is slow at every
# width, so bfloat16 always folds.
_FOLD_BELOW_CHANNELS = 16


def prelu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """PReLU with one slope per channel: x where x >= 0, else weight[c] * x, in x's dtype.

    Args:
        x: (N, C, H, W) float32 or bfloat16.
        weight: (C,) slopes (float32; rounded to x's dtype).

    Returns:
        (N, C, H, W), in x's memory layout and dtype.
    """
    weight = weight.to(x.dtype)
    folds = x.device.type == "cpu" and (x.dtype != torch.float32 or x.shape[1] < _FOLD_BELOW_CHANNELS)
    if not folds or not _channels_last(x):  # the folding is for ATen's CPU kernels
        return F.prelu(x, weight)
    n, c, h, w = x.shape
    pixels = n * h * w
    values = x.permute(0, 2, 3, 1).reshape(-1)  # a view: channels-last memory is (N, H, W, C)
    k = _pixels_per_row(pixels)
    if k:
        out = F.prelu(values.view(pixels // k, k * c), weight.repeat(k))
    else:  # no divisor in range (a prime count, say): whole rows, then the last pixels alone
        k = _MAX_PIXELS_PER_ROW
        body = pixels // k * k * c
        out = torch.cat([
            F.prelu(values[:body].view(-1, k * c), weight.repeat(k)).view(-1),
            F.prelu(values[body:].view(-1, c), weight).view(-1),
        ])
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=256)
def _pixels_per_row(pixels: int) -> int:
    """The largest k in [_MIN_PIXELS_PER_ROW, _MAX_PIXELS_PER_ROW] that divides ``pixels``, else 0."""
    return next((k for k in range(_MAX_PIXELS_PER_ROW, _MIN_PIXELS_PER_ROW - 1, -1) if pixels % k == 0), 0)


def conv2d(conv: torch.nn.Conv2d, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``conv(x)`` in ``dtype``: input and parameters rounded to it, the output left in it.

    None keeps x's dtype. On CPUs with bfloat16 dot products the networks' inner layers run
    this way in bfloat16, with PReLU and pooling in between staying in it, so that nothing
    converts back and forth between layers.
    """
    if dtype is None or dtype == x.dtype and conv.weight.dtype == dtype:
        return conv(x)
    return F.conv2d(x.to(dtype), conv.weight.to(dtype), conv.bias.to(dtype))


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution in x's dtype (the weights rounded to it), for P-Net's output heads.

    Args:
        x: (N, C, H, W) float32 or bfloat16.
        weight: (O, C, 1, 1) float32; bias: (O,) float32.

    Returns:
        (N, O, H, W) in x's dtype.

    On the CPU, ATen sends a float32 1x1 convolution of fewer than 16 images on one thread,
    which is what a stream runs, to a kernel slower than oneDNN's; this calls oneDNN directly
    where torch has the (private) operator, else ``F.conv2d``.
    """
    weight, bias = weight.to(x.dtype), bias.to(x.dtype)
    on_onednn = x.device.type == "cpu" and torch.backends.mkldnn.is_available()
    if _onednn_convolution is not None and x.dtype == torch.float32 and on_onednn and _channels_last(x):
        weight = weight.contiguous(memory_format=torch.channels_last)
        return _onednn_convolution(x, weight, bias, [0, 0], [1, 1], [1, 1], 1)
    return F.conv2d(x, weight, bias)


def _find_onednn_convolution():
    """torch's private ``aten::mkldnn_convolution`` operator, or None where this torch has none."""
    try:
        return torch.ops.aten.mkldnn_convolution
    except (AttributeError, RuntimeError):
        return None


# Looked up once; tests set it to None to run the public fallback.
_onednn_convolution = _find_onednn_convolution()

# Before a fused PReLU and pooling, a convolution gets zero filters up to a multiple of this many outputs (the
# float32 lanes of an AVX2 register): oneDNN ran P-Net's and R-Net's first convolutions (10 and 28 outputs from 3
# channels) faster at 16 and 32, and the fused pass skips the extra channels, so nothing downstream sees them.
CONV_WIDTH_MULTIPLE = 8


# The fused path runs a convolution and its PReLU-pooling pass in pieces (groups of images, or bands of rows of
# one image) whose convolution output is at most this many bytes, so that the pass reads it from the cache the
# convolution just wrote it to instead of from memory (a whole layer's output reaches 20 MB).
PIECE_BYTES = 2 * 2**20


def conv_prelu_max_pool(conv: torch.nn.Conv2d, slopes: torch.Tensor, kernel: int, x: torch.Tensor,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
    """``max_pool(prelu(conv(x), slopes), kernel)``: a convolution, its PReLU, then max pooling at stride 2.

    In float32 on the CPU (channels-last input) PReLU and pooling run as one pass over the convolution's
    output, piece by piece (:data:`PIECE_BYTES`), with the same numbers as ATen's; elsewhere as
    :func:`conv2d`, :func:`prelu` and :func:`max_pool`. For inference only, like those: no gradient flows
    through.

    Args:
        conv: the layer (C outputs, unpadded); slopes: (C,) its PReLU's slopes; kernel: the pool's window
            side, 2 or 3.
        x: (N, C_in, H, W) float32 or bfloat16; dtype: as in :func:`conv2d`.

    Returns:
        (N, C, H', W') in the convolution's output dtype, channels-last when x is.
    """
    if not _fuses(x, dtype) or conv.padding != (0, 0) or conv.stride != (1, 1) or conv.dilation != (1, 1):
        return max_pool(prelu(conv2d(conv, x, dtype), slopes), kernel)
    channels = conv.out_channels
    weight, bias = _padded_filters(conv)
    count, _, height, breadth = x.shape
    conv_height, conv_breadth = height - conv.kernel_size[0] + 1, breadth - conv.kernel_size[1] + 1
    if min(conv_height, conv_breadth) < kernel:
        return max_pool(prelu(F.conv2d(x, weight, bias)[:, :channels], slopes), kernel)
    out = torch.empty((count, channels, _pooled_length(conv_height, kernel), _pooled_length(conv_breadth, kernel)),
                      dtype=torch.float32, memory_format=torch.channels_last)
    pooled = _channels_last_array(out)
    slope_values = slopes.detach().to(torch.float32).numpy()
    row_bytes = conv_breadth * weight.shape[0] * x.element_size()
    for images, rows in _pieces(count, conv_height, row_bytes, kernel):
        # Pooled rows rows.start.. read convolution rows 2 * rows.start.. and those read kernel_size - 1 more.
        last_conv_row = min(2 * (rows.stop - 1) + kernel - 1, conv_height - 1)
        inputs = x[images, :, 2 * rows.start : last_conv_row + conv.kernel_size[0]]
        features = F.conv2d(inputs, weight, bias)
        if features.dtype != torch.float32 or not features.is_contiguous(memory_format=torch.channels_last):
            # autocast, say, turned the convolution to float16: the whole layer as ATen runs it
            return max_pool(prelu(F.conv2d(x, weight, bias)[:, :channels], slopes), kernel)
        cpu_kernels.prelu_max_pool(_channels_last_array(features), slope_values, kernel, pooled[images, rows])
    return out


def _padded_filters(conv: torch.nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's weight and bias with zero filters up to a multiple of CONV_WIDTH_MULTIPLE outputs."""
    channels = conv.out_channels
    width = -(-channels // CONV_WIDTH_MULTIPLE) * CONV_WIDTH_MULTIPLE
    if width == channels:
        return conv.weight, conv.bias
    weight = F.pad(conv.weight, (0, 0, 0, 0, 0, 0, 0, width - channels))
    return weight.contiguous(memory_format=torch.channels_last), F.pad(conv.bias, (0, width - channels))


def _pieces(count: int, conv_height: int, row_bytes: int, kernel: int) -> list[tuple[slice, slice]]:
    """(images, pooled rows) pieces of a fused layer, each with at most PIECE_BYTES of convolution output.

    Whole images are grouped when one fits; a larger image is cut into bands of pooled rows, one image at a
    time. A piece holds at least one image, or one pooled row of one image.

    Args:
        count: images; conv_height: rows of the convolution's output per image; row_bytes: bytes of one
            such row; kernel: the pool's window side.
    """
    pooled_rows = _pooled_length(conv_height, kernel)
    image_bytes = conv_height * row_bytes
    if image_bytes <= PIECE_BYTES:
        step = PIECE_BYTES // image_bytes
        return [(slice(start, min(start + step, count)), slice(0, pooled_rows)) for start in range(0, count, step)]
    # A band of b pooled rows needs about 2 * b convolution rows.
    band = max(1, PIECE_BYTES // (2 * row_bytes))
    return [(slice(image, image + 1), slice(start, min(start + band, pooled_rows)))
            for image in range(count) for start in range(0, pooled_rows, band)]


def _fuses(x: torch.Tensor, dtype: torch.dtype | None) -> bool:
    """Whether :func:`conv_prelu_max_pool` can run its fused pass on ``x``."""
    return (
        cpu_kernels.AVAILABLE
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and dtype in (None, torch.float32)
        and _channels_last(x)
    )


def _channels_last_array(x: torch.Tensor):
    """The (N, H, W, C) numpy view of a channels-last (N, C, H, W) CPU tensor's memory."""
    return x.detach().permute(0, 2, 3, 1).numpy()


def _pooled_length(size: int, kernel: int) -> int:
    """Outputs of stride-2 pooling with ``kernel`` windows and ``ceil_mode=True`` along ``size`` entries."""
    count = -(-(size - kernel) // 2) + 1
    return count - 1 if (count - 1) * 2 >= size else count  # ceil mode never starts a window past the last entry


def max_pool(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Max pooling, ``kernel`` x ``kernel`` windows at stride 2, ``ceil_mode=True``, no padding.

    A last window that runs past the edge is pooled over what it covers, as in ATen.

    Args:
        x: (N, C, H, W) float, H and W at least ``kernel``.
        kernel: window side, 2 or 3 (the MTCNN networks' pools).

    Returns:
        (N, C, H', W'), channels-last when x is.
    """
    if kernel not in (2, 3) or not _channels_last(x) or min(x.shape[2:]) < kernel:
        return F.max_pool2d(x, kernel, 2, ceil_mode=True)
    return _window_max(_window_max(x, 2, kernel), 3, kernel)


def _window_max(x: torch.Tensor, dim: int, kernel: int) -> torch.Tensor:
    """Along ``dim``: out[i] = max(x[2i], ..., x[2i + kernel - 1]), windows cut off at the edge."""
    count = _pooled_length(x.shape[dim], kernel)
    shape = list(x.shape)
    shape[dim] = count
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    every_other = [slice(None)] * x.dim()

    def tap(offset: int) -> torch.Tensor:  # x[offset], x[offset + 2], ...: at most ``count`` of them
        every_other[dim] = slice(offset, None, 2)
        entries = x[tuple(every_other)]
        return entries.narrow(dim, 0, min(count, entries.shape[dim]))

    first, second = tap(0), tap(1)
    paired = second.shape[dim]
    torch.maximum(first.narrow(dim, 0, paired), second, out=out.narrow(dim, 0, paired))
    if paired < count:  # the last window holds one entry
        out.narrow(dim, paired, count - paired).copy_(first.narrow(dim, paired, count - paired))
    if kernel == 3:
        third = tap(2)
        head = out.narrow(dim, 0, third.shape[dim])
        torch.maximum(head, third, out=head)
    return out


def _channels_last(x: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return False
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)
