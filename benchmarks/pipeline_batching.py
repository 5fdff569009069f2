"""Batch sizes and memory of the pipeline's detection stage on a mix of crowd and empty frames.

A synthetic "video" alternates runs of empty frames (photos without people, shared negatives/)
and crowd frames (shared crowds/, several hundred faces in ultralight_imgs_17.jpg), all resized to
one frame size. It is cut into chunks as the decode stage would and fed through the stage an actor
hosts (:class:`raydetect.offline.chunk_detection.ChunkDetector`), once per work budget, each budget in a
fresh process so its peak RSS is its own. Per chunk it records the micro-batches the detector's
controller chose (from its BatchRecords): frames per forward pass and R-Net / O-Net candidates per
pass.

    python benchmarks/pipeline_batching.py --shared ../shared/data --chunk 8 --size 1280x720 --output batching.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CROWDS = ["ultralight_imgs_17.jpg", "retinaface_bubbliiiing_street.jpg", "ultralight_imgs_25.jpg",
          "ultralight_imgs_1.jpg"]
EMPTY = ["aero1.jpg", "aero3.jpg", "board.jpg", "apple.jpg"]
BUDGETS = {
    # The CPU default of raydetect.core.batching.WorkBudget: passes sized for the caches, so 720p frames with
    # hundreds of candidates each run one at a time.
    "adaptive (default budget)": None,
    # Room for several frames per pass (the CPU default before passes were sized for the caches): shows the
    # controller shrinking micro-batches after crowded frames and growing them back.
    "adaptive (roomy budget)": {"pnet_pixels": 8_000_000, "rnet_crops": 4096, "onet_crops": 1024, "max_images": 64},
    # Budgets so large that no pass is ever split: every chunk runs as one batch, whatever it holds.
    "fixed (whole chunk per pass)": {"pnet_pixels": 10**12, "rnet_crops": 10**9, "onet_crops": 10**9,
                                     "max_images": 10**6},
    # A tight budget: small passes, the lowest memory.
    "tight budget": {"pnet_pixels": 2_000_000, "rnet_crops": 512, "onet_crops": 128, "max_images": 64},
}


def frames(shared: Path, size: tuple[int, int], pattern: str):
    """(kind, image) per frame: 'e' = an empty frame, 'c' = a crowd frame, in ``pattern`` order."""
    import cv2

    def load(folder, name):
        image = cv2.imread(str(shared / folder / name), cv2.IMREAD_COLOR)
        return cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)

    crowd = [load("crowds", n) for n in CROWDS]
    empty = [load("negatives", n) for n in EMPTY]
    out, counters = [], {"c": 0, "e": 0}
    for kind in pattern:
        pool = crowd if kind == "c" else empty
        out.append((kind, pool[counters[kind] % len(pool)]))
        counters[kind] += 1
    return out


def child(args) -> None:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from raydetect.offline.chunk_detection import ChunkDetector, DetectionOptions

    budget = json.loads(args.budget) if args.budget != "null" else None
    width, height = (int(v) for v in args.size.split("x"))
    sequence = frames(Path(args.shared), (width, height), args.pattern)
    with tempfile.TemporaryDirectory() as dest:
        stage = ChunkDetector(DetectionOptions(min_face_size=args.min_face_size, budget=budget,
                                               torch_threads=args.threads), dest)
        stage.detector.detect([sequence[0][1]])  # warm-up
        stage.detector.controller.records.clear()
        baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        chunks, started = [], time.perf_counter()
        for number, first in enumerate(range(0, len(sequence), args.chunk)):
            part = sequence[first:first + args.chunk]
            images = np.stack([image for _, image in part])
            record = {
                "video": "mix", "label": "", "key": "mix", "error": "", "shard_index": 0, "num_shards": 1,
                "shard_number": 0, "chunk_index": number, "last_chunk": False, "frames_read": len(part),
                "frame_count": len(sequence), "fps": 25.0, "width": width, "height": height,
                "frame_height": height, "frame_width": width, "scale_x": 1.0, "scale_y": 1.0,
                "frame_indices": np.arange(first, first + len(part), dtype=np.int64).tobytes(),
                "detect": np.ones(len(part), np.uint8).tobytes(), "lookahead": False,
                "pixels": images.tobytes(), "seconds": 0.0,
            }
            before = len(stage.detector.controller.records)
            chunk_started = time.perf_counter()
            result = stage.process(record)
            passes = list(stage.detector.controller.records)[before:]
            chunks.append({
                "kinds": "".join(kind for kind, _ in part), "faces": result["faces"],
                "seconds": round(time.perf_counter() - chunk_started, 2),
                "passes": [r.images for r in passes],
                "rnet": max(r.rnet_candidates for r in passes), "onet": max(r.onet_candidates for r in passes),
            })
        seconds = time.perf_counter() - started
    print(json.dumps({
        "seconds": round(seconds, 1), "faces": sum(c["faces"] for c in chunks), "chunks": chunks,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_mib": round(baseline_rss / 1024),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--chunk", type=int, default=8, help="frames per chunk (one actor call)")
    parser.add_argument("--size", default="1280x720", help="frame size WxH")
    parser.add_argument("--pattern", default="e" * 16 + "c" * 8 + "e" * 16 + "cecececc",
                        help="frame kinds in order: e = empty, c = crowd")
    parser.add_argument("--min-face-size", type=float, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", help="JSON with every budget's chunks (for benchmarks/plot_results.py)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--budget", default="null", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    print(f"frames {args.size}, chunks of {args.chunk}, pattern {args.pattern}, min_face_size {args.min_face_size:g}")
    results = {}
    for name, budget in BUDGETS.items():
        command = [sys.executable, __file__, "--child", "--budget", json.dumps(budget), "--shared", args.shared,
                   "--chunk", str(args.chunk), "--size", args.size, "--pattern", args.pattern,
                   "--min-face-size", str(args.min_face_size), "--threads", str(args.threads)]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        results[name] = result
        print(f"\n{name}: {result['seconds']} s, {result['faces']} faces, peak RSS {result['peak_rss_mib']} MiB "
              f"(after loading: {result['rss_before_mib']} MiB)")
        print("  chunk     faces  s      frames per pass       R-Net / O-Net candidates of the largest micro-batch")
        for chunk in result["chunks"]:
            print(f"  {chunk['kinds']:<9} {chunk['faces']:>5}  {chunk['seconds']:<6} {str(chunk['passes']):<21} "
                  f"{chunk['rnet']} / {chunk['onet']}")
    faces = {r["faces"] for r in results.values()}
    print(f"\nsame faces under every budget: {len(faces) == 1}")
    for name, result in results.items():
        sizes = [p for c in result["chunks"] for p in c["passes"]]
        print(f"{name}: {len(sizes)} passes, frames per pass median {statistics.median(sizes)} "
              f"(min {min(sizes)}, max {max(sizes)}), largest micro-batch R-Net {max(c['rnet'] for c in result['chunks'])}, "
              f"O-Net {max(c['onet'] for c in result['chunks'])} candidates, peak RSS {result['peak_rss_mib']} MiB, "
              f"{result['seconds']} s")
    if args.output:
        Path(args.output).write_text(json.dumps({
            "command": " ".join(["python", "benchmarks/pipeline_batching.py", *sys.argv[1:]]),
            "size": args.size, "chunk": args.chunk, "pattern": args.pattern, "min_face_size": args.min_face_size,
            "threads": args.threads, "budgets": {name: BUDGETS[name] for name in results}, "results": results,
        }, indent=1))


if __name__ == "__main__":
    main()
