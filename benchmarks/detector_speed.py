"""Detector speed against the peer MTCNN (facenet-pytorch 2.6.0, same weights), side by side in one run.

The issue's requirement 5: on this CPU, torch threads = 2, the same decoded frames for both,
  - ``street720``: frames of ``videos/street_crowd_1080p.mp4`` resized to 1280x720 (INTER_AREA), min_face_size 20;
  - ``crowd17``: ``crowds/ultralight_imgs_17.jpg`` (1600x898, ~300 faces), min_face_size 20.

The peer runs as a persistent worker in its own environment (``benchmarks/peer/run_peer.py --serve``, never a
project dependency); ours runs in this process. The two alternate group by group: the peer detects each frame
of a group (one call per frame, as it is used), then ours detects the same group once per batch size, so load
from other processes on this shared machine hits both within seconds of each other. Both are warmed up first
(first-call costs such as allocations or ``torch.compile`` are not throughput). Times are wall-clock seconds of
the detect calls only (decoding and process start excluded).

Reported per workload: ms per frame in wall time and in process CPU time (median over rounds of each round's
total; CPU time is steadier when other work shares the cores), the speed-up (peer time / our time, > 1: ours
is faster) as the median of the paired group ratios, with their range, and the R-Net / O-Net candidates per
frame (``FaceDetector.last_stats``; the peer's counted by forward hooks).

    .venv/bin/python benchmarks/detector_speed.py                    # 3 rounds, markdown table on stdout
    .venv/bin/python benchmarks/detector_speed.py --rounds 5 --batch-sizes 1,4 --output /tmp/speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media_inputs  # noqa: E402  (numpy + OpenCV only; shared with the peer environment)

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER_RUNNER = REPO_ROOT / "benchmarks" / "peer" / "run_peer.py"
DEFAULT_PEER_PYTHON = Path("/work/peer-venv/bin/python")
MIN_FACE_SIZE = 20


@dataclass(frozen=True)
class Workload:
    name: str
    specs: tuple[str, ...]


def workloads(video_every: int) -> list[Workload]:
    return [
        Workload("street720", (f"videos/street_crowd_1080p.mp4@every={video_every},resize=1280x720",)),
        Workload("crowd17", ("crowds/ultralight_imgs_17.jpg",)),
    ]


class PeerWorker:
    """The peer detector in its own interpreter, answering one input key per request."""

    def __init__(self, peer_python: Path, specs: list[str], data_root: Path, threads: int) -> None:
        command = [str(peer_python), str(PEER_RUNNER), "--serve", "--warmup", "1",
                   "--min-face-size", str(MIN_FACE_SIZE), "--threads", str(threads),
                   "--data-root", str(data_root), *specs]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self._read_line())
        self.keys = set(ready["keys"])
        self.version = ready["peer"]

    def _read_line(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"peer worker exited with status {self.process.wait()}")
        return line

    def detect(self, key: str) -> dict:
        self.process.stdin.write(key + "\n")
        self.process.stdin.flush()
        reply = json.loads(self._read_line())
        if "error" in reply:
            raise RuntimeError(f"peer worker: {reply['error']}")
        return reply

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def time_ours(detector, images: list, batch_size: int) -> tuple[float, float, list[dict]]:
    """Wall and process-CPU seconds of detect calls of ``batch_size`` images; last_stats of each call."""
    wall, cpu, stats = 0.0, 0.0, []
    for start in range(0, len(images), batch_size):
        begin, cpu_begin = time.perf_counter(), time.process_time()
        detector.detect(images[start:start + batch_size])
        wall += time.perf_counter() - begin
        cpu += time.process_time() - cpu_begin
        stats.append(dict(detector.last_stats))
    return wall, cpu, stats


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure(peer: PeerWorker, detector, frames: list, batch_sizes: list[int], group: int) -> dict:
    """One round over a workload: per group, the peer frame by frame, then ours per batch size.

    Returns wall and CPU seconds per side, stage counts, and per group the paired ratios peer / ours.
    """
    peer_side = {"seconds": 0.0, "cpu_seconds": 0.0, "stats": []}
    ours = {b: {"seconds": 0.0, "cpu_seconds": 0.0, "stats": [], "ratios": [], "cpu_ratios": []}
            for b in batch_sizes}
    for start in range(0, len(frames), group):
        chunk = frames[start:start + group]
        records = [peer.detect(item.key) for item, _ in chunk]
        chunk_wall = sum(r["seconds"] for r in records)
        chunk_cpu = sum(r["cpu_seconds"] for r in records)
        peer_side["seconds"] += chunk_wall
        peer_side["cpu_seconds"] += chunk_cpu
        peer_side["stats"].extend(r["stats"] for r in records)
        for b in batch_sizes:
            wall, cpu, stats = time_ours(detector, [rgb for _, rgb in chunk], b)
            side = ours[b]
            side["seconds"] += wall
            side["cpu_seconds"] += cpu
            side["stats"].extend(stats)
            side["ratios"].append(chunk_wall / wall)
            side["cpu_ratios"].append(chunk_cpu / cpu)
    return {"peer": peer_side, "ours": ours}


def summarize(n: int, rounds: list[dict], batch_sizes: list[int]) -> dict:
    """Medians over rounds: ms per frame (wall and CPU), paired speed-ups, candidates, faces."""
    def per_frame_ms(values):
        return statistics.median(values) / n * 1000

    peer_stats = rounds[0]["peer"]["stats"]
    summary = {
        "frames": n,
        "peer_ms_per_frame": per_frame_ms(r["peer"]["seconds"] for r in rounds),
        "peer_cpu_ms_per_frame": per_frame_ms(r["peer"]["cpu_seconds"] for r in rounds),
        "peer_rnet_onet_per_frame": [statistics.median(s["rnet_candidates"] for s in peer_stats),
                                     statistics.median(s["onet_candidates"] for s in peer_stats)],
        "faces_peer": sum(s["faces"] for s in peer_stats),
        "ours": {},
    }
    for b in batch_sizes:
        calls = rounds[0]["ours"][b]["stats"]
        ratios = [x for r in rounds for x in r["ours"][b]["ratios"]]
        cpu_ratios = [x for r in rounds for x in r["ours"][b]["cpu_ratios"]]
        summary["ours"][b] = {
            "ms_per_frame": per_frame_ms(r["ours"][b]["seconds"] for r in rounds),
            "cpu_ms_per_frame": per_frame_ms(r["ours"][b]["cpu_seconds"] for r in rounds),
            "speedup_median": statistics.median(ratios),
            "speedup_range": [min(ratios), max(ratios)],
            "cpu_speedup_median": statistics.median(cpu_ratios),
            "cpu_speedup_range": [min(cpu_ratios), max(cpu_ratios)],
            "rnet_onet_per_call": [statistics.median(s["rnet_candidates"] for s in calls),
                                   statistics.median(s["onet_candidates"] for s in calls)],
            "faces": sum(s["faces"] for s in calls),
        }
    return summary


def print_table(results: dict) -> None:
    print("| workload | frames | peer ms/frame (CPU ms) | ours ms/frame (CPU ms) | speed-up, wall: median (range) "
          "| speed-up, CPU time: median (range) | faces peer / ours "
          "| R-Net / O-Net candidates per frame, peer | same, ours |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in results.items():
        peer_cand = "{:.0f} / {:.0f}".format(*s["peer_rnet_onet_per_frame"])
        for b, o in s["ours"].items():
            ours_cand = "{:.0f} / {:.0f}".format(*o["rnet_onet_per_call"]) + ("" if b == 1 else f" per call of {b}")
            print(f"| {name}, ours batch {b} | {s['frames']} | {s['peer_ms_per_frame']:.0f} "
                  f"({s['peer_cpu_ms_per_frame']:.0f}) | {o['ms_per_frame']:.0f} ({o['cpu_ms_per_frame']:.0f}) | "
                  f"{o['speedup_median']:.2f}x ({o['speedup_range'][0]:.2f}-{o['speedup_range'][1]:.2f}) | "
                  f"{o['cpu_speedup_median']:.2f}x ({o['cpu_speedup_range'][0]:.2f}-{o['cpu_speedup_range'][1]:.2f}) | "
                  f"{s['faces_peer']} / {o['faces']} | {peer_cand} | {ours_cand} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--video-every", type=int, default=10, help="frame stride over the 105-frame video")
    parser.add_argument("--batch-sizes", default="1,4", help="images per FaceDetector.detect call for ours")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="FaceDetector precision: auto, float32, bfloat16")
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON)
    parser.add_argument("--data-root", type=Path, default=media_inputs.data_root_from_env())
    parser.add_argument("--output", type=Path, help="JSON with every round's figures")
    args = parser.parse_args(argv)
    batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",") if b})
    if not batch_sizes or batch_sizes[0] < 1:
        parser.error("--batch-sizes needs positive integers")
    if not args.peer_python.exists():
        parser.error(f"peer interpreter not found: {args.peer_python}")

    import torch
    from raydetect import FaceDetector

    torch.set_num_threads(args.threads)
    loads = workloads(args.video_every)
    frames = {w.name: media_inputs.load_all(w.specs, args.data_root) for w in loads}
    peer = PeerWorker(args.peer_python, [s for w in loads for s in w.specs], args.data_root, args.threads)
    detector = FaceDetector(min_face_size=MIN_FACE_SIZE, device="cpu", precision=args.precision)
    try:
        # A batch larger than the workload is the same call as the whole workload: measure it once.
        sizes = {w.name: sorted({min(b, len(frames[w.name])) for b in batch_sizes}) for w in loads}
        for w in loads:  # warm-up: first-call costs are not throughput
            for b in sizes[w.name]:
                time_ours(detector, [rgb for _, rgb in frames[w.name]], b)
        rounds: dict[str, list] = {w.name: [] for w in loads}
        for index in range(args.rounds):
            for w in loads:
                rounds[w.name].append(measure(peer, detector, frames[w.name], sizes[w.name], max(batch_sizes)))
            print(f"[round {index + 1}/{args.rounds}] " + ", ".join(
                f"{w.name}: peer {rounds[w.name][-1]['peer']['seconds']:.2f} s, ours "
                + "/".join(f"{rounds[w.name][-1]['ours'][b]['seconds']:.2f}" for b in sizes[w.name]) + " s"
                for w in loads), file=sys.stderr)
    finally:
        peer.close()

    results = {w.name: summarize(len(frames[w.name]), rounds[w.name], sizes[w.name]) for w in loads}
    command = " ".join([".venv/bin/python", "benchmarks/detector_speed.py",
                        *(argv if argv is not None else sys.argv[1:])])
    print(f"`{command}`\n\n{_cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {args.threads}, "
          f"ours: torch {torch.__version__}, precision {detector.precision}; peer: {peer.version}; "
          f"{args.rounds} rounds, load average at the end {os.getloadavg()[0]:.1f}\n")
    print_table(results)
    print("\nms/frame: median over rounds of the round's total; CPU ms: process CPU time (all threads), steadier "
          "than wall time when other work shares the cores. speed-up: peer seconds / our seconds over the same "
          f"frames, measured back to back per group of {max(batch_sizes)} frames; median and range over all "
          "groups of all rounds.")
    if args.output:
        args.output.write_text(json.dumps({"command": command, "results": results, "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
