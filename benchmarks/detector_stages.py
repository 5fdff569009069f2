"""Where a detect call's time goes: the cascade's stages and the network passes inside them.

Runs the stage functions of :mod:`raydetect.mtcnn.cascade` one after the other on the speed benchmark's
workloads (a 1280x720 street frame, the 312-face crowd photo; ``min_face_size`` 20, CPU), and
separately the parts inside them: the pyramid levels' resampling and P-Net's forward passes inside
``propose``, R-Net's forward passes over all crops inside ``refine``, O-Net's inside ``finish``. The stages
run as ``detect`` runs them, in ``cpu_streams`` streams side by side; the parts run in the calling thread
alone on all torch threads, so with two streams a stage takes less than its parts. Minimum and median over
the repeats, in milliseconds of wall time.

Each stage's multiply-adds (``raydetect.tuning.pyramid_plan``: P-Net over every level, R-Net and O-Net per
candidate) over its median time give its achieved GMAC/s, printed beside the machine's convolution rate: a 3x3
convolution of P-Net's third layer on a 720p frame's first pyramid level (16 to 32 channels, channels-last,
float32), run the way the stages run (``cpu_streams`` threads side by side, each on its share of the torch
threads), best of the repeats. The ratio is how close a stage comes to the floor its arithmetic sets.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/detector_stages.py
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/detector_stages.py --repeats 9 --compile
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/detector_stages.py --cpu-streams 1
    .venv/bin/python benchmarks/detector_stages.py --data-root ../shared/data     # OpenMP's default wait policy
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media_inputs  # noqa: E402

from raydetect import FaceDetector  # noqa: E402
from raydetect.mtcnn.cascade import _crop_candidates, _forward, finish, propose, refine  # noqa: E402
from raydetect.mtcnn.nets import ONET_INPUT_SIZE, RNET_INPUT_SIZE  # noqa: E402
from raydetect.mtcnn.pyramid import level_sizes  # noqa: E402
from raydetect.mtcnn.resample import SummedAreaTables  # noqa: E402
from raydetect.mtcnn.streams import Streams  # noqa: E402
from raydetect.tuning.pyramid_plan import crop_network_macs, pnet_macs  # noqa: E402

WORKLOADS = {
    "street720": "videos/street_crowd_1080p.mp4@frames=0,resize=1280x720",
    "crowd17": "crowds/ultralight_imgs_17.jpg",
}


def _timed(step):
    started = time.perf_counter()
    result = step()
    return result, time.perf_counter() - started


def _crops_and_passes(net, crops_of, count: int, chunk: int, dtype) -> tuple[float, float]:
    """Seconds spent cutting the crops and in the network's passes, chunk by chunk as the stage does."""
    cutting = passes = 0.0
    for start in range(0, count, chunk):
        crops, seconds = _timed(lambda: crops_of(start, min(start + chunk, count)))
        cutting += seconds
        passes += _timed(lambda: _forward(net, crops, dtype))[1]
    return cutting, passes


# P-Net's third convolution on a 1280x720 frame's first pyramid level (min_face_size 20): the conv-rate probe.
PROBE_INPUT = (1, 16, 214, 382)
PROBE_WEIGHT = (32, 16, 3, 3)


def conv_rate(streams: Streams, repeats: int) -> float:
    """GMAC/s of the probe convolution, ``streams.count`` copies side by side (best of ``repeats``)."""
    x = torch.randn(PROBE_INPUT).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(PROBE_WEIGHT), torch.randn(PROBE_WEIGHT[0])
    out_h, out_w = PROBE_INPUT[2] - 2, PROBE_INPUT[3] - 2
    macs = out_h * out_w * PROBE_WEIGHT[0] * PROBE_WEIGHT[1] * 9 * streams.count
    best = float("inf")
    with torch.inference_mode(), streams.running():
        for _ in range(repeats + 2):  # two untimed: oneDNN builds its kernel on the first call
            started = time.perf_counter()
            streams.map(lambda _: torch.nn.functional.conv2d(x, weight, bias), range(streams.count))
            best = min(best, time.perf_counter() - started)
    return macs / best / 1e9


def stage_gmacs(image: torch.Tensor, detector: FaceDetector, stats: dict) -> dict[str, float]:
    """Multiply-adds of each stage for one image, in GMAC (from the layer shapes and the stage counts)."""
    config = detector.config
    height, width = image.shape[:2]
    levels = level_sizes(height, width, config.min_face_size, config.scale_factor)
    return {
        "propose (P-Net stage)": sum(pnet_macs(h, w) for h, w in levels) / 1e9,
        "refine (R-Net stage)": stats["rnet_candidates"] * crop_network_macs("rnet") / 1e9,
        "finish (O-Net stage)": stats["onet_candidates"] * crop_network_macs("onet") / 1e9,
    }


