"""The Serve deployment classes, options and command line, without Serve running: methods called
directly on plain instances (the Serve tests in test_serve.py cover the same classes deployed)."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

from raydetect.online.detector_pool import DetectRequest, request_pixels, total_cost
from raydetect.errors import InvalidImageError
from raydetect.online.application import (
    FaceAPIIngress,
    DetectorReplica,
    build_app,
    detector_deployment_options,
)
from raydetect.online.options import TOKEN_ENV, BatchingConfig, RequestLimits, ServeOptions


@pytest.fixture(scope="module")
def deployment() -> DetectorReplica:
    return DetectorReplica(device="cpu")


@pytest.fixture(scope="module")
def images(data_dir) -> dict[str, np.ndarray]:
    return {
        name: cv2.cvtColor(cv2.imread(str(data_dir / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        for name in ("obama-240p", "multiface")
    }


# ------------------------------------------------------------------ detector deployment


def test_reconfigure_sets_the_batch_queue(deployment):
    deployment.reconfigure({"max_batch_pixels": 1234567, "batch_wait_timeout_s": 0.2})
    assert deployment.batching() == BatchingConfig(1234567, 0.2)
    assert deployment._detect_batch._get_max_batch_size() == 1234567
    assert deployment._detect_batch._get_batch_wait_timeout_s() == 0.2
    deployment.reconfigure(None)  # back to the defaults
    assert deployment.batching() == BatchingConfig()
    assert deployment._detect_batch._get_max_batch_size() == BatchingConfig().max_batch_pixels


@pytest.mark.parametrize(
    "config, words",
    [
        ({"max_batch_pixel": 10}, "unknown user_config 'max_batch_pixel'"),
        ({"max_batch_pixels": 0}, "max_batch_pixels must be an integer >= 1"),
        ({"max_batch_pixels": 1.5}, "max_batch_pixels must be an integer"),
        ({"batch_wait_timeout_s": -1}, "batch_wait_timeout_s must be in [0, 10]"),
        ({"batch_wait_timeout_s": "soon"}, "batch_wait_timeout_s must be float"),
    ],
)
def test_bad_user_config_is_refused_and_changes_nothing(deployment, config, words):
    before = deployment.batching()
    with pytest.raises(ValueError) as info:
        deployment.reconfigure(config)
    assert words in str(info.value)
    assert deployment.batching() == before


def test_run_batch_groups_by_parameters_and_isolates_bad_images(deployment, images):
    from raydetect import FaceDetector

    requests = [
        DetectRequest(images["obama-240p"], 20, 1),
        DetectRequest(images["multiface"], 40, 1),
        DetectRequest(np.zeros((5, 5, 3), np.uint8), 20, 1),  # under P-Net's window
        DetectRequest(images["obama-240p"], 40, 1),
        DetectRequest(images["obama-240p"], 80, 1),
    ]
    before = deployment.stats()
    results = deployment.run_batch(requests)
    assert isinstance(results[2], InvalidImageError) and "12-pixel window" in str(results[2])
    for request, result in zip(requests, results):
        if request.image.shape[0] < 12:
            continue
        expected = FaceDetector(min_face_size=request.min_face_size, device="cpu").detect([request.image])[0]
        np.testing.assert_allclose(result.boxes, expected.boxes, atol=0.01)
        np.testing.assert_allclose(result.scores, expected.scores, atol=1e-4)
    after = deployment.stats()
    assert after["batches"] - before["batches"] == 1
    assert after["groups"] - before["groups"] == 3  # sizes 20, 40, 80; the bad image's group retried one by one
    assert after["images"] - before["images"] == 5


def test_request_cost_is_pnet_pixels_capped_at_the_budget(deployment, images):
    from raydetect import FaceDetector

    image = images["multiface"]
    for size in (12, 20, 57):
        assert request_pixels(630, 1200, size) == FaceDetector(min_face_size=size, device="cpu").pyramid_pixels(630, 1200)
    deployment.reconfigure({"max_batch_pixels": 10**9})
    assert deployment.request_cost(image, 20) == request_pixels(630, 1200, 20)
    deployment.reconfigure({"max_batch_pixels": 1000})
    assert deployment.request_cost(image, 20) == 1000  # larger than the budget: runs alone
    deployment.reconfigure(None)
    assert total_cost([DetectRequest(image, 20, 3), DetectRequest(image, 20, 4)]) == 7
    assert request_pixels(11, 500, 20) == 1  # no pyramid level, still a positive cost


def test_ready_reports_batching_and_counters(deployment):
    info = asyncio.run(deployment.ready())
    assert info["batching"] == BatchingConfig().to_user_config()
    assert {"batches", "groups", "images", "largest_batch"} <= set(info["detector"])


# ------------------------------------------------------------------ ingress


def test_ingress_token_from_environment(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    ingress = FaceAPIIngress(detector=None)
    assert ingress._token == "from-env"
    import os

    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "protocol_whitelist;file"
    assert FaceAPIIngress(detector=None, api_token="explicit")._token == "explicit"
    monkeypatch.setenv(TOKEN_ENV, "")
    assert FaceAPIIngress(detector=None)._token is None  # empty means no token


def test_ingress_limits_follow_user_config():
    from fastapi import FastAPI

    ingress = FaceAPIIngress(detector=None, api_token=None)
    assert isinstance(ingress.__serve_build_asgi_app__(), FastAPI)
    ingress.reconfigure({"max_image_bytes": 1000, "max_video_frames": "50"})
    assert ingress.limits() == RequestLimits(max_image_bytes=1000, max_video_frames=50)
    with pytest.raises(ValueError, match="unknown user_config 'max_image_size'"):
        ingress.reconfigure({"max_image_size": 10})
    with pytest.raises(ValueError, match="crop_margin"):
        ingress.reconfigure({"crop_margin": -1})


# ------------------------------------------------------------------ options and application


def test_fixed_replicas_on_gpu():
    options = detector_deployment_options(ServeOptions(replicas=3, gpus_per_replica=0.5, max_batch_pixels=99))
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.5}
    assert options["user_config"] == {"max_batch_pixels": 99, "batch_wait_timeout_s": 0.0}


def test_default_batch_budget_follows_placement():
    from raydetect.online.options import GPU_BATCH_PIXELS

    assert ServeOptions().batching().max_batch_pixels == BatchingConfig().max_batch_pixels == 1_000_000
    assert ServeOptions(gpus_per_replica=1).batching().max_batch_pixels == GPU_BATCH_PIXELS
    assert ServeOptions(gpus_per_replica=1, max_batch_pixels=5).batching().max_batch_pixels == 5


def test_autoscaling_when_max_replicas_is_larger():
    options = detector_deployment_options(ServeOptions(replicas=1, max_replicas=4, target_ongoing_requests=8))
    assert "num_replicas" not in options and "num_gpus" not in options["ray_actor_options"]
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}


def test_builder_args_are_converted_and_checked():
    from ray.serve import Application

    options = ServeOptions.from_args({"replicas": "2", "max_replicas": "5", "gpus_per_replica": "1", "device": "none"})
    assert (options.replicas, options.max_replicas, options.gpus_per_replica, options.device) == (2, 5, 1.0, None)
    assert isinstance(build_app({"replicas": "2"}), Application)
    for args, words in [
        ({"replica": 2}, "unknown serve option 'replica'"),
        ({"replicas": "two"}, "replicas must be int"),
        ({"replicas": 3, "max_replicas": 2}, "max_replicas must be an integer >= replicas"),
        ({"gpus_per_replica": -1}, "gpus_per_replica must be a number >= 0"),
        ({"device": "tpu"}, "device must be cpu or cuda"),
        ({"max_image_megapixels": 0}, "max_image_megapixels must be positive"),
        ({"max_video_megapixels": 101}, "at most the detector's 100 megapixels"),
    ]:
        with pytest.raises(ValueError) as info:
            ServeOptions.from_args(args)
        assert words in str(info.value), (args, str(info.value))


def test_api_token_not_in_repr():
    assert "secret" not in repr(ServeOptions(api_token="secret"))


# ------------------------------------------------------------------ command line


def test_command_line_options(monkeypatch):
    from raydetect.cli import build_parser
    from raydetect.commands.serve import options_from_args

    monkeypatch.setenv(TOKEN_ENV, "cli-token")
    args = build_parser().parse_args(
        ["serve", "--port", "8123", "--replicas", "2", "--max-replicas", "6", "--gpus-per-replica", "0.25",
         "--max-batch-pixels", "5000000", "--batch-wait-ms", "20", "--max-image-mb", "5"]
    )
    options = options_from_args(args)
    assert (args.host, args.port) == ("127.0.0.1", 8123)
    assert (options.replicas, options.max_replicas, options.gpus_per_replica) == (2, 6, 0.25)
    assert options.batching() == BatchingConfig(5_000_000, 0.02)
    assert options.max_image_bytes == 5 * 2**20 and options.api_token == "cli-token"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--replicas", "0"], "replicas must be an integer >= 1"),
        (["--replicas", "3", "--max-replicas", "2"], "max_replicas"),
        (["--port", "70000"], "--port must be in 1-65535"),
        (["--max-image-mb", "0"], "--max-image-mb must be positive"),
        (["--batch-wait-ms", "-5"], "batch_wait_timeout_s"),
    ],
)
def test_command_line_refuses_bad_options_before_starting_anything(argv, words, capsys):
    from raydetect.cli import main

    assert main(["serve", *argv]) == 2
    assert words in capsys.readouterr().err
