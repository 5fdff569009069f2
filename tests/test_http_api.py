"""The HTTP API over real HTTP on 127.0.0.1, without Ray: uvicorn serving ``create_api`` around a
real detector in this process. Every status code of the contract, each bad input named.

The Serve deployment of the same API is tested in test_serve.py.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import cv2
import numpy as np
import pytest
import requests

from http_helpers import assert_faces_equal, assert_video_tracks, expected_video_tracks, free_port
from raydetect.online.detector_pool import DetectorPool
from raydetect.online.http_api import InProcessDetector, create_api
from raydetect.online.image_uploads import decode_image
from raydetect.online.options import RequestLimits
from raydetect.offline.video import FrameRange, Sampling, probe

TOKEN = "test-token-5f1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = RequestLimits(
    max_image_bytes=1_000_000,
    max_image_megapixels=1.0,
    max_video_bytes=2_000_000,
    max_video_frames=60,
    crop_size=64,
)


@pytest.fixture(scope="module")
def detector():
    from raydetect import FaceDetector

    return FaceDetector(device="cpu")


@pytest.fixture(scope="module")
def base_url(detector):
    """uvicorn on 127.0.0.1 serving the API with a bearer token and small limits."""
    import uvicorn

    from raydetect import FaceDetector

    pool = DetectorPool(lambda size: detector if size == 20 else FaceDetector(min_face_size=size, device="cpu"))
    app = create_api(InProcessDetector(pool), LIMITS, token=TOKEN)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def obama_jpeg(data_dir) -> bytes:
    return (data_dir / "obama-240p.jpg").read_bytes()


def post_image(base_url, data: bytes, content_type="image/jpeg", params=None, headers=AUTH, **kwargs):
    return requests.post(
        f"{base_url}/detect",
        data=data,
        params=params,
        headers={**headers, **({"Content-Type": content_type} if content_type else {})},
        timeout=60,
        **kwargs,
    )


def assert_error(response: requests.Response, status: int, words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert words.lower() in message.lower(), message


# ------------------------------------------------------------------ success


def test_healthz_needs_no_token(base_url):
    response = requests.get(f"{base_url}/healthz", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_detect_raw_jpeg_equals_detector(base_url, detector, obama_jpeg):
    response = post_image(base_url, obama_jpeg)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (427, 240)
    expected = detector.detect([decode_image(obama_jpeg, 10**6)])[0]
    assert len(expected) == 1
    assert_faces_equal(body["faces"], expected)  # same process, same call: identical values
    assert all("crop" not in face for face in body["faces"])


@pytest.mark.parametrize("ext, content_type", [(".png", "image/png"), (".webp", "image/webp"), (".bmp", "image/bmp")])
def test_other_formats_and_multipart(base_url, detector, obama_jpeg, ext, content_type):
    image_bgr = cv2.imdecode(np.frombuffer(obama_jpeg, np.uint8), cv2.IMREAD_COLOR)
    data = cv2.imencode(ext, image_bgr, [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else [])[1].tobytes()
    expected = detector.detect([decode_image(data, 10**6)])[0]
    raw = post_image(base_url, data, content_type)
    form = requests.post(
        f"{base_url}/detect", files={"image": (f"face{ext}", data, content_type)}, headers=AUTH, timeout=60
    )
    for response in (raw, form):
        assert response.status_code == 200, response.text
        assert_faces_equal(response.json()["faces"], expected)


def test_min_face_size_and_crops(base_url, data_dir):
    from raydetect import FaceDetector

    data = (data_dir / "multiface.jpg").read_bytes()
    response = post_image(base_url, data, params={"min_face_size": 40, "crops": "true"})
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert_faces_equal(faces, FaceDetector(min_face_size=40, device="cpu").detect([decode_image(data, 10**6)])[0])
    assert faces
    for face in faces:
        crop = cv2.imdecode(np.frombuffer(base64.b64decode(face["crop"]), np.uint8), cv2.IMREAD_COLOR)
        assert crop.shape == (64, 64, 3)


def test_octet_stream_is_sniffed(base_url, obama_jpeg):
    assert post_image(base_url, obama_jpeg, "application/octet-stream").status_code == 200


# ------------------------------------------------------------------ refusals


def test_token_required(base_url, obama_jpeg):
    assert_error(post_image(base_url, obama_jpeg, headers={}), 401, "missing bearer token")
    response = post_image(base_url, obama_jpeg, headers={"Authorization": "Bearer nope"})
    assert_error(response, 401, "invalid bearer token")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "content_type, words",
    [(None, "missing Content-Type"), ("text/plain", "unsupported Content-Type 'text/plain'"),
     ("image/gif", "unsupported Content-Type 'image/gif'"), ("application/x-www-form-urlencoded", "unsupported")],
)
def test_unsupported_media_type_is_415(base_url, obama_jpeg, content_type, words):
    assert_error(post_image(base_url, obama_jpeg, content_type), 415, words)


def test_gif_content_is_415(base_url):
    assert_error(post_image(base_url, b"GIF89a" + bytes(100), "image/jpeg"), 415, "GIF images are not supported")


def test_undecodable_and_empty_bodies_are_400(base_url, obama_jpeg):
    assert_error(post_image(base_url, b"\x00garbage" * 50), 400, "not an image")
    assert_error(post_image(base_url, obama_jpeg[: len(obama_jpeg) // 3]), 400, "could not decode")
    assert_error(post_image(base_url, b""), 400, "empty image")


def test_tiny_image_is_400(base_url):
    data = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    assert_error(post_image(base_url, data, "image/png"), 400, "smaller than the detector")


def test_body_limit_is_413_with_and_without_content_length(base_url):
    big = b"\xff\xd8\xff" + bytes(LIMITS.max_image_bytes)
    assert_error(post_image(base_url, big), 413, "the limit is 1000000 bytes")

    def chunks():  # chunked transfer: no Content-Length, the limit applies while reading
        for _ in range(20):
            yield bytes(100_000)

    assert_error(post_image(base_url, chunks()), 413, "image body too large")


def test_megapixel_limit_is_413(base_url):
    data = cv2.imencode(".png", np.zeros((1000, 1001, 3), np.uint8))[1].tobytes()  # 1.001 MP, small file
    assert len(data) < LIMITS.max_image_bytes
    assert_error(post_image(base_url, data, "image/png"), 413, "the limit is 1 megapixels")


def test_bad_query_is_422(base_url, obama_jpeg):
    assert_error(post_image(base_url, obama_jpeg, params={"min_face_size": "tiny"}), 422, "integer")
    assert_error(post_image(base_url, obama_jpeg, params={"url": "file:///etc/passwd"}), 422, "unknown query")


def test_multipart_problems(base_url, obama_jpeg):
    response = requests.post(f"{base_url}/detect", files={"picture": ("a.jpg", obama_jpeg, "image/jpeg")},
                             headers=AUTH, timeout=30)
    assert_error(response, 422, "no field 'image'")
    response = requests.post(f"{base_url}/detect", data={"image": "/etc/passwd"}, files={"x": ("x", b"1")},
                             headers=AUTH, timeout=30)
    assert_error(response, 422, "must be a file upload")
    response = requests.post(f"{base_url}/detect", files={"image": ("a.txt", b"hello", "text/plain")},
                             headers=AUTH, timeout=30)
    assert_error(response, 415, "'text/plain' for field 'image'")
    assert_error(post_image(base_url, b"--nope\r\n", "multipart/form-data; boundary=xyz"), 400, "malformed multipart")


def test_unknown_routes_answer_json(base_url):
    assert_error(requests.get(f"{base_url}/nothing", timeout=10), 404, "not found")
    assert_error(requests.get(f"{base_url}/detect", timeout=10), 405, "not allowed")


# ------------------------------------------------------------------ video


def test_video_streams_one_line_per_sampled_frame(base_url, detector, data_dir):
    path = data_dir / "hamilton_45f_640x360.avi"
    response = requests.post(
        f"{base_url}/detect/video", params={"every": 15}, data=path.read_bytes(),
        headers={**AUTH, "Content-Type": "video/x-msvideo"}, timeout=120, stream=True,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line["frame_index"] for line in lines] == [0, 15, 30]
    info = probe(str(path))
    frames = list(FrameRange(str(path), 0, None, Sampling(every=15).selector(info), info.fps))
    for line, frame in zip(lines, frames):
        assert line["timestamp_s"] == pytest.approx(frame.index / info.fps, abs=1e-6)
        assert_faces_equal(line["faces"], detector.detect([frame.image])[0])
    assert any(line["faces"] for line in lines)


def test_video_faces_carry_track_ids_that_end_at_the_cut(base_url, detector, data_dir):
    # Every 3rd frame of a clip with one face and a hard cut at frame 20: one track per shot,
    # the same ids the library's FaceTracker gives.
    path = data_dir / "hamilton_45f_640x360.avi"
    response = requests.post(
        f"{base_url}/detect/video", params={"every": 3}, data=path.read_bytes(),
        headers={**AUTH, "Content-Type": "video/x-msvideo"}, timeout=120,
    )
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert_video_tracks(lines, expected_video_tracks(path, 3, detector))
    tracks_before = {face["track_id"] for line in lines if line["frame_index"] < 20 for face in line["faces"]}
    tracks_after = {face["track_id"] for line in lines if line["frame_index"] >= 20 for face in line["faces"]}
    assert tracks_before and tracks_after and not tracks_before & tracks_after


def test_video_fps_sampling_and_multipart(base_url, data_dir):
    data = (data_dir / "hamilton_45f_640x360.avi").read_bytes()
    response = requests.post(f"{base_url}/detect/video", params={"fps": 2}, headers=AUTH, timeout=120,
                             files={"video": ("clip.avi", data, "video/x-msvideo")})
    assert response.status_code == 200, response.text
    indices = [json.loads(line)["frame_index"] for line in response.iter_lines() if line]
    assert indices == [0, 15, 30]  # 29.97 fps sampled at 2 fps: the first frame of each half second


def test_video_refusals(base_url, data_dir, obama_jpeg):
    url = f"{base_url}/detect/video"
    clip = (data_dir / "hamilton_45f_640x360.avi").read_bytes()
    headers = {**AUTH, "Content-Type": "video/mp4"}
    assert_error(requests.post(url, data=obama_jpeg, headers=headers, timeout=30), 400, "not a video container")
    playlist = b"#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1:9/x.ts\n"
    assert_error(requests.post(url, data=playlist, headers=headers, timeout=30), 400, "not a video container")
    broken = b"\x00\x00\x00\x20ftypisom" + bytes(5000)
    assert_error(requests.post(url, data=broken, headers=headers, timeout=30), 400, "could not read the video")
    assert_error(requests.post(url, data=clip, headers=headers, params={"every": 0}, timeout=30), 422, "at least 1")
    assert_error(requests.post(url, data=clip, headers={**AUTH, "Content-Type": "image/png"}, timeout=30), 415, "")
    assert_error(requests.post(url, data=clip, headers={"Content-Type": "video/mp4"}, timeout=30), 401, "")
    assert_error(requests.post(url, data=bytes(LIMITS.max_video_bytes + 1), headers=headers, timeout=30), 413, "")
    crowd = (data_dir / "street_crowd_24f_640x360.mp4").read_bytes()
    assert len(crowd) < LIMITS.max_video_bytes
    ok = requests.post(url, data=crowd, headers=headers, params={"every": 24}, timeout=60)
    assert ok.status_code == 200, ok.text


def synthetic_avi(frames: int, width: int, height: int) -> bytes:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".avi") as file:
        writer = cv2.VideoWriter(file.name, cv2.VideoWriter_fourcc(*"MJPG"), 30, (width, height))
        for i in range(frames):
            writer.write(np.full((height, width, 3), i, np.uint8))
        writer.release()
        return open(file.name, "rb").read()


def test_video_frame_limits(base_url):
    url = f"{base_url}/detect/video"
    headers = {**AUTH, "Content-Type": "video/x-msvideo"}
    # 90 frames > the limit of 60: refused from the container's count before decoding.
    response = requests.post(url, data=synthetic_avi(90, 64, 48), headers=headers, timeout=30)
    assert_error(response, 413, "clip has 90 frames; the limit is 60")
    response = requests.post(url, data=synthetic_avi(5, 64, 8), headers=headers, timeout=30)
    assert_error(response, 400, "64x8, smaller than the detector's 12-pixel window")
