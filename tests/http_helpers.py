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
