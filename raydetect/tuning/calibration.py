"""A once-per-machine measurement that turns a pyramid plan into milliseconds per frame.

Time per frame is modelled as

    ms = fixed + per_gmac * P-Net GMACs + per_rnet * R-Net candidates + per_onet * O-Net candidates

P-Net work follows from the frame size and options alone (:mod:`raydetect.tuning.pyramid_plan`); the
candidate counts depend on what the frame shows, which is why no estimate can be exact. The
coefficients are fitted to timings of the real detector on this machine (the fastest of five
calls per frame, taken in rounds over all frames: the cost without interference from other work),
the P-Net terms first:
uniform frames of several sizes (P-Net only: nothing there to propose), the bundled sample
video's frames, and tiles of them (many candidates), the latter at two R-Net thresholds so
R-Net and O-Net candidate counts vary apart. The typical candidate density (candidates per
P-Net pixel) of the sample frames gives the default estimate.

The result is cached as JSON under ``$RAYDETECT_CACHE_DIR`` (default ``~/.cache/raydetect``),
keyed by the things that change the timings: device, CPU, thread count, torch version.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from raydetect.mtcnn.defaults import MIN_FACE_SIZE, SCALE_FACTOR, THRESHOLDS
from raydetect.tuning.pyramid_plan import PyramidPlan, plan_pyramid

CACHE_ENV = "RAYDETECT_CACHE_DIR"
# 2: fastest of the repeats, not the median; 3: P-Net terms fitted on their own; 4: repeats in rounds;
# 5: fitted for relative error
CALIBRATION_VERSION = 5
# Frame sizes (height, width) of the uniform P-Net-only frames.
UNIFORM_SIZES = ((360, 640), (540, 960), (720, 1280), (1080, 1920))
CALIBRATION_MIN_FACE = MIN_FACE_SIZE
CALIBRATION_SCALE_FACTOR = SCALE_FACTOR


@dataclass(frozen=True)
class Sample:
    """One timed detector call on one frame."""

    label: str
    gmacs: float
    pnet_pixels: int
    rnet_candidates: int
    onet_candidates: int
    ms: float


@dataclass(frozen=True)
class Calibration:
    """Fitted cost model (milliseconds) and what it was measured on."""

    fixed_ms: float
    ms_per_gmac: float
    ms_per_rnet_candidate: float
    ms_per_onet_candidate: float
    rnet_per_megapixel: float  # typical R-Net candidates per million P-Net pixels (sample video)
    onet_per_megapixel: float
    hardware: dict
    measured_at: str
    samples: list[Sample] = field(default_factory=list)

    def estimate_ms(
        self, plan: PyramidPlan, rnet_candidates: float | None = None, onet_candidates: float | None = None
    ) -> dict:
        """Expected milliseconds for one frame of ``plan``.

        Candidate counts default to the typical density measured on the sample video.
        Returns ``{"ms", "floor_ms", "pnet_ms", "rnet_candidates", "onet_candidates"}``;
        ``floor_ms`` is the cost with no candidate at all (nothing in the frame).
        """
        megapixels = plan.pixels / 1e6
        rnet = self.rnet_per_megapixel * megapixels if rnet_candidates is None else rnet_candidates
        onet = self.onet_per_megapixel * megapixels if onet_candidates is None else onet_candidates
        pnet_ms = self.ms_per_gmac * plan.macs / 1e9
        floor = self.fixed_ms + pnet_ms
        total = floor + self.ms_per_rnet_candidate * rnet + self.ms_per_onet_candidate * onet
        return {"ms": total, "floor_ms": floor, "pnet_ms": pnet_ms, "rnet_candidates": rnet, "onet_candidates": onet}

    def to_json(self) -> dict:
        return {"version": CALIBRATION_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, document: dict) -> "Calibration":
        fields = {k: v for k, v in document.items() if k != "version"}
        fields["samples"] = [Sample(**s) for s in fields.get("samples", [])]
        return cls(**fields)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "raydetect")


def hardware_key(device: str) -> dict:
    """What the timings depend on: device name, CPU model and count, torch threads and version."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = _cpu_model()
    return {
        "device": device,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }


