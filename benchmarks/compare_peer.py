"""Side-by-side correctness check of raydetect's FaceDetector against the peer MTCNN (facenet-pytorch 2.6.0).

Both run the same weights on byte-identical RGB inputs (``benchmarks/media_inputs.py``). The peer runs in its
own environment (``benchmarks/peer/run_peer.py``, never a project dependency); its detections are cached as
JSON lines under ``--peer-dir`` and produced on demand with ``--peer-python`` when missing.

Per set of media (the agreement checks: >= 97% found, >= 97% confirmed, median landmark error <= 3%):
  - recall vs peer: share of the peer's faces with score >= 0.95 that ours found at IoU >= 0.7;
  - confirmed by peer: share of our faces with score >= 0.95 that the peer found at IoU >= 0.7;
  - landmarks: per matched pair (peer score >= 0.95), mean distance of the 5 points divided by the peer box
    side ((w + h) / 2), in %; the median over pairs (and the 95th percentile) is reported.
Matching is one-to-one, greedy by IoU over all boxes of both sides (any score), so a face counts as found
when the other side has it at any score. On ``wider`` the WIDER-style AP (easy / medium / hard) of both
detectors is computed with ``raydetect.tuning.evaluation`` against the ground truth.

    .venv/bin/python benchmarks/compare_peer.py                      # every set, tables on stdout
    .venv/bin/python benchmarks/compare_peer.py --sets photos,videos --output /tmp/compare.json
    .venv/bin/python benchmarks/compare_peer.py --peer-only          # only (re)build the peer references
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media_inputs  # noqa: E402  (numpy + OpenCV only; shared with the peer environment)

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER_RUNNER = REPO_ROOT / "benchmarks" / "peer" / "run_peer.py"

SCORE_CUT = 0.95
IOU_CUT = 0.7
RECALL_TARGET = 97.0
CONFIRMED_TARGET = 97.0
LANDMARK_TARGET = 3.0
AP_MARGIN = 0.01  # ours may trail the peer's WIDER AP by at most this much
IDENTICAL_PX = 0.01  # a matched pair counts as identical within these tolerances
IDENTICAL_SCORE = 1e-5


@dataclass(frozen=True)
class MediaSet:
    """A named list of input specs (see media_inputs) run at one min_face_size."""

    name: str
    specs: tuple[str, ...]
    min_face_size: int

    @property
    def reference_name(self) -> str:
        return f"{self.name}_m{self.min_face_size}.jsonl"


SETS = {
    s.name: s
    for s in (
        MediaSet("photos", ("photos",), 20),
        MediaSet("crowds", ("crowds",), 20),
        MediaSet("negatives", ("negatives",), 20),
        MediaSet("videos", (
            "videos/street_crowd_1080p.mp4@every=10",
            "videos/short_hamilton_clip.mp4@every=25",
            "videos/vtest.avi@every=80",
            "videos/Megamind.avi@every=27",
        ), 20),
        MediaSet("street720", ("videos/street_crowd_1080p.mp4@every=10,resize=1280x720",), 20),
        MediaSet("wider", ("wider-dev/images",), 10),
    )
}
AGREEMENT_SETS = ("photos", "crowds", "negatives", "videos", "street720")


# ----------------------------------------------------------------------------------------------- I/O


def read_jsonl(path: Path) -> dict[str, dict]:
    """JSONL detections -> {image key: record}."""
    with open(path) as handle:
        return {record["image"]: record for record in map(json.loads, filter(str.strip, handle))}


def ensure_peer_reference(media_set: MediaSet, peer_dir: Path, peer_python: Path | None, data_root: Path,
                          refresh: bool) -> Path:
    """Path of the peer's JSONL for the set; runs the peer in its own environment when missing."""
    path = peer_dir / media_set.reference_name
    if path.exists() and not refresh:
        return path
    if peer_python is None or not peer_python.exists():
        raise FileNotFoundError(f"no peer reference {path} and no peer interpreter at {peer_python}")
    peer_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    command = [str(peer_python), str(PEER_RUNNER), "--min-face-size", str(media_set.min_face_size),
               "--data-root", str(data_root), "--output", str(partial), *media_set.specs]
    print("$ " + " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True)
    partial.replace(path)
    return path


def run_ours(detector, keys: list[str], data_root: Path, batch_size: int) -> dict[str, dict]:
    """Our detections for the inputs the keys name, as records shaped like the peer's."""
    items = [media_inputs.item_from_key(key, data_root) for key in keys]
    records: dict[str, dict] = {}
    pending: list[tuple[media_inputs.MediaItem, np.ndarray]] = []

    def flush() -> None:
        start = time.perf_counter()
        results = detector.detect([rgb for _, rgb in pending])
        seconds = (time.perf_counter() - start) / len(pending)
        # Stage counts are per call: per image only when each call holds one image.
        stats = dict(detector.last_stats) if len(pending) == 1 else None
        for (item, rgb), faces in zip(pending, results):
            records[item.key] = {
                "image": item.key, "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
                "boxes": faces.boxes.tolist(), "scores": faces.scores.tolist(),
                "landmarks": faces.landmarks.tolist(), "seconds": seconds, "stats": stats,
            }
        pending.clear()

    for item, rgb in media_inputs.iter_decoded(items):
        pending.append((item, rgb))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    return records


# ------------------------------------------------------------------------------------------ matching


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (N, 4) and b (M, 4), x1 y1 x2 y2 (areas without +1) -> (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) with IoU >= threshold, taken in order of decreasing IoU."""
    pairs = []
    if iou.size:
        rows, cols = np.nonzero(iou >= threshold)
        order = np.argsort(-iou[rows, cols], kind="stable")
        used_rows, used_cols = set(), set()
        for i, j in zip(rows[order], cols[order]):
            if i not in used_rows and j not in used_cols:
                pairs.append((int(i), int(j)))
                used_rows.add(i)
                used_cols.add(j)
    return pairs


def _arrays(record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(record["boxes"], np.float64).reshape(-1, 4)
    scores = np.asarray(record["scores"], np.float64).reshape(-1)
    landmarks = np.asarray(record["landmarks"], np.float64).reshape(-1, 5, 2)
    return boxes, scores, landmarks


def landmark_error(peer_box: np.ndarray, peer_points: np.ndarray, our_points: np.ndarray) -> float:
    """Mean distance of the 5 points, as % of the peer box side ((w + h) / 2)."""
    side = ((peer_box[2] - peer_box[0]) + (peer_box[3] - peer_box[1])) / 2
    return float(np.linalg.norm(peer_points - our_points, axis=1).mean() / max(side, 1e-9) * 100)


def _face(box: np.ndarray, score: float) -> dict:
    return {"box": [round(float(v), 1) for v in box], "score": round(float(score), 4),
            "side": round(float(np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 0))), 1)}


def compare_images(peer: dict[str, dict], ours: dict[str, dict]) -> dict:
    """Requirement-4 agreement over the images both sides ran; counts, rates and every disagreement."""
    peer_strong = peer_found = ours_strong = ours_confirmed = 0
    peer_total = ours_total = 0
    errors: list[float] = []
    identical = 0
    score_gaps: list[float] = []
    missed, unconfirmed, landmark_outliers = [], [], []
    for key in sorted(peer):
        p_boxes, p_scores, p_points = _arrays(peer[key])
        o_boxes, o_scores, o_points = _arrays(ours[key])
        peer_total += len(p_scores)
        ours_total += len(o_scores)
        iou = iou_matrix(p_boxes, o_boxes)
        pairs = greedy_match(iou, IOU_CUT)
        ours_of_peer = {i: j for i, j in pairs}
        peer_of_ours = {j: i for i, j in pairs}
        for i in np.nonzero(p_scores >= SCORE_CUT)[0]:
            peer_strong += 1
            if i in ours_of_peer:
                peer_found += 1
                j = ours_of_peer[i]
                error = landmark_error(p_boxes[i], p_points[i], o_points[j])
                errors.append(error)
                score_gaps.append(abs(p_scores[i] - o_scores[j]))
                identical += bool(np.abs(p_boxes[i] - o_boxes[j]).max() < IDENTICAL_PX
                                  and np.abs(p_points[i] - o_points[j]).max() < IDENTICAL_PX
                                  and abs(p_scores[i] - o_scores[j]) < IDENTICAL_SCORE)
                if error > LANDMARK_TARGET:
                    landmark_outliers.append({"image": key, "peer": _face(p_boxes[i], p_scores[i]),
                                              "ours": _face(o_boxes[j], o_scores[j]),
                                              "error_pct": round(error, 2)})
            else:
                best = int(iou[i].argmax()) if iou.shape[1] else None
                missed.append({"image": key, "peer": _face(p_boxes[i], p_scores[i]),
                               "best_iou": round(float(iou[i, best]), 3) if best is not None else 0.0,
                               "ours_at_best": _face(o_boxes[best], o_scores[best]) if best is not None else None})
        for j in np.nonzero(o_scores >= SCORE_CUT)[0]:
            ours_strong += 1
            if j in peer_of_ours:
                ours_confirmed += 1
            else:
                best = int(iou[:, j].argmax()) if iou.shape[0] else None
                unconfirmed.append({"image": key, "ours": _face(o_boxes[j], o_scores[j]),
                                    "best_iou": round(float(iou[best, j]), 3) if best is not None else 0.0,
                                    "peer_at_best": _face(p_boxes[best], p_scores[best]) if best is not None else None})
    return {
        "images": len(peer),
        "peer_faces": peer_total, "our_faces": ours_total,
        "peer_strong": peer_strong, "peer_strong_found": peer_found,
        "recall_vs_peer_pct": 100.0 * peer_found / peer_strong if peer_strong else None,
        "our_strong": ours_strong, "our_strong_confirmed": ours_confirmed,
        "confirmed_by_peer_pct": 100.0 * ours_confirmed / ours_strong if ours_strong else None,
        "landmark_pairs": len(errors), "identical_pairs": identical,
        "landmark_median_pct": statistics.median(errors) if errors else None,
        "landmark_p95_pct": float(np.percentile(errors, 95)) if errors else None,
        "score_gap_median": float(statistics.median(score_gaps)) if score_gaps else None,
        "missed": missed, "unconfirmed": unconfirmed, "landmark_outliers": landmark_outliers,
        "landmark_errors_pct": [round(e, 3) for e in errors],
    }


# ------------------------------------------------------------------------------------------ WIDER AP


def wider_ap(records: dict[str, dict], data_root: Path) -> dict[str, float]:
    """WIDER-style AP per subset (IoU 0.5, faces outside a subset ignored) by ``raydetect.tuning.evaluation``.

    Keys of the records are ``wider-dev/<file>``; the annotation file names ``<file>``.
    """
    from raydetect.tuning.annotations import load_annotations
    from raydetect.tuning.evaluation import evaluate

    annotations = load_annotations(data_root / "wider-dev" / "annotations.json")
    prefix = "wider-dev/"
    detections = {}
    for key, record in records.items():
        boxes, scores, _ = _arrays(record)
        detections[key[len(prefix):] if key.startswith(prefix) else key] = (boxes, scores)
    report = evaluate(detections, annotations, iou=0.5)
    return {name: result.ap for name, result in report.subsets.items()}


# -------------------------------------------------------------------------------------------- report


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def agreement_table(results: dict[str, dict]) -> str:
    lines = [
        "| set | images | peer faces (>= 0.95) | found by ours | our faces (>= 0.95) | confirmed by peer "
        "| landmark err median (p95) | pairs (identical) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lmk = ("n/a" if r["landmark_median_pct"] is None
               else f"{r['landmark_median_pct']:.2f}% ({r['landmark_p95_pct']:.2f}%)")
        lines.append(
            f"| {name} | {r['images']} | {r['peer_faces']} ({r['peer_strong']}) | "
            f"{r['peer_strong_found']} = {_pct(r['recall_vs_peer_pct'])} | {r['our_faces']} ({r['our_strong']}) | "
            f"{r['our_strong_confirmed']} = {_pct(r['confirmed_by_peer_pct'])} | {lmk} | "
            f"{r['landmark_pairs']} ({r['identical_pairs']}) |")
    return "\n".join(lines)


def pooled(results: dict[str, dict]) -> dict:
    """All agreement sets together (the requirement's figures)."""
    total = {k: sum(r[k] for r in results.values())
             for k in ("images", "peer_faces", "our_faces", "peer_strong", "peer_strong_found",
                       "our_strong", "our_strong_confirmed", "landmark_pairs", "identical_pairs")}
    total["recall_vs_peer_pct"] = 100.0 * total["peer_strong_found"] / max(total["peer_strong"], 1)
    total["confirmed_by_peer_pct"] = 100.0 * total["our_strong_confirmed"] / max(total["our_strong"], 1)
    errors = [e for r in results.values() for e in r["landmark_errors_pct"]]
    total["landmark_median_pct"] = statistics.median(errors) if errors else None
    total["landmark_p95_pct"] = float(np.percentile(errors, 95)) if errors else None
    total["passes"] = {
        "recall": total["recall_vs_peer_pct"] >= RECALL_TARGET,
        "confirmed": total["confirmed_by_peer_pct"] >= CONFIRMED_TARGET,
        "landmarks": total["landmark_median_pct"] is not None and total["landmark_median_pct"] <= LANDMARK_TARGET,
    }
    return total


def print_disagreements(name: str, result: dict, limit: int) -> None:
    for label in ("missed", "unconfirmed", "landmark_outliers"):
        rows = result[label]
        if rows:
            shown = f" (first {limit})" if 0 < limit < len(rows) else ""
            print(f"{name}: {len(rows)} {label.replace('_', ' ')}{shown}")
            for row in rows[:limit]:
                print("  " + json.dumps(row))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma list of {', '.join(SETS)}")
    parser.add_argument("--peer-dir", type=Path, required=True, help="folder of the cached peer JSONL files")
    parser.add_argument("--peer-python", type=Path, default=media_inputs.peer_python_from_env(),
                        help=f"the peer environment's python, to build missing references "
                             f"(default: ${media_inputs.PEER_PYTHON_ENV})")
    parser.add_argument("--refresh-peer", action="store_true", help="rerun the peer even when cached")
    parser.add_argument("--peer-only", action="store_true", help="only build the peer references")
    parser.add_argument("--data-root", type=Path, default=media_inputs.data_root_from_env())
    parser.add_argument("--batch-size", type=int, default=1, help="images per FaceDetector.detect call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="FaceDetector precision: auto, float32, bfloat16")
    parser.add_argument("--save-ours", type=Path, help="directory for our detections as JSONL")
    parser.add_argument("--load-ours", type=Path, help="compare detections saved by --save-ours instead of running")
    parser.add_argument("--output", type=Path, help="JSON with every figure and disagreement")
    parser.add_argument("--show", type=int, default=10, help="disagreements printed per kind and set")
    args = parser.parse_args(argv)

    names = [n for n in args.sets.split(",") if n]
    unknown = [n for n in names if n not in SETS]
    if unknown:
        parser.error(f"unknown sets {unknown}; known: {list(SETS)}")
    references = {n: ensure_peer_reference(SETS[n], args.peer_dir, args.peer_python, args.data_root,
                                           args.refresh_peer) for n in names}
    if args.peer_only:
        for name, path in references.items():
            print(f"{name}: {path}")
        return 0

    if args.load_ours is None:
        import torch
        from raydetect import FaceDetector

        torch.set_num_threads(args.threads)
    detectors: dict[int, object] = {}
    agreement: dict[str, dict] = {}
    report: dict = {"sets": {}, "command": " ".join([Path(sys.executable).name, *sys.argv])}
    for name in names:
        media_set = SETS[name]
        peer = read_jsonl(references[name])
        if args.load_ours is not None:
            ours = read_jsonl(args.load_ours / media_set.reference_name)
            missing = sorted(set(peer) - set(ours))
            if missing:
                raise SystemExit(f"{args.load_ours / media_set.reference_name} lacks {len(missing)} inputs, "
                                 f"e.g. {missing[0]}")
        else:
            if media_set.min_face_size not in detectors:
                detectors[media_set.min_face_size] = FaceDetector(
                    min_face_size=media_set.min_face_size, device="cpu", precision=args.precision)
            start = time.perf_counter()
            ours = run_ours(detectors[media_set.min_face_size], list(peer), args.data_root, args.batch_size)
            print(f"[ours] {name}: {len(ours)} inputs in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        if args.save_ours:
            args.save_ours.mkdir(parents=True, exist_ok=True)
            with open(args.save_ours / media_set.reference_name, "w") as handle:
                handle.writelines(json.dumps(r) + "\n" for r in ours.values())
        result = compare_images(peer, ours)
        entry = dict(result)
        if name == "wider":
            entry["ap_ours"] = wider_ap(ours, args.data_root)
            entry["ap_peer"] = wider_ap(peer, args.data_root)
        else:
            agreement[name] = result
        report["sets"][name] = entry

    if agreement:
        total = pooled(agreement)
        print(agreement_table({**agreement, "all (pooled)": total}))
        print(f"\nagreement checks (>= {RECALL_TARGET}% / >= {CONFIRMED_TARGET}% / <= {LANDMARK_TARGET}%): "
              + ", ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in total["passes"].items()))
        report["pooled"] = total
    if "wider" in report["sets"]:
        w = report["sets"]["wider"]
        print("\n| wider-dev, min_face_size 10 | easy | medium | hard |\n|---|---:|---:|---:|")
        for side in ("ours", "peer"):
            ap = w[f"ap_{side}"]
            print(f"| {side} | {ap['easy']:.3f} | {ap['medium']:.3f} | {ap['hard']:.3f} |")
        w["ap_passes"] = {k: w["ap_ours"][k] >= w["ap_peer"][k] - AP_MARGIN for k in ("easy", "medium", "hard")}
        print(f"\nagreement check, WIDER (ours >= peer - {AP_MARGIN}): "
              + ", ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in w["ap_passes"].items()))
        print("\n" + agreement_table({"wider (agreement, m10)": w}))
    print()
    for name, entry in report["sets"].items():
        print_disagreements(name, entry, args.show)
    if args.output:
        args.output.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
