"""``raydetect sweep``: precision against compute over detector settings.

For every combination of the given minimum face sizes, scale factors and thresholds, runs the
detector on annotated images (AP and recall per subset, IoU 0.5, WIDER rules) and/or on frames
sampled from videos, and reports faces found, P-Net pixels and R-Net / O-Net candidates per
frame, and milliseconds per frame. Prints tables; writes a PNG of precision against cost and
a JSON of every figure. With --address each setting runs as a Ray task on that cluster.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from raydetect.commands.detector_args import PRECISION_CHOICES, format_thresholds, parse_thresholds
from raydetect.mtcnn import defaults


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="AP, recall, candidates and time per frame over minimum face sizes, scale factors, thresholds",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("images", nargs="*", metavar="IMAGES", help="annotated image folder(s) or files")
    parser.add_argument(
        "--annotations", "-a", default=None, help="annotations of IMAGES (default: IMAGES/annotations.json)"
    )
    parser.add_argument("--videos", nargs="+", default=[], metavar="VIDEO", help="videos to sample frames from")
    parser.add_argument("--video-frames", type=int, default=24, help="frames per video (default 24)")
    parser.add_argument("--every", type=int, default=1, help="take every Nth frame of a video (default 1)")
    parser.add_argument(
        "--min-face-sizes", type=_float_list, default=[10.0, 20.0, 40.0, 80.0], metavar="M1,M2,...",
        help="minimum face sizes in pixels (default 10,20,40,80)",
    )
    parser.add_argument("--scale-factors", type=_float_list, default=[defaults.SCALE_FACTOR], metavar="F1,F2,...",
                        help=f"pyramid scale factors (default {defaults.SCALE_FACTOR:g})")
    parser.add_argument(
        "--thresholds", type=parse_thresholds, nargs="+", default=[defaults.THRESHOLDS], metavar="P,R,O",
        help=f"one or more threshold triples (default {format_thresholds(defaults.THRESHOLDS)})",
    )
    parser.add_argument("--iou", type=float, default=0.5, help="IoU for a match (default 0.5)")
    parser.add_argument("--batch", type=int, default=8, help="frames per detector call (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per setting; the median is kept (default 1)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    parser.add_argument(
        "--precision", choices=PRECISION_CHOICES, default="auto",
        help="network precision of every setting (default auto: float16 on CUDA, bfloat16 on CPUs with bfloat16 "
        "dot products, else float32)",
    )
    ray_group = parser.add_argument_group("Ray")
    ray_group.add_argument("--address", default=None, help="run each setting as a Ray task on this cluster")
    ray_group.add_argument("--task-cpus", type=float, default=1, help="CPUs per task (default 1)")
    ray_group.add_argument("--task-gpus", type=float, default=0, help="GPUs per task (default 0)")
    parser.add_argument("--plot", default=None, metavar="FILE.png", help="write precision against cost")
    parser.add_argument("--json", default=None, metavar="FILE", help="write every figure as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from raydetect.tuning.annotations import AnnotationError
    from raydetect.errors import RaydetectError

    try:
        _check_args(args)
        annotations, image_frames = _load_images(args)
        video_frames = _load_videos(args)
        settings = sweep_settings(args.min_face_sizes, args.scale_factors, args.thresholds)
        for setting in settings:  # a FaceDetector option like the others; the rows record it
            setting["precision"] = args.precision
        if args.address:
            rows = _run_on_ray(args, settings, annotations, image_frames, video_frames)
        else:
            rows = _run_here(args, settings, annotations, image_frames, video_frames)
    except (AnnotationError, RaydetectError, ValueError) as exc:
        print(f"raydetect sweep: {exc}", file=sys.stderr)
        return 2
    print(format_tables(rows, len(image_frames), len(video_frames)))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": rows, "command": sys.argv}, indent=1))
    if args.plot:
        from raydetect.tuning.plots import plot_sweep

        try:
            plot_sweep(rows, args.plot, title=_plot_title(image_frames, video_frames))
        except RuntimeError as exc:  # matplotlib missing: the table and JSON above still stand
            print(f"raydetect sweep: no plot: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.plot}")
    return 0


def sweep_settings(min_face_sizes, scale_factors, thresholds) -> list[dict]:
    """Every combination, as FaceDetector keyword arguments plus a short ``label``."""
    settings = []
    for m, f, t in itertools.product(min_face_sizes, scale_factors, thresholds):
        label = [f"M={m:g}"]
        if len(scale_factors) > 1:
            label.append(f"f={f:g}")
        if len(thresholds) > 1:
            label.append("t=" + ",".join(f"{v:g}" for v in t))
        settings.append({"min_face_size": m, "scale_factor": f, "thresholds": tuple(t), "label": " ".join(label)})
    return settings


def measure_setting(setting: dict, device, annotations, image_frames: dict, video_frames: dict,
                    batch: int, repeats: int, iou: float, threads: int | None = None) -> dict:
    """All figures for one setting: detector built here, frames given in memory (Ray-free)."""
    from raydetect import FaceDetector

    if threads:
        import torch

        torch.set_num_threads(threads)
    options = {k: v for k, v in setting.items() if k != "label"}
    detector = FaceDetector(device=device, **options)
    runs = [
        _measure_once(detector, setting, annotations, image_frames, video_frames, batch, iou) for _ in range(repeats)
    ]
    return _median_row(setting, runs)


def _measure_once(detector, setting, annotations, image_frames, video_frames, batch, iou) -> dict:
    from raydetect.tuning.evaluation import evaluate
    from raydetect.tuning.measure import run_detector

    row: dict = {}
    if image_frames:
        run = run_detector(detector, image_frames, batch)
        report = evaluate(run.detections, annotations, iou=iou)
        row.update(
            ap={name: r.ap for name, r in report.subsets.items()},
            recall={name: r.recall for name, r in report.subsets.items()},
            image_ms=run.ms_per_frame,
            image_gmacs=work_gmacs(setting, image_frames, run),
            image_faces_per_frame=run.faces / run.frames,
            image_stats=_per_frame_stats(run),
        )
    if video_frames:
        run = run_detector(detector, video_frames, batch)
        row.update(
            video_ms=run.ms_per_frame,
            video_gmacs=work_gmacs(setting, video_frames, run),
            video_faces_per_frame=run.faces / run.frames,
            video_stats=_per_frame_stats(run),
        )
    return row


def work_gmacs(setting: dict, frames: dict, run) -> float:
    """Multiply-adds per frame, in billions: P-Net on every pyramid level (from each frame's size)
    plus R-Net and O-Net on the candidates the run counted. Unlike milliseconds, this does not
    depend on the machine or its load."""
    from raydetect.tuning.pyramid_plan import crop_network_macs, plan_pyramid

    pnet = sum(plan_pyramid(f.shape[0], f.shape[1], setting["min_face_size"], setting["scale_factor"]).macs
               for f in frames.values())
    crops = (run.stats["rnet_candidates"] * crop_network_macs("rnet")
             + run.stats["onet_candidates"] * crop_network_macs("onet"))
    return (pnet + crops) / len(frames) / 1e9


def _median_row(setting: dict, runs: list[dict]) -> dict:
    """The first run's figures with each time replaced by the median over runs."""
    import numpy as np

    row = {**setting, "thresholds": list(setting["thresholds"]), **runs[0], "repeats": len(runs)}
    for key in ("image_ms", "video_ms"):
        if key in row:
            row[key] = float(np.median([r[key] for r in runs]))
            row[key + "_all"] = [r[key] for r in runs]
    return row


def _per_frame_stats(run) -> dict:
    return {key: run.per_frame(key) for key in ("pnet_pixels", "rnet_candidates", "onet_candidates")}


def _run_here(args, settings, annotations, image_frames, video_frames) -> list[dict]:
    """Settings one after another in this process; repeats interleaved so drift spreads evenly."""
    from raydetect import FaceDetector

    detectors = [FaceDetector(device=args.device, **{k: v for k, v in s.items() if k != "label"}) for s in settings]
    runs: list[list[dict]] = [[] for _ in settings]
    for repeat in range(args.repeats):
        for index, (setting, detector) in enumerate(zip(settings, detectors)):
            print(f"[{repeat + 1}/{args.repeats}] {setting['label']}", file=sys.stderr)
            runs[index].append(
                _measure_once(detector, setting, annotations, image_frames, video_frames, args.batch, args.iou)
            )
    return [_median_row(setting, setting_runs) for setting, setting_runs in zip(settings, runs)]


def _run_on_ray(args, settings, annotations, image_frames, video_frames) -> list[dict]:
    """One Ray task per setting; frames travel once through the object store."""
    import ray

    if not ray.is_initialized():
        ray.init(address=args.address, log_to_driver=False)
    images_ref = ray.put(image_frames)
    videos_ref = ray.put(video_frames)
    remote = ray.remote(num_cpus=args.task_cpus, num_gpus=args.task_gpus)(measure_setting)
    threads = max(1, int(args.task_cpus))
    refs = [
        remote.remote(setting, args.device, annotations, images_ref, videos_ref, args.batch, args.repeats, args.iou,
                      threads)
        for setting in settings
    ]
    print(f"{len(refs)} settings submitted to the Ray cluster", file=sys.stderr)
    return ray.get(refs)


def _load_images(args):
    from raydetect.tuning.annotations import AnnotationError, load_annotations, select_images
    from raydetect.tuning.image_folders import read_image

    if not args.images:
        return None, {}
    path = args.annotations
    if path is None:
        candidate = Path(args.images[0]) / "annotations.json"
        if len(args.images) == 1 and candidate.is_file():
            path = candidate
        else:
            raise AnnotationError("--annotations FILE is required for IMAGES (no annotations.json in the folder)")
    annotations = load_annotations(path)
    files = select_images(annotations, args.images)
    return annotations.restricted(files), {key: read_image(p) for key, p in files.items()}


def _load_videos(args) -> dict:
    """``"video.mp4#index"`` -> RGB frame, for up to ``--video-frames`` frames of each video."""
    from raydetect.offline.video import FrameRange, Sampling, probe

    frames = {}
    for video in args.videos:
        info = probe(video)
        stop = min(info.frame_count, args.video_frames * args.every)
        for frame in FrameRange(video, 0, stop, Sampling(every=args.every).selector(info), info.fps):
            frames[f"{Path(video).name}#{frame.index}"] = frame.image
    return frames


def _check_args(args) -> None:
    if not args.images and not args.videos:
        raise ValueError("give annotated IMAGES, --videos, or both")
    for name in ("video_frames", "every", "batch", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.iou <= 1:
        raise ValueError(f"--iou must be in (0, 1], got {args.iou}")
    for m in args.min_face_sizes:
        if m < 1:
            raise ValueError(f"minimum face sizes must be >= 1 pixel, got {m:g}")
    for f in args.scale_factors:
        if not 0 < f < 1:
            raise ValueError(f"scale factors must be in (0, 1), got {f:g}")


def format_tables(rows: list[dict], images: int, video_frames: int) -> str:
    lines = []
    if images:
        subsets = list(rows[0]["ap"])
        lines.append(f"annotated images ({images}):")
        header = f"{'setting':<22}" + "".join(f"{'AP ' + s:>11}" for s in subsets)
        header += "".join(f"{'rec ' + s:>11}" for s in subsets)
        header += f"{'faces/img':>10}{'P-Net Mpx':>10}{'R-Net':>8}{'O-Net':>8}{'GMAC':>7}{'ms/img':>9}"
        lines.append(header)
        for row in rows:
            stats = row["image_stats"]
            line = f"{row['label']:<22}" + "".join(f"{row['ap'][s]:>11.3f}" for s in subsets)
            line += "".join(f"{row['recall'][s]:>11.3f}" for s in subsets)
            line += (f"{row['image_faces_per_frame']:>10.2f}{stats['pnet_pixels'] / 1e6:>10.3f}"
                     f"{stats['rnet_candidates']:>8.1f}{stats['onet_candidates']:>8.1f}{row['image_gmacs']:>7.2f}"
                     f"{row['image_ms']:>9.1f}")
            lines.append(line)
    if video_frames:
        lines.append(f"video frames ({video_frames}):")
        lines.append(
            f"{'setting':<22}{'faces/frame':>12}{'P-Net Mpx':>10}{'R-Net':>8}{'O-Net':>8}{'GMAC':>7}{'ms/frame':>10}"
        )
        for row in rows:
            stats = row["video_stats"]
            lines.append(
                f"{row['label']:<22}{row['video_faces_per_frame']:>12.2f}{stats['pnet_pixels'] / 1e6:>10.3f}"
                f"{stats['rnet_candidates']:>8.1f}{stats['onet_candidates']:>8.1f}{row['video_gmacs']:>7.2f}"
                f"{row['video_ms']:>10.1f}"
            )
    lines.append(
        "(P-Net Mpx: pyramid pixels per frame; R-Net, O-Net: candidates per frame entering each stage; GMAC: "
        "multiply-adds per frame, all stages; times: medians of the repeats)"
    )
    return "\n".join(lines)


def _plot_title(image_frames: dict, video_frames: dict) -> str:
    parts = []
    if image_frames:
        parts.append(f"{len(image_frames)} annotated images")
    if video_frames:
        parts.append(f"{len(video_frames)} video frames")
    return "minimum face size sweep: " + ", ".join(parts)


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return values
