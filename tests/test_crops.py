"""Square face crops: centre, scale, margin, padding at the borders, JPEG encoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from raydetect.core.crops import crop_square, encode_jpeg, face_crops


def _gradient(height=100, width=160):
    """A frame whose pixel (y, x) holds (x, y, 7): every crop can be traced back to its source."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs, ys, np.full_like(xs, 7)], axis=-1).astype(np.uint8)


def test_crop_without_margin_is_the_square_box_itself():
    image = _gradient()
    crop = crop_square(image, np.array([40, 20, 60, 40], np.float32), size=20, margin=0.0)
    np.testing.assert_array_equal(crop, image[20:40, 40:60])


def test_margin_grows_the_square_around_the_centre_of_a_tall_box():
    image = _gradient()
    # Box 10 wide, 20 tall centred at (50, 30): square side 20 * 1.5 = 30 -> x 35..65, y 15..45.
    crop = crop_square(image, np.array([45, 20, 55, 40], np.float32), size=30, margin=0.5)
    np.testing.assert_array_equal(crop, image[15:45, 35:65])


def test_resized_to_the_requested_size():
    crop = crop_square(_gradient(), np.array([40, 20, 80, 60], np.float32), size=224, margin=0.3)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8


def test_crop_at_the_border_is_padded_not_shifted():
    image = _gradient()
    crop = crop_square(image, np.array([-10, -10, 10, 10], np.float32), size=20, margin=0.0)
    # The top-left quarter lies outside the frame: black. The rest is the frame's corner, in place.
    assert not crop[:10, :10].any()
    assert not crop[:10].any() and not crop[:, :10].any()
    np.testing.assert_array_equal(crop[10:, 10:], image[0:10, 0:10])


def test_crop_past_the_bottom_right_corner():
    image = _gradient()
    crop = crop_square(image, np.array([150, 90, 170, 110], np.float32), size=20, margin=0.0)
    np.testing.assert_array_equal(crop[:10, :10], image[90:100, 150:160])
    assert not crop[10:].any() and not crop[:, 10:].any()


def test_a_box_entirely_outside_gives_a_black_crop():
    crop = crop_square(_gradient(), np.array([500, 500, 520, 520], np.float32), size=16, margin=0.2)
    assert crop.shape == (16, 16, 3) and not crop.any()


def test_bad_options_are_rejected():
    box = np.array([0, 0, 10, 10], np.float32)
    with pytest.raises(ValueError, match="size"):
        crop_square(_gradient(), box, size=0, margin=0.1)
    with pytest.raises(ValueError, match="margin"):
        crop_square(_gradient(), box, size=10, margin=-0.1)


def test_jpeg_round_trip_keeps_colours_in_rgb():
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 220  # red in RGB
    data = encode_jpeg(image)
    assert data[:3] == b"\xff\xd8\xff"
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(decoded.astype(int) - image).max() <= 3


def test_face_crops_one_jpeg_per_box():
    boxes = np.array([[10, 10, 40, 40], [100, 50, 130, 90]], np.float32)
    crops = face_crops(_gradient(), boxes, size=48, margin=0.3)
    assert len(crops) == 2
    assert all(cv2.imdecode(np.frombuffer(c, np.uint8), cv2.IMREAD_COLOR).shape == (48, 48, 3) for c in crops)
    assert face_crops(_gradient(), np.zeros((0, 4), np.float32), size=48, margin=0.3) == []