def measure(detector: FaceDetector, image: torch.Tensor) -> dict[str, float]:
    """Seconds of each stage and part for one image (one pass of each).

    The stages run as ``detect`` runs them, in the detector's streams; the parts under them run in the
    calling thread alone, on all of torch's threads.
    """
    pnet, rnet, onet = detector.nets
    config = detector.config
    streams = detector.streams()
    sizes = torch.tensor([[image.shape[0], image.shape[1]]])
    times = {}
    tables, times["summed-area tables"] = _timed(lambda: SummedAreaTables([image]))
    height, width = image.shape[:2]
    sizes_of_levels = level_sizes(height, width, config.min_face_size, config.scale_factor)
    levels, times["  levels resampled"] = _timed(
        lambda: [tables.resample_whole([0], *size, normalized=True) for size in sizes_of_levels])
    _, times["  P-Net passes"] = _timed(lambda: [_forward(pnet, level, config.compute_dtype) for level in levels])
    with streams.running():
        (proposals, _), times["propose (P-Net stage)"] = _timed(lambda: propose(pnet, tables, sizes, config, streams))
    kept, rnet_crops, _ = _crop_candidates(tables, sizes, proposals, RNET_INPUT_SIZE)
    times["  R-Net crops cut"], times["  R-Net passes"] = _crops_and_passes(
        rnet, rnet_crops, len(kept), config.rnet_batch, config.compute_dtype)
    with streams.running():
        refined, times["refine (R-Net stage)"] = _timed(lambda: refine(rnet, tables, sizes, proposals, config, streams))
    kept, onet_crops, _ = _crop_candidates(tables, sizes, refined, ONET_INPUT_SIZE)
    times["  O-Net crops cut"], times["  O-Net passes"] = _crops_and_passes(
        onet, onet_crops, len(kept), config.onet_batch, config.compute_dtype)
    with streams.running():
        _, times["finish (O-Net stage)"] = _timed(lambda: finish(onet, tables, sizes, refined, config, streams))
    _, times["whole detect call"] = _timed(lambda: detector.detect([image.numpy()]))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="FaceDetector(compile=True)")
    parser.add_argument("--precision", default="float32", help="FaceDetector precision: float32 or bfloat16")
    parser.add_argument("--cpu-streams", type=int, default=2, help="FaceDetector cpu_streams (1: all in one thread)")
    parser.add_argument("--data-root", type=Path, default=media_inputs.data_root_from_env())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    detector = FaceDetector(min_face_size=20, device="cpu", compile=args.compile, precision=args.precision,
                            cpu_streams=args.cpu_streams)
    rate = conv_rate(detector.streams(), args.repeats)
    print(f"torch threads {args.threads}, {detector.precision}, {'compiled' if detector.compiled else 'eager'}, "
          f"cpu_streams {args.cpu_streams}, "
          f"{args.repeats} repeats: ms, min / median\n")
    print(f"convolution rate (3x3, {PROBE_INPUT[1]} to {PROBE_WEIGHT[0]} channels, {PROBE_INPUT[2]}x{PROBE_INPUT[3]}, "
          f"as the stages run it): {rate:.1f} GMAC/s\n")
    for name, spec in WORKLOADS.items():
        (_, rgb), = media_inputs.load_all([spec], args.data_root)
        image = torch.from_numpy(rgb)
        with torch.inference_mode():
            measure(detector, image)  # warm-up: oneDNN kernels per shape, compilation
            runs = [measure(detector, image) for _ in range(args.repeats)]
        stats = detector.last_stats
        print(f"**{name}** ({image.shape[1]}x{image.shape[0]}, {stats['pnet_pixels']:,} pyramid pixels, "
              f"{stats['rnet_candidates']:,} R-Net / {stats['onet_candidates']:,} O-Net candidates)\n")
        gmacs = stage_gmacs(image, detector, stats)
        print("| part | min ms | median ms | GMAC | GMAC/s (median) | share of the convolution rate |\n"
              "|---|---:|---:|---:|---:|---:|")
        for part in runs[0]:
            values = [run[part] * 1000 for run in runs]
            median = statistics.median(values)
            work = gmacs.get(part) if part in gmacs else (sum(gmacs.values()) if part == "whole detect call" else None)
            achieved = f"| {work:.3f} | {work / median * 1000:.1f} | {work / median * 1000 / rate:.0%} |" if work else "| | | |"
            print(f"| {part.replace('  ', '- ')} | {min(values):.1f} | {median:.1f} {achieved}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
