"""Cost per crop of R-Net and O-Net against the number of crops in one forward pass.

The CPU defaults of ``WorkBudget`` come from this: a pass whose activations outgrow the
caches turns every elementwise layer (PReLU, pooling) memory-bound, so more work per pass
is not always cheaper per crop. Crops are random pixels (the networks' cost does not
depend on the values). Each setting is timed over the same total work,
alternating settings round by round; the minimum over rounds is reported (process CPU
time and wall time), since other load on a shared machine only ever adds time.

    .venv/bin/python benchmarks/detector_passes.py
    .venv/bin/python benchmarks/detector_passes.py --rounds 8 --output /tmp/passes.json
    RAYDETECT_MALLOC_TUNING=0 .venv/bin/python benchmarks/detector_passes.py   # glibc's default thresholds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from raydetect.core.allocator import retain_freed_memory
from raydetect.mtcnn.weights import load_networks


def _crop_runner(net, crops: torch.Tensor, per_pass: int):
    def run():
        for start in range(0, crops.shape[0], per_pass):
            net(crops[start : start + per_pass])
    return run


def _time(runners: dict, rounds: int) -> dict:
    best = {name: (float("inf"), float("inf")) for name in runners}
    with torch.inference_mode():
        for run in runners.values():
            run()  # warm-up: oneDNN builds its kernels per shape
        for _ in range(rounds):
            for name, run in runners.items():
                wall, cpu = time.perf_counter(), time.process_time()
                run()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rnet-passes", default="64,128,256,512,1024,4096")
    parser.add_argument("--onet-passes", default="16,32,64,128,256,1024")
    parser.add_argument("--output", type=Path, help="JSON with the figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    malloc_tuned = retain_freed_memory()  # as FaceDetector does on the CPU (RAYDETECT_MALLOC_TUNING=0: off)
    _, rnet, onet = (net.to(memory_format=torch.channels_last) for net in load_networks())
    generator = torch.Generator().manual_seed(0)

    rows = []
    for name, net, side, total, passes in (
        ("R-Net", rnet, 24, 4096, args.rnet_passes),
        ("O-Net", onet, 48, 1024, args.onet_passes),
    ):
        crops = (torch.rand(total, 3, side, side, generator=generator) * 2 - 1).contiguous(
            memory_format=torch.channels_last)
        sizes = [int(v) for v in passes.split(",")]
        best = _time({size: _crop_runner(net, crops, size) for size in sizes}, args.rounds)
        for size in sizes:
            wall, cpu = best[size]
            rows.append({"network": name, "per_pass": size, "unit": "us / crop",
                         "wall": wall / total * 1e6, "cpu": cpu / total * 1e6})

    allocator = "raised malloc thresholds" if malloc_tuned else "glibc's default malloc thresholds"
    print(f"torch threads {args.threads}, {allocator}, minimum over {args.rounds} rounds\n")
    print("| network | crops per pass | wall time | CPU time |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['network']} | {row['per_pass']} | {row['wall']:.0f} {row['unit']} | {row['cpu']:.0f} {row['unit']} |")
    if args.output:
        args.output.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds,
                                                "malloc_tuned": malloc_tuned, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
