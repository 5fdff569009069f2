"""``raydetect serve``: the online face-detection service (Ray Serve) until Ctrl-C.

    raydetect serve [--host 127.0.0.1] [--port 8000] [--replicas N [--max-replicas M]]
                    [--gpus-per-replica G] [--max-batch-pixels P] [--batch-wait-ms MS] [--address ADDR]

Without --address (or $RAY_ADDRESS) a local Ray instance is started, listening on 127.0.0.1 only,
and stopped on exit. With one, the application is deployed on that cluster and removed on exit.
Endpoints: POST /detect, POST /detect/video, GET /healthz, and at GET / a page to try them in a
browser (see docs/serve.md). When
RAYDETECT_API_TOKEN is set, the detection endpoints require ``Authorization: Bearer <token>``.

Exit status: 0 after a clean stop, 2 for bad options.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading

from raydetect.online.options import GPU_BATCH_PIXELS, MIB, TOKEN_ENV, BatchingConfig, ServeOptions

APP_NAME = "raydetect"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve face detection over HTTP with Ray Serve (images and short clips, batched)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServeOptions()
    http = parser.add_argument_group("HTTP")
    http.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    http.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    http.add_argument("--name", default=APP_NAME, help=f"Serve application name (default {APP_NAME})")

    placement = parser.add_argument_group("replicas and placement")
    placement.add_argument("--replicas", type=int, default=defaults.replicas, metavar="N",
                           help="detector replicas; the minimum when --max-replicas is larger (default 1)")
    placement.add_argument("--max-replicas", type=int, metavar="M",
                           help="autoscale the detector between --replicas and M replicas")
    placement.add_argument("--target-ongoing-requests", type=float, default=defaults.target_ongoing_requests,
                           metavar="R", help="autoscaling target per replica (default %(default)g)")
    placement.add_argument("--gpus-per-replica", type=float, default=defaults.gpus_per_replica, metavar="G",
                           help="GPUs per detector replica, fractions share a GPU (default 0: CPU)")
    placement.add_argument("--cpus-per-replica", type=float, default=defaults.cpus_per_replica, metavar="C",
                           help="CPUs per detector replica (default %(default)g)")
    placement.add_argument("--ingress-replicas", type=int, default=defaults.ingress_replicas, metavar="N",
                           help="HTTP ingress replicas, where requests are decoded (default 1)")
    placement.add_argument("--device", default=None, help="torch device of the detector (default: cuda if present)")
    placement.add_argument("--address", default=None,
                           help="Ray cluster to join (default $RAY_ADDRESS, else a local instance)")

    batching = parser.add_argument_group("batching (changeable at runtime through the deployment's user_config)")
    batching.add_argument("--max-batch-pixels", type=int, default=None, metavar="P",
                          help=f"P-Net pixels per batch, all pyramid levels (default {BatchingConfig.max_batch_pixels} "
                               f"on CPU, {GPU_BATCH_PIXELS} with --gpus-per-replica)")
    batching.add_argument("--batch-wait-ms", type=float, default=defaults.batch_wait_timeout_s * 1000, metavar="MS",
                          help="how long a batch waits to fill, milliseconds (default %(default)g)")
    batching.add_argument("--max-ongoing-requests", type=int, default=defaults.max_ongoing_requests, metavar="N",
                          help="requests one detector replica holds at once (default %(default)d)")

    limits = parser.add_argument_group("request limits (answered with 413 above them)")
    limits.add_argument("--max-image-mb", type=float, default=defaults.max_image_bytes / MIB, metavar="MB",
                        help="image body size, MiB (default %(default)g)")
    limits.add_argument("--max-image-megapixels", type=float, default=defaults.max_image_megapixels, metavar="MP",
                        help="image width x height, read from its header (default %(default)g)")
    limits.add_argument("--max-video-mb", type=float, default=defaults.max_video_bytes / MIB, metavar="MB",
                        help="video body size, MiB (default %(default)g)")
    limits.add_argument("--max-video-frames", type=int, default=defaults.max_video_frames, metavar="N",
                        help="frames in a clip (default %(default)d)")


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    """ServeOptions from parsed arguments; raises ValueError naming a bad option."""
    return ServeOptions(
        replicas=args.replicas,
        max_replicas=args.max_replicas,
        target_ongoing_requests=args.target_ongoing_requests,
        gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica,
        max_ongoing_requests=args.max_ongoing_requests,
        ingress_replicas=args.ingress_replicas,
        device=args.device,
        # Passed explicitly so replicas on a local instance and on a joined cluster agree.
        api_token=os.environ.get(TOKEN_ENV) or None,
        max_batch_pixels=args.max_batch_pixels,
        batch_wait_timeout_s=args.batch_wait_ms / 1000,
        max_image_bytes=_mib_to_bytes("--max-image-mb", args.max_image_mb),
        max_image_megapixels=args.max_image_megapixels,
        max_video_bytes=_mib_to_bytes("--max-video-mb", args.max_video_mb),
        max_video_frames=args.max_video_frames,
    )


def run(args: argparse.Namespace) -> int:
    try:
        if not 0 < args.port < 65536:
            raise ValueError(f"--port must be in 1-65535, got {args.port}")
        options = options_from_args(args)
    except ValueError as exc:
        print(f"raydetect serve: error: {exc}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host) and options.api_token is None:
        print(f"raydetect serve: warning: listening on {args.host} without a token; set {TOKEN_ENV} to require one",
              file=sys.stderr)

    from raydetect.commands.detect import connect

    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    ray = connect(args.address)
    from ray import serve

    from raydetect.online.application import build_app

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_app(options), name=args.name, route_prefix="/")
        print(f"raydetect serve: ready at http://{args.host}:{args.port} "
              "(POST /detect, POST /detect/video, GET /healthz; a page to try it at /); Ctrl-C to stop", flush=True)
        stop.wait()
    finally:
        if local:
            serve.shutdown()
            ray.shutdown()
        else:
            serve.delete(args.name)
    return 0


def _mib_to_bytes(flag: str, mib: float) -> int:
    if not mib > 0:
        raise ValueError(f"{flag} must be positive, got {mib:g}")
    return int(mib * MIB)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
