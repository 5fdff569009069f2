"""Image files on local disk: recognising them by extension, reading and writing them as RGB arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import cv2
import numpy as np

from raydetect.errors import RaydetectError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class ImageFileError(RaydetectError, ValueError):
    """An image file is missing or does not decode."""


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an image file; grey and RGBA files are converted.

    Raises:
        ImageFileError: the file is missing or not a decodable image (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"image not found: {path}")
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageFileError(f"{path}: not a decodable image ({data.size} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image; the format follows the extension (.png, .jpg, ...)."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageFileError(f"cannot encode an image as {path.suffix!r} for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded.tofile(path)


class LazyImages(Mapping):
    """Key -> RGB pixels, read from disk on each access, so a large set never sits in memory at once."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._files = dict(files)

    def __getitem__(self, key: str) -> np.ndarray:
        return read_image(self._files[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)
