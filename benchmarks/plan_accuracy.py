"""How close is ``raydetect plan``'s time estimate to the measured time per frame?

For each video and minimum face size: the plan's estimate (from the cached calibration, or a
fresh one with --recalibrate), then the detector timed on sampled frames one frame per call
(as the calibration times it), --repeats calls per frame in rounds over the frames. Per frame
the fastest call is kept (the calibration's statistic: other work on a shared machine only adds
time), and the table shows the median over frames of that. A second estimate plugs in the candidate
counts actually observed, which separates the cost model's error from the content's (the
candidates a frame produces cannot be known before running).

    .venv/bin/python benchmarks/plan_accuracy.py ../shared/data/videos/*.mp4 ../shared/data/videos/*.avi \
        --min-face-sizes 20,40 --frames 8 --recalibrate --json /tmp/plan_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from raydetect import FaceDetector
from raydetect.tuning.calibration import load_or_measure, time_frames
from raydetect.tuning.pyramid_plan import plan_pyramid
from raydetect.offline.video import FrameRange, Sampling, probe


def sample_frames(video: str, count: int) -> list[np.ndarray]:
    info = probe(video)
    every = max(1, info.frame_count // count)
    frames = FrameRange(video, 0, min(info.frame_count, every * count), Sampling(every=every).selector(info), info.fps)
    return [frame.image for frame in frames]


def measure(detector: FaceDetector, frames: list[np.ndarray], repeats: int, min_face_size: float) -> dict:
    """Per frame the fastest of ``repeats`` calls, in rounds over the frames (as the calibration does)."""
    jobs = [(str(index), detector, frame) for index, frame in enumerate(frames)]
    samples = time_frames(jobs, repeats, min_face_size)
    counts = []
    for frame in frames:
        found = detector.detect([frame])
        counts.append((detector.last_stats["rnet_candidates"], detector.last_stats["onet_candidates"], len(found[0])))
    fastest = [s.ms for s in samples]
    return {"median_ms": float(np.median(fastest)), "fastest_ms": fastest,
            "rnet": float(np.mean([c[0] for c in counts])), "onet": float(np.mean([c[1] for c in counts])),
            "faces": float(np.mean([c[2] for c in counts]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--min-face-sizes", default="20,40")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--recalibrate", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    calibration, path, measured = load_or_measure(args.device, args.recalibrate, log=log)
    print(f"calibration {path} ({'measured now' if measured else 'cached'}): fixed {calibration.fixed_ms:.1f} ms, "
          f"{calibration.ms_per_gmac:.1f} ms/GMAC, {calibration.ms_per_rnet_candidate:.3f} ms/R-Net candidate, "
          f"{calibration.ms_per_onet_candidate:.3f} ms/O-Net candidate")
    rows = []
    header = (f"{'video':<26}{'size':>10}{'M':>4}{'GMAC':>7}{'plan ms':>9}{'measured':>10}{'ratio':>7}"
              f"{'R-Net':>8}{'O-Net':>7}{'plan|cand':>10}{'ratio':>7}")
    print(header)
    for video in args.videos:
        frames = sample_frames(video, args.frames)
        height, width = frames[0].shape[:2]
        for m in (float(v) for v in args.min_face_sizes.split(",")):
            plan = plan_pyramid(height, width, m)
            estimate = calibration.estimate_ms(plan)
            result = measure(FaceDetector(min_face_size=m, device=args.device), frames, args.repeats, m)
            informed = calibration.estimate_ms(plan, result["rnet"], result["onet"])
            row = {"video": Path(video).name, "width": width, "height": height, "min_face_size": m,
                   "pnet_gmacs": plan.macs / 1e9, "estimate_ms": estimate["ms"], "floor_ms": estimate["floor_ms"],
                   "estimate_with_candidates_ms": informed["ms"], **result}
            rows.append(row)
            print(f"{row['video']:<26}{f'{width}x{height}':>10}{m:>4g}{row['pnet_gmacs']:>7.2f}{estimate['ms']:>9.1f}"
                  f"{result['median_ms']:>10.1f}{result['median_ms'] / estimate['ms']:>7.2f}{result['rnet']:>8.0f}"
                  f"{result['onet']:>7.0f}{informed['ms']:>10.1f}{result['median_ms'] / informed['ms']:>7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"calibration": calibration.to_json(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
