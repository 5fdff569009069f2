"""Checking and converting the images handed to the detector.

Accepted: (H, W, 3) uint8 RGB arrays (numpy or torch). Converted, as documented:
grayscale (H, W) or (H, W, 1) is repeated into three channels; RGBA (H, W, 4) drops its
alpha channel. Refused with :class:`InvalidImageError`: other dtypes, ranks or channel
counts, empty images, images under :data:`MIN_SIDE` pixels on a side, and images over
:data:`MAX_SIDE` pixels on a side or :data:`MAX_PIXELS` pixels in all.
"""

from __future__ import annotations

import numpy as np

from raydetect.errors import InvalidImageError

MIN_SIDE = 12  # P-Net's window: nothing smaller can hold a face
MAX_SIDE = 16_384
MAX_PIXELS = 100_000_000  # 100 megapixels, about 1.2 GB of float32 pyramid per image


def as_rgb_uint8(image, index: int = 0, bgr: bool = False):
    """Return ``image`` as an (H, W, 3) uint8 RGB array or tensor, or raise InvalidImageError.

    Args:
        image: numpy array or torch tensor, (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8.
        index: the image's position in the caller's batch, for error messages.
        bgr: the channels are in OpenCV's B, G, R order and are reversed.
    """
    where = f"image {index}"
    is_tensor = type(image).__module__.startswith("torch")
    if not (isinstance(image, np.ndarray) or is_tensor):
        raise InvalidImageError(f"{where}: expected a numpy array of shape (H, W, 3), got {type(image).__name__}")
    dtype_name = str(image.dtype).replace("torch.", "")
    if dtype_name != "uint8":
        raise InvalidImageError(
            f"{where}: expected dtype uint8 with values 0-255, got {dtype_name}; "
            "convert first, e.g. (img * 255).round().astype(np.uint8) for floats in [0, 1]"
        )
    shape = tuple(int(s) for s in image.shape)
    if len(shape) == 2:
        image = image[:, :, None]
        shape = shape + (1,)
    if len(shape) != 3:
        raise InvalidImageError(f"{where}: expected shape (H, W, 3), got {shape} ({len(shape)} dimensions)")
    height, width, channels = shape
    if channels not in (1, 3, 4):
        raise InvalidImageError(
            f"{where}: expected 3 colour channels (or 1 grey, 4 RGBA), got {channels} in shape {shape}"
        )
    if height == 0 or width == 0:
        raise InvalidImageError(f"{where}: image is empty, shape {shape}")
    check_size(height, width, where)
    if channels == 1:
        image = image.repeat(3, 2) if isinstance(image, np.ndarray) else image.expand(-1, -1, 3)
    elif channels == 4:
        image = image[:, :, :3]
    if bgr:
        image = image[:, :, ::-1] if isinstance(image, np.ndarray) else image.flip(2)
    return image


def check_size(height: int, width: int, where: str = "image") -> None:
    """Raise InvalidImageError unless a ``height`` x ``width`` image (pixels) is within the detector's
    size limits. Callers that know the size before decoding (an upload's header) check it here."""
    if min(height, width) < MIN_SIDE:
        raise InvalidImageError(
            f"{where}: {width}x{height} pixels is smaller than the detector's {MIN_SIDE}-pixel window"
        )
    if max(height, width) > MAX_SIDE or height * width > MAX_PIXELS:
        raise InvalidImageError(
            f"{where}: {width}x{height} pixels exceeds the limit of {MAX_SIDE} pixels a side and "
            f"{MAX_PIXELS // 1_000_000} megapixels; downscale it first"
        )
