"""``raydetect eval``: average precision and recall of the detector on annotated images.

IoU 0.5 and WIDER FACE rules (faces outside a subset are ignored; see raydetect.tuning.evaluation).
Annotations: WIDER FACE text (wider_face_val_bbx_gt.txt), simple JSON
{"images": {"file.jpg": [[x1, y1, x2, y2], ...]}} or the WIDER subset JSON with easy / medium /
hard flags. IMAGES are folders (every annotated image under them) or image files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from raydetect.commands.detector_args import add_detector_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="average precision and recall on annotated images (WIDER FACE style)",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image folder(s) or files")
    parser.add_argument(
        "--annotations", "-a", default=None,
        help="annotation file (default: annotations.json in the single IMAGES folder)",
    )
    parser.add_argument("--iou", type=float, default=0.5, help="IoU for a match (default 0.5)")
    parser.add_argument("--subsets", default=None, help="comma-separated subsets to report (default: all in the file)")
    add_detector_arguments(parser)
    parser.add_argument("--batch", type=int, default=8, help="images per detector call (default 8)")
    parser.add_argument(
        "--detections", default=None, metavar="FILE",
        help="evaluate detections saved in this JSON file instead of running the detector",
    )
    parser.add_argument("--save-detections", default=None, metavar="FILE", help="write the detections as JSON")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
    parser.add_argument("--plot", default=None, metavar="FILE.png", help="write the precision-recall curves")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from raydetect.tuning.annotations import AnnotationError, load_annotations, select_images
    from raydetect.errors import RaydetectError
    from raydetect.tuning.evaluation import evaluate

    try:
        if not 0.0 < args.iou <= 1.0:
            raise ValueError(f"iou must be in (0, 1], got {args.iou}")
        annotations = load_annotations(_annotation_path(args))
        files = select_images(annotations, args.images)
        subsets = args.subsets.split(",") if args.subsets else None
        unknown = [s for s in subsets or () if s not in annotations.subsets]
        if unknown:  # before the detector runs, not after
            raise ValueError(f"unknown subset(s) {unknown}; these annotations have {list(annotations.subsets)}")
        if args.detections:
            detections = load_detections(args.detections)
            missing = [k for k in files if k not in detections]
            if missing:
                raise AnnotationError(
                    f"{args.detections} has no detections for {len(missing)} images, e.g. {missing[0]}"
                )
            detections = {k: detections[k] for k in files}
            timing = None
        else:
            detections, timing = _detect(files, args)
        report = evaluate(detections, annotations.restricted(files), iou=args.iou, subsets=subsets)
    except (AnnotationError, RaydetectError, ValueError) as exc:
        print(f"raydetect eval: {exc}", file=sys.stderr)
        return 2
    print(format_report(report, args, timing, sum(len(d) for d in detections.values())))
    if args.save_detections:
        save_detections(args.save_detections, detections)
    if args.json:
        summary = report.as_dict() | {"detector": _options(args), "timing": timing}
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if args.plot:
        from raydetect.tuning.plots import plot_precision_recall

        try:
            plot_precision_recall(report, args.plot, title=f"min face {args.min_face_size:g} px, IoU {args.iou:g}")
        except RuntimeError as exc:  # matplotlib missing: the figures above still stand
            print(f"raydetect eval: no plot: {exc}", file=sys.stderr)
            return 1
    return 0


def _annotation_path(args: argparse.Namespace) -> Path:
    from raydetect.tuning.annotations import AnnotationError

    if args.annotations:
        return Path(args.annotations)
    if len(args.images) == 1 and (Path(args.images[0]) / "annotations.json").is_file():
        return Path(args.images[0]) / "annotations.json"
    raise AnnotationError("--annotations FILE is required (no annotations.json in the IMAGES folder)")


def _detect(files: dict[str, Path], args: argparse.Namespace):
    from raydetect.commands.detector_args import build_detector
    from raydetect.tuning.image_folders import LazyImages
    from raydetect.tuning.measure import run_detector

    if args.batch < 1:
        raise ValueError("--batch must be >= 1")
    # Images are read batch by batch (reading is not timed): a full WIDER split never sits in memory.
    detector = build_detector(args)
    run = run_detector(detector, LazyImages(files), args.batch)
    timing = {
        "precision": detector.precision,  # what "auto" resolved to on this machine
        "images": run.frames,
        "ms_per_image": run.ms_per_frame,
        "median_ms_per_image": run.median_ms_per_frame,
        "stats": run.stats,
        "device": args.device or "default",
    }
    return run.detections, timing


def format_report(report, args: argparse.Namespace, timing: dict | None, found: int) -> str:
    thresholds = ",".join(f"{t:g}" for t in args.thresholds)
    source = f"detections from {args.detections}" if args.detections else (
        f"min face {args.min_face_size:g} px, scale factor {args.scale_factor:g}, thresholds {thresholds}"
    )
    lines = [f"{report.num_images} images, IoU {report.iou_threshold:g}, {source}"]
    lines.append(f"{'subset':<8} {'faces':>7} {'counted':>8} {'true pos':>9} {'AP':>7} {'recall':>7} {'precision':>9}")
    for name, r in report.subsets.items():
        lines.append(
            f"{name:<8} {r.num_faces:>7,} {r.num_detections:>8,} {r.true_positives:>9,} {_fmt(r.ap):>7} "
            f"{_fmt(r.recall):>7} {_fmt(r.precision):>9}"
        )
    lines.append("(counted: detections that are not ignored for the subset; ignored ones match faces outside it)")
    if timing:
        stats = timing["stats"]
        per = max(timing["images"], 1)
        lines.append(
            f"{found:,} faces found; {timing['ms_per_image']:.1f} ms per image (median per batch "
            f"{timing['median_ms_per_image']:.1f}); per image: {stats['pnet_pixels'] / per:,.0f} P-Net pixels, "
            f"{stats['rnet_candidates'] / per:,.1f} R-Net and {stats['onet_candidates'] / per:,.1f} O-Net candidates"
        )
    return "\n".join(lines)


def save_detections(path: str | Path, detections: dict) -> None:
    """JSON ``{"images": {key: {"faces": [{"box", "score", "landmarks"}]}}}``."""
    Path(path).write_text(json.dumps({"images": {k: d.to_dict() for k, d in detections.items()}}))


def load_detections(path: str | Path) -> dict:
    """Image key -> (boxes (N, 4), scores (N,)) from a saved detection JSON.

    Accepts ``{"images": {key: {"faces": [{"box": [...], "score": s}, ...]}}}`` (what
    ``--save-detections`` writes) or ``{"images": {key: [[x1, y1, x2, y2, score], ...]}}``.
    """
    import numpy as np

    try:
        document = json.loads(Path(path).read_text())
        images = document["images"]
        result = {}
        for key, value in images.items():
            if isinstance(value, dict):
                faces = value["faces"]
                boxes = np.array([f["box"] for f in faces], np.float64).reshape(-1, 4)
                scores = np.array([f["score"] for f in faces], np.float64)
            else:
                rows = np.array(value, np.float64).reshape(-1, 5)
                boxes, scores = rows[:, :4], rows[:, 4]
            result[key] = (boxes, scores)
    except FileNotFoundError:
        raise ValueError(f"detections file not found: {path}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a detections file ({type(exc).__name__}: {exc})") from None
    return result


def _options(args: argparse.Namespace) -> dict:
    return {
        "min_face_size": args.min_face_size,
        "scale_factor": args.scale_factor,
        "thresholds": list(args.thresholds),
        "device": args.device,
        "precision": args.precision,
    }


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"
