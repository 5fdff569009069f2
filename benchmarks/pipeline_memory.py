"""Streaming check: peak memory of the offline job on 1x and Nx the same input.

Each size runs in a fresh process that starts its own local Ray instance, runs one job, and samples
the memory of its whole process tree (driver, GCS, raylet, decode workers, detector actors) every
0.2 s: the sum of PSS (proportional set size, so the object store's shared pages count once) and
the largest single RSS. Nx is N copies of the input list under distinct names (symbolic links), so
every copy is really decoded and detected. If frames were held in memory anywhere, the peak would
grow with N; streaming keeps it flat.

    python benchmarks/pipeline_memory.py --videos ../shared/data/videos --copies 8 --max-side 160 \
        --min-face-size 40 --crops --output memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB, (0, 0) if it is gone."""
    values = {"Pss:": 0, "Rss:": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                key = line.split(maxsplit=1)[0]
                if key in values:
                    values[key] = int(line.split()[1])
    except OSError:
        pass
    return values["Pss:"], values["Rss:"]


class Sampler(threading.Thread):
    def __init__(self, period: float = 0.2):
        super().__init__(daemon=True)
        self.period = period
        self.peak_pss = self.peak_rss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            samples = [memory_kib(pid) for pid in tree(os.getpid())]
            self.peak_pss = max(self.peak_pss, sum(p for p, _ in samples))
            self.peak_rss = max(self.peak_rss, max((r for _, r in samples), default=0))
            time.sleep(self.period)


def child(args: argparse.Namespace) -> None:
    """Run one job on ``args.sources`` and print a JSON line with its peaks."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.path.insert(0, str(ROOT))
    import ray
    from ray.data import DataContext

    from raydetect.offline.chunk_detection import DetectionOptions
    from raydetect.offline.job import JobSpec, run_job
    from raydetect.offline.shards import ShardOptions
    from raydetect.offline.video import Sampling

    sampler = Sampler()
    sampler.start()
    from raydetect.offline.job import limit_local_arenas

    limit_local_arenas()  # as `raydetect detect` does before it starts a local instance
    ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as dest:
        spec = JobSpec(
            sources=[args.sources], output=dest,
            detection=DetectionOptions(min_face_size=args.min_face_size, max_side=args.max_side, crops=args.crops),
            shards=ShardOptions(sampling=Sampling(every=args.every)),
        )
        started = time.perf_counter()
        summary = run_job(spec)
        seconds = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    ray.shutdown()
    print(json.dumps({
        "inputs": summary.inputs, "failed": summary.failed, "frames": summary.frames_detected,
        "faces": summary.faces, "seconds": round(seconds, 1),
        "peak_pss_mib": round(sampler.peak_pss / 1024), "peak_rss_mib": round(sampler.peak_rss / 1024),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", default="../shared/data/videos")
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--max-side", type=int, default=160)
    parser.add_argument("--min-face-size", type=float, default=40)
    parser.add_argument("--crops", action="store_true", help="ship full-resolution frames (more bytes in flight)")
    parser.add_argument("--output", help="JSON with both runs' figures (for benchmarks/plot_results.py)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sources", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    sys.path.insert(0, str(ROOT))
    from raydetect.offline.sources import list_inputs

    videos = [Path(item.video).resolve() for item in list_inputs([args.videos])]
    results = {}
    for copies in (1, args.copies):
        with tempfile.TemporaryDirectory() as folder:
            for copy in range(copies):
                for video in videos:
                    os.symlink(video, Path(folder) / f"copy{copy:02d}_{video.name}")
            command = [sys.executable, __file__, "--child", "--sources", folder, "--every", str(args.every),
                       "--max-side", str(args.max_side), "--min-face-size", str(args.min_face_size)]
            if args.crops:
                command.append("--crops")
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[copies] = json.loads(output.strip().splitlines()[-1])
            print(f"{copies}x: {results[copies]}", flush=True)
    small, large = results[1], results[args.copies]
    print(f"peak PSS {args.copies}x / 1x = {large['peak_pss_mib'] / small['peak_pss_mib']:.2f}; "
          f"largest process RSS {args.copies}x / 1x = {large['peak_rss_mib'] / small['peak_rss_mib']:.2f}")
    if args.output:
        Path(args.output).write_text(json.dumps({
            "command": " ".join(["python", "benchmarks/pipeline_memory.py", *sys.argv[1:]]),
            "videos": [str(v) for v in videos], "every": args.every, "max_side": args.max_side,
            "min_face_size": args.min_face_size, "crops": args.crops,
            "runs": [dict(results[copies], copies=copies) for copies in sorted(results)],
        }, indent=1))


if __name__ == "__main__":
    main()
