"""How well aligned crops put the faces on the template: detect, align, detect again on the crop.

For each video, K frames evenly spaced are decoded; the faces found there (``--min-face-size``, at
least ``--min-score``) are cut as aligned crops and as square crops (the default), both
``--crop-size`` x ``--crop-size`` with ``--crop-margin`` (the job's code path,
:func:`raydetect.core.crops.cut_crops`). The detector then runs again on every crop; the landmarks of
the best face found there are compared with the template's points on that crop
(:func:`raydetect.core.alignment.template_points`). Reported per video and overall: faces, faces found
again, and the median distance in crop pixels, overall and per landmark. The square crops are the
baseline: the distance that is left when nothing is aligned.

    .venv/bin/python benchmarks/alignment_accuracy.py ../shared/data/videos/*.mp4 ../shared/data/videos/*.avi \
        --frames 8 --output alignment.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from raydetect.core.alignment import template_points
from raydetect.core.crops import CropOptions, cut_crops
from raydetect.core.detector import FaceDetector
from raydetect.core.results import LANDMARK_NAMES


def sampled_frames(path: str, count: int) -> np.ndarray:
    """(K, H, W, 3) uint8 RGB: ``count`` frames evenly spaced (the middle of K equal parts)."""
    capture = cv2.VideoCapture(path)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = {int((i + 0.5) * total / count) for i in range(count)}
    frames = []
    for index in range(total):
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


def distances(detector: FaceDetector, crops: np.ndarray, template: np.ndarray) -> tuple[int, np.ndarray]:
    """Faces found again on the crops and the (M, 5) distances of their landmarks from the template."""
    found = [d for d in detector.detect(list(crops)) if len(d)]
    if not found:
        return 0, np.zeros((0, 5))
    return len(found), np.stack([np.linalg.norm(d.landmarks[0] - template, axis=1) for d in found])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--crop-margin", type=float, default=0.3)
    parser.add_argument("--min-face-size", type=float, default=20)
    parser.add_argument("--min-score", type=float, default=0.9)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    detector = FaceDetector(min_face_size=args.min_face_size, device="cpu", precision="float32")
    template = template_points(args.crop_size, args.crop_size, args.crop_margin)
    rows, pooled = [], {True: [], False: []}
    for video in args.videos:
        frames = sampled_frames(video, args.frames)
        found = detector.detect(list(frames))
        face_frames = np.concatenate([np.full(len(d), i) for i, d in enumerate(found)])
        boxes = np.concatenate([d.boxes for d in found])
        landmarks = np.concatenate([d.landmarks for d in found])
        keep = np.concatenate([d.scores for d in found]) >= args.min_score
        row = {"video": Path(video).name, "faces": int(keep.sum())}
        for align in (True, False):
            options = CropOptions(width=args.crop_size, height=args.crop_size, margin=args.crop_margin, align=align)
            crops, _ = cut_crops(frames, face_frames[keep], boxes[keep], landmarks[keep], options)
            again, dist = distances(detector, crops, template)
            pooled[align].append(dist)
            name = "aligned" if align else "square"
            row[f"{name}_found_again"] = again
            row[f"{name}_median_px"] = float(np.median(dist)) if len(dist) else None
            row[f"{name}_median_px_per_landmark"] = (
                dict(zip(LANDMARK_NAMES, np.median(dist, axis=0).round(2).tolist())) if len(dist) else None
            )
        rows.append(row)
        print(json.dumps(row))
    overall = {"video": "all", "faces": sum(r["faces"] for r in rows)}
    for align, name in ((True, "aligned"), (False, "square")):
        dist = np.concatenate(pooled[align])
        overall[f"{name}_found_again"] = len(dist)
        overall[f"{name}_median_px"] = float(np.median(dist))
        overall[f"{name}_median_px_per_landmark"] = dict(zip(LANDMARK_NAMES, np.median(dist, axis=0).round(2).tolist()))
    print(json.dumps(overall))
    if args.output:
        args.output.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                           "videos": rows + [overall]}, indent=2))


if __name__ == "__main__":
    main()
