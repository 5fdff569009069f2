"""Run the peer detector (facenet-pytorch 2.6.0 MTCNN, same weights) and write its detections as JSON lines.

Runs ONLY with the peer environment's interpreter (never a project dependency), e.g.

    /work/peer-venv/bin/python benchmarks/peer/run_peer.py --min-face-size 20 \
        --output /work/notes/peer/photos_m20.jsonl photos

Inputs are listed and decoded by ``benchmarks/media_inputs.py`` (OpenCV decode, BGR -> RGB, optional
``--resize WxH`` with INTER_AREA), the same code path the project's side uses. One line per input:

    {"image": key, "width": W, "height": H, "min_face_size": M,
     "boxes": [[x1, y1, x2, y2], ...], "scores": [...], "landmarks": [[[x, y] x 5], ...],
     "seconds": median detect() wall time over --repeat runs,
     "stats": {"pnet_pixels", "rnet_candidates", "onet_candidates", "faces"},
     "peer": "facenet-pytorch <version>, torch <version>", "threads": torch threads}

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
    args = parser.parse_args(argv)

    import importlib.metadata

    import torch
    from facenet_pytorch import MTCNN

    peer_version = f"facenet-pytorch {importlib.metadata.version('facenet-pytorch')}, torch {torch.__version__}"

    media = _load_media_inputs()
    torch.set_num_threads(args.threads)
    data_root = Path(args.data_root) if args.data_root else media.data_root_from_env()
    resize = media.parse_size(args.resize) if args.resize else None
    items = media.list_inputs(args.inputs, data_root, resize)

    mtcnn = MTCNN(keep_all=True, min_face_size=args.min_face_size, device="cpu", post_process=False)
    counter = StageCounter(mtcnn)
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        for position, (item, rgb) in enumerate(media.iter_decoded(items)):
            if position == 0:
                for _ in range(args.warmup):
                    mtcnn.detect(rgb, landmarks=True)
            times = []
            for _ in range(max(1, args.repeat)):
                counter.reset()
                start = time.perf_counter()
                boxes, probs, points = mtcnn.detect(rgb, landmarks=True)
                times.append(time.perf_counter() - start)
            box_list, scores, landmark_list = faces_as_lists(boxes, probs, points)
            record = {
                "image": item.key, "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
                "min_face_size": args.min_face_size,
                "boxes": box_list, "scores": scores, "landmarks": landmark_list,
                "seconds": statistics.median(times),
                "stats": dict(counter.counts, faces=len(box_list)),
                "peer": peer_version, "threads": torch.get_num_threads(),
            }
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(f"[peer] {item.key}: {len(box_list)} faces, {record['seconds'] * 1000:.0f} ms",
                  file=sys.stderr)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
