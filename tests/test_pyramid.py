"""The image pyramid's geometry (raydetect.mtcnn.pyramid), against hand-computed cases."""

import pytest

from raydetect.mtcnn import defaults
from raydetect.mtcnn.pyramid import check_pyramid_options, level_size, level_sizes, pyramid_pixels, pyramid_scales


def test_pyramid_scales_follow_the_original_recurrence():
    scales = pyramid_scales(720, 1280, min_face_size=20, scale_factor=0.709)
    assert scales[0] == pytest.approx(0.6)
    assert all(b / a == pytest.approx(0.709) for a, b in zip(scales, scales[1:]))
    assert 720 * scales[-1] >= 12 > 720 * scales[-1] * 0.709
    assert level_size(720, 1280, scales[0]) == (433, 769)


def test_pyramid_is_empty_when_the_image_is_smaller_than_the_minimum_face():
    assert pyramid_scales(15, 400, min_face_size=20, scale_factor=0.709) == []
    assert level_sizes(15, 400, 20, 0.709) == []
    assert pyramid_pixels(15, 400, 20, 0.709) == 0


def test_pyramid_pixels_sum_the_levels():
    # 100x200 at min_face_size 24 and f = 0.5: scales 0.5, 0.25, 0.125 (shorter sides 50, 25, 12.5 px);
    # 0.0625 would give 6.25 px < 12. Level sizes int(h * s + 1) x int(w * s + 1).
    assert level_sizes(100, 200, 24, 0.5) == [(51, 101), (26, 51), (13, 26)]
    assert pyramid_pixels(100, 200, 24, 0.5) == 51 * 101 + 26 * 51 + 13 * 26


def test_options_the_detector_refuses():
    check_pyramid_options(defaults.MIN_FACE_SIZE, defaults.SCALE_FACTOR)
    check_pyramid_options(1, 0.5)
    for min_face_size, scale_factor in [(0.5, 0.709), (0, 0.709), (float("nan"), 0.709), (20, 1.0), (20, 0.0)]:
        with pytest.raises(ValueError, match="must be"):
            check_pyramid_options(min_face_size, scale_factor)
