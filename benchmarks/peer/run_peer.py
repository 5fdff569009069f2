"""Run the peer detector (facenet-pytorch 2.6.0 MTCNN, same weights) and write its detections as JSON lines.

Runs ONLY with the peer environment's interpreter (never a project dependency), e.g.

    PEER_VENV/bin/python benchmarks/peer/run_peer.py --min-face-size 20 --output peer/photos_m20.jsonl photos

Inputs are listed and decoded by ``benchmarks/media_inputs.py`` (OpenCV decode, BGR -> RGB, optional
``--resize WxH`` with INTER_AREA), the same code path the project's side uses. One line per input:

    {"image": key, "width": W, "height": H, "min_face_size": M,
     "boxes": [[x1, y1, x2, y2], ...], "scores": [...], "landmarks": [[[x, y] x 5], ...],
     "seconds": median detect() wall time over --repeat runs, "cpu_seconds": same in process CPU time,
     "stats": {"pnet_pixels", "rnet_candidates", "onet_candidates", "faces"},
     "peer": "facenet-pytorch <version>, torch <version>", "threads": torch threads}

With ``--serve`` it decodes the inputs once, prints ``{"ready": true, "keys": [...], ...}`` and then answers
each input key read from stdin with that record, one detect() call each: a benchmark can alternate the
peer and another detector frame by frame, so that machine load drifts hit both alike.

``stats`` counts what the peer's networks were fed (P-Net input pixels over all pyramid levels, R-Net
and O-Net input crops), recorded with forward pre-hooks; they do not change its results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path


def _load_media_inputs():
    path = Path(__file__).resolve().parents[1] / "media_inputs.py"
    spec = importlib.util.spec_from_file_location("media_inputs", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["media_inputs"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


class StageCounter:
    """Counts the peer's network inputs: P-Net pixels, R-Net and O-Net crops (forward pre-hooks)."""

    def __init__(self, mtcnn) -> None:
        self.reset()
        mtcnn.pnet.register_forward_pre_hook(self._pnet)
        mtcnn.rnet.register_forward_pre_hook(self._rnet)
        mtcnn.onet.register_forward_pre_hook(self._onet)

    def reset(self) -> None:
        self.counts = {"pnet_pixels": 0, "rnet_candidates": 0, "onet_candidates": 0}

    def _pnet(self, module, inputs) -> None:
        n, _, h, w = inputs[0].shape
        self.counts["pnet_pixels"] += int(n * h * w)

    def _rnet(self, module, inputs) -> None:
        self.counts["rnet_candidates"] += int(inputs[0].shape[0])

    def _onet(self, module, inputs) -> None:
        self.counts["onet_candidates"] += int(inputs[0].shape[0])


def faces_as_lists(boxes, probs, points) -> tuple[list, list, list]:
    """The peer's detect() output for one image (None when no face, else float arrays) as JSON lists."""
    if boxes is None:
        return [], [], []
    return ([[float(v) for v in box[:4]] for box in boxes],
            [float(p) for p in probs],
            [[[float(x), float(y)] for x, y in face] for face in points])


class PeerDetector:
    """The peer MTCNN with its stage counters; makes one JSON-ready record per image."""

    def __init__(self, mtcnn, version: str) -> None:
        import torch

        self.mtcnn = mtcnn
        self.version = version
        self.threads = torch.get_num_threads()
        self.counter = StageCounter(mtcnn)

    def warm_up(self, rgb, runs: int) -> None:
        for _ in range(runs):
            self.mtcnn.detect(rgb, landmarks=True)

    def record(self, key: str, rgb, repeat: int = 1) -> dict:
        """Detect ``repeat`` times (>= 1); ``seconds`` is the median wall time of one detect() call."""
        times, cpu_times = [], []
        for _ in range(max(1, repeat)):
            self.counter.reset()
            start, cpu_start = time.perf_counter(), time.process_time()
            boxes, probs, points = self.mtcnn.detect(rgb, landmarks=True)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        box_list, scores, landmark_list = faces_as_lists(boxes, probs, points)
        return {
            "image": key, "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
            "min_face_size": self.mtcnn.min_face_size,
            "boxes": box_list, "scores": scores, "landmarks": landmark_list,
            "seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu_times),
            "stats": dict(self.counter.counts, faces=len(box_list)),
            "peer": self.version, "threads": self.threads,
        }


def serve(peer: PeerDetector, decoded: list, warmup: int) -> int:
    """Answer keys from stdin, one JSON record per line on stdout; an unknown key gets {"error": ...}."""
    images = {item.key: rgb for item, rgb in decoded}
    if decoded:
        peer.warm_up(decoded[0][1], warmup)
    print(json.dumps({"ready": True, "keys": list(images), "peer": peer.version, "threads": peer.threads}),
          flush=True)
    for line in sys.stdin:
        key = line.strip()
        if not key:
            continue
        reply = peer.record(key, images[key]) if key in images else {"error": f"unknown input key {key!r}"}
        print(json.dumps(reply), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files, directories, videos with @every=N / @frames=a:b")
    parser.add_argument("--min-face-size", type=int, default=20)
    parser.add_argument("--resize", help="WxH applied to every input (cv2.INTER_AREA), e.g. 1280x720")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per input; 'seconds' is their median")
    parser.add_argument("--warmup", type=int, default=0, help="untimed runs on the first input before timing")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--data-root", help="where relative inputs are looked up (default ../shared/data)")
    parser.add_argument("--output", help="JSONL path (default stdout)")
    parser.add_argument("--serve", action="store_true",
                        help="decode the inputs, print one ready line, then answer each key read from stdin "
                             "with its record (for benchmarks that alternate with another detector)")
    args = parser.parse_args(argv)

    import importlib.metadata

    import torch
    from facenet_pytorch import MTCNN

    media = _load_media_inputs()
    torch.set_num_threads(args.threads)
    data_root = Path(args.data_root) if args.data_root else media.data_root_from_env()
    resize = media.parse_size(args.resize) if args.resize else None
    items = media.list_inputs(args.inputs, data_root, resize)
    peer = PeerDetector(MTCNN(keep_all=True, min_face_size=args.min_face_size, device="cpu", post_process=False),
                        f"facenet-pytorch {importlib.metadata.version('facenet-pytorch')}, torch {torch.__version__}")
    if args.serve:
        return serve(peer, list(media.iter_decoded(items)), args.warmup)
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        for position, (item, rgb) in enumerate(media.iter_decoded(items)):
            if position == 0:
                peer.warm_up(rgb, args.warmup)
            record = peer.record(item.key, rgb, args.repeat)
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(f"[peer] {item.key}: {len(record['scores'])} faces, {record['seconds'] * 1000:.0f} ms",
                  file=sys.stderr)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
