"""One-shot GPU report: the CUDA defaults' numerics, speed and memory, in one run with nothing to configure.

    python benchmarks/gpu_check.py                            # on a CUDA machine, about 5 minutes
    python benchmarks/gpu_check.py --device cpu --quick       # CI: the same report, small, on the CPU

Sections of the report (markdown on stdout, everything also in ``--output`` JSON):

1. agreement with CPU float32 on the shared media, for the device's default configuration (float16 networks,
   the packed pyramid, the GPU work budget) and for float32 on the device: the agreement criteria of
   ``benchmarks/compare_peer.py`` (recall and confirmation of confident faces at IoU >= 0.7, landmark error);
2. the packed pyramid against per-level passes on the device (the same criteria);
3. frames per second on 1080p and 720p street frames at batch sizes 1, 8 and 32;
4. the 312-face crowd photo's time against a one-face frame of the same size (the goal: about the same cost);
5. peak GPU memory under the default work budget;
6. a short ``raydetect detect --gpus-per-actor 1`` job over the street video: frames per second and the share
   of its time spent decoding;
7. ``torch.compile`` on and off.

A line on stderr marks each section's end, and ``--output`` holds the report so far after each one.

With ``--device cpu`` the CUDA configuration runs on the CPU (:func:`cuda_defaults_on_cpu`; float16 there is
slow, so only ``--quick`` sizes are practical) and sections 5 to 7 say why they are skipped; ``--quick``
shrinks every workload to a few frames so that the whole report takes well under a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_peer  # noqa: E402
import media_inputs  # noqa: E402

AGREEMENT_INPUTS = ("photos", "crowds")
QUICK_AGREEMENT_INPUTS = ("photos/two_people.jpg", "crowds/insightface_pkg_t1.jpg")
STREET_VIDEO = "videos/street_crowd_1080p.mp4"
CROWD_PHOTO = "crowds/ultralight_imgs_17.jpg"
ONE_FACE_PHOTO = "photos/obama-720p.jpg"
MIN_FACE_SIZE = 20


def cuda_defaults_on_cpu(**options):
    """A CPU FaceDetector set up as ``FaceDetector(device="cuda")`` would be by default: the precision "auto"
    picks on CUDA (float16, under autocast), the packed pyramid and the GPU work budget; one stream, as on
    CUDA. Each setting comes from the rule that chooses it for CUDA, so this follows them if they change."""
    import torch

    from raydetect import FaceDetector
    from raydetect.core.batching import BatchController, WorkBudget
    from raydetect.core.detector import PRECISIONS, _pack_levels_below, auto_precision

    cuda = torch.device("cuda")
    detector = FaceDetector(device="cpu", precision="float32", cpu_streams=1, **options)
    budget = WorkBudget.for_device(cuda.type)
    detector.budget, detector.controller = budget, BatchController(budget)
    detector.precision = auto_precision(cuda)
    detector.config = dataclasses.replace(
        detector.config, compute_dtype=PRECISIONS[detector.precision], pack_levels_below=_pack_levels_below(cuda, None),
        rnet_batch=budget.rnet_crops, onet_batch=budget.onet_crops,
    )
    return detector


def device_detector(device: str, **options):
    """The detector under test: ``FaceDetector(device=...)`` with its defaults; the CUDA defaults on the CPU."""
    from raydetect import FaceDetector

    if device == "cpu":
        return cuda_defaults_on_cpu(**options)
    return FaceDetector(device=device, **options)


def records(detector, images: dict[str, np.ndarray]) -> dict[str, dict]:
    """Detections per image, shaped as compare_peer's records."""
    out = {}
    for key, rgb in images.items():
        faces = detector.detect_one(rgb)
        out[key] = {"boxes": faces.boxes.tolist(), "scores": faces.scores.tolist(),
                    "landmarks": faces.landmarks.tolist()}
    return out


