"""The detector's defaults are defined once (raydetect.mtcnn.defaults) and every entry point takes them."""

import pytest

from raydetect.cli import build_parser
from raydetect.mtcnn import defaults
from raydetect.mtcnn.cascade import CascadeConfig
from raydetect.online.http_params import parse_detect_params, parse_video_params
from raydetect.tuning.pyramid_plan import plan_pyramid


def test_the_library_takes_the_defaults():
    from raydetect import FaceDetector

    detector = FaceDetector(device="cpu")
    assert (detector.min_face_size, detector.thresholds, detector.scale_factor) == (
        defaults.MIN_FACE_SIZE, defaults.THRESHOLDS, defaults.SCALE_FACTOR)
    config = CascadeConfig()
    assert (config.min_face_size, config.thresholds, config.scale_factor) == (
        defaults.MIN_FACE_SIZE, defaults.THRESHOLDS, defaults.SCALE_FACTOR)
    plan = plan_pyramid(720, 1280)
    assert (plan.min_face_size, plan.scale_factor) == (defaults.MIN_FACE_SIZE, defaults.SCALE_FACTOR)


def test_the_offline_job_takes_the_defaults():
    from raydetect.offline.chunk_detection import DetectionOptions

    options = DetectionOptions()
    assert (options.min_face_size, options.thresholds, options.scale_factor) == (
        defaults.MIN_FACE_SIZE, defaults.THRESHOLDS, defaults.SCALE_FACTOR)
    args = build_parser().parse_args(["detect", "videos", "--output", "out"])
    assert (args.min_face_size, tuple(args.thresholds), args.scale_factor) == (
        defaults.MIN_FACE_SIZE, defaults.THRESHOLDS, defaults.SCALE_FACTOR)


@pytest.mark.parametrize("argv", [["eval", "images"], ["preview", "in.jpg", "--output", "out.jpg"],
                                  ["plan", "--resolution", "640x360"]])
def test_commands_take_the_defaults(argv):
    args = build_parser().parse_args(argv)
    assert (args.min_face_size, args.scale_factor) == (defaults.MIN_FACE_SIZE, defaults.SCALE_FACTOR)
    if "thresholds" in vars(args):
        assert tuple(args.thresholds) == defaults.THRESHOLDS


def test_sweep_and_the_endpoint_take_the_defaults():
    args = build_parser().parse_args(["sweep", "images"])
    assert args.scale_factors == [defaults.SCALE_FACTOR] and args.thresholds == [defaults.THRESHOLDS]
    assert parse_detect_params([]).min_face_size == defaults.MIN_FACE_SIZE
    assert parse_video_params([]).min_face_size == defaults.MIN_FACE_SIZE
