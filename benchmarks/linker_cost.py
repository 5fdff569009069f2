"""What tracking adds to each sampled frame: the cut signature and the linker, against the detector's own time.

For each video: the median time of ``frame_signature`` on its frames and of ``FaceDetector.detect`` on one
frame at a time (the baseline, measured in the same run). For the linker: ``link_tracks`` over synthetic
faces walking at random (300 frames at 30 fps, K faces per frame), time per frame.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/linker_cost.py \\
        ../shared/data/videos/short_hamilton_clip.mp4 ../shared/data/videos/street_crowd_1080p.mp4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from raydetect.core.tracking import find_cuts, frame_signature, link_tracks
from raydetect.offline.video import FrameRange, Sampling, probe


def _median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic_faces(frames: int, per_frame: int, seed: int = 0):
    """Faces of ``per_frame`` people walking at random over a 1920x1080 picture, one box each per frame."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform([100, 100], [1820, 980], (per_frame, 2))
    velocity = rng.normal(0, 4, (per_frame, 2))
    side = rng.uniform(30, 120, per_frame)
    boxes = []
    for _ in range(frames):
        centre = centre + velocity + rng.normal(0, 1, centre.shape)
        boxes.append(np.concatenate([centre - side[:, None] / 2, centre + side[:, None] / 2], axis=1))
    face_frames = np.repeat(np.arange(frames), per_frame)
    scores = rng.uniform(0.7, 1.0, frames * per_frame).astype(np.float32)
    return face_frames, np.concatenate(boxes).astype(np.float32), scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--frames", type=int, default=20, help="frames per video for the signature and detector")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from raydetect import FaceDetector

    detector = FaceDetector(device="cpu")
    print("| input | frame_signature ms | detect ms (one frame) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for video in args.videos:
        info = probe(video)
        frames = [f.image for f in FrameRange(video, 0, args.frames, Sampling().selector(info), info.fps)]
        detector.detect([frames[0]])  # first-call allocations are not throughput
        signature = statistics.median(_median_seconds(lambda f=f: frame_signature(f), args.repeats) for f in frames)
        detected = frames[: max(3, args.frames // 4)]
        detect = statistics.median(_median_seconds(lambda f=f: detector.detect([f]), 1) for f in detected)
        print(f"| {video.rsplit('/', 1)[-1]} {info.width}x{info.height} | {1000 * signature:.2f} | "
              f"{1000 * detect:.0f} | {signature / detect:.4f} |", flush=True)

    print()
    print("| faces per frame | link_tracks ms per frame | find_cuts ms per frame |")
    print("| ---: | ---: | ---: |")
    frames = 300
    frame_indices = np.arange(frames)
    timestamps = frame_indices / 30.0
    size = frame_signature(np.zeros((36, 64, 3), np.uint8)).size
    signatures = np.random.default_rng(1).random((frames, size)).astype(np.float32)
    for per_frame in (1, 5, 20, 100):
        face_frames, boxes, scores = synthetic_faces(frames, per_frame)
        cuts = np.zeros(frames, bool)
        link = _median_seconds(
            lambda: link_tracks(frame_indices, timestamps, cuts, face_frames, boxes, scores), args.repeats
        )
        cut = _median_seconds(lambda: find_cuts(signatures), args.repeats)
        print(f"| {per_frame} | {1000 * link / frames:.3f} | {1000 * cut / frames:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
