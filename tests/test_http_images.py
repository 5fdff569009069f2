"""Request parsing of the HTTP endpoints: image headers and decoding, query parameters, token, media types."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from raydetect.online.http_body import check_bearer_token, media_type
from raydetect.online.http_errors import RequestRejected
from raydetect.online.image_uploads import decode_image, read_header, sniff_format
from raydetect.online.http_params import parse_detect_params, parse_video_params
from raydetect.online.video_uploads import sniff_container


@pytest.fixture(scope="module")
def photo(data_dir) -> np.ndarray:
    """multiface.jpg as RGB (630 x 1200)."""
    return cv2.cvtColor(cv2.imread(str(data_dir / "multiface.jpg")), cv2.COLOR_BGR2RGB)


def encode(image_rgb: np.ndarray, ext: str, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), list(params))
    assert ok
    return buf.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk declaring width x height, and nothing else."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def rejected(call, *args) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        call(*args)
    return info.value


# ------------------------------------------------------------------ headers and decoding


@pytest.mark.parametrize(
    "ext, params, fmt",
    [
        (".jpg", (), "jpeg"),
        (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), "jpeg"),  # SOF2, not SOF0
        (".png", (), "png"),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80), "webp"),  # lossy: VP8 chunk
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101), "webp"),  # lossless: VP8L chunk
        (".bmp", (), "bmp"),
    ],
)
def test_header_size_and_decode_match_opencv(photo, ext, params, fmt):
    data = encode(photo, ext, params)
    header = read_header(data)
    assert (header.format, header.width, header.height) == (fmt, 1200, 630)
    decoded = decode_image(data, max_pixels=10**7)
    assert decoded.shape == (630, 1200, 3) and decoded.dtype == np.uint8
    # The same pixels OpenCV's own reader gives, in RGB order.
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decoded, expected)


def test_vendored_jpeg_decodes_like_imread(data_dir):
    path = data_dir / "obama-240p.jpg"
    decoded = decode_image(path.read_bytes(), max_pixels=10**6)
    np.testing.assert_array_equal(decoded, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))


def test_webp_extended_header():
    pil = pytest.importorskip("PIL.Image")
    import io

    buffer = io.BytesIO()
    pil.fromarray(np.zeros((37, 53, 4), np.uint8)).save(buffer, "WEBP")  # alpha: VP8X chunk
    data = buffer.getvalue()
    assert data[12:16] == b"VP8X"
    assert (read_header(data).width, read_header(data).height) == (53, 37)


def test_bmp_top_down_rows_read_positive_height(photo):
    data = bytearray(encode(photo[:40, :50], ".bmp"))
    (height,) = struct.unpack("<i", data[22:26])
    data[22:26] = struct.pack("<i", -height)
    assert read_header(bytes(data)).height == 40


def test_grayscale_and_rgba_inputs_come_out_rgb(photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    assert decode_image(encode(np.dstack([gray] * 3), ".png"), 10**7).shape == (630, 1200, 3)
    ok, buf = cv2.imencode(".png", gray)
    assert decode_image(buf.tobytes(), 10**7).shape == (630, 1200, 3)
    bgra = np.dstack([cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), np.full(photo.shape[:2], 255, np.uint8)])
    ok, buf = cv2.imencode(".png", bgra)
    np.testing.assert_array_equal(decode_image(buf.tobytes(), 10**7), photo)


def test_decompression_bomb_refused_from_header_alone():
    # 100k x 100k declared in 33 bytes: the header check answers 413 before any decoding
    # (a decode attempt of these bytes could only give 400).
    error = rejected(decode_image, png_header_only(100_000, 100_000), 40_000_000)
    assert error.status == 413 and "10000.0 megapixels" in error.message and "40 megapixels" in error.message


def test_sizes_the_detector_refuses_are_400_from_the_header_alone():
    # The detector's own size rules (raydetect.core.image_checks), applied to the header: these bytes
    # hold no pixel data, so a decode attempt could only fail differently.
    for width, height, words in [(8, 500, "8x500 pixels is smaller than the detector's 12-pixel window"),
                                 (20_000, 20, "20000x20 pixels exceeds the limit of 16384 pixels a side")]:
        error = rejected(decode_image, png_header_only(width, height), 40_000_000)
        assert error.status == 400 and words in error.message, error.message


def test_pixel_limit_is_inclusive(photo):
    data = encode(photo, ".png")
    assert decode_image(data, 1200 * 630).shape == (630, 1200, 3)
    assert rejected(decode_image, data, 1200 * 630 - 1).status == 413


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"GIF89a\x01\x00\x01\x00", 415, "GIF"),
        (b"II*\x00" + bytes(20), 415, "TIFF"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(20), 415, "HEIF"),
        (b"hello, this is not an image", 400, "not an image"),
        (b"", 400, "not an image"),
        (b"\xff\xd8\xff", 400, "JPEG header"),  # JPEG magic, cut before any frame header
        (b"\x89PNG\r\n\x1a\n\x00\x00", 400, "PNG header"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8Z", 400, "WebP header"),
        (b"BM" + bytes(12) + struct.pack("<I", 5), 400, "BMP header"),
        (png_header_only(0, 10), 400, "empty image"),
    ],
)
def test_bad_headers_name_the_problem(data, status, words):
    error = rejected(decode_image, data, 10**7)
    assert error.status == status and words.lower() in error.message.lower()


def test_truncated_pixel_data_is_400(photo):
    data = encode(photo, ".png")
    error = rejected(decode_image, data[:2000], 10**7)  # header intact, pixel data cut
    assert error.status == 400 and "PNG" in error.message


def test_sniffers():
    assert sniff_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_format(b"nothing") is None
    assert sniff_container(b"\x00\x00\x00\x20ftypisom") == "mp4"
    assert sniff_container(b"RIFF\x00\x00\x00\x00AVI LIST") == "avi"
    assert sniff_container(b"\x1a\x45\xdf\xa3") == "mkv"
    assert sniff_container(b"#EXTM3U\n#EXT-X-VERSION:3\n") is None  # a playlist would make FFmpeg open URLs
    assert sniff_container(b"ffconcat version 1.0\nfile /etc/passwd\n") is None


# ------------------------------------------------------------------ query parameters


def test_detect_params_defaults_and_values():
    assert parse_detect_params([]).min_face_size == 20 and parse_detect_params([]).crops is False
    params = parse_detect_params([("min_face_size", "40"), ("crops", "TRUE")])
    assert (params.min_face_size, params.crops) == (40, True)
    assert parse_detect_params([("crops", "0")]).crops is False


@pytest.mark.parametrize(
    "query, words",
    [
        ([("min_face_size", "abc")], "integer"),
        ([("min_face_size", "2.5")], "integer"),
        ([("min_face_size", "5")], "between 10 and 16384"),
        ([("min_face_size", "100000")], "between"),
        ([("crops", "maybe")], "true or false"),
        ([("min_face", "30")], "unknown query parameter 'min_face'"),
        ([("crops", "1"), ("crops", "0")], "more than once"),
        ([("url", "http://169.254.169.254/")], "unknown query parameter 'url'"),
    ],
)
def test_bad_detect_params_are_422(query, words):
    error = rejected(parse_detect_params, query)
    assert error.status == 422 and words in error.message


def test_video_params():
    assert parse_video_params([]) == parse_video_params([("min_face_size", "20")])
    assert parse_video_params([("every", "5")]).every == 5
    assert parse_video_params([("fps", "2.5")]).fps == 2.5
    for query, words in [
        ([("every", "0")], "at least 1"),
        ([("every", "x")], "integer"),
        ([("fps", "nan")], "'fps' must be in"),
        ([("fps", "-1")], "'fps' must be in"),
        ([("fps", "1e9")], "'fps' must be in"),
        ([("fps", "ten")], "number"),
        ([("every", "2"), ("fps", "1")], "not both"),
        ([("crops", "1")], "unknown"),
    ]:
        error = rejected(parse_video_params, query)
        assert error.status == 422 and words in error.message, (query, error.message)


# ------------------------------------------------------------------ token and media type


def test_bearer_token():
    check_bearer_token(None, None)  # no token configured: anything goes
    check_bearer_token("Bearer s3cret", "s3cret")
    check_bearer_token("bearer  s3cret ", "s3cret")
    for header, words in [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Bearer", "malformed"),
        ("Bearer wrong", "invalid bearer token"),
        ("Bearer s3cret-and-more", "invalid bearer token"),
    ]:
        error = rejected(check_bearer_token, header, "s3cret")
        assert error.status == 401 and words in error.message
        assert error.headers["WWW-Authenticate"].startswith("Bearer")


def test_media_type():
    assert media_type("Image/JPEG; charset=binary") == "image/jpeg"
    assert media_type(None) is None and media_type(" ") is None
