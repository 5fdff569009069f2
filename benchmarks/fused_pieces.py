"""Fused layers in cache-sized pieces against whole layers: whole detect calls, alternating.

``raydetect.mtcnn.layers.conv_prelu_max_pool`` runs a convolution and its fused PReLU-pooling pass in pieces of
at most ``layers.PIECE_BYTES`` of convolution output. This times float32 detect calls with each piece size given
(``--piece-mib``) against one piece per layer (the layers as they ran before), in the same process, the two
alternating round by round, after checking that both give the same faces, scores and landmarks. The inputs are
frames of the shared street video at 1280x720 and the shared crowd photo unless ``--inputs`` names others,
min_face_size 20 as in ``detector_speed.py``; torch threads and CPU streams as a detector's caller has them.

    PYTHONPATH=. .venv/bin/python benchmarks/fused_pieces.py --rounds 15 --output pieces.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media_inputs  # noqa: E402
import alternating  # noqa: E402

INPUTS = ["videos/street_crowd_1080p.mp4@every=30,resize=1280x720", "crowds/ultralight_imgs_17.jpg"]
ONE_PIECE = 2**62  # bytes: no layer is cut


def detect_all(detector, images: list[np.ndarray], piece_bytes: int) -> list:
    """Detections of each image, one detect call per image, with ``piece_bytes`` in force."""
    from raydetect.mtcnn import layers

    default = layers.PIECE_BYTES
    layers.PIECE_BYTES = piece_bytes
    try:
        return [detector.detect([image])[0] for image in images]
    finally:
        layers.PIECE_BYTES = default


def check_same_faces(spec: str, piece_bytes: int, pieced: list, whole: list) -> None:
    for index, (a, b) in enumerate(zip(pieced, whole)):
        for name in ("boxes", "scores", "landmarks"):
            if not np.array_equal(getattr(a, name), getattr(b, name)):
                raise AssertionError(f"{spec}, image {index}: {name} differ with pieces of {piece_bytes} bytes")


def time_input(detector, spec: str, images: list[np.ndarray], piece_bytes: int, rounds: int) -> dict:
    """Median ms per image with pieces of ``piece_bytes`` and with one piece per layer."""
    pieced = detect_all(detector, images, piece_bytes)  # also the warm-up of both sides
    check_same_faces(spec, piece_bytes, pieced, detect_all(detector, images, ONE_PIECE))
    pieces_ms, whole_ms = alternating.alternate(rounds, lambda: detect_all(detector, images, piece_bytes),
                                                lambda: detect_all(detector, images, ONE_PIECE))
    return {"input": spec, "images": len(images), "piece_mib": piece_bytes / 2**20,
            "pieces_ms": round(pieces_ms / len(images), 3), "whole_ms": round(whole_ms / len(images), 3),
            "pieces_over_whole": round(pieces_ms / whole_ms, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    alternating.add_arguments(parser, rounds=15, per="piece size and input", inputs=INPUTS)
    parser.add_argument("--piece-mib", type=float, nargs="+", default=None,
                        help="piece sizes to time, MiB (default: the detector's own)")
    parser.add_argument("--cpu-streams", type=int, default=2)
    args = alternating.parse_arguments(parser, argv)
    if args.piece_mib is not None and min(args.piece_mib) <= 0:
        parser.error(f"--piece-mib takes sizes above 0, got {min(args.piece_mib)}")
    from raydetect import FaceDetector
    from raydetect.mtcnn import cpu_kernels, layers

    if not cpu_kernels.AVAILABLE:
        parser.error("numba is not importable here: there are no fused layers to time")
    sizes = [layers.PIECE_BYTES] if args.piece_mib is None else [int(mib * 2**20) for mib in args.piece_mib]
    torch.set_num_threads(args.threads)
    detector = FaceDetector(min_face_size=20, device="cpu", precision="float32", cpu_streams=args.cpu_streams)
    rows = []
    for spec in args.inputs:
        images = [image for _, image in media_inputs.load_all([spec], args.data_root)]
        rows.extend(time_input(detector, spec, images, size, args.rounds) for size in sizes)
    print(f"torch threads {args.threads}, cpu_streams {args.cpu_streams}, {args.rounds} alternating rounds, "
          f"float32: median ms per image")
    print("| input | images | piece MiB | in pieces | whole layers | pieces / whole |\n|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['input']} | {row['images']} | {row['piece_mib']:g} | {row['pieces_ms']:.1f} | "
              f"{row['whole_ms']:.1f} | {row['pieces_over_whole']:.3f} |")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"rounds": args.rounds, "threads": args.threads, "cpu_streams": args.cpu_streams,
                       "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