def agreement(reference: dict[str, dict], candidate: dict[str, dict]) -> dict:
    """compare_peer's criteria with ``reference`` in the peer's place, and whether each target is met."""
    result = compare_peer.compare_images(reference, candidate)
    summary = {key: result[key] for key in ("images", "peer_strong", "recall_vs_peer_pct", "our_strong",
                                            "confirmed_by_peer_pct", "landmark_median_pct", "landmark_p95_pct")}

    def at_least(value, target):
        return value is None or value >= target

    summary["passes"] = bool(
        at_least(result["recall_vs_peer_pct"], compare_peer.RECALL_TARGET)
        and at_least(result["confirmed_by_peer_pct"], compare_peer.CONFIRMED_TARGET)
        and (result["landmark_median_pct"] is None or result["landmark_median_pct"] <= compare_peer.LANDMARK_TARGET)
    )
    return summary


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def seconds_per_call(detector, batch: list[np.ndarray], device: str, repeats: int) -> float:
    """Median wall seconds of one ``detect(batch)`` call, after one untimed call."""
    detector.detect(batch)
    times = []
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        detector.detect(batch)
        _synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def frames_per_second(detector, frames: dict[str, list[np.ndarray]], batch_sizes: list[int], device: str,
                      repeats: int) -> list[dict]:
    rows = []
    for name, sequence in frames.items():
        for size in batch_sizes:
            batch = (sequence * -(-size // len(sequence)))[:size]
            seconds = seconds_per_call(detector, batch, device, repeats)
            rows.append({"frames": name, "batch": size, "fps": size / seconds, "ms_per_call": seconds * 1000})
    return rows


# Frame sizes of the frames-per-second section: the street video as it is (1080p) and resized; --quick
# (float16 on a CPU is slow) takes small sizes, which run the same code.
FRAME_SIZES = {"1080p": None, "720p": "1280x720"}
QUICK_FRAME_SIZES = {"270p (quick)": "480x270"}


def street_frames(data_root: Path, count: int, sizes: dict[str, str | None] = FRAME_SIZES) -> dict[str, list]:
    spec = f"{STREET_VIDEO}@every={max(1, 105 // count)}"
    return {name: [rgb for _, rgb in media_inputs.load_all([spec + (f",resize={size}" if size else "")],
                                                             data_root)][:count]
            for name, size in sizes.items()}


def crowd_against_one_face(detector, data_root: Path, device: str, repeats: int) -> dict:
    import cv2

    (_, crowd), = media_inputs.load_all([CROWD_PHOTO], data_root)
    (_, single), = media_inputs.load_all([ONE_FACE_PHOTO], data_root)
    single = cv2.resize(single, (crowd.shape[1], crowd.shape[0]), interpolation=cv2.INTER_AREA)
    crowd_s = seconds_per_call(detector, [crowd], device, repeats)
    faces_crowd = len(detector.detect_one(crowd))
    single_s = seconds_per_call(detector, [single], device, repeats)
    faces_single = len(detector.detect_one(single))
    return {"size": f"{crowd.shape[1]}x{crowd.shape[0]}", "crowd_ms": crowd_s * 1000, "crowd_faces": faces_crowd,
            "one_face_ms": single_s * 1000, "one_face_faces": faces_single, "ratio": crowd_s / single_s}


def peak_memory(device: str, data_root: Path) -> dict:
    import torch

    detector = device_detector(device)
    frames = street_frames(data_root, 8)["1080p"]
    torch.cuda.reset_peak_memory_stats()
    batch = (frames * 8)[:64]
    detector.detect(batch)
    return {"budget": dataclasses.asdict(detector.budget), "frames": len(batch),
            "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
            "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20}


def compile_on_off(device: str, data_root: Path, repeats: int) -> list[dict]:
    frames = street_frames(data_root, 8)["720p"]
    rows = []
    for compiled in (False, True):
        detector = device_detector(device, compile=compiled)
        started = time.perf_counter()
        detector.detect(frames)
        first = time.perf_counter() - started
        seconds = seconds_per_call(detector, frames, device, repeats)
        rows.append({"compile": compiled, "still_compiled": detector.compiled, "first_call_s": first,
                     "fps": len(frames) / seconds})
    return rows


def job_stages(video: Path, frames: int, device: str) -> dict:
    """The job's own steps over ``frames`` frames of ``video``, with crops, in this process without Ray, timed
    step by step (``benchmarks/job_breakdown.py``): seconds and shares of decoding, detection, cropping and
    writing, and frames per second through them one after the other."""
    import job_breakdown

    from raydetect.offline.video import Sampling

    seconds, detected, faces = job_breakdown.run_stages([str(video)], Sampling(count=frames), os.cpu_count() or 1,
                                                        device)
    total = sum(seconds.values())
    return {"frames": detected, "faces": faces, "seconds": seconds,
            "shares": {name: value / total for name, value in seconds.items()}, "frames_per_second": detected / total}


# The job takes under half a minute on a GPU; past this it is stuck (a GPU that hangs, say), and the report goes on
# (the killed command's own Ray processes are not chased: this runs once, on a machine of its own).
JOB_TIMEOUT_S = 600


def run_command(command: list[str], timeout_s: float) -> dict:
    """Run ``command``; its exit status (None if it ran past ``timeout_s`` and was killed), wall seconds and the
    tail of its output."""
    started = time.perf_counter()
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        status, stdout, stderr = finished.returncode, finished.stdout, finished.stderr
    except subprocess.TimeoutExpired as expired:
        status = None
        stdout, stderr = (_text(expired.stdout), _text(expired.stderr) + f"\ntimed out after {timeout_s:g} s")
    return {"exit_status": status, "wall_s": time.perf_counter() - started,
            "log_tail": stdout[-2000:] + stderr[-2000:]}


def _text(output: bytes | str | None) -> str:
    """What TimeoutExpired caught of a stream (bytes even with text=True), as text."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def detect_job(data_root: Path, device: str) -> dict:
    """A short ``raydetect detect --gpus-per-actor 1`` job: 32 frames of the street video, with crops; then the
    same frames through the job's steps one by one (:func:`job_stages`), for the share of decoding."""
    with tempfile.TemporaryDirectory() as output:
        command = [sys.executable, "-m", "raydetect", "detect", str(data_root / STREET_VIDEO), "--output", output,
                   "--frames-per-video", "32", "--crops", "--gpus-per-actor", "1"]
        report = {"command": " ".join(command[1:]), **run_command(command, JOB_TIMEOUT_S)}
        report["fps_including_start"] = 32 / report["wall_s"]
        try:
            import pyarrow.parquet as pq

            videos = pq.read_table(Path(output) / "videos").to_pylist()
            report["videos"] = [{k: v for k, v in row.items() if "second" in k or "frame" in k} for row in videos]
        except Exception as exc:  # the log tail says why the job wrote nothing
            report["videos_error"] = repr(exc)
    report["stages"] = job_stages(data_root / STREET_VIDEO, 32, device)
    return report


def run(device: str, quick: bool, data_root: Path, on_section=lambda name, report: None) -> dict:
    """The report, section by section; ``on_section(name, report)`` is called after each one (progress, and a
    partial report on disk in case the run is cut short)."""
    import torch

    from raydetect import FaceDetector

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; run it on a GPU machine, or with --device cpu --quick")
    repeats = 1 if quick else 5
    specs = QUICK_AGREEMENT_INPUTS if quick else AGREEMENT_INPUTS
    images = {item.key: rgb for item, rgb in media_inputs.load_all(list(specs), data_root)}
    reference = records(FaceDetector(min_face_size=MIN_FACE_SIZE, device="cpu", precision="float32"), images)
    target = device_detector(device, min_face_size=MIN_FACE_SIZE)
    report: dict = {"device": device, "quick": quick, "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
                    "default_precision": target.precision, "inputs": len(images)}
    found = records(target, images)
    report["agreement_default"] = agreement(reference, found)
    if device == "cpu":  # float32 on the device is the reference itself
        report["agreement_float32"] = agreement(reference, reference)
    else:
        report["agreement_float32"] = agreement(
            reference, records(device_detector(device, min_face_size=MIN_FACE_SIZE, precision="float32"), images))
    per_level = device_detector(device, min_face_size=MIN_FACE_SIZE)
    per_level.config = dataclasses.replace(per_level.config, pack_levels_below=0)
    report["packed_against_per_level"] = agreement(records(per_level, images), found)
    on_section("agreement", report)
    frames = street_frames(data_root, 2, QUICK_FRAME_SIZES) if quick else street_frames(data_root, 32)
    report["frames_per_second"] = frames_per_second(target, frames, [1, 2] if quick else [1, 8, 32], device, repeats)
    on_section("frames_per_second", report)
    if quick:
        report["crowd_against_one_face"] = "skipped (--quick)"
    else:
        report["crowd_against_one_face"] = crowd_against_one_face(target, data_root, device, repeats)
    on_section("crowd_against_one_face", report)
    on_gpu = device.startswith("cuda")
    report["peak_memory"] = peak_memory(device, data_root) if on_gpu else "skipped (no GPU)"
    on_section("peak_memory", report)
    # The job before torch.compile: compiling is the slowest section, and the last to give up if time runs out.
    report["detect_job"] = detect_job(data_root, device) if on_gpu and not quick else "skipped"
    on_section("detect_job", report)
    report["compile"] = compile_on_off(device, data_root, repeats) if on_gpu and not quick else "skipped"
    on_section("compile", report)
    return report


def progress(output: Path | None):
    """An ``on_section`` for :func:`run`: a line on stderr with the seconds so far, and the report so far
    written to ``output``."""
    started = time.perf_counter()

    def report_section(name: str, report: dict) -> None:
        print(f"[gpu_check] {name} done after {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        if output:
            output.write_text(json.dumps(report, indent=1, default=str))

    return report_section


def print_report(report: dict) -> None:
    print(f"# GPU check: {report['device']} ({report['gpu'] or 'no GPU'}), torch {report['torch']}, "
          f"default precision {report['default_precision']}{', quick' if report['quick'] else ''}\n")
    print("| agreement with CPU float32 | images | confident faces | recall % | confirmed % | landmark median % "
          "| p95 % | criteria met |\n|---|---:|---:|---:|---:|---:|---:|---|")
    for name in ("agreement_default", "agreement_float32", "packed_against_per_level"):
        a = report[name]
        cells = [a["images"], a["peer_strong"], a["recall_vs_peer_pct"], a["confirmed_by_peer_pct"],
                 a["landmark_median_pct"], a["landmark_p95_pct"]]
        print(f"| {name} | " + " | ".join("" if c is None else f"{c:.2f}" if isinstance(c, float) else str(c)
                                          for c in cells) + f" | {'yes' if a['passes'] else 'NO'} |")
    print("\n| frames | batch | frames/s | ms per call |\n|---|---:|---:|---:|")
    for row in report["frames_per_second"]:
        print(f"| {row['frames']} | {row['batch']} | {row['fps']:.1f} | {row['ms_per_call']:.0f} |")
    for name in ("crowd_against_one_face", "peak_memory", "detect_job", "compile"):
        print(f"\n**{name}**: {json.dumps(report[name], default=str)}")
    stages = report["detect_job"].get("stages") if isinstance(report["detect_job"], dict) else None
    if stages:
        print(f"\n| the job's steps, {stages['frames']} frames in one process | seconds | share |\n|---|---:|---:|")
        for step, seconds in stages["seconds"].items():
            print(f"| {step} | {seconds:.2f} | {100 * stages['shares'][step]:.0f}% |")
        print(f"| all, {stages['frames_per_second']:.1f} frames/s | {sum(stages['seconds'].values()):.2f} | |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (the CUDA defaults on it)")
    parser.add_argument("--quick", action="store_true", help="a few frames per section (CI)")
    parser.add_argument("--data-root", type=Path, default=media_inputs.data_root_from_env())
    parser.add_argument("--output", type=Path, help="JSON with every figure")
    args = parser.parse_args(argv)
    if not args.data_root.is_dir():
        parser.error(f"shared media not found at {args.data_root} (--data-root)")
    report = run(args.device, args.quick, args.data_root, progress(args.output))
    print_report(report)
    met = all(report[name]["passes"] for name in ("agreement_default", "agreement_float32", "packed_against_per_level"))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
