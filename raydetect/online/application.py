"""The Ray Serve application: an HTTP ingress in front of a batched detector deployment.

One application, three ways to run it:

* ``raydetect serve [--host 127.0.0.1] [--port 8000] [--replicas N] [--gpus-per-replica G]``
* ``serve run raydetect.serve:app`` (defaults) or ``serve run raydetect.serve:build_app key=value ...``
* ``serve deploy cluster/serve.yaml`` (``import_path: raydetect.serve:app``, per-deployment
  overrides of replicas, autoscaling, GPUs, and each deployment's ``user_config``: batching
  for the detector deployment, request limits for the ingress)

Two deployments, named in the configs ``FaceAPI`` and ``FaceDetector``. The ingress
(:class:`FaceAPIIngress`, CPU) parses and decodes requests (:mod:`raydetect.online.http_api`)
and sends decoded images to the detector deployment (:class:`DetectorReplica`), which gathers
concurrent requests with ``@serve.batch``: a batch is bounded by a budget of P-Net pixels
(``batch_size_fn``), not a request count, and the budget and the wait timeout are its
``user_config``, applied by ``reconfigure`` without restarting replicas. Batches that close
while the detector is busy are merged into its next run, within the same budget
(:mod:`raydetect.online.batch_merger`). Inside a run, requests are grouped by their parameters
(``min_face_size``) and each group runs in one ``FaceDetector.detect`` call.
"""

from __future__ import annotations

import os
import typing

import numpy as np
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from raydetect.online.batch_merger import BatchMerger
from raydetect.online.detector_pool import DetectorPool, DetectRequest, request_pixels, total_cost
from raydetect.errors import InvalidImageError
from raydetect.online.http_api import create_api
from raydetect.online.http_errors import ServiceUnavailable
from raydetect.online.http_params import DEFAULT_MIN_FACE_SIZE
from raydetect.online.video_uploads import FFMPEG_CAPTURE_OPTIONS
from raydetect.core.results import Detections
from raydetect.online.options import TOKEN_ENV, BatchingConfig, RequestLimits, ServeOptions

INGRESS_NAME = "FaceAPI"
DETECTOR_NAME = "FaceDetector"  # the deployment's name in cluster/serve.yaml and the Serve dashboard
_DEFAULT_BATCHING = BatchingConfig()
MAX_QUEUED_BATCHES = 32


class DetectorReplica:
    """Hosts the detectors of one replica and batches the requests sent to it.

    Args:
        device: torch device; None lets ``FaceDetector`` pick (CUDA when the replica has a GPU).
        max_detectors: detectors (one per ``min_face_size`` seen) kept in memory.
    """

    def __init__(self, device: str | None = None, max_detectors: int = 8):
        from raydetect.core.detector import FaceDetector

        def build(min_face_size: int):
            return FaceDetector(min_face_size=min_face_size, device=device)

        self._pool = DetectorPool(build, max_detectors=max_detectors)
        self._pool.detector(DEFAULT_MIN_FACE_SIZE)  # load the weights now: the replica is ready only once this works
        self._batching = _DEFAULT_BATCHING
        self._merger = BatchMerger(self._pool.run, cost=lambda r: r.cost, budget=lambda: self._batching.max_batch_pixels)
        self._serve_batches = 0

    def reconfigure(self, user_config: dict | None) -> None:
        """Apply a new batching config (Serve calls this at start and on each config change)."""
        self._batching = BatchingConfig.from_user_config(user_config)
        self._detect_batch.set_max_batch_size(self._batching.max_batch_pixels)
        self._detect_batch.set_batch_wait_timeout_s(self._batching.batch_wait_timeout_s)

    async def detect(self, image: np.ndarray, min_face_size: int) -> Detections:
        """Faces in one image; waits to share a batch with concurrent requests.

        Raises:
            InvalidImageError: the detector refused this image (others in its batch are unaffected).
        """
        request = DetectRequest(image, int(min_face_size), self.request_cost(image, min_face_size))
        result = await self._detect_batch(request)
        if isinstance(result, InvalidImageError):
            raise result
        return result

    def request_cost(self, image: np.ndarray, min_face_size: int) -> int:
        """A request's share of the batch budget: its P-Net pixels, capped at the budget so that
        a request larger than the whole budget still runs (alone) instead of being refused by
        Serve, which rejects items larger than the batch limit."""
        height, width = image.shape[:2]
        return min(request_pixels(height, width, min_face_size), self._batching.max_batch_pixels)

    @serve.batch(
        max_batch_size=_DEFAULT_BATCHING.max_batch_pixels,
        batch_wait_timeout_s=_DEFAULT_BATCHING.batch_wait_timeout_s,
        batch_size_fn=total_cost,
        # Serve hands over each batch as soon as it closes; these wait in the merger, which
        # runs one at a time and merges those that queued meanwhile (up to the budget).
        max_concurrent_batches=MAX_QUEUED_BATCHES,
    )
    async def _detect_batch(self, requests: list[DetectRequest]) -> list[Detections | InvalidImageError]:
        self._serve_batches += 1
        return await self._merger.submit(requests)

    def run_batch(self, requests: list[DetectRequest]) -> list[Detections | InvalidImageError]:
        """What one batch does, without Serve's queue (for tests and tools)."""
        return self._pool.run(requests)

    def batching(self) -> BatchingConfig:
        return self._batching

    async def ready(self) -> dict:
        return {"batching": self._batching.to_user_config(), "detector": self.stats()}

    def stats(self) -> dict:
        """Counters of this replica: detector runs (``batches``) and the Serve batches merged into
        them (``serve_batches``), parameter groups, images, largest run (images)."""
        return {**self._pool.stats(), "serve_batches": self._serve_batches}


