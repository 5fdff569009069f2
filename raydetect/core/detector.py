"""FaceDetector: the batched MTCNN cascade behind one small object.

It owns the options, the device, the weights and the batching controller; it knows
nothing about Ray, so the same object serves scripts, Ray Data actors and Serve
replicas.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from raydetect.core.allocator import retain_freed_memory
from raydetect.core.batching import BatchController, WorkBudget
from raydetect.errors import InvalidImageError
from raydetect.core.image_checks import as_rgb_uint8
from raydetect.mtcnn import defaults, pyramid
from raydetect.mtcnn.cascade import ALL_LEVELS, CascadeConfig, run_cascade
from raydetect.mtcnn.streams import SERIAL, Streams
from raydetect.mtcnn.weights import load_networks
from raydetect.core.results import Detections

PRECISIONS = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}

# On the CPU, pyramid levels under this many pixels share one packed P-Net trunk pass
# (for a 720p frame at min_face_size 20: the seven smallest of eleven levels).
CPU_PACK_LEVELS_BELOW = 32_768


def auto_precision(device: torch.device) -> str:
    """The precision ``precision="auto"`` picks on ``device``: float16 on CUDA, bfloat16 on
    CPUs with bfloat16 dot products (where it is faster than float32), else float32."""
    if device.type == "cuda":
        return "float16"
    if device.type == "cpu" and cpu_has_bfloat16_dot_products():
        return "bfloat16"
    return "float32"


def cpu_has_bfloat16_dot_products() -> bool:
    """Whether this CPU multiplies bfloat16 natively (x86 AVX-512 BF16 or AMX tiles).

    Without them oneDNN emulates bfloat16, more slowly than float32. Asked through torch's
    CPU feature probes, which are private: a torch without them counts as no.
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(probe() for probe in probes if probe is not None)
    except RuntimeError:
        return False


