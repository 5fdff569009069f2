"""``raydetect plan``: what a frame will cost before anything runs.

Prints the pyramid levels P-Net will see, the pixels and multiply-adds per frame, the work per
R-Net / O-Net candidate, and the expected milliseconds per frame from a calibration measured
once on this machine and cached (``raydetect.tuning.calibration``).
"""

from __future__ import annotations

import argparse
import json
import sys

from raydetect.mtcnn import defaults


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="pyramid, P-Net work and expected time per frame for a resolution and minimum face size",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--resolution", required=True, help="frame size WIDTHxHEIGHT, e.g. 1920x1080")
    parser.add_argument("--min-face-size", type=float, default=defaults.MIN_FACE_SIZE,
                        help=f"smallest face to find, pixels (default {defaults.MIN_FACE_SIZE:g})")
    parser.add_argument("--scale-factor", type=float, default=defaults.SCALE_FACTOR,
                        help=f"pyramid level ratio (default {defaults.SCALE_FACTOR:g})")
    parser.add_argument("--device", default=None, help="torch device for the time estimate (default: cuda if present)")
    parser.add_argument(
        "--candidates",
        default=None,
        metavar="RNET,ONET",
        help="R-Net and O-Net candidates per frame to assume (default: the density measured on the sample video)",
    )
    parser.add_argument("--no-time", action="store_true", help="skip the time estimate (no calibration)")
    parser.add_argument("--recalibrate", action="store_true", help="measure the calibration again and cache it")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from raydetect.tuning.pyramid_plan import crop_network_macs, parse_resolution, plan_pyramid

    try:
        height, width = parse_resolution(args.resolution)
        plan = plan_pyramid(height, width, args.min_face_size, args.scale_factor)
        candidates = _parse_candidates(args.candidates)
    except ValueError as exc:
        print(f"raydetect plan: {exc}", file=sys.stderr)
        return 2
    result = {
        "resolution": f"{width}x{height}",
        "min_face_size": plan.min_face_size,
        "scale_factor": plan.scale_factor,
        "levels": [
            {
                "scale": level.scale,
                "width": level.width,
                "height": level.height,
                "pixels": level.pixels,
                "windows": level.windows,
                "smallest_face": level.smallest_face,
                "pnet_macs": level.macs,
            }
            for level in plan.levels
        ],
        "pnet_pixels": plan.pixels,
        "pnet_windows": plan.windows,
        "pnet_macs": plan.macs,
        "rnet_macs_per_candidate": crop_network_macs("rnet"),
        "onet_macs_per_candidate": crop_network_macs("onet"),
    }
    if not args.no_time and plan.levels:
        from raydetect.tuning.calibration import load_or_measure

        log = (lambda m: print(m, file=sys.stderr))
        calibration, path, measured = load_or_measure(args.device, recalibrate=args.recalibrate, log=log)
        estimate = calibration.estimate_ms(plan, *candidates)
        result["time"] = {
            **estimate,
            "ms_per_rnet_candidate": calibration.ms_per_rnet_candidate,
            "ms_per_onet_candidate": calibration.ms_per_onet_candidate,
            "device": calibration.hardware["device"],
            "device_name": calibration.hardware["device_name"],
            "calibration": str(path),
            "calibrated_at": calibration.measured_at,
            "calibrated_now": measured,
        }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_plan(plan, result))
    return 0


def format_plan(plan, result: dict) -> str:
    """The human-readable report of ``run``."""
    lines = [
        f"frame {result['resolution']}, min face {plan.min_face_size:g} px, scale factor {plan.scale_factor:g}: "
        f"{len(plan.levels)} pyramid levels"
    ]
    if not plan.levels:
        lines.append(f"the frame's shorter side is below {plan.min_face_size:g} px: no face can be found, nothing runs")
        return "\n".join(lines)
    lines.append(
        f"{'level':>5} {'scale':>8} {'size WxH':>11} {'pixels':>11} {'windows':>10} {'face px':>8} {'MMAC':>9}"
    )
    for k, level in enumerate(plan.levels):
        lines.append(
            f"{k:>5} {level.scale:>8.4f} {f'{level.width}x{level.height}':>11} {level.pixels:>11,} "
            f"{level.windows:>10,} {level.smallest_face:>8.1f} {level.macs / 1e6:>9.1f}"
        )
    lines.append(
        f"{'total':>5} {'':>8} {'':>11} {plan.pixels:>11,} {plan.windows:>10,} {'':>8} {plan.macs / 1e6:>9.1f}"
    )
    frame_pixels = plan.frame_height * plan.frame_width
    lines.append(
        f"P-Net: {plan.pixels:,} pixels per frame ({plan.pixels / frame_pixels:.2f} x the frame), "
        f"{plan.macs / 1e9:.2f} GMAC; each R-Net candidate {result['rnet_macs_per_candidate'] / 1e6:.2f} MMAC, "
        f"each O-Net candidate {result['onet_macs_per_candidate'] / 1e6:.2f} MMAC"
    )
    time = result.get("time")
    if time:
        lines.append(
            f"expected time per frame on {time['device_name']} ({time['device']}), "
            f"calibrated {time['calibrated_at']}:"
        )
        lines.append(f"  {time['floor_ms']:.1f} ms with nothing in the frame (P-Net {time['pnet_ms']:.1f} ms)")
        lines.append(
            f"  {time['ms']:.1f} ms with {time['rnet_candidates']:.0f} R-Net and {time['onet_candidates']:.0f} "
            f"O-Net candidates"
        )
        lines.append(
            f"  each further R-Net candidate adds {time['ms_per_rnet_candidate']:.3f} ms, "
            f"each O-Net candidate {time['ms_per_onet_candidate']:.3f} ms (candidates depend on the content: "
            f"measure with `raydetect sweep`)"
        )
    return "\n".join(lines)


def _parse_candidates(text: str | None) -> tuple[float | None, float | None]:
    if text is None:
        return None, None
    try:
        rnet, onet = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--candidates must be two numbers RNET,ONET, got {text!r}") from None
    if rnet < 0 or onet < 0:
        raise ValueError(f"--candidates must not be negative, got {text!r}")
    return rnet, onet
