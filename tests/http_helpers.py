"""Helpers shared by the HTTP API and Serve tests (not a test module)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from raydetect.core.results import Detections


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


REPO = Path(__file__).resolve().parent.parent
SERVE_READY_LINE = "raydetect serve: ready at"


@dataclass
class ServeProcess:
    """A running ``raydetect serve`` command: its process, base URL and output so far."""

    process: subprocess.Popen
    url: str
    output: list[str] = field(default_factory=list)

    def tail(self, lines: int = 40) -> str:
        return "".join(self.output[-lines:])


@contextlib.contextmanager
def raydetect_serve(
    port: int, args: list[str], env: dict[str, str], ready_timeout_s: float = 180
) -> Iterator[ServeProcess]:
    """``python -m raydetect serve --port PORT ARGS`` with a local Ray instance of its own, once it
    prints its ready line. On exit: SIGINT (a clean stop) if still running, then SIGKILL to its
    process group, the only processes this ever ends."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **env}
    env.pop("RAY_ADDRESS", None)  # a local instance of its own
    process = subprocess.Popen(
        [sys.executable, "-m", "raydetect", "serve", "--port", str(port), *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: it and its children only can be ended
    )
    served = ServeProcess(process, f"http://127.0.0.1:{port}")
    ready = threading.Event()

    def read_output() -> None:
        for line in process.stdout:
            served.output.append(line)
            if SERVE_READY_LINE in line:
                ready.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        assert ready.wait(ready_timeout_s), f"no ready line within {ready_timeout_s:g} s:\n" + served.tail()
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                pass
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        reader.join(timeout=10)


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
