"""Time to cut the crops of a chunk: the batched grid_sample path against OpenCV one face at a time.

A chunk of K frames is decoded from VIDEO (every ``--every``-th frame from the start) and detected once
(min_face_size 20); then, round by round and alternating which goes first, the crops of all its faces
are cut by ``raydetect.core.crops.cut_crops`` (square, and aligned) and by the per-face OpenCV square
crop that earlier versions used (cut out, zero-pad, ``cv2.resize`` with INTER_AREA / INTER_LINEAR).
Encoding is not timed (the same for both). Reported: the median milliseconds per chunk and per face,
the ratio of each batched mode to OpenCV within the same rounds, and, for scale, the time the detector
took on the chunk (one run, default precision).

    .venv/bin/python benchmarks/crop_speed.py ../shared/data/videos/street_crowd_1080p.mp4 --frames 8 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import cv2
import numpy as np
import torch

from raydetect.core.crops import CropOptions, cut_crops
from raydetect.core.detector import FaceDetector


def opencv_square(image: np.ndarray, box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """The square crop of one face as cut before the batched path (tests/test_crops.py holds the batched
    path to it)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + margin)
    left, top = math.floor((x1 + x2 - side) / 2), math.floor((y1 + y2 - side) / 2)
    side_px = max(1, math.ceil(side))
    height, width = image.shape[:2]
    canvas = np.zeros((side_px, side_px, 3), np.uint8)
    x0, y0, x1_, y1_ = max(left, 0), max(top, 0), min(left + side_px, width), min(top + side_px, height)
    if x1_ > x0 and y1_ > y0:
        canvas[y0 - top:y1_ - top, x0 - left:x1_ - left] = image[y0:y1_, x0:x1_]
    interpolation = cv2.INTER_AREA if side_px > size else cv2.INTER_LINEAR
    return cv2.resize(canvas, (size, size), interpolation=interpolation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    capture = cv2.VideoCapture(args.video)
    frames = []
    index = 0
    while len(frames) < args.frames:
        ok, frame = capture.read()
        if not ok:
            break
        if index % args.every == 0:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        index += 1
    frames = np.stack(frames)
    detector = FaceDetector(min_face_size=20, device="cpu")
    detector.detect(list(frames[:1]))
    started = time.perf_counter()
    found = detector.detect(list(frames))
    detect_seconds = time.perf_counter() - started  # once: the context for the crop times
    face_frames = np.concatenate([np.full(len(d), i) for i, d in enumerate(found)])
    boxes = np.concatenate([d.boxes for d in found])
    landmarks = np.concatenate([d.landmarks for d in found])
    size = args.crop_size
    modes = {
        "opencv-square": lambda: [opencv_square(frames[f], b, size, 0.3) for f, b in zip(face_frames, boxes)],
        "batched-square": lambda: cut_crops(frames, face_frames, boxes, landmarks,
                                            CropOptions(width=size, height=size)),
        "batched-aligned": lambda: cut_crops(frames, face_frames, boxes, landmarks,
                                             CropOptions(width=size, height=size, align=True)),
    }
    for run in modes.values():
        run()  # first-call allocations are not throughput
    times: dict[str, list[float]] = {name: [] for name in modes}
    for round_number in range(args.rounds):
        order = list(modes) if round_number % 2 == 0 else list(reversed(modes))
        for name in order:
            started = time.perf_counter()
            modes[name]()
            times[name].append(time.perf_counter() - started)
    baseline = statistics.median(times["opencv-square"])
    result = {
        "video": args.video, "frames": len(frames), "frame_size": list(frames.shape[1:3]), "faces": len(boxes),
        "crop_size": size, "threads": args.threads, "detect_ms_per_chunk_once": 1000 * detect_seconds,
        "modes": {
            name: {"ms_per_chunk": 1000 * statistics.median(t), "ms_per_face": 1000 * statistics.median(t) / len(boxes),
                   "ratio_to_opencv": statistics.median(t) / baseline}
            for name, t in times.items()
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
