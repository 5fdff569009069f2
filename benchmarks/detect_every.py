"""--detect-every K: detection time saved and the error of interpolated boxes, against K = 1.

For each video, the first ``--frames`` frames (every one sampled) go through the offline job's own
steps in this process, without Ray: decode into one chunk, :class:`ChunkDetector` (detect every
K-th frame, interpolate the frames between, stage), then the video's finalising step. K = 1, 2, 3, 5
run one after another on each video, so they see the same machine load; ``--repeats`` rounds, the
median time is reported.

Error: on every frame that got interpolated faces, each detector face of the K = 1 run (the truth
here) is matched to the interpolated face of highest IoU on that frame. Reported: the median IoU of
those matches, the share of detector faces with a match of IoU >= 0.5 (recall), and the share of
interpolated faces that overlap no detector face by 0.5 (spurious).

    python benchmarks/detect_every.py ../shared/data/videos/*.* --frames 60 --max-side 640 --repeats 1 \
        --output detect_every.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raydetect.core.tracking import TrackingOptions  # noqa: E402
from raydetect.offline.chunk_detection import ChunkDetector, DetectionOptions  # noqa: E402
from raydetect.offline.finalise import finalise_video  # noqa: E402
from raydetect.offline.output import FACE_SCHEMA, JobOutput, video_key  # noqa: E402
from raydetect.offline.shards import ShardOptions, decode_chunks, plan_shards  # noqa: E402


def run(video: str, frames: int, k: int, detector: ChunkDetector, shards: ShardOptions, dest: str) -> tuple[float, pd.DataFrame]:
    """(seconds of detection + staging + finalising, the video's faces) for one K."""
    options = replace(shards, detect_every=k)
    item = {"video": video, "label": "", "key": video_key(video)}
    shard = plan_shards(item, options)[0]
    shard = {**shard, "num_shards": 1, "stop": frames}  # the first `frames` frames only
    (chunk,) = [c for c in decode_chunks(shard, options)]
    detector.output = JobOutput(dest)
    started = time.perf_counter()
    result = detector.process(chunk)
    assert not result["error"], result["error"]
    finalise_video(JobOutput(dest), item["key"], video, None, detector.tracking, crops=False)
    seconds = time.perf_counter() - started
    faces = Path(dest) / "faces"
    return seconds, pd.read_parquet(faces) if faces.is_dir() else pd.DataFrame(columns=FACE_SCHEMA.names)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) and (M, 4) boxes -> (N, M) IoU."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def errors(truth: pd.DataFrame, faces: pd.DataFrame) -> dict:
    filled = faces[faces["interpolated"]]
    best, covered, spurious, total_truth = [], 0, 0, 0
    for frame, group in filled.groupby("frame_index"):
        detected = truth[truth["frame_index"] == frame]
        b = group[["x1", "y1", "x2", "y2"]].to_numpy()
        a = detected[["x1", "y1", "x2", "y2"]].to_numpy()
        total_truth += len(a)
        if len(a) == 0:
            spurious += len(b)
            continue
        overlap = iou(a, b)
        best += overlap.max(axis=1).tolist()
        covered += int((overlap.max(axis=1) >= 0.5).sum())
        spurious += int((overlap.max(axis=0) < 0.5).sum())
    return {"filled": len(filled), "best": best, "covered": covered, "truth": total_truth, "spurious": spurious}


def summary(parts: list[dict]) -> dict:
    best = [x for p in parts for x in p["best"]]
    filled, truth = sum(p["filled"] for p in parts), sum(p["truth"] for p in parts)
    return {
        "interpolated_faces": filled,
        "median_iou": round(float(np.median(best)), 3) if best else None,
        "recall_at_0.5": round(sum(p["covered"] for p in parts) / truth, 3) if truth else None,
        "spurious_share": round(sum(p["spurious"] for p in parts) / filled, 3) if filled else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--frames", type=int, default=60, help="first N frames of each video (default 60)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--min-face-size", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    detection = DetectionOptions(min_face_size=args.min_face_size, max_side=args.max_side, torch_threads=args.threads)
    shards = ShardOptions(max_side=args.max_side, chunk_bytes=1 << 40)
    detector = ChunkDetector(detection, tempfile.mkdtemp(), tracking=TrackingOptions())
    seconds = {(v, k): [] for v in args.videos for k in args.ks}
    faces = {}
    for _ in range(args.repeats):
        for video in args.videos:
            for k in args.ks:
                with tempfile.TemporaryDirectory() as dest:
                    took, faces[video, k] = run(video, args.frames, k, detector, shards, dest)
                seconds[video, k].append(took)
                print(f"{Path(video).name} K={k}: {took:.1f} s, {len(faces[video, k])} faces", flush=True)

    rows = []
    for k in args.ks:
        total = sum(statistics.median(seconds[v, k]) for v in args.videos)
        base = sum(statistics.median(seconds[v, args.ks[0]]) for v in args.videos)
        row = {"k": k, "seconds": total, "time_vs_k1": total / base}
        if k > 1:
            per_video = {Path(v).name: errors(faces[v, args.ks[0]], faces[v, k]) for v in args.videos}
            row.update(summary(list(per_video.values())))
            row["per_video"] = {name: summary([p]) for name, p in per_video.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
