"""Detector options shared by ``eval``, ``sweep`` and ``preview``: one spelling, one validation."""

from __future__ import annotations

import argparse

from raydetect.mtcnn import defaults

PRECISION_CHOICES = ("auto", "float32", "bfloat16", "float16")


def add_detector_arguments(parser: argparse.ArgumentParser, min_face_size: float = defaults.MIN_FACE_SIZE) -> None:
    group = parser.add_argument_group("detector")
    group.add_argument(
        "--min-face-size", type=float, default=min_face_size,
        help=f"smallest face to find, pixels (default {min_face_size:g})",
    )
    group.add_argument(
        "--scale-factor", type=float, default=defaults.SCALE_FACTOR,
        help=f"pyramid level ratio in (0, 1) (default {defaults.SCALE_FACTOR:g})",
    )
    group.add_argument(
        "--thresholds", type=parse_thresholds, default=defaults.THRESHOLDS, metavar="P,R,O",
        help=f"P-Net, R-Net, O-Net score thresholds (default {format_thresholds(defaults.THRESHOLDS)})",
    )
    group.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if present)")
    group.add_argument(
        "--precision", choices=PRECISION_CHOICES, default="auto",
        help="network precision (default auto: float16 on CUDA, bfloat16 on CPUs with bfloat16 dot products, "
        "else float32; float32 matches the reference MTCNN to float rounding)",
    )
    group.add_argument(
        "--compile", action="store_true",
        help="torch.compile the networks after a one-time compilation (20 s to minutes); for GPUs (slower on a small CPU)",
    )


def format_thresholds(thresholds) -> str:
    """(0.6, 0.7, 0.7) -> ``"0.6,0.7,0.7"``, the spelling :func:`parse_thresholds` reads."""
    return ",".join(f"{t:g}" for t in thresholds)


def parse_thresholds(text: str) -> tuple[float, float, float]:
    """``"0.6,0.7,0.7"`` -> (0.6, 0.7, 0.7); argparse turns the ValueError into a usage error."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"thresholds must be three numbers P,R,O, got {text!r}") from None
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"thresholds must be three numbers in [0, 1] like 0.6,0.7,0.7, got {text!r}")
    return values  # type: ignore[return-value]


def build_detector(args: argparse.Namespace, **overrides):
    """A FaceDetector from the parsed options (``overrides`` win, e.g. one sweep point)."""
    from raydetect import FaceDetector

    options = dict(
        min_face_size=args.min_face_size,
        scale_factor=args.scale_factor,
        thresholds=tuple(args.thresholds),
        device=args.device,
        precision=args.precision,
        compile=args.compile,
    )
    options.update(overrides)
    return FaceDetector(**options)
