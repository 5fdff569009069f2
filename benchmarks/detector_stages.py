"""Where a detect call's time goes: the cascade's stages and the network passes inside them.

Runs the stage functions of :mod:`raydetect.mtcnn.cascade` one after the other on the speed benchmark's
workloads (a 1280x720 street frame, the 312-face crowd photo; ``min_face_size`` 20, CPU), and
separately the parts inside them: the pyramid levels' resampling and P-Net's forward passes inside
``propose``, R-Net's forward passes over all crops inside ``refine``, O-Net's inside ``finish``. The stages
run as ``detect`` runs them, in ``cpu_streams`` streams side by side; the parts run in the calling thread
alone on all torch threads, so with two streams a stage takes less than its parts. Minimum and median over
the repeats, in milliseconds of wall time.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/detector_stages.py
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/detector_stages.py --repeats 9 --compile
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/detector_stages.py --cpu-streams 1
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
    print(f"torch threads {args.threads}, {detector.precision}, {'compiled' if detector.compiled else 'eager'}, "
          f"cpu_streams {args.cpu_streams}, "
          f"{args.repeats} repeats: ms, min / median\n")
    for name, spec in WORKLOADS.items():
        (_, rgb), = media_inputs.load_all([spec], args.data_root)
        image = torch.from_numpy(rgb)
        with torch.inference_mode():
            measure(detector, image)  # warm-up: oneDNN kernels per shape, compilation
            runs = [measure(detector, image) for _ in range(args.repeats)]
        stats = detector.last_stats
        print(f"**{name}** ({image.shape[1]}x{image.shape[0]}, {stats['pnet_pixels']:,} pyramid pixels, "
              f"{stats['rnet_candidates']:,} R-Net / {stats['onet_candidates']:,} O-Net candidates)\n")
        print("| part | min ms | median ms |\n|---|---:|---:|")
        for part in runs[0]:
            values = [run[part] * 1000 for run in runs]
            print(f"| {part.replace('  ', '- ')} | {min(values):.1f} | {statistics.median(values):.1f} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
