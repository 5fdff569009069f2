"""``raydetect detect``: find every face in a video dataset with a Ray Data job, write Parquet.

    raydetect detect SOURCE [SOURCE ...] --output DEST [--min-face-size 20]
                     [--every N | --fps F | --frames-per-video K] [--max-side S]
                     [--crops --crop-size 224|WxH --crop-margin 0.3 --align
                     --crop-pad zero|edge|resize --crop-format jpeg|png] [--detect-every K]
                     [--track-max-gap SECONDS] [--min-track-faces N]
                     [--clip-frames T --clip-fps F --clip-spacing contiguous|even] [--reuse-original-boxes]
                     [--io-retries N] [--dry-run]
                     [--address auto] [--gpus-per-actor G]

SOURCE: a video, a directory, a glob, any fsspec URL (s3://, gs://, file://, memory://) or a manifest
(CSV / Parquet / JSONL with a ``path`` column and optional ``label``, or a DFDC metadata.json).
DEST: a local folder or fsspec URL; it receives faces/ (one row per face, with its track_id),
tracks/ (one row per track of a person's faces over time), clips/ with --clip-frames (one row per
clip of T faces of one track) and videos/ (one row per input). Without
SOURCE, the bundled sample video is processed into ./quickstart-output.

Exit status: 0 when every input succeeded, 3 when some failed (their rows in DEST/videos say why),
2 for bad options or sources. With --dry-run: 0, or 3 when some inputs cannot be probed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from raydetect.core.batching import WorkBudget
from raydetect.core.clips import CLIP_SPACINGS, ClipError, ClipOptions
from raydetect.core.crops import CROP_FORMATS, PAD_MODES, CropError, CropOptions, parse_crop_size
from raydetect.core.tracking import TrackingOptions
from raydetect.commands.detector_args import add_detector_arguments
from raydetect.offline.job import Resources
from raydetect.offline.retrying_io import RetryPolicy
from raydetect.offline.shards import CHUNK_BYTES, ShardOptions

QUICKSTART_OUTPUT = "quickstart-output"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="find every face in a video dataset with a Ray Data job and write Parquet",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="*", metavar="SOURCE", help="videos, folders, globs, URLs or manifests")
    parser.add_argument(
        "--output", "-o", metavar="DEST",
        help=f"output folder or URL (required with SOURCE; default ./{QUICKSTART_OUTPUT} for the sample)",
    )
    add_detector_arguments(parser)

    sampling = parser.add_argument_group("frame sampling (default: every frame)")
    choice = sampling.add_mutually_exclusive_group()
    choice.add_argument("--every", type=_positive_int, metavar="N", help="every Nth frame: 0, N, 2N, ...")
    choice.add_argument("--fps", type=_positive_float, metavar="F", help="about F frames per second of video")
    choice.add_argument(
        "--frames-per-video", type=_positive_int, metavar="K", help="K frames evenly spaced over each video"
    )
    sampling.add_argument(
        "--max-side", type=_positive_int, metavar="S",
        help="downscale frames whose longer side exceeds S pixels before detection; boxes are reported in "
             "pixels of the original frame",
    )

    tracks = parser.add_argument_group("face tracks (always on)")
    tracks.add_argument(
        "--track-max-gap", type=_non_negative_float, default=TrackingOptions.max_gap_s, metavar="SECONDS",
        help="a track resumes when its face reappears within this many seconds; sampled frames further "
             f"apart than this are never linked (default {TrackingOptions.max_gap_s:g})",
    )
    tracks.add_argument(
        "--min-track-faces", type=_positive_int, default=TrackingOptions.min_track_faces, metavar="N",
        help="drop the faces of tracks with fewer than N faces (default "
             f"{TrackingOptions.min_track_faces}: keep every face)",
    )
    tracks.add_argument(
        "--detect-every", type=_positive_int, default=ShardOptions.detect_every, metavar="K",
        help="run the detector on every Kth sampled frame only; the sampled frames between get their "
             "tracks' boxes and landmarks interpolated (column 'interpolated') (default 1: detect all)",
    )

    clips = parser.add_argument_group("per-track clips (rule: raydetect.core.clips)")
    clips.add_argument(
        "--clip-frames", type=_whole_number, default=None, metavar="T",
        help="write DEST/clips: clips of T faces of one track, the unit a sequence model trains on "
             "(default: no clips)",
    )
    clips.add_argument(
        "--clip-fps", type=_float, default=None, metavar="F",
        help="faces of a clip about 1/F s apart (default: every face of the track; needs --clip-frames)",
    )
    clips.add_argument(
        "--clip-spacing", choices=CLIP_SPACINGS, default=None,
        help="contiguous: consecutive faces, non-overlapping clips, never across a gap in the track; even: one "
             f"clip per track, its faces evenly spaced over it (default {ClipOptions.spacing}; needs --clip-frames)",
    )

    dfdc = parser.add_argument_group("DFDC fakes")
    dfdc.add_argument(
        "--reuse-original-boxes", action="store_true",
        help="SOURCEs must be DFDC metadata.json files: detect the REAL videos only and give each FAKE its "
             "original's faces and tracks (same frames, boxes, landmarks, track ids; crops cut from the fake's "
             "own frames). A fake whose original is missing, failed, or differs in size, frame count or rate is "
             "detected; its DEST/videos row says why (boxes_note)",
    )

    crops = parser.add_argument_group("face crops")
    crops.add_argument("--crops", action="store_true", help="store a crop of every face (column 'crop')")
    crops.add_argument(
        "--crop-size", type=_crop_size, default=(CropOptions.width, CropOptions.height), metavar="N|WxH",
        help="crop size in pixels: N for a square, WIDTHxHEIGHT otherwise "
             f"(default {CropOptions.width}x{CropOptions.height})",
    )
    crops.add_argument(
        "--crop-margin", type=_non_negative_float, default=CropOptions.margin,
        help="context around the face: the region's shorter side is the face's longer side x (1 + margin); "
             f"with --align the template shrinks by 1 / (1 + margin) (default {CropOptions.margin:g})",
    )
    crops.add_argument("--align", action="store_true",
                       help="warp each face onto the 5-point ArcFace template by a similarity transform "
                            "of its landmarks (needs --crops)")
    crops.add_argument("--crop-pad", choices=PAD_MODES, default=None,
                       help="outside the frame: zero (black), edge (border pixels repeated), resize (the region "
                            "is cut to the frame and stretched; not with --align) (default zero)")
    crops.add_argument("--crop-format", choices=CROP_FORMATS, default=None,
                       help="jpeg, or png for lossless crops (default jpeg)")
    crops.add_argument("--crop-quality", type=_jpeg_quality, default=CropOptions.quality,
                       help=f"JPEG quality 1-100 (default {CropOptions.quality})")

    cluster = parser.add_argument_group("cluster")
    cluster.add_argument(
        "--address", default=None,
        help="Ray cluster to join, e.g. auto or ray://host:10001 (default: $RAY_ADDRESS, else a local Ray "
             "instance on 127.0.0.1)",
    )
    cluster.add_argument("--actors", type=_positive_int, help="detector actors at most (default: fill the cluster)")
    cluster.add_argument(
        "--gpus-per-actor", type=_non_negative_float,
        help="GPUs per detector actor; 0 detects on CPU (default: 1 when the cluster has GPUs, else 0)",
    )
    cluster.add_argument("--cpus-per-actor", type=_positive_float, help="CPUs per detector actor")
    cluster.add_argument(
        "--decode-cpus", type=_positive_float, default=Resources.decode_cpus,
        help=f"CPUs per decode task (default {Resources.decode_cpus:g})",
    )
    cluster.add_argument("--threads-per-actor", type=_positive_int, help="torch threads of a CPU detector actor")
    cluster.add_argument(
        "--shard-frames", type=_positive_int, default=ShardOptions.shard_frames,
        help="frames of a video per shard: a longer video is split over several decode tasks and actors "
             f"(default {ShardOptions.shard_frames})",
    )
    cluster.add_argument(
        "--chunk-mib", type=_positive_int, default=None,
        help="decoded frames handed to a detector actor at once, MiB of RGB pixels; each chunk with faces "
             f"is one Parquet file (default {CHUNK_BYTES['cuda'] >> 20} on GPU, {CHUNK_BYTES['cpu'] >> 20} on CPU)",
    )
    cluster.add_argument(
        "--storage-options", type=_json_object, default=None, metavar="JSON",
        help='fsspec options for URLs, e.g. \'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\'',
    )

    budget = parser.add_argument_group(
        "work budget per forward pass (adaptive micro-batching inside each actor; default: the device's)"
    )
    cpu = WorkBudget.for_device("cpu")
    budget.add_argument("--budget-pnet-pixels", type=_positive_int, metavar="PIXELS",
                        help=f"pyramid pixels of the frames in one micro-batch (CPU default {cpu.pnet_pixels})")
    budget.add_argument("--budget-rnet-crops", type=_positive_int, metavar="N",
                        help=f"candidates through R-Net per pass (CPU default {cpu.rnet_crops})")
    budget.add_argument("--budget-onet-crops", type=_positive_int, metavar="N",
                        help=f"candidates through O-Net per pass (CPU default {cpu.onet_crops})")
    budget.add_argument("--budget-images", type=_positive_int, metavar="N",
                        help=f"frames per micro-batch at most (CPU default {cpu.max_images})")

    storage = parser.add_argument_group("storage faults")
    default_retry = RetryPolicy()
    storage.add_argument(
        "--io-retries", type=_non_negative_int, default=default_retry.retries, metavar="N",
        help="retries of a transient storage failure (HTTP 5xx, throttling, a reset connection, a timeout) "
             f"with exponential backoff and jitter; 404, 403 and corrupt files are not retried (default "
             f"{default_retry.retries})",
    )
    storage.add_argument(
        "--io-timeout", type=_positive_float, default=default_retry.timeout_s, metavar="SECONDS",
        help=f"a storage connection or read that makes no progress for this long fails and is retried "
             f"(default {default_retry.timeout_s:g})",
    )

    parser.add_argument("--overwrite", action="store_true", help="redo every input, replacing DEST's results")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="list and probe the inputs (as Ray tasks, decoding no frame) and print the videos, sampled frames, "
             "shards, expected detector time and output size, and the inputs that cannot be probed; "
             "writes nothing under DEST",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress, only the summary")


def job_spec(args: argparse.Namespace):
    """The JobSpec the parsed options describe (raises ValueError for inconsistent options)."""
    from raydetect.offline.chunk_detection import DetectionOptions
    from raydetect.offline.job import JobSpec
    from raydetect.offline.video import Sampling

    sources = list(args.sources)
    output = args.output
    if not sources:
        from importlib.resources import files

        sources = [str(files("raydetect.data") / "sample.mp4")]
        output = output or QUICKSTART_OUTPUT
    if not output:
        raise ValueError("--output DEST is required when SOURCE is given")
    budget = {
        name: value
        for name, value in (
            ("pnet_pixels", args.budget_pnet_pixels),
            ("rnet_crops", args.budget_rnet_crops),
            ("onet_crops", args.budget_onet_crops),
            ("max_images", args.budget_images),
        )
        if value is not None
    }
    on_gpus = (args.gpus_per_actor or 0) > 0 or str(args.device or "").startswith("cuda")
    if args.precision == "float16" and not on_gpus:
        raise ValueError("--precision float16 needs GPUs (--gpus-per-actor or --device cuda); "
                         "use bfloat16 or float32 on CPUs")
    if budget:
        device_budget = WorkBudget.for_device("cuda" if (args.gpus_per_actor or 0) > 0 else "cpu")
        budget = {**device_budget.__dict__, **budget}
        WorkBudget(**budget)  # validate now, not in every actor
    detection = DetectionOptions(
        min_face_size=args.min_face_size,
        thresholds=tuple(args.thresholds),
        scale_factor=args.scale_factor,
        device=args.device,
        budget=budget or None,
        max_side=args.max_side,
        crops=args.crops,
        crop=crop_options(args),
        precision=args.precision,
        compile=args.compile,
    )
    shards = ShardOptions(
        shard_frames=args.shard_frames,
        sampling=Sampling(every=args.every, fps=args.fps, count=args.frames_per_video),
        chunk_bytes=args.chunk_mib << 20 if args.chunk_mib else None,
        retry=RetryPolicy(retries=args.io_retries, timeout_s=args.io_timeout),
        detect_every=args.detect_every,
    )
    tracking = TrackingOptions(max_gap_s=args.track_max_gap, min_track_faces=args.min_track_faces)
    resources = Resources(
        actors=args.actors,
        gpus_per_actor=args.gpus_per_actor,
        cpus_per_actor=args.cpus_per_actor,
        decode_cpus=args.decode_cpus,
        torch_threads=args.threads_per_actor,
    )
    return JobSpec(
        sources=sources, output=output, detection=detection, shards=shards, resources=resources,
        tracking=tracking, clips=clip_options(args), overwrite=args.overwrite, storage_options=args.storage_options,
        reuse_original_boxes=args.reuse_original_boxes,
    )


def clip_options(args: argparse.Namespace) -> ClipOptions | None:
    """The clip options the parsed arguments describe, None without --clip-frames (raises ClipError for
    inconsistent ones)."""
    if args.clip_frames is None:
        given = [flag for flag, value in (("--clip-fps", args.clip_fps), ("--clip-spacing", args.clip_spacing))
                 if value is not None]
        if given:
            raise ClipError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --clip-frames (it shapes "
                            "the clips)")
        return None
    return ClipOptions(frames=args.clip_frames, fps=args.clip_fps, spacing=args.clip_spacing or ClipOptions.spacing)


def crop_options(args: argparse.Namespace) -> CropOptions:
    """The crop options the parsed arguments describe (raises CropError for inconsistent ones)."""
    if not args.crops:
        given = [flag for flag, value in (("--align", args.align), ("--crop-pad", args.crop_pad),
                                          ("--crop-format", args.crop_format)) if value]
        if given:
            raise CropError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --crops (it shapes the "
                            "face crops)")
    width, height = args.crop_size
    return CropOptions(
        width=width, height=height, margin=args.crop_margin, align=args.align,
        pad=args.crop_pad or CropOptions.pad, format=args.crop_format or CropOptions.format,
        quality=args.crop_quality,
    )


def connect(address: str | None):
    """Join the cluster at ``address`` (or $RAY_ADDRESS); without either, start a local instance
    that listens on 127.0.0.1 only."""
    if not address and not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported
    import ray

    if ray.is_initialized():
        return ray
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
    else:
        from raydetect.offline.job import limit_local_arenas

        limit_local_arenas()  # inherited by the instance's workers
        # "local": a new instance even when another one runs on this machine.
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    return ray


def run(args: argparse.Namespace) -> int:
    from raydetect.errors import RaydetectError

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        spec = job_spec(args)
    except (ValueError, RaydetectError) as exc:
        print(f"raydetect detect: error: {exc}", file=sys.stderr)
        return 2
    ray = connect(args.address)
    from ray.data import DataContext

    from raydetect.offline.job import run_job

    if args.quiet:
        DataContext.get_current().enable_progress_bars = False
    if args.dry_run:
        return _dry_run(spec, ray)
    try:
        summary = run_job(spec, ray)
    except (ValueError, RaydetectError) as exc:  # sources that cannot be listed, DEST with other options
        print(f"raydetect detect: error: {exc}", file=sys.stderr)
        return 2
    print(summary.text())
    return summary.exit_status


def _dry_run(spec, ray) -> int:
    from raydetect.errors import RaydetectError
    from raydetect.offline.job import dry_run

    try:
        result = dry_run(spec, ray, log=lambda message: print(message, file=sys.stderr))
    except (ValueError, RaydetectError) as exc:
        print(f"raydetect detect: error: {exc}", file=sys.stderr)
        return 2
    print(result.text())
    return 3 if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry for scripts (``jobs/detect_videos.py``): the same arguments as ``raydetect detect``."""
    parser = argparse.ArgumentParser(prog="detect_videos.py", description=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _whole_number(text: str) -> int:
    """A whole number of any sign: the option's own rule checks the range, with its own message."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _crop_size(text: str) -> tuple[int, int]:
    try:
        return parse_crop_size(text)
    except CropError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _jpeg_quality(text: str) -> int:
    value = _positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"JPEG quality is 1-100, got {value}")
    return value


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value
