"""What per-track clips (``--clip-frames``) cost the offline job: the video's finalising step with and without them.

The job's own steps run in this process without Ray: each video is planned, decoded and detected
once by the chunk step (staging its chunks under a temporary DEST), then its finalising step
(:func:`raydetect.offline.finalise.finalise_video`) runs ``--repeats`` times without clips and with
the clip options given, alternating, so both see the same machine load. The clip step is the
difference; the medians and their ratio are printed, with the faces and clips written. On a loaded
machine that difference drowns in the finalising step's own noise, so the clip step's two parts are
also timed alone, ``--repeats`` times each: the rule (cutting the video's faces table into clips)
and writing the clips file.

    python benchmarks/clip_cost.py ../shared/data/videos/short_hamilton_clip.mp4 \
        ../shared/data/videos/street_crowd_1080p.mp4 --max-side 640 --detect-every 3 \
        --clip-frames 7 --clip-fps 15 --repeats 7 --output clip_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raydetect.core.clips import ClipOptions  # noqa: E402
from raydetect.core.tracking import TrackingOptions  # noqa: E402
from raydetect.offline.chunk_detection import ChunkDetector, DetectionOptions  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from raydetect.offline.finalise import _clips, finalise_video  # noqa: E402
from raydetect.offline.output import CLIPS, FACES, JobOutput, video_file_name, video_key  # noqa: E402
from raydetect.offline.shards import ShardOptions, decode_chunks, plan_shards  # noqa: E402


def stage(video: str, dest: str, detector: ChunkDetector, shards: ShardOptions) -> str:
    """Detect and stage every chunk of ``video`` as the job's actors would; returns its key."""
    item = {"video": video, "label": "", "key": video_key(video)}
    for shard in plan_shards(item, shards):
        for chunk in decode_chunks(shard, shards):
            error = detector.process(chunk)["error"]
            if error:
                raise RuntimeError(error)
    return item["key"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--min-face-size", type=float, default=20.0)
    parser.add_argument("--detect-every", type=int, default=1)
    parser.add_argument("--clip-frames", type=int, default=7)
    parser.add_argument("--clip-fps", type=float, default=None)
    parser.add_argument("--clip-spacing", default=ClipOptions.spacing)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    clips = ClipOptions(frames=args.clip_frames, fps=args.clip_fps, spacing=args.clip_spacing)
    tracking = TrackingOptions()
    results = []
    with tempfile.TemporaryDirectory() as dest:
        detector = ChunkDetector(DetectionOptions(min_face_size=args.min_face_size, max_side=args.max_side,
                                                  torch_threads=args.threads), dest, tracking=tracking)
        shards = ShardOptions(max_side=args.max_side, detect_every=args.detect_every)
        output = JobOutput(dest)
        for video in args.videos:
            key = stage(video, dest, detector, shards)
            times = {"without": [], "with": []}
            for _ in range(args.repeats):
                for side, options in (("without", None), ("with", clips)):
                    started = time.perf_counter()
                    done = finalise_video(output, key, video, None, tracking, crops=False, clips=options)
                    times[side].append(time.perf_counter() - started)
            faces = pq.read_table(output.path(FACES, video_file_name(key)))
            rule, write = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                table = _clips(faces, video, None, clips)
                rule.append(time.perf_counter() - started)
                started = time.perf_counter()
                output.write_table(table, CLIPS, video_file_name(key))
                write.append(time.perf_counter() - started)
            without, with_clips = statistics.median(times["without"]), statistics.median(times["with"])
            result = {"video": Path(video).name, "faces": done.faces, "tracks": done.tracks, "clips": done.clips,
                      "finalise_without_s": without, "finalise_with_s": with_clips,
                      "clip_step_ms": (with_clips - without) * 1e3, "ratio": with_clips / without,
                      "rule_ms": statistics.median(rule) * 1e3, "write_ms": statistics.median(write) * 1e3,
                      "times": times}
            results.append(result)
            print(f"{result['video']}: {done.faces} faces, {done.tracks} tracks, {done.clips} clips; finalise "
                  f"median {without * 1e3:.1f} ms without clips, {with_clips * 1e3:.1f} ms with "
                  f"(x{result['ratio']:.2f}, difference {result['clip_step_ms']:.1f} ms); alone: the rule "
                  f"{result['rule_ms']:.2f} ms, writing the clips file {result['write_ms']:.2f} ms", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps({"options": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
