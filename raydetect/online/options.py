"""Options of the online service: placement, batching and request limits, in one flat dataclass.

Flat so that the same names work everywhere: ``raydetect serve --max-batch-pixels ...``,
``serve run raydetect.serve:build_app max_batch_pixels=...`` (strings are converted), and
the ``args`` of an application in a Serve config file. No Ray import here.

Two subsets travel separately, each as a deployment's ``user_config`` (changed at runtime,
without restarting replicas, by ``serve deploy`` of an edited config): :class:`BatchingConfig`
for the detector deployment and :class:`RequestLimits` for the HTTP ingress.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

from raydetect.core.image_checks import MAX_PIXELS

MIB = 2**20
TOKEN_ENV = "RAYDETECT_API_TOKEN"
# Default batch budget of a GPU replica, as in cluster/serve.yaml: about 20 frames of 1920x1080
# at min_face_size 20, within the detector's own 64M-pixel pass budget on CUDA (not measured here).
GPU_BATCH_PIXELS = 32_000_000


@dataclass(frozen=True)
class BatchingConfig:
    """How the detector deployment groups concurrent requests (its Serve ``user_config``).

    Attributes:
        max_batch_pixels: budget of one batch in P-Net pixels: the sum over requests of the
            pixels of every pyramid level (about ``2 * H * W * (12 / min_face_size)^2`` each).
            A request larger than the budget runs alone. The default is the size of the CPU
            detector's own passes (:class:`raydetect.core.batching.WorkBudget`); docs/benchmarks.md
            (Serve) compares budgets. GPU replicas take far more (:data:`GPU_BATCH_PIXELS`).
        batch_wait_timeout_s: how long the first request of a batch waits for others, seconds.
            0 by default: batches still form under load, from the requests that queue while the
            detector is busy (see :mod:`raydetect.online.batch_merger`), and a lone request waits for
            nothing. A few milliseconds can fill batches better where the detector is fast
            (a GPU) and requests arrive just apart.
    """

    max_batch_pixels: int = 1_000_000
    batch_wait_timeout_s: float = 0.0

    def __post_init__(self) -> None:
        _require(isinstance(self.max_batch_pixels, int) and self.max_batch_pixels >= 1,
                 f"max_batch_pixels must be an integer >= 1, got {self.max_batch_pixels!r}")
        _require(_is_number(self.batch_wait_timeout_s) and 0 <= self.batch_wait_timeout_s <= 10,
                 f"batch_wait_timeout_s must be in [0, 10] seconds, got {self.batch_wait_timeout_s!r}")

    @classmethod
    def from_user_config(cls, config: typing.Mapping | None) -> "BatchingConfig":
        """Validated config from a deployment's ``user_config``; unknown keys are an error."""
        return _from_mapping(cls, config or {}, "user_config")

    def to_user_config(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RequestLimits:
    """What the HTTP ingress accepts (bigger requests are refused with 413); its ``user_config``.

    Attributes:
        max_image_bytes: body size of ``POST /detect``.
        max_image_megapixels: width * height of an image, read from its header before decoding.
            At most the detector's own limit (:data:`raydetect.core.image_checks.MAX_PIXELS`);
            lower by default because the ingress decodes every upload in memory (3 bytes a pixel)
            and sends it on to a detector replica.
        max_video_bytes: body size of ``POST /detect/video``.
        max_video_frames: frames a clip may have (decoding stops there whatever the header says).
        max_video_megapixels: width * height of one video frame.
        video_frames_in_flight: sampled frames of one clip sent to the detector before the
            first answer is awaited (lets frames of one clip share a batch; bounds memory).
        crop_size: side of each face crop in pixels (``crops=true``).
        crop_margin: context around a face in a crop, as a fraction of the face's side.
    """

    max_image_bytes: int = 20 * MIB
    max_image_megapixels: float = 40.0
    max_video_bytes: int = 64 * MIB
    max_video_frames: int = 3000
    max_video_megapixels: float = 8.3  # 3840x2160
    video_frames_in_flight: int = 8
    crop_size: int = 224
    crop_margin: float = 0.3

    def __post_init__(self) -> None:
        for name in ("max_image_bytes", "max_video_bytes", "max_video_frames", "video_frames_in_flight", "crop_size"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        for name in ("max_image_megapixels", "max_video_megapixels"):
            value = getattr(self, name)
            _require(_is_number(value) and 0 < value <= MAX_PIXELS / 1e6,
                     f"{name} must be positive and at most the detector's {MAX_PIXELS / 1e6:g} megapixels, "
                     f"got {value!r}")
        _require(_is_number(self.crop_margin) and 0 <= self.crop_margin <= 4,
                 f"crop_margin must be in [0, 4], got {self.crop_margin!r}")

    @classmethod
    def from_user_config(cls, config: typing.Mapping | None) -> "RequestLimits":
        """Validated limits from the ingress deployment's ``user_config``; unknown keys are an error."""
        return _from_mapping(cls, config or {}, "user_config")

    def to_user_config(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def max_image_pixels(self) -> int:
        return int(self.max_image_megapixels * 1e6)

    @property
    def max_video_pixels(self) -> int:
        return int(self.max_video_megapixels * 1e6)


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``build_app`` needs. Batching and limit fields mirror the two classes above.

    Attributes:
        replicas: detector replicas (the minimum when ``max_replicas`` is larger).
        max_replicas: when larger than ``replicas``, Serve autoscales between the two.
        target_ongoing_requests: autoscaling target per detector replica.
        gpus_per_replica: GPUs of each detector replica (fractions share a GPU); 0 runs on CPU.
        cpus_per_replica: CPUs reserved by each detector replica.
        max_ongoing_requests: requests a detector replica accepts at once; it bounds how many
            requests one batch can hold, so keep it well above one batch's worth.
        ingress_replicas, ingress_cpus: the HTTP ingress deployment (decoding runs there).
        device: torch device for the detector; None picks CUDA when the replica has a GPU.
        api_token: bearer token required on the detection endpoints; None reads
            ``RAYDETECT_API_TOKEN`` from the ingress replica's environment (unset: no token).
    """

    replicas: int = 1
    max_replicas: int | None = None
    target_ongoing_requests: float = 16.0
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    max_ongoing_requests: int = 64
    ingress_replicas: int = 1
    ingress_cpus: float = 0.5
    ingress_max_ongoing_requests: int = 256
    device: str | None = None
    api_token: str | None = field(default=None, repr=False)
    # BatchingConfig (max_batch_pixels None: BatchingConfig's default on CPU, GPU_BATCH_PIXELS with GPUs)
    max_batch_pixels: int | None = None
    batch_wait_timeout_s: float = BatchingConfig.batch_wait_timeout_s
    # RequestLimits
    max_image_bytes: int = RequestLimits.max_image_bytes
    max_image_megapixels: float = RequestLimits.max_image_megapixels
    max_video_bytes: int = RequestLimits.max_video_bytes
    max_video_frames: int = RequestLimits.max_video_frames
    max_video_megapixels: float = RequestLimits.max_video_megapixels
    video_frames_in_flight: int = RequestLimits.video_frames_in_flight
    crop_size: int = RequestLimits.crop_size
    crop_margin: float = RequestLimits.crop_margin

    def __post_init__(self) -> None:
        for name in ("replicas", "ingress_replicas", "max_ongoing_requests", "ingress_max_ongoing_requests"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        if self.max_replicas is not None:
            _require(isinstance(self.max_replicas, int) and self.max_replicas >= self.replicas,
                     f"max_replicas must be an integer >= replicas ({self.replicas}), got {self.max_replicas!r}")
        for name in ("gpus_per_replica", "cpus_per_replica", "ingress_cpus"):
            value = getattr(self, name)
            _require(_is_number(value) and value >= 0, f"{name} must be a number >= 0, got {value!r}")
        _require(_is_number(self.target_ongoing_requests) and self.target_ongoing_requests > 0,
                 f"target_ongoing_requests must be positive, got {self.target_ongoing_requests!r}")
        if self.device is not None:
            _require(self.device.split(":")[0] in ("cpu", "cuda"), f"device must be cpu or cuda, got {self.device!r}")
        self.batching()  # validate the subsets now, with their own messages
        self.limits()

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None and self.max_replicas > self.replicas

    def batching(self) -> BatchingConfig:
        pixels = self.max_batch_pixels
        if pixels is None:
            pixels = GPU_BATCH_PIXELS if self.gpus_per_replica else BatchingConfig.max_batch_pixels
        return BatchingConfig(max_batch_pixels=pixels, batch_wait_timeout_s=self.batch_wait_timeout_s)

    def limits(self) -> RequestLimits:
        return RequestLimits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RequestLimits)})

    @classmethod
    def from_args(cls, args: typing.Mapping | None) -> "ServeOptions":
        """Options from a mapping of names to values or strings (Serve builder ``args``)."""
        return _from_mapping(cls, args or {}, "serve option")


def _from_mapping(cls, mapping: typing.Mapping, what: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, raw in mapping.items():
        if key not in names:
            raise ValueError(f"unknown {what} {key!r}; known: {', '.join(sorted(names))}")
        values[key] = _coerce(key, raw, hints[key])
    return cls(**values)


def _coerce(name: str, value, hint):
    """Convert a string (or an int for a float field) to the field's type; None stays None where allowed."""
    allowed = typing.get_args(hint) or (hint,)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
        if type(None) in allowed:
            return None
        raise ValueError(f"{name} cannot be empty")
    target = next(t for t in allowed if t is not type(None))
    if isinstance(value, str) and target is not str:
        try:
            return int(value, 10) if target is int else float(value)
        except ValueError:
            raise ValueError(f"{name} must be {target.__name__}, got {value!r}") from None
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
