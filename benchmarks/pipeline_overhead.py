"""Pipeline overhead: the Ray Data job's frames per second against a plain loop of FaceDetector.

The baseline runs in a fresh Python process without Ray: it decodes the same sampled frames into
memory first and then times only ``FaceDetector.detect`` over each video's frames (one call per
video; the detector's own controller splits it into micro-batches), with the same torch thread
count the pipeline's actor gets.

Both sides run with ``OMP_WAIT_POLICY=PASSIVE`` (``--omp-wait-policy``; the Ray workers get it
through the runtime environment). On this shared 2-core machine, OpenMP's default active waiting
made 2-thread detection erratic when other processes competed for the cores: the same 74 frames
took from 4 s to 65 s in plain processes depending on load and on library load order, which made
any comparison meaningless. Passive waiting kept it within a small factor of the best case. The pipeline is timed end to end: listing, probing, decoding, detection,
writing Parquet, with Ray already started (a cluster outlives one job). Runs alternate
(baseline, pipeline, baseline, ...) so both see the same machine load; medians are reported.

    python benchmarks/pipeline_overhead.py --videos ../shared/data/videos --every 10 --repeats 3 \
        --output overhead_every10.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raydetect.offline.chunk_detection import DetectionOptions  # noqa: E402
from raydetect.offline.job import JobSpec, Resources, run_job  # noqa: E402
from raydetect.offline.shards import ShardOptions  # noqa: E402
from raydetect.offline.sources import list_inputs  # noqa: E402
from raydetect.offline.video import FrameRange, Sampling, probe  # noqa: E402


def decode_all(videos: list[str], sampling: Sampling) -> dict[str, list]:
    frames = {}
    for video in videos:
        info = probe(video)
        frames[video] = [f.image for f in FrameRange(video, 0, None, sampling.selector(info), info.fps)]
    return frames


def run_baseline_process(videos: list[str], every: int, min_face_size: float, threads: int) -> tuple[float, int, int]:
    """:func:`run_baseline` in a fresh process (no Ray in it); returns its (seconds, frames, faces)."""
    import json
    import subprocess

    command = [sys.executable, __file__, "--baseline-child", "--every", str(every),
               "--min-face-size", str(min_face_size), "--threads", str(threads), "--videos-json", json.dumps(videos)]
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ.copy()).stdout
    return tuple(json.loads(output.strip().splitlines()[-1]))


def run_baseline(frames: dict[str, list], min_face_size: float, threads: int) -> tuple[float, int, int]:
    """(seconds, frames, faces) of a plain loop of FaceDetector over the decoded frames."""
    import torch

    from raydetect.core.detector import FaceDetector

    torch.set_num_threads(threads)
    detector = FaceDetector(min_face_size=min_face_size, device="cpu")
    detector.detect([next(iter(frames.values()))[0]])  # warm-up: first-call allocations
    started = time.perf_counter()
    faces = sum(len(d) for video_frames in frames.values() for d in detector.detect(video_frames))
    return time.perf_counter() - started, sum(len(f) for f in frames.values()), faces


def run_pipeline(videos: list[str], sampling: Sampling, min_face_size: float, actors: int | None,
                 threads: int | None) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as dest:
        spec = JobSpec(
            sources=videos, output=dest, detection=DetectionOptions(min_face_size=min_face_size),
            shards=ShardOptions(sampling=sampling), resources=Resources(actors=actors, torch_threads=threads),
        )
        started = time.perf_counter()
        summary = run_job(spec)
        seconds = time.perf_counter() - started
    if summary.exit_status != 0:
        raise SystemExit(summary.text())
    return seconds, summary.frames_detected, summary.faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", default="../shared/data/videos", help="folder, glob or manifest of videos")
    parser.add_argument("--every", type=int, default=10, help="detect every Nth frame (default 10)")
    parser.add_argument("--min-face-size", type=float, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--actors", type=int, default=None, help="pipeline actors (default: the job's own choice)")
    parser.add_argument("--omp-wait-policy", default="PASSIVE", help="OMP_WAIT_POLICY of both sides ('' keeps it)")
    parser.add_argument("--output", help="JSON with every run's figures (for benchmarks/plot_results.py)")
    parser.add_argument("--baseline-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--videos-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        import json

        frames = decode_all(json.loads(args.videos_json), Sampling(every=args.every))
        print(json.dumps(run_baseline(frames, args.min_face_size, args.threads)))
        return

    import ray
    from ray.data import DataContext

    env_vars = {"OMP_WAIT_POLICY": args.omp_wait_policy} if args.omp_wait_policy else {}
    os.environ.update(env_vars)  # the baseline's subprocess inherits it
    from raydetect.offline.job import limit_local_arenas

    limit_local_arenas()  # as `raydetect detect` does before it starts a local instance
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             runtime_env={"env_vars": env_vars})
    DataContext.get_current().enable_progress_bars = False
    videos = [item.video for item in list_inputs([args.videos])]
    sampling = Sampling(every=args.every)
    print(f"{len(videos)} videos, every {args.every}th frame, min_face_size {args.min_face_size:g}, "
          f"{os.cpu_count()} cores, torch threads {args.threads}, OMP_WAIT_POLICY={args.omp_wait_policy or 'unset'}")

    baseline, pipeline, runs = [], [], []
    for repeat in range(args.repeats):
        b_seconds, b_frames, b_faces = run_baseline_process(videos, args.every, args.min_face_size, args.threads)
        p_seconds, p_frames, p_faces = run_pipeline(videos, sampling, args.min_face_size, args.actors, None)
        if (b_frames, b_faces) != (p_frames, p_faces):
            raise SystemExit(f"results differ: baseline {b_frames} frames {b_faces} faces, "
                             f"pipeline {p_frames} frames {p_faces} faces")
        baseline.append(b_frames / b_seconds)
        pipeline.append(p_frames / p_seconds)
        runs.append({"baseline_seconds": b_seconds, "pipeline_seconds": p_seconds, "frames": p_frames,
                     "faces": p_faces, "baseline_fps": baseline[-1], "pipeline_fps": pipeline[-1]})
        print(f"run {repeat + 1}: baseline {b_frames} frames in {b_seconds:.1f} s = {baseline[-1]:.2f} fps; "
              f"pipeline {p_seconds:.1f} s = {pipeline[-1]:.2f} fps; ratio {pipeline[-1] / baseline[-1]:.2f}; "
              f"{p_faces} faces")
    b_median, p_median = statistics.median(baseline), statistics.median(pipeline)
    print(f"median: baseline {b_median:.2f} fps, pipeline {p_median:.2f} fps, ratio {p_median / b_median:.2f}")
    if args.output:
        import json

        Path(args.output).write_text(json.dumps({
            "command": " ".join(["python", "benchmarks/pipeline_overhead.py", *sys.argv[1:]]),
            "videos": videos, "every": args.every, "min_face_size": args.min_face_size, "threads": args.threads,
            "baseline_fps_median": b_median, "pipeline_fps_median": p_median, "ratio": p_median / b_median,
            "runs": runs, "load_average_at_end": os.getloadavg()[0],
        }, indent=1))
    ray.shutdown()


if __name__ == "__main__":
    main()
