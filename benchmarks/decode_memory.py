"""Memory of a decode worker of the detect job, measured as Ray Data measures it (RSS less shared pages).

    python benchmarks/decode_memory.py VIDEO [--chunk-mib 8 32 64] [--full-frames] [--max-side 320] [--ray-defaults]
    python benchmarks/decode_memory.py VIDEO --full-frames --chunk-mib 32 --copies 24 --frames-per-video 32 \
        [--default-arenas]

Runs the job's real probe, plan and decode stages (no detector) on a local Ray instance, once per chunk
size, with the decode stage wrapped so its worker samples /proc/self/statm every 10 ms while Ray Data
builds its output blocks too; prints the worker's memory before its first chunk and at its peak, and
the memory the job declares for the stage (``offline.job.decode_memory``) against Ray's rule
(declared >= 1.25 x peak, else it warns). Each decode task writes its figures to a file in a
temporary folder, read back here after the stage finished. With ``--copies N`` the stage decodes N inputs
(links to VIDEO), so that Ray reuses each worker for several tasks, and each worker's peaks are listed in the
order it ran its tasks: a worker whose peak grows from task to task keeps memory it has freed.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

PAGE = os.sysconf("SC_PAGE_SIZE")


def uss_bytes() -> int:
    """RSS less shared resident pages of this process (Ray Data's USS estimate on Linux)."""
    with open("/proc/self/statm") as statm:
        _, resident, shared = (int(x) for x in statm.read().split()[:3])
    return (resident - shared) * PAGE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video")
    parser.add_argument("--chunk-mib", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--full-frames", action="store_true", help="ship full frames, as --crops does")
    parser.add_argument("--max-side", type=int, default=None)
    parser.add_argument("--copies", type=int, default=1,
                        help="decode this many inputs (links to VIDEO), to see whether a reused worker grows")
    parser.add_argument("--frames-per-video", type=int, default=None, help="sample this many frames per input")
    parser.add_argument("--default-arenas", action="store_true",
                        help="leave glibc's malloc arenas as they are (the job before it limited them)")
    parser.add_argument("--ray-defaults", action="store_true",
                        help="leave Ray Data's block size as it is (the job before it set its own)")
    args = parser.parse_args()
    for flag, value in (("--copies", args.copies), ("--frames-per-video", args.frames_per_video)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")

    import ray

    from raydetect.offline import job
    from raydetect.offline.output import video_key
    from raydetect.offline.shards import ShardOptions
    from raydetect.offline.video import Sampling

    import json
    import tempfile

    report_dir = tempfile.mkdtemp(prefix="decode-memory-")
    videos = [args.video]
    if args.copies > 1:  # distinct names, one input each (the job keys inputs by path)
        links = tempfile.mkdtemp(prefix="decode-memory-inputs-")
        suffix = os.path.splitext(args.video)[1]
        videos = []
        for number in range(args.copies):
            videos.append(os.path.join(links, f"copy_{number:04d}{suffix}"))
            os.symlink(os.path.abspath(args.video), videos[-1])
    workers = {}

    class MeasuredDecode(job._DecodeStage):
        """The job's decode stage; a thread samples the worker's memory until the task's blocks are out."""

        def __call__(self, row: dict):
            peak = {"start": uss_bytes(), "peak": uss_bytes()}
            stop = threading.Event()

            def poll() -> None:
                while not stop.wait(0.01):
                    peak["peak"] = max(peak["peak"], uss_bytes())
                peak["pid"], peak["end"] = os.getpid(), time.time()
                path = os.path.join(report_dir, f"{os.getpid()}-{time.monotonic_ns()}.json")
                with open(path, "w") as out:
                    json.dump(peak, out)

            threading.Thread(target=poll, daemon=True).start()
            yield from super().__call__(row)
            time.sleep(0.5)  # the output block is built after the last row: keep sampling through it
            stop.set()

    if not args.default_arenas:
        job.limit_local_arenas()  # as `raydetect detect` does: the local instance's workers inherit it
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    print("| chunk MiB | frames shipped | block size | worker before first chunk, MiB | worker peak, MiB | declared, MiB "
          "| 1.25 x peak, MiB |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for mib in args.chunk_mib:
        sampling = Sampling() if args.frames_per_video is None else Sampling(count=args.frames_per_video)
        options = ShardOptions(shard_frames=10**9, chunk_bytes=mib << 20, keep_full_frames=args.full_frames,
                               max_side=args.max_side, sampling=sampling)
        items = [{"video": video, "label": "", "key": video_key(video)} for video in videos]
        dataset = ray.data.from_items(items).map_batches(job._PlanStage(options), batch_size=1,
                                                          batch_format="pyarrow")
        declared = job.decode_memory(options.chunk_bytes)
        dataset = dataset.repartition(target_num_rows_per_block=1)
        dataset = dataset.flat_map(MeasuredDecode(options), num_cpus=0.5, memory=declared,
                                   max_retries=job.WORKER_RETRIES)
        if not args.ray_defaults:
            job.configure_context(dataset.context, options.chunk_bytes)
        for name in os.listdir(report_dir):
            os.remove(os.path.join(report_dir, name))
        dataset.materialize()
        time.sleep(1.0)
        reports = [json.load(open(os.path.join(report_dir, n))) for n in os.listdir(report_dir)]
        start = min(r["start"] for r in reports) / 2**20
        peak = max(r["peak"] for r in reports) / 2**20
        shipped = "full" if args.full_frames else f"max side {args.max_side}"
        blocks = "Ray default" if args.ray_defaults else "one chunk"
        print(f"| {mib} | {shipped} | {blocks} | {start:.0f} | {peak:.0f} | {declared / 2**20:.0f} | {1.25 * peak:.0f} |")
        workers[mib] = {pid: [round(r["peak"] / 2**20) for r in sorted(reports, key=lambda r: r["end"])
                              if r["pid"] == pid] for pid in {r["pid"] for r in reports}}
    if args.copies > 1:
        print("\nEach decode worker's peak per task, in the order it ran them, MiB:")
        for mib, peaks in workers.items():
            for pid, values in peaks.items():
                print(f"- {mib} MiB chunks, worker {pid}: {', '.join(map(str, values))}")
    ray.shutdown()


if __name__ == "__main__":
    main()