class FaceDetector:
    """Finds faces, their scores and five landmarks in batches of RGB images.

    Args:
        min_face_size: smallest face side to find, in pixels (>= 1). P-Net's work grows as
            (1 / min_face_size)**2.
        thresholds: face probability thresholds of P-Net, R-Net and O-Net, each in [0, 1].
        scale_factor: ratio between pyramid levels, in (0, 1); the default halves the area per level.
        device: "cpu", "cuda", "cuda:1", a torch.device, or None for CUDA when available.
        budget: per-pass work limits (:class:`WorkBudget`); None picks one for the device.
        precision: "float32", "float16" (CUDA), "bfloat16", or "auto" (:func:`auto_precision`:
            float16 on CUDA, bfloat16 on CPUs with bfloat16 dot products, else float32). float32
            on a CPU gives the reference MTCNN's results to float rounding; float32 on CUDA (whose
            convolutions round otherwise) and the lower precisions agree closely, the latter
            faster (docs/benchmarks.md, Agreement and GPU check). Box arithmetic and NMS always run in
            float32; on a CPU, bfloat16 also keeps P-Net's first convolution and the dense
            layers in float32, where its rounding would move the results.
        weights_dir: folder with pnet.pt, rnet.pt and onet.pt; None uses the bundled ones.
        packed_pyramid: run P-Net's trunk once over the pyramid levels packed into one canvas
            (True) or level by level (False). None packs every level on CUDA and, on a CPU, the
            levels under :data:`CPU_PACK_LEVELS_BELOW` pixels, whose fixed per-pass costs dominate.
        compile: compile the networks with ``torch.compile`` in the first ``detect`` call (a
            one-time cost of tens of seconds; needs a C++ compiler on the CPU). Compiled networks
            run as one stream, so this is meant for GPUs and long-running processes. A failed
            compilation warns and runs uncompiled.
        cpu_streams: on a CPU, run each stage's independent pieces (groups of pyramid levels,
            chunks of crops) on this many threads, each with an equal share of torch's intra-op
            threads (:mod:`raydetect.mtcnn.streams`); 1 runs everything in the calling thread.

    Packing, streams and compilation change the results only by float rounding. On a CPU
    device the detector also raises glibc's malloc thresholds for the process
    (:func:`raydetect.core.allocator.retain_freed_memory`; ``RAYDETECT_MALLOC_TUNING=0`` turns
    it off). Speed figures: docs/benchmarks.md.
    """

    def __init__(
        self,
        min_face_size: float = defaults.MIN_FACE_SIZE,
        thresholds: Sequence[float] = defaults.THRESHOLDS,
        scale_factor: float = defaults.SCALE_FACTOR,
        device: str | torch.device | None = None,
        budget: WorkBudget | None = None,
        precision: str = "auto",
        weights_dir: str | Path | None = None,
        packed_pyramid: bool | None = None,
        compile: bool = False,
        cpu_streams: int = 2,
    ) -> None:
        if isinstance(cpu_streams, bool) or not isinstance(cpu_streams, int) or cpu_streams < 1:
            raise ValueError(f"cpu_streams must be a whole number of at least 1, got {cpu_streams!r}")
        thresholds = tuple(float(t) for t in thresholds)
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be three probabilities in [0, 1], got {thresholds}")
        pyramid.check_pyramid_options(min_face_size, scale_factor)
        self.device = _resolve_device(device)
        if self.device.type == "cpu":
            retain_freed_memory()
        if precision == "auto":
            precision = auto_precision(self.device)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)} or 'auto', got {precision!r}")
        if precision == "float16" and self.device.type != "cuda":
            raise ValueError("precision 'float16' needs a CUDA device; use 'bfloat16' or 'float32' on the CPU")
        self.precision = precision
        # On the CPU, bfloat16 applies to the inner layers only (the networks' conv_dtype); autocast elsewhere.
        cpu_bfloat16 = precision == "bfloat16" and self.device.type == "cpu"
        self.budget = budget or WorkBudget.for_device(self.device.type)
        self.config = CascadeConfig(
            min_face_size=float(min_face_size),
            thresholds=thresholds,  # type: ignore[arg-type]
            scale_factor=float(scale_factor),
            rnet_batch=self.budget.rnet_crops,
            onet_batch=self.budget.onet_crops,
            compute_dtype=None if cpu_bfloat16 else PRECISIONS[precision],
            pack_levels_below=_pack_levels_below(self.device, packed_pyramid),
        )
        self.controller = BatchController(self.budget)
        self.nets = tuple(
            net.to(self.device, memory_format=torch.channels_last) for net in load_networks(weights_dir)
        )
        for net in self.nets:
            net.conv_dtype = torch.bfloat16 if cpu_bfloat16 else None
        self._eager_nets = self.nets
        self.compiled = bool(compile)
        if self.compiled:
            # Dynamic shapes: crop counts and level sizes change from call to call.
            self.nets = tuple(torch.compile(net, dynamic=True) for net in self.nets)
        self.cpu_streams = cpu_streams
        self.last_stats: dict = {}

    @property
    def min_face_size(self) -> float:
        return self.config.min_face_size

    @property
    def scale_factor(self) -> float:
        return self.config.scale_factor

    @property
    def thresholds(self) -> tuple[float, float, float]:
        return self.config.thresholds

    def pyramid_pixels(self, height: int, width: int) -> int:
        """Pixels P-Net processes for one image of this size (all pyramid levels)."""
        return pyramid.pyramid_pixels(height, width, self.config.min_face_size, self.config.scale_factor)

    def detect(self, images: Sequence, bgr: bool = False) -> list[Detections]:
        """Detect faces in a batch of images.

        Args:
            images: sequence of (H, W, 3) uint8 RGB arrays (numpy or torch; sizes may
                differ), or one (N, H, W, 3) array. Grey and RGBA images are converted.
            bgr: the images are in OpenCV's BGR channel order.

        Returns:
            One :class:`Detections` per image, in order.
        """
        images = _as_image_list(images)
        checked = [as_rgb_uint8(image, index, bgr) for index, image in enumerate(images)]
        results: list[Detections] = []
        totals = {"images": 0, "pnet_pixels": 0, "rnet_candidates": 0, "onet_candidates": 0, "faces": 0}
        costs = [self.pyramid_pixels(int(img.shape[0]), int(img.shape[1])) for img in checked]
        totals["micro_batches"] = 0
        for batch in self.controller.plan(costs):
            started = time.perf_counter()
            tensors = [self._to_device(checked[i]) for i in batch]
            output = self._run(tensors)
            results.extend(_split_per_image(output, len(tensors)))
            self.controller.observe(output.stats, time.perf_counter() - started)
            totals["micro_batches"] += 1
            for key in ("images", "pnet_pixels", "rnet_candidates", "onet_candidates", "faces"):
                totals[key] += int(output.stats.get(key, 0))
        self.last_stats = totals
        return results

    def streams(self) -> Streams:
        """The streams a detect call runs its stages in now: one on CUDA and when compiled
        (compiled modules are not for concurrent threads), else up to ``cpu_streams``."""
        if self.device.type != "cpu" or self.compiled:
            return SERIAL
        return Streams.for_cpu(self.cpu_streams)

    def _run(self, tensors: list[torch.Tensor]):
        try:
            streams = self.streams()
            with torch.inference_mode(), streams.running():
                return run_cascade(self.nets, tensors, self.config, streams)
        except Exception as exc:
            if not self.compiled or not _is_compile_failure(exc):
                raise
            reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        warnings.warn(f"torch.compile failed ({reason}); the detector runs uncompiled", RuntimeWarning, stacklevel=3)
        self.nets, self.compiled = self._eager_nets, False
        streams = self.streams()
        with torch.inference_mode(), streams.running():
            return run_cascade(self.nets, tensors, self.config, streams)

    def detect_one(self, image, bgr: bool = False) -> Detections:
        """Detect faces in one (H, W, 3) uint8 image."""
        return self.detect([image], bgr=bgr)[0]

    def _to_device(self, image) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(np.ascontiguousarray(image))
        return image.to(self.device).contiguous()


def _pack_levels_below(device: torch.device, packed_pyramid: bool | None) -> int:
    if packed_pyramid is None:
        return ALL_LEVELS if device.type == "cuda" else CPU_PACK_LEVELS_BELOW
    return ALL_LEVELS if packed_pyramid else 0


def _is_compile_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from torch.compile itself (tracing, code generation, the C++ build)."""
    return (type(exc).__module__ or "").startswith(("torch._dynamo", "torch._inductor"))


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but CUDA is not available here")
    return device


def _as_image_list(images) -> list:
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim == 4:
            return list(images)
        raise InvalidImageError(
            f"detect() takes a sequence of images or one (N, H, W, 3) array, got an array of shape "
            f"{tuple(images.shape)}; for a single image use detect_one(image) or detect([image])"
        )
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise InvalidImageError(f"detect() takes a sequence of images, got {type(images).__name__}")
    return list(images)


def _split_per_image(output, count: int) -> list[Detections]:
    """Cut the flat cascade output (ordered by image) into one Detections per image."""
    per_image = torch.bincount(output.image_index, minlength=count).tolist() if len(output.scores) else [0] * count
    boxes = output.boxes.cpu().numpy().astype(np.float32)
    scores = output.scores.cpu().numpy().astype(np.float32)
    landmarks = output.landmarks.cpu().numpy().astype(np.float32)
    results, start = [], 0
    for n in per_image:
        results.append(Detections(boxes[start : start + n], scores[start : start + n], landmarks[start : start + n]))
        start += n
    return results