class FaceAPIIngress:
    """HTTP ingress: the routes of :func:`raydetect.online.http_api.create_api` over the detector deployment.

    Its ``user_config`` is :class:`RequestLimits` (body sizes, megapixels, clip length, crops).

    Args:
        detector: handle of the detector deployment (:data:`DetectorDeployment`).
        api_token: bearer token; None reads ``RAYDETECT_API_TOKEN`` from this replica's
            environment (unset or empty: no token required).
    """

    def __init__(self, detector: DeploymentHandle, api_token: str | None = None):
        os.environ.setdefault(*FFMPEG_CAPTURE_OPTIONS)  # this process decodes uploaded clips
        self._detector = detector
        self._limits = RequestLimits()
        self._token = api_token if api_token is not None else (os.environ.get(TOKEN_ENV) or None)

    def reconfigure(self, user_config: dict | None) -> None:
        """Apply new request limits (Serve calls this at start and on each config change)."""
        self._limits = RequestLimits.from_user_config(user_config)

    def limits(self) -> RequestLimits:
        return self._limits

    def __serve_build_asgi_app__(self):
        return create_api(_HandleClient(self._detector), self.limits, self._token)


class _HandleClient:
    """The detector client of the HTTP API, calling the detector deployment."""

    def __init__(self, handle: DeploymentHandle):
        self._handle = handle

    async def detect(self, image: np.ndarray, min_face_size: int) -> Detections:
        try:
            return await self._handle.detect.remote(image, min_face_size)
        except InvalidImageError:
            raise  # the request's own fault: the HTTP layer answers 400
        except (RayActorError, BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError) as exc:
            raise ServiceUnavailable(f"detector unavailable ({type(exc).__name__}); retry later") from exc

    async def ready(self) -> dict:
        return await self._handle.ready.remote()


DetectorDeployment = serve.deployment(name=DETECTOR_NAME, max_ongoing_requests=64)(DetectorReplica)
FaceAPI = serve.deployment(name=INGRESS_NAME, max_ongoing_requests=256)(serve.ingress()(FaceAPIIngress))


def detector_deployment_options(options: ServeOptions) -> dict:
    """``Deployment.options`` of the detector: replicas or autoscaling, resources, batching."""
    actor_options: dict = {"num_cpus": options.cpus_per_replica}
    if options.gpus_per_replica:
        actor_options["num_gpus"] = options.gpus_per_replica
    scaling: dict
    if options.autoscaling:
        scaling = {
            "autoscaling_config": {
                "min_replicas": options.replicas,
                "max_replicas": options.max_replicas,
                "target_ongoing_requests": options.target_ongoing_requests,
            }
        }
    else:
        scaling = {"num_replicas": options.replicas}
    return {
        **scaling,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": options.max_ongoing_requests,
        "user_config": options.batching().to_user_config(),
    }


def build_app(args: typing.Mapping | ServeOptions | None = None) -> serve.Application:
    """The application for ``options`` (a :class:`ServeOptions` or a mapping of its fields).

    Also a Serve application builder: ``serve run raydetect.serve:build_app replicas=2``.
    """
    options = args if isinstance(args, ServeOptions) else ServeOptions.from_args(args)
    device = options.device or ("cuda" if options.gpus_per_replica else None)
    detector = DetectorDeployment.options(**detector_deployment_options(options)).bind(device=device)
    ingress = FaceAPI.options(
        num_replicas=options.ingress_replicas,
        ray_actor_options={"num_cpus": options.ingress_cpus},
        max_ongoing_requests=options.ingress_max_ongoing_requests,
        user_config=options.limits().to_user_config(),
    )
    return ingress.bind(detector, options.api_token)


# `serve run raydetect.serve:app` and `import_path: raydetect.serve:app` in cluster/serve.yaml.
app = build_app()
