"""Greedy NMS on the CPU: the compiled grid loop against the whole-tensor solution, on the cascade's own calls.

One float32 detect call per input records every ``nms`` call the cascade makes (within each pyramid level,
across levels, after R-Net, the final one), with its boxes, scores and groups. Each recorded call is then
timed on both paths, alternating within every round, after checking that both keep the same boxes; reported
are the medians in ms and grid / tensor, per call and in total per input. The inputs are a 1280x720 frame of
the shared street video and the shared crowd photo (about 300 faces) unless ``--inputs`` names others, with
min_face_size 20 as in ``detector_speed.py``. Torch threads as the detector's callers have them (``--threads``,
default 2).

    PYTHONPATH=. .venv/bin/python benchmarks/nms_speed.py --rounds 21 --output nms.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media_inputs  # noqa: E402
import alternating  # noqa: E402

# A 1280x720 frame of the street video and the crowd photo; --inputs takes other media specs (media_inputs.py).
INPUTS = ["videos/street_crowd_1080p.mp4@frames=0,resize=1280x720", "crowds/ultralight_imgs_17.jpg"]
STAGES = ["within levels", "across levels", "after R-Net", "final"]  # the cascade's calls, in order


def recorded_calls(detector, image) -> list[dict]:
    """The cascade's nms calls of one detect call: (stage, args, kwargs), in order."""
    from raydetect.mtcnn import cascade

    calls = []
    real_nms = cascade.nms

    def recording_nms(*args, **kwargs):
        calls.append({"stage": STAGES[len(calls)], "args": args, "kwargs": kwargs})
        return real_nms(*args, **kwargs)

    cascade.nms = recording_nms
    try:
        detector.detect([image])
    finally:
        cascade.nms = real_nms
    return calls


def time_call(call: dict, rounds: int) -> dict:
    """Median ms of one recorded call on the grid path and on the tensor path, alternating."""
    from raydetect.mtcnn import nms as nms_module

    compiled_check = nms_module._runs_compiled

    def on_path(grid: bool):
        def run():
            nms_module._runs_compiled = compiled_check if grid else (lambda *args: False)
            try:
                return nms_module.nms(*call["args"], **call["kwargs"])
            finally:
                nms_module._runs_compiled = compiled_check
        return run

    grid, tensor = on_path(True), on_path(False)
    kept = grid()
    if not compiled_check(call["args"][0].float(), call["args"][2], call["kwargs"].get("kind", "union")):
        raise AssertionError(f"{call['stage']}: this call does not take the compiled loop")
    if not torch.equal(kept, tensor()):
        raise AssertionError(f"{call['stage']}: the grid and tensor paths keep different boxes")
    grid_ms, tensor_ms = alternating.alternate(rounds, grid, tensor)
    return {"stage": call["stage"], "boxes": int(call["args"][0].shape[0]), "kept": int(kept.shape[0]),
            "grid_ms": grid_ms, "tensor_ms": tensor_ms, "grid_over_tensor": round(grid_ms / tensor_ms, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    alternating.add_arguments(parser, rounds=21, per="call", inputs=INPUTS)
    args = alternating.parse_arguments(parser, argv)
    from raydetect import FaceDetector
    from raydetect.mtcnn import nms_grid

    if not nms_grid.AVAILABLE:
        parser.error("numba is not importable here: there is no compiled NMS to time")
    torch.set_num_threads(args.threads)
    detector = FaceDetector(min_face_size=20, device="cpu", precision="float32")
    rows = []
    for spec in args.inputs:
        for _, image in media_inputs.load_all([spec], args.data_root):
            rows.extend({"input": spec, **time_call(call, args.rounds)} for call in recorded_calls(detector, image))
    print(f"torch threads {args.threads}, {args.rounds} alternating rounds: median ms per call")
    print("| input | NMS | boxes | kept | grid | tensor | grid / tensor |\n|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['input']} | {row['stage']} | {row['boxes']:,} | {row['kept']:,} | {row['grid_ms']:.2f} | "
              f"{row['tensor_ms']:.2f} | {row['grid_over_tensor']:.2f} |")
    for spec in args.inputs:
        grid, tensor = (sum(row[side] for row in rows if row["input"] == spec) for side in ("grid_ms", "tensor_ms"))
        print(f"| {spec} | all | | | {grid:.2f} | {tensor:.2f} | {grid / tensor:.2f} |")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"rounds": args.rounds, "threads": args.threads, "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
