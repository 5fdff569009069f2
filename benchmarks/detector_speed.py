"""Detector speed against the peer MTCNN (facenet-pytorch 2.6.0, same weights), side by side in one run.

The issue's requirement 5: on this CPU, torch threads = 2, the same decoded frames for both,
  - ``street720``: frames of ``videos/street_crowd_1080p.mp4`` resized to 1280x720 (INTER_AREA), min_face_size 20;
  - ``crowd17``: ``crowds/ultralight_imgs_17.jpg`` (1600x898, ~300 faces), min_face_size 20.
Each round runs the peer first (a subprocess in its own environment: ``benchmarks/peer/run_peer.py``, one
untimed warm-up call, then every input once) and then ours in this process, so machine load drifts hit both
alike. Our detector is warmed up on every workload once before the first round (first-call costs such as
``torch.compile`` are not throughput). Times are wall-clock seconds of the detect call only (decoding and
process start excluded); medians over rounds; ratio = peer seconds per frame / ours (> 1: ours is faster).

    .venv/bin/python benchmarks/detector_speed.py                    # 3 rounds, markdown table on stdout
    .venv/bin/python benchmarks/detector_speed.py --rounds 5 --batch-sizes 1,4,11 --output /tmp/speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
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


def run_peer_round(peer_python: Path, specs: list[str], data_root: Path, threads: int) -> dict[str, dict]:
    """One peer pass over every input (after one warm-up call): {key: record with seconds and stats}."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "peer.jsonl"
        command = [str(peer_python), str(PEER_RUNNER), "--min-face-size", str(MIN_FACE_SIZE),
                   "--threads", str(threads), "--warmup", "1", "--repeat", "1",
                   "--data-root", str(data_root), "--output", str(output), *specs]
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
        with open(output) as handle:
            return {r["image"]: r for r in map(json.loads, handle)}


def time_ours(detector, frames: list, batch_size: int) -> tuple[float, list[dict]]:
    """Total detect seconds over the frames in calls of ``batch_size``; last_stats of each call."""
    total, stats = 0.0, []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        begin = time.perf_counter()
        detector.detect(chunk)
        total += time.perf_counter() - begin
        stats.append(dict(detector.last_stats))
    return total, stats


def _median(values):
    return statistics.median(values) if values else float("nan")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


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
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    if not args.peer_python.exists():
        parser.error(f"peer interpreter not found: {args.peer_python}")

    import torch
    from raydetect import FaceDetector

    torch.set_num_threads(args.threads)
    loads = workloads(args.video_every)
    frames = {w.name: media_inputs.load_all(w.specs, args.data_root) for w in loads}
    all_specs = [s for w in loads for s in w.specs]
    detector = FaceDetector(min_face_size=MIN_FACE_SIZE, device="cpu", precision=args.precision)
    for w in loads:  # warm-up: first-call costs (allocations, compilation) are not throughput
        for b in batch_sizes:
            time_ours(detector, [rgb for _, rgb in frames[w.name]], b)

    rounds = []
    for index in range(args.rounds):
        peer = run_peer_round(args.peer_python, all_specs, args.data_root, args.threads)
        entry = {"peer": {}, "ours": {}}
        for w in loads:
            keys = [item.key for item, _ in frames[w.name]]
            images = [rgb for _, rgb in frames[w.name]]
            entry["peer"][w.name] = {
                "seconds": sum(peer[k]["seconds"] for k in keys),
                "stats": [peer[k]["stats"] for k in keys],
                "version": peer[keys[0]]["peer"],
            }
            entry["ours"][w.name] = {}
            for b in batch_sizes:
                seconds, stats = time_ours(detector, images, b)
                entry["ours"][w.name][b] = {"seconds": seconds, "stats": stats}
        rounds.append(entry)
        summary = ", ".join(
            f"{w.name}: peer {entry['peer'][w.name]['seconds']:.2f} s, ours "
            + "/".join(f"{entry['ours'][w.name][b]['seconds']:.2f}" for b in batch_sizes) + " s"
            for w in loads)
        print(f"[round {index + 1}/{args.rounds}] {summary}", file=sys.stderr)

    command = " ".join(["python", "benchmarks/detector_speed.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"`{command}`  \n{_cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {args.threads}; "
          f"ours: torch {torch.__version__}; peer: {rounds[0]['peer'][loads[0].name]['version']}; "
          f"{args.rounds} rounds, medians\n")
    header = ("| workload | frames | peer ms/frame | peer R-Net / O-Net cand. per frame | faces peer / ours "
              + "".join(f"| ours ms/frame (batch {b}) | speed-up (batch {b}) " for b in batch_sizes)
              + "| ours R-Net / O-Net cand. per frame |")
    print(header)
    print("|---" * (5 + 2 * len(batch_sizes) + 1) + "|")
    results = {}
    for w in loads:
        n = len(frames[w.name])
        peer_ms = _median([r["peer"][w.name]["seconds"] for r in rounds]) / n * 1000
        peer_stats = rounds[0]["peer"][w.name]["stats"]
        peer_cand = (_median([s["rnet_candidates"] for s in peer_stats]),
                     _median([s["onet_candidates"] for s in peer_stats]))
        peer_faces = sum(s["faces"] for s in peer_stats)
        ours_b1 = rounds[0]["ours"][w.name][batch_sizes[0]]["stats"]
        per_frame = batch_sizes[0] == 1
        our_cand = (_median([s.get("rnet_candidates", float("nan")) for s in ours_b1]),
                    _median([s.get("onet_candidates", float("nan")) for s in ours_b1]))
        our_faces = sum(s.get("faces", 0) for s in ours_b1)
        cells = []
        results[w.name] = {"frames": n, "peer_ms_per_frame": peer_ms, "peer_candidates": peer_cand,
                           "our_candidates": our_cand, "faces_peer": peer_faces, "faces_ours": our_faces,
                           "ours": {}}
        for b in batch_sizes:
            ours_ms = _median([r["ours"][w.name][b]["seconds"] for r in rounds]) / n * 1000
            per_round = [r["peer"][w.name]["seconds"] / r["ours"][w.name][b]["seconds"] for r in rounds]
            results[w.name]["ours"][b] = {"ms_per_frame": ours_ms, "speedup": peer_ms / ours_ms,
                                          "speedup_per_round": per_round}
            cells.append(f"| {ours_ms:.0f} | {peer_ms / ours_ms:.2f}x ({min(per_round):.2f}-{max(per_round):.2f}) ")
        cand_note = "" if per_frame else " (per call)"
        print(f"| {w.name} | {n} | {peer_ms:.0f} | {peer_cand[0]:.0f} / {peer_cand[1]:.0f} | "
              f"{peer_faces} / {our_faces} " + "".join(cells)
              + f"| {our_cand[0]:.0f} / {our_cand[1]:.0f}{cand_note} |")
    print("\nspeed-up = peer ms/frame / ours ms/frame (median of rounds; in brackets the range of per-round ratios)")
    if args.output:
        args.output.write_text(json.dumps({"command": command, "results": results, "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
