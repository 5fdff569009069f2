"""Images received over HTTP: recognise the format, read the size from the header, then decode.

The size is read from the file header before any pixel is decoded, so a small file that
declares a huge canvas (a decompression bomb) is refused at the cost of a few bytes read.
Only the formats below are decoded; everything else is refused with a message naming it.

The header's size is also checked against the detector's own size rules
(:func:`raydetect.core.image_checks.check_size`), so an image the detector would refuse is
never decoded.

Every refusal raises :class:`RequestRejected` carrying the HTTP status to answer with:
400 for bytes that are not a readable image or an image the detector refuses, 413 for an
image over the pixel limit, 415 for a recognised but unsupported format.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from raydetect.core.image_checks import check_size
from raydetect.errors import InvalidImageError
from raydetect.online.http_errors import RequestRejected

# Media types accepted for an image body, and the format each one names.
IMAGE_MEDIA_TYPES = {
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",  # not registered, but sent by many clients
    "image/pjpeg": "jpeg",
    "image/png": "png",
    "image/webp": "webp",
    "image/bmp": "bmp",
    "image/x-bmp": "bmp",
    "image/x-ms-bmp": "bmp",
    "application/octet-stream": None,  # format taken from the bytes alone
}
SUPPORTED_FORMATS = ("jpeg", "png", "webp", "bmp")
FORMAT_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WebP", "bmp": "BMP"}
SUPPORTED_LIST = "JPEG, PNG, WebP or BMP"


@dataclass(frozen=True)
class ImageHeader:
    """What the first bytes of an image say about it."""

    format: str  # one of SUPPORTED_FORMATS
    width: int  # pixels, as stored (EXIF rotation may swap width and height on decode)
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def sniff_format(data: bytes) -> str | None:
    """The image format of ``data`` from its magic bytes: a supported format name, the name of a
    known unsupported one (``"gif"``, ``"tiff"``, ``"heif"``, ...), or None when unrecognised."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc", b"avif", b"avis"):
        return "heif/avif"
    if data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or data[:4] == b"\xff\x4f\xff\x51":
        return "jpeg2000"
    if data[:4] == b"\x00\x00\x01\x00":
        return "ico"
    return None


def read_header(data: bytes) -> ImageHeader:
    """Format and dimensions of an encoded image, from its header only.

    Raises:
        RequestRejected: 415 for a recognised unsupported format, 400 for anything else
            that is not a well-formed JPEG, PNG, WebP or BMP header.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise RequestRejected(400, f"body is not an image: expected {SUPPORTED_LIST} data")
    if fmt not in SUPPORTED_FORMATS:
        raise RequestRejected(415, f"{fmt.upper()} images are not supported: send {SUPPORTED_LIST}")
    try:
        width, height = _DIMENSION_READERS[fmt](data)
    except (struct.error, IndexError, ValueError) as exc:
        raise RequestRejected(400, f"truncated or corrupt {FORMAT_NAMES[fmt]} header: {exc}") from None
    if width <= 0 or height <= 0:
        raise RequestRejected(400, f"{FORMAT_NAMES[fmt]} header gives an empty image ({width}x{height})")
    return ImageHeader(fmt, width, height)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an encoded image to an RGB array after checking its header.

    Args:
        data: the encoded bytes (JPEG, PNG, WebP or BMP).
        max_pixels: largest width * height accepted; checked on the header before decoding.

    Returns:
        uint8 array (H, W, 3), RGB, EXIF orientation applied (as OpenCV's ``imread`` does).

    Raises:
        RequestRejected: 400 / 413 / 415 as described in the module docstring.
    """
    header = read_header(data)
    if header.pixels > max_pixels:
        raise RequestRejected(
            413,
            f"image is {header.width}x{header.height} ({header.pixels / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:g} megapixels",
        )
    try:
        check_size(header.height, header.width)
    except InvalidImageError as exc:
        raise RequestRejected(400, f"image refused by the detector: {str(exc).removeprefix('image: ')}") from None
    import cv2  # deferred: header checks need no OpenCV

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise RequestRejected(400, f"could not decode the {FORMAT_NAMES[header.format]} image: data is corrupt")
    # The decoder must produce the canvas the header declared (possibly rotated by EXIF);
    # anything else means the header lied and the pixel check above proved nothing.
    if sorted(image.shape[:2]) != sorted((header.height, header.width)):
        raise RequestRejected(
            400,
            f"decoded size {image.shape[1]}x{image.shape[0]} does not match the header's "
            f"{header.width}x{header.height}",
        )
    return np.ascontiguousarray(image)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the JPEG markers up to the first start-of-frame segment."""
    pos = 2  # after SOI
    while True:
        if data[pos] != 0xFF:
            raise ValueError(f"expected a marker at byte {pos}")
        while data[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length field
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            raise ValueError("no frame header before the image data")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise ValueError(f"segment length {length} at byte {pos}")
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            if height == 0:
                raise ValueError("height defined later by a DNL marker is not supported")
            return width, height
        pos += length


def _png_size(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise ValueError("first chunk is not IHDR")
    return struct.unpack(">II", data[16:24])


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: frame tag (3 bytes), start code, 14-bit sizes
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("missing VP8 start code")
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature byte, then 14-bit (size - 1) fields
        if data[20] != 0x2F:
            raise ValueError("missing VP8L signature")
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit (canvas size - 1) fields
        if len(data) < 30:
            raise ValueError("VP8X chunk cut short")
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise ValueError(f"unknown WebP chunk {chunk!r}")


def _bmp_size(data: bytes) -> tuple[int, int]:
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit unsigned sizes
        return struct.unpack("<HH", data[18:22])
    if header_size < 40:
        raise ValueError(f"unknown BMP header size {header_size}")
    width, height = struct.unpack("<ii", data[18:26])
    return width, abs(height)  # negative height: rows stored top-down


_DIMENSION_READERS = {"jpeg": _jpeg_size, "png": _png_size, "webp": _webp_size, "bmp": _bmp_size}
