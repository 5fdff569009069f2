"""Helpers shared by the HTTP API and Serve tests (not a test module)."""

from __future__ import annotations

import socket

import numpy as np

from raydetect.core.results import Detections


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_faces_equal(faces: list[dict], expected: Detections, atol: float = 0.0) -> None:
    """The JSON faces of a response against detections computed directly.

    ``atol`` 0 demands the same float32 values; a small tolerance allows for a batch of
    different composition (other kernels, other summation order) on the server.
    """
    assert len(faces) == len(expected), f"{len(faces)} faces served, {len(expected)} expected"
    if not faces:
        return
    boxes = np.array([face["box"] for face in faces], np.float32)
    scores = np.array([face["score"] for face in faces], np.float32)
    landmarks = np.array([face["landmarks"] for face in faces], np.float32)
    np.testing.assert_allclose(boxes, expected.boxes, atol=atol, rtol=0)
    np.testing.assert_allclose(scores, expected.scores, atol=atol / 100, rtol=0)
    np.testing.assert_allclose(landmarks, expected.landmarks, atol=atol, rtol=0)


def expected_video_tracks(path, every: int, detector) -> list[tuple[int, Detections, np.ndarray]]:
    """(frame_index, faces, track ids) of every ``every``-th frame of a local clip, computed in
    this process with the library's own FaceTracker: what /detect/video must answer."""
    from raydetect.core.tracking import FaceTracker
    from raydetect.offline.video import FrameRange, Sampling, probe

    info = probe(str(path))
    tracker = FaceTracker()
    out = []
    for frame in FrameRange(str(path), 0, None, Sampling(every=every).selector(info), info.fps):
        faces = detector.detect([frame.image])[0]
        out.append((frame.index, faces, tracker.update(faces, frame.index, frame.timestamp_s, frame=frame.image)))
    return out


def assert_video_tracks(lines: list[dict], expected, atol: float = 0.0) -> None:
    """NDJSON lines of /detect/video against :func:`expected_video_tracks`: same frames, faces and track ids."""
    assert [line["frame_index"] for line in lines] == [index for index, _, _ in expected]
    for line, (_, faces, ids) in zip(lines, expected):
        assert_faces_equal(line["faces"], faces, atol=atol)
        assert [face["track_id"] for face in line["faces"]] == ids.tolist()
