"""The Serve application over real HTTP on 127.0.0.1: started once for this module on the shared
Ray session, with a bearer token, then driven by plain ``requests``.

Covers what only Serve does: batching across concurrent requests (with different parameters in
one batch), a bounded load test mixing valid and invalid requests, a runtime change of the
batching config, the video stream through the deployment handle, and back-pressure answered 503.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
import yaml

from http_helpers import assert_faces_equal, assert_video_tracks, expected_video_tracks, free_port
from raydetect.online.image_uploads import decode_image
from raydetect.online.options import TOKEN_ENV

APP_NAME = "raydetect-test"
TOKEN = "serve-test-token-9a2e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Results of a request batched with others may differ from a lone call in the last float bits
# (other kernels, other summation order); coordinates are in pixels.
ATOL = 0.01
SERVE_YAML = Path(__file__).resolve().parent.parent / "cluster" / "serve.yaml"
BATCHING = {"max_batch_pixels": 4_000_000, "batch_wait_timeout_s": 0.05}
LIMITS = {"max_image_bytes": 2_000_000, "max_image_megapixels": 2.0, "max_video_frames": 100}


def serve_config(batching: dict, limits: dict) -> dict:
    """cluster/serve.yaml's application with this machine's overrides: one CPU replica of each
    deployment at fractional CPUs (the shared test Ray has 4 logical CPUs for everyone), the
    token in the application's environment, small limits."""
    config = yaml.safe_load(SERVE_YAML.read_text())
    (application,) = config["applications"]
    application["name"] = APP_NAME
    application["runtime_env"] = {"env_vars": {TOKEN_ENV: TOKEN}}
    deployments = {d["name"]: d for d in application["deployments"]}
    detector, ingress = deployments["FaceDetector"], deployments["FaceAPI"]
    detector.pop("autoscaling_config")
    detector.update(num_replicas=1, ray_actor_options={"num_cpus": 0.5})
    detector["user_config"] = {**detector["user_config"], **batching}
    ingress.update(num_replicas=1, ray_actor_options={"num_cpus": 0.25})
    ingress["user_config"] = {**ingress["user_config"], **limits}
    return {"applications": [application]}  # HTTP options are those Serve was started with


def deploy(config: dict) -> None:
    """Apply a config as `serve deploy` does: the dashboard's REST handler makes this very call on
    the controller client (the test Ray runs without a dashboard)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)


@pytest.fixture(scope="module")
def serve_url(ray_session):
    """cluster/serve.yaml deployed on a free port of 127.0.0.1; Serve shut down after this module."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deploy(serve_config(BATCHING, LIMITS))
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    yield url
    serve.delete(APP_NAME)
    serve.shutdown()


