"""Detector speed against the peer MTCNN (facenet-pytorch 2.6.0, same weights), side by side in one run.

On the CPU, torch threads = 2 (``--threads``), the same decoded frames for both:
  - ``street720``: frames of ``videos/street_crowd_1080p.mp4`` resized to 1280x720 (INTER_AREA), min_face_size 20;
  - ``crowd17``: ``crowds/ultralight_imgs_17.jpg`` (1600x898, ~300 faces), min_face_size 20.

The peer runs as a persistent worker in its own environment (``benchmarks/peer/run_peer.py --serve``, never a
project dependency); ours runs in this process. The two alternate group by group: the peer detects each frame
of a group (one call per frame, as it is used), then ours detects the same group once per batch size, so load
from other processes on this shared machine hits both within seconds of each other. Both are warmed up first
(first-call costs such as allocations or ``torch.compile`` are not throughput). Times are wall-clock seconds of
the detect calls only (decoding and process start excluded).

Reported per workload: ms per frame in wall time and in process CPU time (median over groups), the speed-up
(peer time / our time, > 1: ours is faster) as the median of the paired group ratios, with their range, and
the R-Net / O-Net candidates (``FaceDetector.last_stats``; the peer's counted by forward hooks). This machine is
shared: with ``--max-busy`` each group first waits (bounded by ``--max-wait``) until other work leaves the CPUs
mostly idle, and only groups that started quiet are summarised. Two torch processes contending for two cores
slow down far more than their share (OpenMP threads wait for each other), so loaded figures mislead.

    .venv/bin/python benchmarks/detector_speed.py                    # 3 rounds, markdown table on stdout
    .venv/bin/python benchmarks/detector_speed.py --rounds 5 --max-busy 0.3 --max-wait 120 --output /tmp/speed.json
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


def cpu_busy_fraction(window: float = 1.0) -> float:
    """Share of all CPUs busy over ``window`` seconds (from /proc/stat); call it while this process idles."""
    def sample():
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    total_0, idle_0 = sample()
    time.sleep(window)
    total_1, idle_1 = sample()
    return 1.0 - (idle_1 - idle_0) / max(total_1 - total_0, 1)


class QuietGate:
    """Waits (bounded) until other work leaves the CPUs mostly idle, so both detectors run on a quiet machine.

    ``max_busy`` None disables the gate. Each wait is bounded by ``max_wait`` seconds; after that the group is
    measured anyway, and the busy fraction seen last is recorded beside it.
    """

    def __init__(self, max_busy: float | None, max_wait: float) -> None:
        self.max_busy, self.max_wait = max_busy, max_wait

    def wait(self) -> float | None:
        if self.max_busy is None:
            return None
        deadline = time.monotonic() + self.max_wait
        busy = cpu_busy_fraction()
        while busy > self.max_busy and time.monotonic() < deadline:
            time.sleep(2.0)
            busy = cpu_busy_fraction()
        return busy


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


def measure(peer: PeerWorker, detector, frames: list, batch_sizes: list[int], group: int,
            gate: QuietGate) -> list[dict]:
    """One round over a workload, group by group: the peer frame by frame, then ours once per batch size.

    Returns one record per group: its frame count, the CPU busy share seen just before it (None without a
    gate), the peer's wall and CPU seconds and stage counts, and ours per batch size.
    """
    groups = []
    for start in range(0, len(frames), group):
        chunk = frames[start:start + group]
        busy = gate.wait()
        records = [peer.detect(item.key) for item, _ in chunk]
        entry = {
            "frames": len(chunk), "busy_before": busy,
            "peer": {"seconds": sum(r["seconds"] for r in records),
                     "cpu_seconds": sum(r["cpu_seconds"] for r in records),
                     "stats": [r["stats"] for r in records]},
            "ours": {},
        }
        for b in batch_sizes:
            wall, cpu, stats = time_ours(detector, [rgb for _, rgb in chunk], b)
            entry["ours"][b] = {"seconds": wall, "cpu_seconds": cpu, "stats": stats}
        groups.append(entry)
    return groups


def summarize(groups: list[dict], batch_sizes: list[int], max_busy: float | None) -> dict:
    """Medians over the groups measured while the machine was quiet (all groups when there is no gate).

    ms per frame: median over groups of group seconds / frames; speed-up: median over groups of the paired
    ratio peer seconds / our seconds, with the range. Falls back to every group, and says so, when no
    group was quiet.
    """
    quiet = [g for g in groups if max_busy is None or (g["busy_before"] is not None and g["busy_before"] <= max_busy)]
    used = quiet or groups

    def per_frame_ms(side_of, key):
        return statistics.median(side_of(g)[key] / g["frames"] for g in used) * 1000

    peer_stats = [s for g in used for s in g["peer"]["stats"]]
    summary = {
        "groups_used": len(used), "groups_measured": len(groups), "quiet_only": bool(quiet) and max_busy is not None,
        "peer_ms_per_frame": per_frame_ms(lambda g: g["peer"], "seconds"),
        "peer_cpu_ms_per_frame": per_frame_ms(lambda g: g["peer"], "cpu_seconds"),
        "peer_rnet_onet_per_frame": [statistics.median(s["rnet_candidates"] for s in peer_stats),
                                     statistics.median(s["onet_candidates"] for s in peer_stats)],
        "peer_faces_per_frame": statistics.median(s["faces"] for s in peer_stats),
        "busy_before_groups": [g["busy_before"] for g in groups if g["busy_before"] is not None],
        "ours": {},
    }
    for b in batch_sizes:
        calls = [s for g in used for s in g["ours"][b]["stats"]]
        wall = [g["peer"]["seconds"] / g["ours"][b]["seconds"] for g in used]
        cpu = [g["peer"]["cpu_seconds"] / g["ours"][b]["cpu_seconds"] for g in used]
        summary["ours"][b] = {
            "ms_per_frame": per_frame_ms(lambda g: g["ours"][b], "seconds"),
            "cpu_ms_per_frame": per_frame_ms(lambda g: g["ours"][b], "cpu_seconds"),
            "speedup_median": statistics.median(wall), "speedup_range": [min(wall), max(wall)],
            "cpu_speedup_median": statistics.median(cpu), "cpu_speedup_range": [min(cpu), max(cpu)],
            "rnet_onet_per_call": [statistics.median(s["rnet_candidates"] for s in calls),
                                   statistics.median(s["onet_candidates"] for s in calls)],
            "faces_per_call": statistics.median(s["faces"] for s in calls),
        }
    return summary


def print_table(results: dict) -> None:
    print("| workload | groups used | peer ms/frame (CPU ms) | ours ms/frame (CPU ms) | speed-up, wall: median (range) "
          "| speed-up, CPU time: median (range) | R-Net / O-Net candidates, peer per frame | same, ours per call |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in results.items():
        peer_cand = "{:.0f} / {:.0f}".format(*s["peer_rnet_onet_per_frame"])
        used = f"{s['groups_used']} of {s['groups_measured']}" + (" quiet" if s["quiet_only"] else "")
        if s["busy_before_groups"] and not s["quiet_only"]:
            used += " (none quiet)"
        for b, o in s["ours"].items():
            ours_cand = "{:.0f} / {:.0f}".format(*o["rnet_onet_per_call"]) + ("" if b == 1 else f" ({b} frames)")
            print(f"| {name}, ours batch {b} | {used} | {s['peer_ms_per_frame']:.0f} "
                  f"({s['peer_cpu_ms_per_frame']:.0f}) | {o['ms_per_frame']:.0f} ({o['cpu_ms_per_frame']:.0f}) | "
                  f"{o['speedup_median']:.2f}x ({o['speedup_range'][0]:.2f}-{o['speedup_range'][1]:.2f}) | "
                  f"{o['cpu_speedup_median']:.2f}x ({o['cpu_speedup_range'][0]:.2f}-{o['cpu_speedup_range'][1]:.2f}) | "
                  f"{peer_cand} | {ours_cand} |")


def _busy_note(results: dict) -> str:
    busy = [b for s in results.values() for b in s["busy_before_groups"]]
    if not busy:
        return ""
    return (f"; CPUs busy with other work just before each group: median {statistics.median(busy):.0%}, "
            f"max {max(busy):.0%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--video-every", type=int, default=10, help="frame stride over the 105-frame video")
    parser.add_argument("--batch-sizes", default="1,4", help="images per FaceDetector.detect call for ours")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="FaceDetector precision: auto, float32, bfloat16")
    parser.add_argument("--compile", action="store_true", help="ours with FaceDetector(compile=True)")
    parser.add_argument("--cpu-streams", type=int, default=2,
                        help="ours with FaceDetector(cpu_streams=N) (default 2, the detector's; 1: one thread's work)")
    parser.add_argument("--peer-python", type=Path, default=media_inputs.peer_python_from_env(),
                        help=f"the peer environment's python (default: ${media_inputs.PEER_PYTHON_ENV})")
    parser.add_argument("--data-root", type=Path, default=media_inputs.data_root_from_env())
    parser.add_argument("--output", type=Path, help="JSON with every round's figures")
    parser.add_argument("--max-busy", type=float, default=None,
                        help="before each group wait until other work keeps under this share of the CPUs busy "
                             "(e.g. 0.2; sampled over 1 s); default: no waiting")
    parser.add_argument("--max-wait", type=float, default=120.0, help="seconds to wait at most per group")
    args = parser.parse_args(argv)
    gate = QuietGate(args.max_busy, args.max_wait)
    batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",") if b})
    if not batch_sizes or batch_sizes[0] < 1:
        parser.error("--batch-sizes needs positive integers")
    media_inputs.check_peer_python(parser, args.peer_python)

    import torch
    from raydetect import FaceDetector

    torch.set_num_threads(args.threads)
    loads = workloads(args.video_every)
    frames = {w.name: media_inputs.load_all(w.specs, args.data_root) for w in loads}
    peer = PeerWorker(args.peer_python, [s for w in loads for s in w.specs], args.data_root, args.threads)
    detector = FaceDetector(min_face_size=MIN_FACE_SIZE, device="cpu", precision=args.precision,
                            compile=args.compile, cpu_streams=args.cpu_streams)
    try:
        # A batch larger than the workload is the same call as the whole workload: measure it once.
        sizes = {w.name: sorted({min(b, len(frames[w.name])) for b in batch_sizes}) for w in loads}
        warm_up_started = time.perf_counter()
        for w in loads:  # warm-up: first-call costs (allocations, torch.compile) are not throughput
            for b in sizes[w.name]:
                time_ours(detector, [rgb for _, rgb in frames[w.name]], b)
        warm_up_seconds = time.perf_counter() - warm_up_started
        groups: dict[str, list] = {w.name: [] for w in loads}
        for index in range(args.rounds):
            for w in loads:
                measured = measure(peer, detector, frames[w.name], sizes[w.name], max(batch_sizes), gate)
                groups[w.name].extend(measured)
                busy = [g["busy_before"] for g in measured if g["busy_before"] is not None]
                print(f"[round {index + 1}/{args.rounds}] {w.name}: peer "
                      f"{sum(g['peer']['seconds'] for g in measured):.2f} s, ours "
                      + "/".join(f"{sum(g['ours'][b]['seconds'] for g in measured):.2f}" for b in sizes[w.name])
                      + " s" + (f", busy before groups {', '.join(f'{x:.0%}' for x in busy)}" if busy else ""),
                      file=sys.stderr, flush=True)
    finally:
        peer.close()

    results = {w.name: dict(summarize(groups[w.name], sizes[w.name], args.max_busy), frames=len(frames[w.name]))
               for w in loads}
    wait_policy = os.environ.get("OMP_WAIT_POLICY")
    command = " ".join([*([f"OMP_WAIT_POLICY={wait_policy}"] if wait_policy else []), ".venv/bin/python",
                        "benchmarks/detector_speed.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"`{command}`\n\n{_cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {args.threads}, "
          f"ours: torch {torch.__version__}, precision {detector.precision}, "
          f"{'compiled (warm-up incl. compilation ' + format(warm_up_seconds, '.0f') + ' s)' if detector.compiled else 'eager'}, "
          f"cpu_streams {1 if detector.compiled else detector.cpu_streams}; "
          f"peer: {peer.version}; "
          f"{args.rounds} rounds, load average at the end {os.getloadavg()[0]:.1f}" + _busy_note(results) + "\n")
    print_table(results)
    print(f"\nEach workload runs in groups of up to {max(batch_sizes)} frames: the peer frame by frame, then ours on "
          "the same frames, back to back. ms/frame: median over the groups used; CPU ms: process CPU time, all "
          "threads. speed-up: peer seconds / our seconds per group, median and range. With --max-busy only the "
          "groups that started on a quiet machine are used (when there is any).")
    if args.output:
        args.output.write_text(json.dumps({"command": command, "compiled": detector.compiled,
                                           "warm_up_seconds": warm_up_seconds, "results": results, "groups": groups},
                                          indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
