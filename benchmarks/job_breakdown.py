"""Where a DFDC-like job's time goes: decoding, detection, cropping, staging and finalising.

DFDC's videos are 1080p H.264, and the winning solutions sampled 32 frames per video and cropped
every face. This benchmark runs that configuration (``--frames-per-video 32 --crops``) on copies of
one 1080p video two ways, alternating, in one run:

- **stages**: one process without Ray runs the job's own steps in order (probe and shard planning,
  ``decode_chunks``, ``ChunkDetector.process``, ``finalise_video``), timing each step; inside
  ``ChunkDetector.process`` the detector call, the crop pass (cut + encode) and the staged write are
  timed separately, and the rest of that step (shot-cut signatures, building rows) is "other".
- **job**: the Ray Data job (``run_job``) over the same inputs, end to end, Ray already started;
  its frames per second per core is the figure a CPU cluster scales by.

The stage shares say what would move the job's throughput; the job's time against the stages' sum
says how much the pipeline overlaps (decoding runs beside detection on another core).

    python benchmarks/job_breakdown.py --video ../shared/data/videos/street_crowd_1080p.mp4 \
        --copies 4 --repeats 3 --output job_breakdown.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raydetect.offline.chunk_detection import ChunkDetector, DetectionOptions  # noqa: E402
from raydetect.offline.finalise import finalise_video  # noqa: E402
from raydetect.offline.job import JobSpec, Resources, run_job  # noqa: E402
from raydetect.offline.output import JobOutput, video_key  # noqa: E402
from raydetect.offline.shards import ShardOptions, chunk_frames, decode_chunks, plan_shards  # noqa: E402
from raydetect.offline.video import Sampling  # noqa: E402

STAGES = ("probe", "decode", "detect", "crop", "stage_write", "other", "finalise")
INSIDE_PROCESS = ("detect", "crop", "stage_write")  # timed parts of ChunkDetector.process


def make_copies(video: Path, copies: int, folder: Path) -> list[str]:
    """``copies`` links to ``video`` under distinct names: the job treats each as its own input."""
    paths = []
    for number in range(copies):
        link = folder / f"{video.stem}_{number:03d}{video.suffix}"
        link.symlink_to(video.resolve())
        paths.append(str(link))
    return paths


class _Timed:
    """Wraps a callable and adds its wall time to ``totals[name]``."""

    def __init__(self, function, totals: dict, name: str):
        self.function, self.totals, self.name = function, totals, name

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.totals[self.name] += time.perf_counter() - started


def run_stages(videos: list[str], sampling: Sampling, threads: int, device: str = "cpu") -> tuple[dict, int, int]:
    """Seconds per stage, frames detected and faces, for the job's steps run in order in this process, the
    detector on ``device``."""
    import torch

    torch.set_num_threads(threads)
    totals: dict = defaultdict(float)
    shard_options = ShardOptions(sampling=sampling, keep_full_frames=True, chunk_bytes=32 << 20)
    detection = DetectionOptions(device=device, crops=True, torch_threads=threads)
    with tempfile.TemporaryDirectory() as dest:
        detector = ChunkDetector(detection, dest)
        warm = next(decode_chunks(plan_shards({"video": videos[0], "key": "warm"}, shard_options)[0], shard_options))
        detector.detector.detect([chunk_frames(warm)[0]])  # first-call allocations
        detector._detect = _Timed(detector._detect, totals, "detect")
        detector._crops = _Timed(detector._crops, totals, "crop")
        detector.output.write_staged_chunk = _Timed(detector.output.write_staged_chunk, totals, "stage_write")
        output = JobOutput(dest)
        frames = faces = 0
        for video in videos:
            key = video_key(video)
            started = time.perf_counter()
            shards = plan_shards({"video": video, "key": key}, shard_options)
            totals["probe"] += time.perf_counter() - started
            for shard in shards:
                chunks = decode_chunks(shard, shard_options)
                while True:
                    started = time.perf_counter()
                    record = next(chunks, None)
                    totals["decode"] += time.perf_counter() - started
                    if record is None:
                        break
                    timed_before = sum(totals[name] for name in INSIDE_PROCESS)
                    started = time.perf_counter()
                    result = detector.process(record)
                    timed = sum(totals[name] for name in INSIDE_PROCESS) - timed_before
                    totals["other"] += time.perf_counter() - started - timed
                    if result["error"]:
                        raise SystemExit(result["error"])
                    frames += result["frames_detected"]
            started = time.perf_counter()
            finalised = finalise_video(output, key, video, None, detector.tracking, crops=True)
            totals["finalise"] += time.perf_counter() - started
            faces += finalised.faces
    return {name: totals[name] for name in STAGES}, frames, faces


def run_stages_process(videos: list[str], frames_per_video: int, threads: int) -> tuple[dict, int, int]:
    """:func:`run_stages` in a fresh process (no Ray in it)."""
    import subprocess

    command = [sys.executable, __file__, "--video", videos[0], "--stages-child", json.dumps(videos),
               "--frames-per-video", str(frames_per_video), "--threads", str(threads)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    stages, frames, faces = json.loads(output.strip().splitlines()[-1])
    return stages, frames, faces


def run_ray_job(videos: list[str], sampling: Sampling) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as dest:
        spec = JobSpec(sources=videos, output=dest, detection=DetectionOptions(crops=True),
                       shards=ShardOptions(sampling=sampling), resources=Resources())
        started = time.perf_counter()
        summary = run_job(spec)
        seconds = time.perf_counter() - started
    if summary.exit_status != 0:
        raise SystemExit(summary.text())
    return seconds, summary.frames_detected, summary.faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, help="a 1080p video; the job runs on copies of it")
    parser.add_argument("--copies", type=int, default=4, help="inputs the job sees (default 4)")
    parser.add_argument("--frames-per-video", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the stages run")
    parser.add_argument("--output", help="JSON with every run's figures")
    parser.add_argument("--stages-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sampling = Sampling(count=args.frames_per_video)
    if args.stages_child:
        print(json.dumps(run_stages(json.loads(args.stages_child), sampling, args.threads)))
        return

    import ray
    from ray.data import DataContext

    from raydetect.offline.job import limit_local_arenas

    limit_local_arenas()  # as `raydetect detect` does before it starts a local instance
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    cores = int(ray.cluster_resources().get("CPU", 1))
    with tempfile.TemporaryDirectory() as folder:
        videos = make_copies(Path(args.video), args.copies, Path(folder))
        print(f"{len(videos)} copies of {args.video}, {args.frames_per_video} frames per video, crops, "
              f"{cores} cores, stage threads {args.threads}")
        runs = []
        for repeat in range(args.repeats):
            stages, s_frames, s_faces = run_stages_process(videos, args.frames_per_video, args.threads)
            j_seconds, j_frames, j_faces = run_ray_job(videos, sampling)
            if (s_frames, s_faces) != (j_frames, j_faces):
                raise SystemExit(f"results differ: stages {s_frames} frames {s_faces} faces, "
                                 f"job {j_frames} frames {j_faces} faces")
            total = sum(stages.values())
            runs.append({"stages": stages, "stages_seconds": total, "job_seconds": j_seconds,
                         "frames": j_frames, "faces": j_faces})
            shares = ", ".join(f"{name} {100 * seconds / total:.0f}%" for name, seconds in stages.items())
            print(f"run {repeat + 1}: stages {total:.1f} s ({shares}); job {j_seconds:.1f} s, "
                  f"{j_frames / j_seconds:.2f} frames/s, {j_faces} faces")
    print("median over runs:")
    total = statistics.median(run["stages_seconds"] for run in runs)
    for name in STAGES:
        seconds = statistics.median(run["stages"][name] for run in runs)
        share = statistics.median(run["stages"][name] / run["stages_seconds"] for run in runs)
        per_frame_ms = 1000 * seconds / runs[0]["frames"]
        print(f"  {name:12s} {seconds:7.2f} s  {100 * share:5.1f}%  ({per_frame_ms:.0f} ms/frame)")
    job = statistics.median(run["job_seconds"] for run in runs)
    frames = runs[0]["frames"]
    print(f"  stages sum   {total:7.2f} s  ({frames / total:.2f} frames/s in one process)")
    print(f"  job          {job:7.2f} s  ({frames / job:.2f} frames/s, {frames / job / cores:.2f} per core; "
          f"job / stages sum {job / total:.2f})")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"video": args.video, "copies": args.copies, "frames_per_video": args.frames_per_video,
                       "cores": cores, "runs": runs}, handle, indent=1)


if __name__ == "__main__":
    main()