def cache_path(hardware: dict) -> Path:
    tag = "-".join(str(hardware[k]) for k in ("device", "cpu_count", "torch_threads", "torch"))
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{tag}-{hardware['device_name']}")
    return cache_dir() / f"calibration-{safe}.json"


def load_or_measure(
    device: str | None = None,
    recalibrate: bool = False,
    measure: Callable[[str], Calibration] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[Calibration, Path, bool]:
    """The cached calibration for this machine, measuring (and caching) it when absent.

    Returns (calibration, cache file, whether it was measured now).
    """
    device = resolve_device(device)
    hardware = hardware_key(device)
    path = cache_path(hardware)
    if path.is_file() and not recalibrate:
        try:
            document = json.loads(path.read_text())
            if document.get("version") == CALIBRATION_VERSION and document.get("hardware") == hardware:
                return Calibration.from_json(document), path, False
        except (ValueError, TypeError, KeyError):
            log(f"ignoring unreadable calibration cache {path}")
    log(f"calibrating on {hardware['device_name']} ({device}); cached afterwards in {path}")
    calibration = (measure or measure_calibration)(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(calibration.to_json(), indent=1))
    temporary.replace(path)  # atomic: a concurrent reader never sees half a file
    return calibration, path, True


def resolve_device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def measure_calibration(
    device: str,
    uniform_sizes: Sequence[tuple[int, int]] = UNIFORM_SIZES,
    sample_frames: int = 6,
    tiles: Sequence[int] = (2, 3),
    repeats: int = 5,
) -> Calibration:
    """Time the real detector on this machine and fit the cost model (see the module docstring)."""
    from raydetect.core.detector import FaceDetector

    options = dict(min_face_size=CALIBRATION_MIN_FACE, scale_factor=CALIBRATION_SCALE_FACTOR, device=device)
    detector = FaceDetector(**options)
    # The default thresholds with a stricter R-Net: fewer O-Net candidates on the same frames.
    strict = FaceDetector(thresholds=(THRESHOLDS[0], 0.95, THRESHOLDS[2]), **options)
    jobs = [
        (f"uniform {width}x{height}", detector, np.full((height, width, 3), 128, np.uint8))
        for height, width in uniform_sizes
    ]
    frames = load_sample_frames(sample_frames)
    jobs += [(f"sample frame {index}", detector, frame) for index, frame in enumerate(frames)]
    for n in tiles:
        mosaic = np.tile(frames[0], (n, n, 1))
        for name, tile_detector in (("default", detector), ("strict R-Net", strict)):
            jobs.append((f"{n}x{n} tiles, {name}", tile_detector, mosaic))
    samples = time_frames(jobs, repeats)
    typical = [s for s in samples if s.label.startswith("sample frame")]
    coefficients = fit_cost_model(samples)
    megapixels = np.array([s.pnet_pixels for s in typical], float) / 1e6
    return Calibration(
        *coefficients,
        rnet_per_megapixel=float(np.median([s.rnet_candidates for s in typical] / megapixels)),
        onet_per_megapixel=float(np.median([s.onet_candidates for s in typical] / megapixels)),
        hardware=hardware_key(device),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
        samples=samples,
    )


def time_frames(
    jobs: Sequence[tuple[str, object, np.ndarray]], repeats: int, min_face_size: float = CALIBRATION_MIN_FACE
) -> list[Sample]:
    """One Sample per ``(label, detector, frame)``: the fastest of ``repeats`` single-frame calls
    (work counted for detectors built with ``min_face_size`` and the default scale factor).

    The calls run in rounds (every job once, then again), so a burst of other work on a shared
    machine slows one call of many jobs instead of every call of one job; and the minimum is
    kept because other work only ever adds time.
    """
    for _, detector, frame in jobs:
        detector.detect([frame])  # warm-up: first calls pay for allocation and kernel selection
    times: list[list[float]] = [[] for _ in jobs]
    counts: list[tuple[int, int]] = [(0, 0)] * len(jobs)
    for _ in range(repeats):
        for index, (_, detector, frame) in enumerate(jobs):
            start = time.perf_counter()
            detector.detect([frame])
            _synchronize(detector)
            times[index].append((time.perf_counter() - start) * 1000)
            stats = detector.last_stats
            counts[index] = (int(stats.get("rnet_candidates", 0)), int(stats.get("onet_candidates", 0)))
    samples = []
    for (label, _, frame), job_times, (rnet, onet) in zip(jobs, times, counts):
        plan = plan_pyramid(frame.shape[0], frame.shape[1], min_face_size, CALIBRATION_SCALE_FACTOR)
        samples.append(Sample(label, plan.macs / 1e9, plan.pixels, rnet, onet, float(np.min(job_times))))
    return samples


def fit_cost_model(samples: Sequence[Sample]) -> tuple[float, float, float, float]:
    """(fixed ms, ms per P-Net GMAC, ms per R-Net candidate, ms per O-Net candidate).

    Two steps, so noise in the candidate-heavy timings cannot bend the P-Net terms: the frames
    without candidates (P-Net only) fix ``fixed`` and ``per GMAC``; the other frames' time left
    over after those fixes the two per-candidate costs. With fewer than two candidate-free
    frames, all four are fitted together. Every fit is non-negative least squares on relative
    errors (each frame's residual divided by its time): an estimate is read as a ratio, and
    plain least squares lets the largest frame decide the fixed cost, which then comes out near
    zero and makes small frames look far cheaper than they are.
    """
    design = np.array([[1.0, s.gmacs, s.rnet_candidates, s.onet_candidates] for s in samples])
    target = np.array([s.ms for s in samples])
    weight = 1.0 / np.maximum(target, 1e-3)
    pnet_only = (design[:, 2] == 0) & (design[:, 3] == 0)
    if pnet_only.sum() < 2:
        return tuple(float(v) for v in _nonnegative_lstsq(design, target, weight))
    fixed, per_gmac = _nonnegative_lstsq(design[pnet_only, :2], target[pnet_only], weight[pnet_only])
    rest = ~pnet_only
    per_rnet, per_onet = (0.0, 0.0)
    if rest.any():
        leftover = target[rest] - fixed - per_gmac * design[rest, 1]
        per_rnet, per_onet = _nonnegative_lstsq(design[rest, 2:], leftover, weight[rest])
    return float(fixed), float(per_gmac), float(per_rnet), float(per_onet)


def _nonnegative_lstsq(design: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted least squares (residual i scaled by weight[i]) with every coefficient >= 0: a
    negative one (noise on a term that barely varies) is dropped and the rest refitted."""
    active = list(range(design.shape[1]))
    design, target = design * weight[:, None], target * weight
    while True:
        solution = np.zeros(design.shape[1])
        if active:
            solution[active] = np.linalg.lstsq(design[:, active], target, rcond=None)[0]
        negative = [i for i in active if solution[i] < 0]
        if not negative:
            return solution
        active.remove(min(negative, key=lambda i: solution[i]))


def load_sample_frames(count: int) -> list[np.ndarray]:
    """``count`` RGB frames spread over the bundled sample video (raydetect/data/sample.mp4)."""
    import cv2

    from importlib.resources import files

    path = files("raydetect.data") / "sample.mp4"
    capture = cv2.VideoCapture(str(path))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or count
    wanted = set(np.linspace(0, total - 1, count).astype(int).tolist())
    frames, index = [], 0
    while len(frames) < len(wanted):
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        index += 1
    capture.release()
    if not frames:
        raise RuntimeError(f"could not decode the bundled sample video {path}")
    return frames


def _synchronize(detector) -> None:
    device = str(getattr(detector, "device", "cpu"))
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
