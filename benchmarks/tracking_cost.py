"""What tracks cost the offline job: the same `raydetect detect` run with and without them, and file counts.

The baseline is a checkout of the project from before tracks (``--baseline-tree``: e.g.
``mkdir /tmp/base && git archive 4e69e78 | tar -x -C /tmp/base``); the other side is this tree.
Each side runs as its own ``python -m raydetect detect`` process with its tree first on
PYTHONPATH, alternating (baseline, tracks, baseline, ...) so both see the same machine load. The
time is the job's own (the summary's "over N s": listing to the last row written, Ray already
started), so Ray's start-up does not dilute the ratio. Also counted: the Parquet files each run
leaves in DEST/faces (and DEST/tracks).

    python benchmarks/tracking_cost.py --baseline-tree /tmp/base ../shared/data/videos/*.* \
        --repeats 2 --output tracking_cost.json -- --frames-per-video 40 --max-side 640

``--steps``: instead of the whole job, each side runs the job's own steps in one process without Ray
(plan, decode, the chunk step, and with tracks the video's finalising step), timed from the first
decode to the last file written (the detector's construction excluded). On a machine too loaded for a
local Ray to start reliably this still compares exactly the work tracks add. Its options:
``--every N --max-side S --min-face-size M --crops``.

``--count-chunks``: no detection; decodes each video as the job would (same options) and counts its
chunks, the number of face files the job left per video before tracks (one per chunk that held a face;
with tracks: one faces file and one tracks file per video).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run(tree: Path, videos: list[str], options: list[str], attempts: int = 3) -> dict:
    """One job; on a loaded machine a local Ray can time out while starting, which is retried."""
    for attempt in range(attempts):
        try:
            return _run(tree, videos, options)
        except RuntimeError as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise
            print(f"{tree}: Ray did not start, again", flush=True)


def _run(tree: Path, videos: list[str], options: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as dest:
        env = {**os.environ, "PYTHONPATH": str(tree), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
               "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        command = [sys.executable, "-m", "raydetect", "detect", *videos, "--output", dest, "-q", *options]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tree)
        if done.returncode != 0:
            raise RuntimeError(f"{tree}: exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}")
        seconds = float(re.search(r"over ([0-9.]+) s", done.stdout).group(1))
        faces = int(re.search(r"faces: (\d+)", done.stdout).group(1))
        files = {
            folder: len([n for n in os.listdir(Path(dest) / folder) if n.endswith(".parquet")])
            for folder in ("faces", "tracks") if (Path(dest) / folder).is_dir()
        }
    return {"seconds": seconds, "faces": faces, "files": files}


STEPS_CHILD = r"""
import json, sys, tempfile, time
from raydetect.offline.chunk_detection import ChunkDetector, DetectionOptions
from raydetect.offline.output import JobOutput, video_key
from raydetect.offline.shards import ShardOptions, decode_chunks, plan_shards
from raydetect.offline.video import Sampling
try:
    from raydetect.offline.finalise import finalise_video
    from raydetect.core.tracking import TrackingOptions
except ImportError:
    finalise_video = None
args = json.loads(sys.argv[1])
dest = tempfile.mkdtemp()
detection = DetectionOptions(min_face_size=args["min_face_size"], max_side=args["max_side"], crops=args["crops"],
                             torch_threads=args["threads"])
shards = ShardOptions(sampling=Sampling(every=args["every"]), max_side=args["max_side"],
                      keep_full_frames=args["crops"])
stage = ChunkDetector(detection, dest)
started = time.perf_counter()
for video in args["videos"]:
    item = {"video": video, "label": "", "key": video_key(video)}
    for shard in plan_shards(item, shards):
        for chunk in decode_chunks(shard, shards):
            assert not stage.process(chunk)["error"]
    if finalise_video is not None:
        finalise_video(JobOutput(dest), item["key"], video, None, TrackingOptions(), args["crops"])
seconds = time.perf_counter() - started
import os
files = sum(len([n for n in fs if n.endswith(".parquet")]) for root, _, fs in os.walk(dest + "/faces"))
print(json.dumps({"seconds": seconds, "files": {"faces": files}}))
"""


def count_chunks(videos: list[str], every: int, max_side: int | None, crops: bool) -> dict:
    sys.path.insert(0, str(HERE))
    from raydetect.offline.output import video_key
    from raydetect.offline.shards import CHUNK_BYTES, ShardOptions, decode_chunks, plan_shards
    from raydetect.offline.video import Sampling

    options = ShardOptions(sampling=Sampling(every=every), max_side=max_side, keep_full_frames=crops,
                           chunk_bytes=CHUNK_BYTES["cpu"])
    counts = {}
    for video in videos:
        item = {"video": video, "label": "", "key": video_key(video)}
        chunks = [c for shard in plan_shards(item, options) for c in decode_chunks(shard, options)]
        counts[Path(video).name] = sum(1 for c in chunks if c["frame_indices"])
    return counts


def run_steps(tree: Path, videos: list[str], options: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", STEPS_CHILD, json.dumps({**options, "videos": videos})],
                          capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    argv = sys.argv[1:]
    options = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--baseline-tree", type=Path, help="a checkout of the code without tracks")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=None)
    parser.add_argument("--steps", action="store_true", help="the job's steps in one process, without Ray")
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--min-face-size", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crops", action="store_true")
    parser.add_argument("--count-chunks", action="store_true", help="only count each video's chunks (no detection)")
    args = parser.parse_args(argv)
    if args.count_chunks:
        counts = count_chunks(args.videos, args.every, args.max_side or None, args.crops)
        print(json.dumps({"chunks": counts, "total": sum(counts.values()), "videos": len(counts)}))
        return
    if args.baseline_tree is None:
        parser.error("--baseline-tree is required (except with --count-chunks)")
    if args.steps:
        options = {"every": args.every, "max_side": args.max_side, "min_face_size": args.min_face_size,
                   "threads": args.threads, "crops": args.crops}

    sides = {"without tracks": args.baseline_tree.resolve(), "with tracks": HERE}
    results = {name: [] for name in sides}
    for repeat in range(args.repeats):
        for name, tree in sides.items():
            result = run_steps(tree, args.videos, options) if args.steps else run(tree, args.videos, options)
            results[name].append(result)
            print(f"round {repeat + 1} {name}: {json.dumps(result)}", flush=True)
    medians = {name: statistics.median(r["seconds"] for r in runs) for name, runs in results.items()}
    summary = {
        "options": options, "mode": "steps without Ray" if args.steps else "whole job",
        "median_seconds": medians,
        "throughput_ratio": medians["without tracks"] / medians["with tracks"],
        "files": {name: runs[-1]["files"] for name, runs in results.items()},
        "runs": results,
    }
    print(json.dumps(summary, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
