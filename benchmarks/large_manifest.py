"""Large manifests on the driver: memory, time to the first detection, and the re-run skip check.

    python benchmarks/large_manifest.py VIDEO [VIDEO ...] --rows 1000 10000 100000 [--workdir /tmp/manifests]
                                        [--limit-s SECONDS]

For each row count, writes a CSV manifest of that many distinct paths (symbolic links to the given
videos, in turn) and, in a fresh Python process each (so peaks do not mix):

- ``job``: lists the manifest and starts the real detect job on a local Ray instance (``--every 5``,
  ``--max-side 320``) with the driver's per-input bookkeeping of ``run_job``, stopping at the first
  chunk that reports detected frames; prints the seconds to that point and the driver process's
  peak resident memory (``ru_maxrss``);
- ``skip``: fills DEST/videos with an ``ok`` row per input, in part files of 1,000 rows (as a long
  run writes them), and times the re-run's skip check: reading what is done and choosing what is
  left (``JobOutput.finished_videos`` and the filter of ``run_job``), with the peak memory again.

Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def make_manifest(videos: list[str], rows: int, workdir: str) -> str:
    links = os.path.join(workdir, f"links-{rows}")
    os.makedirs(links, exist_ok=True)
    paths = []
    for i in range(rows):
        video = videos[i % len(videos)]
        path = os.path.join(links, f"v{i:06d}{os.path.splitext(video)[1]}")
        if not os.path.lexists(path):
            os.symlink(os.path.abspath(video), path)
        paths.append(path)
    manifest = os.path.join(workdir, f"manifest-{rows}.csv")
    with open(manifest, "w") as out:
        out.write("path,label\n")
        out.writelines(f"{p},{'FAKE' if i % 2 else 'REAL'}\n" for i, p in enumerate(paths))
    return manifest


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job_until_first_detection(manifest: str, dest: str, limit_s: float | None = None) -> dict:
    """``limit_s``: stop waiting after this long (the figures then say how far the job got)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from raydetect.offline.chunk_detection import DetectionOptions
    from raydetect.offline.job import JobSpec, Resources, _VideoState, build_dataset
    from raydetect.offline.shards import ShardOptions
    from raydetect.offline.sources import list_inputs
    from raydetect.offline.video import Sampling

    from raydetect.offline.job import limit_local_arenas

    limit_local_arenas()  # as `raydetect detect` does before it starts a local instance
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    base = peak_mib()
    started = time.perf_counter()
    inputs = list_inputs([manifest])
    listed = time.perf_counter() - started
    spec = JobSpec(sources=[manifest], output=dest, detection=DetectionOptions(max_side=320),
                   shards=ShardOptions(sampling=Sampling(every=5)), resources=Resources(actors=1, cpus_per_actor=1))
    states = {item.video: _VideoState(item) for item in inputs}  # what run_job keeps per input
    first = {}

    def consume() -> None:
        for record in build_dataset(spec, inputs, ray).iter_rows():
            states[record["video"]].add(record)
            if record["frames_detected"] > 0:
                first["s"] = time.perf_counter() - started
                return

    import threading

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(limit_s)
    return {"rows": len(inputs), "list_s": listed, "first_detection_s": first.get("s"), "peak_mib": peak_mib(),
            "after_ray_init_mib": base, "waited_s": time.perf_counter() - started}


def skip_check(rows: int, dest: str) -> dict:
    import pyarrow as pa

    from raydetect.offline.output import VIDEO_SCHEMA, VIDEOS, JobOutput
    from raydetect.offline.sources import VideoInput

    output = JobOutput(dest)
    inputs = [VideoInput(f"/data/videos/v{i:06d}.mp4", "REAL") for i in range(rows)]
    for part, start in enumerate(range(0, rows, 1000)):
        batch = [{"video": item.video, "label": item.label, "status": "ok", "frames_decoded": 300,
                  "frames_detected": 60, "faces": 60, "seconds": 1.0, "frame_count": 300, "fps": 30.0,
                  "width": 1920, "height": 1080, "shards": 1, "io_retries": 0} for item in inputs[start:start + 1000]]
        output.write_table(pa.Table.from_pylist(batch, schema=VIDEO_SCHEMA), VIDEOS, f"part-bench-{part:05d}.parquet")
    base = peak_mib()
    started = time.perf_counter()
    finished = output.finished_videos()
    todo = [item for item in inputs if finished.get(item.video) != "ok"]
    seconds = time.perf_counter() - started
    assert not todo
    return {"rows": rows, "skip_check_s": seconds, "peak_mib": peak_mib(), "before_mib": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="*")
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--workdir", default="/tmp/raydetect-manifests")
    parser.add_argument("--limit-s", type=float, default=None,
                        help="stop waiting for the first detection after this many seconds")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "ARG", "DEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, arg, dest = args.child
        result = run_job_until_first_detection(arg, dest, args.limit_s) if kind == "job" else skip_check(int(arg), dest)
        print(json.dumps(result), flush=True)
        os._exit(0)  # a job stopped midway: do not wait for its threads
    os.makedirs(args.workdir, exist_ok=True)
    print("| manifest rows | listing, s | time to first detection, s | driver peak RSS, MiB | "
          "skip check over as many finished videos, s | its peak RSS, MiB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for rows in args.rows:
        manifest = make_manifest(args.videos, rows, args.workdir)
        figures = {}
        for kind, arg in (("job", manifest), ("skip", str(rows))):
            dest = os.path.join(args.workdir, f"dest-{kind}-{rows}-{time.time_ns()}")
            limit = ["--limit-s", str(args.limit_s)] if args.limit_s else []
            done = subprocess.run([sys.executable, __file__, *limit, "--child", kind, arg, dest], capture_output=True,
                                  text=True)
            if done.returncode != 0:
                sys.exit(f"{kind} with {rows} rows failed:\n{done.stderr[-3000:]}")
            figures[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        job, skip = figures["job"], figures["skip"]
        first = job["first_detection_s"]
        first = f"{first:.1f}" if first is not None else f"none within {job['waited_s']:.0f}"
        print(f"| {rows:,} | {job['list_s']:.2f} | {first} | {job['peak_mib']:.0f} | "
              f"{skip['skip_check_s']:.2f} | {skip['peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
