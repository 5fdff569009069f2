"""Tracks of one video without Ray: detect every sampled frame, find cuts, link, and write a small face table
(``DEST/faces/part-0.parquet`` with ``video, frame_index, timestamp_s, score, track_id, interpolated, crop``)
that ``raydetect preview DEST`` draws one row per track. Prints the cuts and each track's span.

A way to look at the linker by eye on any clip, and how ``docs/img/tracks_short_hamilton.jpg`` was made:

    .venv/bin/python benchmarks/video_tracks.py ../shared/data/videos/short_hamilton_clip.mp4 /tmp/hamilton
    .venv/bin/python -m raydetect preview /tmp/hamilton -o docs/img/tracks_short_hamilton.jpg \\
        --order best --max-tracks 6 --columns 8 --tile-size 72
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raydetect import FaceDetector
from raydetect.core.crops import face_crops
from raydetect.core.tracking import TrackingOptions, find_cuts, frame_signature, link_tracks
from raydetect.offline.video import FrameRange, Sampling, probe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--every", type=int, default=1, help="sample every Nth frame (default 1)")
    parser.add_argument("--track-max-gap", type=float, default=TrackingOptions().max_gap_s)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)

    info = probe(args.video)
    frames = list(FrameRange(args.video, 0, None, Sampling(every=args.every).selector(info), info.fps))
    detector = FaceDetector(device="cpu")
    detections = []
    for start in range(0, len(frames), args.batch):
        detections += detector.detect([f.image for f in frames[start:start + args.batch]])
    options = TrackingOptions(max_gap_s=args.track_max_gap)
    frame_indices = np.array([f.index for f in frames], np.int64)
    timestamps = np.array([f.timestamp_s for f in frames])
    cuts = find_cuts(np.stack([frame_signature(f.image) for f in frames]), options)
    face_frames = np.concatenate([np.full(len(d), f.index, np.int64) for f, d in zip(frames, detections)])
    boxes = np.concatenate([d.boxes for d in detections]).reshape(-1, 4)
    scores = np.concatenate([d.scores for d in detections])
    track_ids = link_tracks(frame_indices, timestamps, cuts, face_frames, boxes, scores, options)
    crops = [crop for f, d in zip(frames, detections) if len(d) for crop in face_crops(f.image, d.boxes, 112, 0.3)]
    n = len(track_ids)
    (args.dest / "faces").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "video": [args.video] * n, "frame_index": face_frames,
        "timestamp_s": timestamps[np.searchsorted(frame_indices, face_frames)], "score": scores,
        "track_id": track_ids, "interpolated": np.zeros(n, bool), "crop": crops,
    }), args.dest / "faces" / "part-0.parquet")
    print(f"{len(frames)} frames, {n} faces, cuts at frames {frame_indices[cuts].tolist()}")
    for track in np.unique(track_ids):
        mine = track_ids == track
        print(f"track {track}: frames {face_frames[mine].min()}-{face_frames[mine].max()}, {mine.sum()} faces, "
              f"mean score {scores[mine].mean():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
