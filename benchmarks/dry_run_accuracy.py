"""How close is ``detect --dry-run``'s detector time? Its estimate against the detector timed on the same frames.

    python benchmarks/dry_run_accuracy.py VIDEO [VIDEO ...] [--every 10] [--max-side 640] [--min-face-size 20]

For each video: the dry run's estimate (``raydetect.offline.estimate`` with this machine's ``raydetect plan``
calibration) and the wall time of ``FaceDetector.detect`` over the same sampled frames, decoded and downscaled
beforehand (not timed), in chunks of 16 frames as an actor gets them, with the calibration's torch threads.
Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--min-face-size", type=float, default=20.0)
    args = parser.parse_args()

    import torch

    from raydetect.core.detector import FaceDetector
    from raydetect.offline.estimate import add_detector_time, estimate
    from raydetect.offline.shards import ShardOptions
    from raydetect.offline.video import FrameRange, Sampling, fit_max_side, probe
    from raydetect.tuning.calibration import load_or_measure

    calibration, _, _ = load_or_measure("cpu")
    torch.set_num_threads(int(calibration.hardware["torch_threads"]))
    options = ShardOptions(sampling=Sampling(every=args.every), max_side=args.max_side)
    detector = FaceDetector(min_face_size=args.min_face_size, device="cpu")
    print("| video | frames sampled | detected at | estimate, s | measured, s | measured / estimate |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    totals = [0.0, 0.0]
    for video in args.videos:
        info = probe(video)
        row = {"video": video, "error": "", "frame_count": info.frame_count, "fps": info.fps,
               "width": info.width, "height": info.height}
        predicted = estimate([row], 1, options)
        add_detector_time(predicted, calibration, args.min_face_size, 0.709)
        frames = [fit_max_side(f.image, args.max_side)[0]
                  for f in FrameRange(video, 0, None, options.sampling.selector(info), info.fps)]
        detector.detect(frames[:2])  # warm-up, not timed
        started = time.perf_counter()
        for start in range(0, len(frames), 16):
            detector.detect(frames[start:start + 16])
        measured = time.perf_counter() - started
        expected = predicted.detector_ms / 1000 * len(frames) / max(1, predicted.sampled)
        totals[0] += expected
        totals[1] += measured
        (width, height), = predicted.sizes
        print(f"| {video.rsplit('/', 1)[-1]} | {len(frames)} | {width}x{height} | {expected:.1f} | {measured:.1f} | "
              f"{measured / expected:.2f} |", flush=True)
    print(f"| all | | | {totals[0]:.1f} | {totals[1]:.1f} | {totals[1] / totals[0]:.2f} |")


if __name__ == "__main__":
    main()