def wait_healthy(url: str, check=lambda body: True, timeout_s: float = 60) -> dict:
    """The /healthz body once it is 200 and ``check(body)`` holds (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = requests.get(f"{url}/healthz", timeout=10)
            if response.status_code == 200 and check(response.json()):
                return response.json()
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "service not healthy in time"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def detector_handle(serve_url):
    from ray import serve

    from raydetect.online.application import DETECTOR_NAME

    return serve.get_deployment_handle(DETECTOR_NAME, app_name=APP_NAME)


@pytest.fixture(scope="module")
def local():
    """Direct FaceDetector results to compare against, by (file, min_face_size)."""
    from raydetect import FaceDetector

    detectors = {}

    def expected(data: bytes, min_face_size: int = 20):
        if min_face_size not in detectors:
            detectors[min_face_size] = FaceDetector(min_face_size=min_face_size, device="cpu")
        return detectors[min_face_size].detect([decode_image(data, 10**7)])[0]

    return expected


@pytest.fixture(scope="module")
def photos(data_dir) -> dict[str, bytes]:
    return {name: (data_dir / name).read_bytes() for name in ("obama-240p.jpg", "multiface.jpg")}


def post(url: str, data, params=None, headers=None, content_type="image/jpeg", timeout=120):
    headers = {**AUTH, "Content-Type": content_type, **(headers or {})}
    return requests.post(f"{url}/detect", data=data, params=params, headers=headers, timeout=timeout)


def test_healthz(serve_url):
    response = requests.get(f"{serve_url}/healthz", timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok" and body["batching"]["max_batch_pixels"] == BATCHING["max_batch_pixels"]


def test_detect_equals_detector(serve_url, photos, local):
    data = photos["multiface.jpg"]
    response = post(serve_url, data, params={"crops": "1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (1200, 630)
    assert_faces_equal(body["faces"], local(data), atol=ATOL)
    assert body["faces"] and all(face["crop"] for face in body["faces"])


def test_detector_refusal_crosses_the_handle(detector_handle):
    # The ingress checks images first; this is the detector deployment's own answer, through Ray.
    from raydetect.errors import InvalidImageError

    with pytest.raises(InvalidImageError, match="12-pixel window"):
        detector_handle.detect.remote(np.zeros((5, 5, 3), np.uint8), 20).result()


def test_token_enforced_by_the_deployment(serve_url, photos):
    response = requests.post(f"{serve_url}/detect", data=photos["obama-240p.jpg"], timeout=30,
                             headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 401 and "bearer token" in response.json()["error"]


def test_concurrent_requests_with_different_parameters_batch_without_mixing(
    serve_url, photos, local, detector_handle
):
    """18 concurrent requests, three minimum face sizes, in ONE batch: the budget is set to exactly
    their summed cost, and Serve closes a batch as soon as it is full, so the batch does not depend
    on how fast the requests arrive (the 10 s wait only bounds a stalled machine)."""
    from raydetect.online.detector_pool import request_pixels

    jobs = [(name, size) for name in photos for size in (20, 40, 80)] * 3  # 18 requests
    shapes = {name: decode_image(data, 10**7).shape for name, data in photos.items()}
    full = {"max_batch_pixels": sum(request_pixels(*shapes[name][:2], size) for name, size in jobs),
            "batch_wait_timeout_s": 10.0}
    expected = {(name, size): local(photos[name], size) for name, size in set(jobs)}
    deploy(serve_config(full, LIMITS))
    try:
        wait_healthy(serve_url, lambda body: body["batching"] == full)
        before = detector_handle.stats.remote().result()
        with ThreadPoolExecutor(len(jobs)) as pool:
            responses = list(pool.map(lambda job: post(serve_url, photos[job[0]], {"min_face_size": job[1]}), jobs))
        after = detector_handle.stats.remote().result()
    finally:
        deploy(serve_config(BATCHING, LIMITS))
        wait_healthy(serve_url, lambda body: body["batching"] == BATCHING)
    for job, response in zip(jobs, responses):
        assert response.status_code == 200, (job, response.text)
        assert_faces_equal(response.json()["faces"], expected[job], atol=ATOL)
    assert after["images"] - before["images"] == len(jobs)
    assert after["serve_batches"] - before["serve_batches"] == 1  # one Serve batch held all 18
    assert after["batches"] - before["batches"] == 1  # one detector run
    assert after["groups"] - before["groups"] == 3  # one detect call per minimum face size


def bomb_png() -> bytes:
    """A valid 3000 x 3000 PNG (9 MP, over the 2 MP limit) that compresses to a few kB."""
    return cv2.imencode(".png", np.zeros((3000, 3000, 3), np.uint8))[1].tobytes()


def test_load_mixed_valid_and_invalid(serve_url, photos, local):
    """96 requests, 64 at a time: every valid one correct, every invalid one its 4xx, no 5xx."""
    valid = {
        "obama": (photos["obama-240p.jpg"], {}, "image/jpeg"),
        "obama-40": (photos["obama-240p.jpg"], {"min_face_size": 40}, "image/jpeg"),
        "multiface": (photos["multiface.jpg"], {}, "image/jpeg"),
    }
    expected = {
        "obama": local(photos["obama-240p.jpg"]),
        "obama-40": local(photos["obama-240p.jpg"], 40),
        "multiface": local(photos["multiface.jpg"]),
    }
    invalid = {  # kind -> (body, params, content type, headers, status)
        "garbage": (b"\x00not an image at all" * 40, {}, "image/jpeg", {}, 400),
        "truncated": (photos["obama-240p.jpg"][:4000], {}, "image/jpeg", {}, 400),
        "oversize": (b"\xff\xd8\xff" + bytes(LIMITS["max_image_bytes"]), {}, "image/jpeg", {}, 413),
        "bomb": (bomb_png(), {}, "image/png", {}, 413),
        "type": (photos["obama-240p.jpg"], {}, "text/plain", {}, 415),
        "param": (photos["obama-240p.jpg"], {"min_face_size": "-3"}, "image/jpeg", {}, 422),
        "token": (photos["obama-240p.jpg"], {}, "image/jpeg", {"Authorization": "Bearer wrong"}, 401),
    }
    kinds = ["obama"] * 36 + ["obama-40"] * 8 + ["multiface"] * 4 + [k for k in invalid for _ in range(6)]
    kinds += ["obama"] * (96 - len(kinds))
    rng = np.random.default_rng(7)
    rng.shuffle(kinds)

    def send(kind: str) -> tuple[str, requests.Response]:
        if kind in valid:
            data, params, content_type = valid[kind]
            return kind, post(serve_url, data, params, content_type=content_type, timeout=180)
        data, params, content_type, headers, _ = invalid[kind]
        return kind, post(serve_url, data, params, headers=headers, content_type=content_type, timeout=180)

    # Each request has its own timeout: nothing can hang. How fast the service is belongs to
    # benchmarks/serve_latency.py, not here.
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(send, kinds))

    assert len(results) == 96
    for kind, response in results:
        assert response.status_code < 500, (kind, response.status_code, response.text)
        if kind in valid:
            assert response.status_code == 200, (kind, response.text)
            assert_faces_equal(response.json()["faces"], expected[kind], atol=ATOL)
        else:
            assert response.status_code == invalid[kind][4], (kind, response.status_code, response.text)
            assert response.json()["error"]
    health = requests.get(f"{serve_url}/healthz", timeout=30)
    assert health.status_code == 200
    # Whether requests shared batches depends on timing here; the test above checks batching exactly.


def test_video_through_serve(serve_url, data_dir):
    path = data_dir / "hamilton_45f_640x360.avi"
    response = requests.post(f"{serve_url}/detect/video", params={"every": 15}, data=path.read_bytes(),
                             headers={**AUTH, "Content-Type": "video/x-msvideo"}, timeout=120, stream=True)
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line["frame_index"] for line in lines] == [0, 15, 30]
    from raydetect import FaceDetector
    from raydetect.offline.video import FrameRange, Sampling, probe

    info = probe(str(path))
    frames = FrameRange(str(path), 0, None, Sampling(every=15).selector(info), info.fps)
    detector = FaceDetector(device="cpu")
    for line, frame in zip(lines, frames):
        assert_faces_equal(line["faces"], detector.detect([frame.image])[0], atol=ATOL)
    assert any(line["faces"] for line in lines)


def test_video_tracks_through_serve(serve_url, data_dir):
    # Every 3rd frame across the clip's cut at frame 20: the ingress links faces with the same
    # tracker and defaults as the library.
    from raydetect import FaceDetector

    path = data_dir / "hamilton_45f_640x360.avi"
    response = requests.post(f"{serve_url}/detect/video", params={"every": 3}, data=path.read_bytes(),
                             headers={**AUTH, "Content-Type": "video/x-msvideo"}, timeout=120)
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert_video_tracks(lines, expected_video_tracks(path, 3, FaceDetector(device="cpu")), atol=ATOL)
    assert len({face["track_id"] for line in lines for face in line["faces"]}) >= 2  # the cut ends a track


def test_user_config_changes_apply_to_running_replicas(serve_url, photos, local, detector_handle):
    """An edited config redeployed reaches the running replicas through reconfigure: same
    replicas (counters kept), new batching budget and new request limits."""
    before = detector_handle.stats.remote().result()
    # A budget smaller than any single request: each request then runs alone, none is refused.
    deploy(serve_config({"max_batch_pixels": 1, "batch_wait_timeout_s": 0.0}, {**LIMITS, "max_image_bytes": 30_000}))
    health = wait_healthy(serve_url, lambda body: body["batching"]["max_batch_pixels"] == 1)
    assert health["batching"] == {"max_batch_pixels": 1, "batch_wait_timeout_s": 0.0}
    assert health["detector"]["images"] >= before["images"]  # counters kept: the same replica
    small = cv2.imencode(".jpg", cv2.imdecode(np.frombuffer(photos["obama-240p.jpg"], np.uint8), 1))[1].tobytes()
    assert len(small) < 30_000 < len(photos["obama-240p.jpg"])
    response = post(serve_url, photos["obama-240p.jpg"])
    assert response.status_code == 413 and "30000 bytes" in response.json()["error"]  # the ingress's new limit
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: post(serve_url, small), range(6)))
    for response in responses:
        assert response.status_code == 200, response.text
        assert_faces_equal(response.json()["faces"], local(small), atol=ATOL)
    after = detector_handle.stats.remote().result()
    assert after["images"] - before["images"] == 6
    assert after["batches"] - before["batches"] == 6  # one image per batch under the tiny budget
    deploy(serve_config(BATCHING, LIMITS))
    wait_healthy(serve_url, lambda body: body["batching"] == BATCHING)


def test_full_detector_queue_answers_503_and_the_rest_succeed(serve_url, photos, local):
    """A second application whose detector takes one request and queues one more: Serve refuses the
    rest with back-pressure, which the ingress answers 503 with Retry-After; nothing else fails.

    Eight requests at once overflow that queue unless the first is answered before the others
    arrive, which a loaded machine can arrange by starving the client threads; so bursts are sent
    until one overflows (at most five), and every answer of every burst is checked."""
    from ray import serve

    config = serve_config({"max_batch_pixels": 1, "batch_wait_timeout_s": 0.0}, LIMITS)
    (application,) = config["applications"]
    application.update(name=f"{APP_NAME}-busy", route_prefix="/busy")
    detector = next(d for d in application["deployments"] if d["name"] == "FaceDetector")
    detector.update(max_ongoing_requests=1, max_queued_requests=1)
    deploy(config)
    busy_url = f"{serve_url}/busy"
    expected = local(photos["multiface.jpg"])
    statuses = []
    try:
        wait_healthy(busy_url)
        with ThreadPoolExecutor(8) as pool:
            for _ in range(5):
                start = threading.Barrier(8)  # the eight requests leave together

                def send(_):
                    start.wait(timeout=60)
                    return post(busy_url, photos["multiface.jpg"], timeout=120)

                responses = list(pool.map(send, range(8)))
                for response in responses:
                    statuses.append(response.status_code)
                    if response.status_code == 503:
                        assert response.headers["Retry-After"] == "1" and "retry later" in response.json()["error"]
                    else:
                        assert response.status_code == 200, response.text
                        assert_faces_equal(response.json()["faces"], expected, atol=ATOL)
                if 503 in statuses:
                    break
        assert 200 in statuses and 503 in statuses, statuses
    finally:
        serve.delete(f"{APP_NAME}-busy")
