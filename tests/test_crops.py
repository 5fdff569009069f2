"""Face crops: centre, scale, margin, padding, non-square sizes, alignment, JPEG and PNG encoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmark_modules import load_benchmark
from raydetect.core.alignment import ARCFACE_TEMPLATE, invert_similarities, similarity_transforms, template_points
from raydetect.core.crops import (
    CropError,
    CropOptions,
    crop_square,
    crops_of,
    cut_crops,
    decode_crop,
    encode_crop,
    encode_jpeg,
    face_crops,
    parse_crop_size,
)


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


# --------------------------------------------------------------------------- options and shapes
def test_crop_sizes_parse_as_width_by_height():
    assert parse_crop_size("224") == (224, 224)
    assert parse_crop_size("224x192") == (224, 192)
    for bad in ("0x5", "5x0", "0", "224x", "x192", "-3", "12.5", "big"):
        with pytest.raises(CropError, match="crop size"):
            parse_crop_size(bad)


def test_bad_crop_options_name_the_problem():
    with pytest.raises(CropError, match="padding must be one of zero, edge, resize"):
        CropOptions(pad="mirror")
    with pytest.raises(CropError, match="format must be one of jpeg, png"):
        CropOptions(format="webp")
    with pytest.raises(CropError, match="aligned crops are rotated"):
        CropOptions(align=True, pad="resize")
    with pytest.raises(CropError, match="quality"):
        CropOptions(quality=0)
    with pytest.raises(CropError, match="height"):
        CropOptions(height=0)


def test_a_non_square_crop_keeps_the_pixel_scale_and_widens_the_region():
    image = _gradient()
    # Box 20 x 20 at (50, 30), no margin, crop 40 x 20: the region is 40 x 20 px, the box's side its height.
    crops, _ = cut_crops(image[None], [0], np.array([[40, 20, 60, 40]]), np.zeros((1, 5, 2)),
                         CropOptions(width=40, height=20, margin=0.0))
    np.testing.assert_array_equal(crops[0], image[20:40, 30:70])


def test_edge_padding_repeats_the_border_and_resize_stretches_what_is_inside():
    image = _gradient()
    box = np.array([[-10, -10, 10, 10]])
    edge, _ = cut_crops(image[None], [0], box, np.zeros((1, 5, 2)), CropOptions(width=20, height=20, margin=0,
                                                                                   pad="edge"))
    np.testing.assert_array_equal(edge[0, :10, :10], np.broadcast_to(image[0, 0], (10, 10, 3)))
    np.testing.assert_array_equal(edge[0, 10:, 10:], image[0:10, 0:10])
    resized, _ = cut_crops(image[None], [0], box, np.zeros((1, 5, 2)), CropOptions(width=10, height=10, margin=0,
                                                                                      pad="resize"))
    np.testing.assert_array_equal(resized[0], image[0:10, 0:10])  # the 10 x 10 inside the frame, no black
    outside, _ = cut_crops(image[None], [0], np.array([[500, 500, 520, 520]]), np.zeros((1, 5, 2)),
                           CropOptions(width=8, height=8, pad="resize"))
    assert not outside.any()


def test_png_crops_are_lossless():
    image = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    data = encode_crop(image, CropOptions(format="png"))
    assert data[:4] == b"\x89PNG"
    np.testing.assert_array_equal(decode_crop(data), image)


def test_crops_of_several_frames_come_from_their_own_frames():
    frames = np.stack([_gradient(), 255 - _gradient(), _gradient() // 2])
    boxes = np.array([[40, 20, 60, 40], [40, 20, 60, 40], [10, 10, 30, 30], [90, 60, 110, 80]], np.float32)
    crops, _ = cut_crops(frames, [2, 0, 1, 2], boxes, np.zeros((4, 5, 2)), CropOptions(width=20, height=20,
                                                                                      margin=0.0))
    np.testing.assert_array_equal(crops[0], frames[2, 20:40, 40:60])
    np.testing.assert_array_equal(crops[1], frames[0, 20:40, 40:60])
    np.testing.assert_array_equal(crops[2], frames[1, 10:30, 10:30])
    np.testing.assert_array_equal(crops[3], frames[2, 60:80, 90:110])


# --------------------------------------------------------------------------- alignment
def test_umeyama_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 500, (3, 5, 2))
    angle, scale, shift = np.array([0.3, -1.2, 2.5]), np.array([0.5, 2.0, 1.1]), rng.uniform(-50, 50, (3, 2))
    rotation = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)],
                        1) * scale[:, None, None]
    target = np.einsum("nij,npj->npi", rotation, source) + shift[:, None]
    matrices = similarity_transforms(source, target)
    np.testing.assert_allclose(matrices[:, :, :2], rotation, atol=1e-9)
    np.testing.assert_allclose(matrices[:, :, 2], shift, atol=1e-7)
    np.testing.assert_allclose(invert_similarities(invert_similarities(matrices)), matrices, atol=1e-9)


def test_the_template_at_112_without_margin_is_insightfaces():
    np.testing.assert_allclose(template_points(112, 112, 0.0), ARCFACE_TEMPLATE + 0.5)
    # A 224 x 192 crop: the template scaled by 192 / 112 / 1.3 about the crop's centre.
    points = template_points(224, 192, 0.3)
    np.testing.assert_allclose(points.mean(0) - [112, 96], (ARCFACE_TEMPLATE.mean(0) + 0.5 - 56) * 192 / 112 / 1.3)


def test_aligned_crop_puts_the_landmarks_on_the_template():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    options = CropOptions(width=96, height=112, margin=0.2, align=True)
    # Landmarks: the template seen through a rotated, scaled, shifted copy (exactly similar).
    target = template_points(96, 112, 0.2)
    angle = 0.4
    rotation = 0.8 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = (target @ rotation.T + [120, 60])[None]
    crops, to_crop = cut_crops(image[None], [0], np.array([[100, 50, 180, 150]]), landmarks, options)
    assert crops.shape == (1, 112, 96, 3)
    mapped = landmarks[0] @ to_crop[0, :, :2].T + to_crop[0, :, 2]
    np.testing.assert_allclose(mapped, target, atol=1e-6)
    # Degenerate landmarks: the box crop instead, not a failure.
    crops, to_crop = cut_crops(image[None], [0], np.array([[100, 50, 180, 150]]), np.full((1, 5, 2), 7.0), options)
    assert np.isfinite(to_crop).all() and to_crop[0, 0, 1] == 0


# --------------------------------------------------------------------------- real frames
def _opencv_square(image, box, size, margin):
    """The square crop as cut before crops were sampled in one batched pass (OpenCV, one face at a time):
    the reference that benchmarks/crop_speed.py times the batched path against."""
    return load_benchmark("crop_speed").opencv_square(image, box, size, margin)


@pytest.fixture(scope="module")
def crowd_faces(data_dir):
    """Frames 0, 8, 16 of the vendored street clip and the faces the detector finds in them."""
    from raydetect.core.detector import FaceDetector

    capture = cv2.VideoCapture(str(data_dir / "street_crowd_24f_640x360.mp4"))
    frames = []
    for index in range(17):
        ok, frame = capture.read()
        assert ok
        if index % 8 == 0:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    frames = np.stack(frames)
    found = FaceDetector(min_face_size=15, device="cpu").detect(list(frames))
    face_frames = np.concatenate([np.full(len(d), i) for i, d in enumerate(found)])
    return frames, face_frames, np.concatenate([d.boxes for d in found]), np.concatenate([d.landmarks for d in found])


@pytest.mark.parametrize("size", [24, 64, 224])  # shrinking, about 1:1 and enlarging the crowd's faces
def test_square_crops_match_the_opencv_crops_within_jpeg_noise(crowd_faces, size):
    frames, face_frames, boxes, landmarks = crowd_faces
    assert len(boxes) >= 10
    crops, _ = cut_crops(frames, face_frames, boxes, landmarks, CropOptions(width=size, height=size))
    reference = np.stack([_opencv_square(frames[f], box, size, 0.3) for f, box in zip(face_frames, boxes)])
    difference = np.abs(crops.astype(int) - reference)
    jpeg_noise = np.abs(np.stack([decode_crop(encode_crop(r)) for r in reference]).astype(int) - reference)
    # Measured: enlarging, mean 0.13 and at most 1 (rounding); shrinking, where the area average is
    # approximated by a k x k grid of samples, mean 0.6 and 99th percentile 4, against JPEG's 2.5 and 10.
    assert difference.mean() < 0.25 * jpeg_noise.mean()
    assert np.percentile(difference, 99) <= np.percentile(jpeg_noise, 99) / 2


def test_crops_of_one_image_from_its_detections(data_dir):
    from raydetect.core.detector import FaceDetector

    image = cv2.cvtColor(cv2.imread(str(data_dir / "multiface.jpg")), cv2.COLOR_BGR2RGB)
    faces = FaceDetector(min_face_size=40, device="cpu").detect_one(image)
    assert len(faces) >= 3
    aligned, to_crop = crops_of(image, faces, CropOptions(width=112, height=112, margin=0, align=True))
    assert aligned.shape == (len(faces), 112, 112, 3) and aligned.any(axis=(1, 2, 3)).all()
    # The map puts each face's landmarks within a few pixels of insightface's template.
    mapped = np.einsum("nij,npj->npi", to_crop[:, :, :2], faces.landmarks) + to_crop[:, None, :, 2]
    assert np.median(np.linalg.norm(mapped - (ARCFACE_TEMPLATE + 0.5), axis=2)) < 4


def test_redetected_landmarks_land_near_the_template(data_dir):
    from raydetect.core.detector import FaceDetector

    capture = cv2.VideoCapture(str(data_dir / "hamilton_45f_640x360.avi"))
    frames = np.stack([cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(45)][::11])
    detector = FaceDetector(min_face_size=40, device="cpu")
    found = [d for d in detector.detect(list(frames))]
    face_frames = np.concatenate([np.full(len(d), i) for i, d in enumerate(found)])
    boxes, landmarks = np.concatenate([d.boxes for d in found]), np.concatenate([d.landmarks for d in found])
    sure = np.concatenate([d.scores for d in found]) >= 0.95  # frontal and profile faces; not the blurred one
    template = template_points(224, 224, 0.3)
    medians = {}
    for align in (True, False):
        crops, _ = cut_crops(frames, face_frames[sure], boxes[sure], landmarks[sure],
                             CropOptions(width=224, height=224, align=align))
        again = [d for d in detector.detect(list(crops)) if len(d)]
        assert len(again) == len(crops) >= 4
        medians[align] = np.median([np.linalg.norm(d.landmarks[0] - template, axis=1) for d in again])
    # Measured 7.8 px (about 5 on the frontal faces, 15-25 on the profiles, which no frontal template fits).
    assert medians[True] < 10 and medians[True] < 0.7 * medians[False]
