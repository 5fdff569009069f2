"""What a frame will cost P-Net before anything runs: pyramid scales, pixels and multiply-adds.

The pyramid's scales and level sizes come from :mod:`raydetect.mtcnn.pyramid`, the same
functions the cascade runs, so the plan cannot drift from what the detector does.

Multiply-adds are counted from the layer shapes of the networks in :mod:`raydetect.mtcnn.nets`
(convolutions and dense layers; activations, pooling and softmax are not multiply-adds), so
they follow the code if the networks ever change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from raydetect.mtcnn import pyramid
from raydetect.mtcnn.defaults import MIN_FACE_SIZE, SCALE_FACTOR
from raydetect.mtcnn.pyramid import PNET_WINDOW


@dataclass(frozen=True)
class PyramidLevel:
    """One level of the image pyramid.

    Attributes:
        scale: level size / frame size.
        height, width: level size in pixels.
        output_height, output_width: P-Net output cells (one 12x12 window each, stride 2).
        macs: P-Net multiply-adds on this level.
    """

    scale: float
    height: int
    width: int
    output_height: int
    output_width: int
    macs: int

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def windows(self) -> int:
        return self.output_height * self.output_width

    @property
    def smallest_face(self) -> float:
        """Frame pixels covered by one 12x12 window at this level."""
        return PNET_WINDOW / self.scale


@dataclass(frozen=True)
class PyramidPlan:
    """P-Net's work for one frame size and detector options."""

    frame_height: int
    frame_width: int
    min_face_size: float
    scale_factor: float
    levels: tuple[PyramidLevel, ...]

    @property
    def pixels(self) -> int:
        """Pixels P-Net processes per frame (all levels)."""
        return sum(level.pixels for level in self.levels)

    @property
    def macs(self) -> int:
        """P-Net multiply-adds per frame (all levels)."""
        return sum(level.macs for level in self.levels)

    @property
    def windows(self) -> int:
        """12x12 windows P-Net scores per frame (all levels)."""
        return sum(level.windows for level in self.levels)


def plan_pyramid(
    height: int, width: int, min_face_size: float = MIN_FACE_SIZE, scale_factor: float = SCALE_FACTOR
) -> PyramidPlan:
    """The pyramid levels of an ``height`` x ``width`` frame and P-Net's multiply-adds on each.

    Raises:
        ValueError: a non-positive frame size, or options the detector would refuse.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    pyramid.check_pyramid_options(min_face_size, scale_factor)
    levels = []
    for scale in pyramid.pyramid_scales(height, width, min_face_size, scale_factor):
        level_h, level_w = pyramid.level_size(height, width, scale)
        out_h, out_w = pnet_output_size(level_h, level_w)
        levels.append(PyramidLevel(scale, level_h, level_w, out_h, out_w, pnet_macs(level_h, level_w)))
    return PyramidPlan(int(height), int(width), float(min_face_size), float(scale_factor), tuple(levels))


def parse_resolution(text: str) -> tuple[int, int]:
    """``"1920x1080"`` -> (height 1080, width 1920). Raises ValueError naming the text."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"resolution must look like 1920x1080 (width x height), got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"resolution must be positive, got {text!r}")
    return height, width


# ---------------------------------------------------------------------------------------------
# Multiply-adds from layer shapes


def pnet_macs(height: int, width: int) -> int:
    """P-Net multiply-adds on one ``height`` x ``width`` input."""
    return _network_macs("pnet", (3, height, width))[0]


def pnet_output_size(height: int, width: int) -> tuple[int, int]:
    """(H', W') of P-Net's output maps for an input of that size."""
    _, shape = _network_macs("pnet", (3, height, width))
    return shape[1], shape[2]


def crop_network_macs(name: str) -> int:
    """Multiply-adds of R-Net (``"rnet"``, 24x24 crop) or O-Net (``"onet"``, 48x48 crop) per crop."""
    side = {"rnet": 24, "onet": 48}[name]
    return _network_macs(name, (3, side, side))[0]


@lru_cache(maxsize=4096)
def _network_macs(name: str, input_shape: tuple[int, int, int]) -> tuple[int, tuple[int, ...]]:
    """(multiply-adds, output shape of the trunk) walking the network's layers in order.

    A layer whose input width does not match the running shape reads the same input as the
    layer before it: that is how the parallel heads (``conv4_1``/``conv4_2``, ``dense*_k``)
    sit in the module list.
    """
    from torch import nn

    from raydetect.mtcnn.nets import ONet, PNet, RNet

    network = {"pnet": PNet, "rnet": RNet, "onet": ONet}[name]()
    shape: tuple[int, ...] = input_shape
    previous_input = shape
    total = 0
    for layer in network.children():
        if isinstance(layer, nn.Conv2d):
            if layer.in_channels != shape[0]:
                shape = previous_input
            previous_input = shape
            (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
            out_h = (shape[1] + 2 * ph - kh) // sh + 1
            out_w = (shape[2] + 2 * pw - kw) // sw + 1
            if out_h <= 0 or out_w <= 0:
                return total, (layer.out_channels, 0, 0)
            total += out_h * out_w * layer.out_channels * (layer.in_channels // layer.groups) * kh * kw
            shape = (layer.out_channels, out_h, out_w)
        elif isinstance(layer, nn.MaxPool2d):
            shape = (shape[0], *(_pool_size(n, layer) for n in shape[1:]))
        elif isinstance(layer, nn.Linear):
            features = math.prod(shape)
            if layer.in_features != features:
                shape = previous_input
            previous_input = shape
            total += layer.in_features * layer.out_features
            shape = (layer.out_features,)
    return total, shape


def _pool_size(size: int, pool) -> int:
    """Output length of a max pool over ``size`` (PyTorch's rule, ceil mode included)."""
    kernel, stride, padding = (v if isinstance(v, int) else v[0] for v in (pool.kernel_size, pool.stride, pool.padding))
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if pool.ceil_mode else span // stride) + 1
    if pool.ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window must start inside the input
    return max(out, 0)

