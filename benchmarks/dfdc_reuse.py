"""Detector work saved by ``--reuse-original-boxes`` on a generated DFDC-style folder.

The folder (benchmarks/dfdc_folder.py): one original per SOURCE video (its first ``--frames`` frames at
``--size``) and ``--fakes`` fakes of each (the face boxes inverted). The same job, with crops, runs with
and without the option, alternating which goes first round by round, each into a fresh DEST on one Ray
instance started beforehand (a cluster outlives a job). Reported per mode, medians over the rounds:
wall time of ``run_job``; frames detected; the work time the job records per video (DEST/videos
``seconds``: decoding plus detection, or for a reusing fake decoding plus cropping), summed over all
videos and over the fakes alone; and the shares the option saves.

    python benchmarks/dfdc_reuse.py ../shared/data/videos/short_hamilton_clip.mp4 \\
        ../shared/data/videos/street_crowd_1080p.mp4 --fakes 3 --frames 48 --every 4 --rounds 3 --work /tmp/dfdc-bench
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from raydetect.core.crops import CropOptions  # noqa: E402
from raydetect.offline.chunk_detection import DetectionOptions  # noqa: E402
from raydetect.offline.job import JobSpec, Resources, run_job  # noqa: E402
from raydetect.offline.shards import ShardOptions  # noqa: E402
from raydetect.offline.video import Sampling  # noqa: E402


def _folder_maker():
    path = Path(__file__).resolve().with_name("dfdc_folder.py")
    spec = importlib.util.spec_from_file_location("dfdc_folder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_once(metadata: Path, dest: Path, reuse: bool, every: int, min_face_size: float) -> dict:
    """One job into a fresh ``dest``; its figures."""
    shutil.rmtree(dest, ignore_errors=True)
    spec = JobSpec(
        sources=[str(metadata)], output=str(dest),
        detection=DetectionOptions(min_face_size=min_face_size, crops=True, crop=CropOptions()),
        shards=ShardOptions(sampling=Sampling(every=every)),
        resources=Resources(actors=1), reuse_original_boxes=reuse,
    )
    started = time.perf_counter()
    summary = run_job(spec)
    wall = time.perf_counter() - started
    if summary.exit_status:
        raise SystemExit(summary.text())
    videos = pd.read_parquet(dest / "videos")
    fakes = videos[videos.label == "FAKE"]
    return {"reuse": reuse, "wall_s": wall, "frames_detected": int(videos.frames_detected.sum()),
            "work_s": float(videos.seconds.sum()), "fake_work_s": float(fakes.seconds.sum()),
            "faces": int(videos.faces.sum()), "reused": int(videos.boxes_from.notna().sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="videos to cut the originals from")
    parser.add_argument("--work", type=Path, required=True, help="folder for the generated videos and the outputs")
    parser.add_argument("--fakes", type=int, default=3, help="fakes per original")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--min-face-size", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, help="JSON with every run's figures")
    args = parser.parse_args()

    import ray
    from ray.data import DataContext

    width, height = (int(v) for v in args.size.lower().split("x"))
    folder = args.work / "videos"
    shutil.rmtree(folder, ignore_errors=True)
    metadata = _folder_maker().make_folder(args.sources, folder, args.fakes, args.frames, (width, height),
                                           min_face_size=args.min_face_size)
    print(f"{len(metadata)} videos ({len(args.sources)} originals, {args.fakes} fakes each), {args.frames} frames "
          f"at {width}x{height}, every {args.every}th frame, crops 224")
    from raydetect.offline.job import limit_local_arenas

    limit_local_arenas()  # as `raydetect detect` does before it starts a local instance
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    runs = []
    for round_number in range(args.rounds):
        order = (True, False) if round_number % 2 == 0 else (False, True)
        for reuse in order:
            result = run_once(folder / "metadata.json", args.work / f"out-{'reuse' if reuse else 'detect'}",
                              reuse, args.every, args.min_face_size)
            runs.append({"round": round_number, **result})
            print(json.dumps(runs[-1]))
    ray.shutdown()

    def median(reuse: bool, name: str) -> float:
        return statistics.median(r[name] for r in runs if r["reuse"] == reuse)

    print("| mode | frames detected | wall s | work s (all videos) | work s (fakes) |")
    print("|---|---:|---:|---:|---:|")
    for reuse in (False, True):
        print(f"| {'--reuse-original-boxes' if reuse else 'detect every video'} | {median(reuse, 'frames_detected'):.0f} "
              f"| {median(reuse, 'wall_s'):.1f} | {median(reuse, 'work_s'):.1f} | {median(reuse, 'fake_work_s'):.1f} |")
    ratios = {name: statistics.median(
        a[name] / b[name] for a, b in zip([r for r in runs if r["reuse"]], [r for r in runs if not r["reuse"]]))
        for name in ("wall_s", "work_s", "fake_work_s", "frames_detected")}
    print("reuse / detect, median of the rounds' ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if args.output:
        args.output.write_text(json.dumps({"command": " ".join(["python", "benchmarks/dfdc_reuse.py", *sys.argv[1:]]),
                                           "runs": runs, "ratios": ratios,
                                           "load_average_at_end": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
