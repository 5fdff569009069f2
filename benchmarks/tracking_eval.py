"""Face tracks against ground truth: synthetic sequences of real faces moving over real backgrounds.

Faces are cut from real photos (``photos/*_1.jpg``, ``obama.jpg``, ``biden.jpg``, ``astronaut.png``: the
square around the detector's own box on the photo, twice its side) and pasted over real face-free
backgrounds (``negatives/``) along known paths, 640x360 at 30 fps. Each scenario tests one thing:

- ``crossing``: two faces pass each other head-on; the front one hides the other for a few frames.
- ``leave_enter``: one face walks out of the picture on the right, another walks in from the left and on to
  where the first one was.
- ``hidden``: a face walks behind a pillar (hidden about 0.3 s) and out again.
- ``zoom``: a face grows from 50 to 170 pixels in 2 s (a zoom-in).
- ``cut``: a hard cut to another background with another person at nearly the same place.
- ``crossing_cut``: two faces cross, then a hard cut swaps the backgrounds and both people.

The ground-truth face box is the detector's box on the source photo carried along the path. Every frame
goes through the real detector (``FaceDetector``, min_face_size 20), then through two linkers: raydetect's
``link_tracks`` (with cuts from ``find_cuts`` on the rendered frames) and, as the baseline, a plain
frame-to-frame IoU linker (each face joins the face of the previous frame it overlaps most, IoU >= 0.3,
greedy; no gaps, no motion, no cuts), which lives here, not in the package.

Reported per scenario and in total: detection recall (ground-truth faces matched by a detection at
IoU >= 0.5), IDF1 (identity F1: one-to-one matching of true identities to tracks, maximising the faces
they share), identity switches (a true identity's matched track changes from one matched frame to its
next), and tracks spanning a cut (a track with faces on both sides of a scenario's cut).

    .venv/bin/python benchmarks/tracking_eval.py --shared ../shared/data --every 1 3 --output tracking_eval.json \
        [--frames-dir /tmp/tracking_frames]

Sampling every k-th frame (``--every``) evaluates the same sequences as the job's ``--every k`` would see them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from raydetect.core.tracking import TrackingOptions, find_cuts, frame_signature, link_tracks

WIDTH, HEIGHT, FPS = 640, 360, 30.0
MATCH_IOU = 0.5
BASELINE_IOU = 0.3
FACE_PHOTOS = (
    "photos/angelina_jolie_1.jpg",
    "photos/paul_rudd_1.jpg",
    "photos/kate_siegel_1.jpg",
    "photos/shea_whigham_1.jpg",
    "photos/obama.jpg",
    "photos/biden.jpg",
    "photos/astronaut.png",
)
BACKGROUNDS = ("negatives/home.jpg", "negatives/building.jpg", "negatives/fruits.jpg", "negatives/aero3.jpg",
               "negatives/leuvenA.jpg", "negatives/board.jpg")


@dataclass
class FacePatch:
    """A square RGB patch around one real face and the face's box in it, as fractions of the patch side."""

    image: np.ndarray
    box: np.ndarray  # (4,) x1, y1, x2, y2 in [0, 1]


@dataclass
class Placement:
    person: int  # ground-truth identity within the scenario (a new one after each cut)
    patch: int
    cx: float
    cy: float
    side: float  # face box side in pixels


@dataclass
class Scenario:
    name: str
    frames: int
    backgrounds: list[int]  # background of each frame
    placements: list[list[Placement]]  # per frame, painted in order (later ones in front)
    cuts: list[int] = field(default_factory=list)
    pillar: tuple[int, int] | None = None  # x range of an occluding pillar drawn over the faces


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def face_patches(shared: Path, detector) -> list[FacePatch]:
    """The largest detected face of each photo in a square patch twice its side (edges replicated)."""
    patches = []
    for name in FACE_PHOTOS:
        photo = _read_rgb(shared / name)
        faces = detector.detect([photo])[0]
        if not len(faces):
            raise SystemExit(f"no face found in {name}")
        x1, y1, x2, y2 = faces.boxes[np.argmax((faces.boxes[:, 2:] - faces.boxes[:, :2]).prod(1))]
        side = max(x2 - x1, y2 - y1)
        half = side  # patch side = 2 x face side
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        left, top = int(round(cx - half)), int(round(cy - half))
        size = int(round(2 * half))
        pad = size
        padded = cv2.copyMakeBorder(photo, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        patch = padded[top + pad:top + pad + size, left + pad:left + pad + size]
        box = np.array([x1 - left, y1 - top, x2 - left, y2 - top], np.float64) / size
        patches.append(FacePatch(patch, box))
    return patches


def backgrounds(shared: Path) -> list[np.ndarray]:
    out = []
    for name in BACKGROUNDS:
        image = _read_rgb(shared / name)
        h, w = image.shape[:2]
        scale = max(WIDTH / w, HEIGHT / h)
        image = cv2.resize(image, (int(np.ceil(w * scale)), int(np.ceil(h * scale))), interpolation=cv2.INTER_AREA)
        top, left = (image.shape[0] - HEIGHT) // 2, (image.shape[1] - WIDTH) // 2
        out.append(np.ascontiguousarray(image[top:top + HEIGHT, left:left + WIDTH]))
    return out


def _path(frame, first, last, start, end):
    w = (frame - first) / max(last - first, 1)
    return start + (end - start) * w


def scenarios() -> list[Scenario]:
    out = []
    n = 60
    # Two faces cross head-on at 9 px/frame each, 10 px apart vertically; person 1 passes in front
    # and hides person 0 for about 0.4 s.
    out.append(Scenario("crossing", n, [0] * n, [
        [Placement(0, 0, _path(f, 0, n - 1, 60, 580), 170, 80), Placement(1, 1, _path(f, 0, n - 1, 580, 60), 180, 80)]
        for f in range(n)
    ]))
    # Person 0 walks out on the right (gone after frame ~24); person 1 walks in from the left from frame 30.
    out.append(Scenario("leave_enter", n, [1] * n, [
        [Placement(0, 2, _path(f, 0, 24, 420, 700), 180, 90)] * (f <= 24)
        + [Placement(1, 3, _path(f, 30, n - 1, -40, 480), 180, 90)] * (f >= 30)
        for f in range(n)
    ]))
    # A face (80 px) walks behind an 80 px pillar at 6 px/frame (not detected for about 0.35 s).
    out.append(Scenario("hidden", n, [2] * n, [
        [Placement(0, 4, _path(f, 0, n - 1, 140, 500), 180, 80)] for f in range(n)
    ], pillar=(280, 360)))
    # Zoom: 50 -> 170 px around a slowly drifting centre.
    out.append(Scenario("zoom", n, [3] * n, [
        [Placement(0, 5, _path(f, 0, n - 1, 300, 340), 180, _path(f, 0, n - 1, 50, 170))] for f in range(n)
    ]))
    # Hard cut at frame 30: another background and another person at nearly the same place.
    out.append(Scenario("cut", n, [4] * 30 + [5] * 30, [
        [Placement(0, 6, 320, 180, 100)] if f < 30 else [Placement(1, 0, 326, 184, 100)] for f in range(n)
    ], cuts=[30]))
    # Two faces cross 35 px apart vertically (the back one half hidden), then a cut at 40 brings two
    # other people where they were.
    out.append(Scenario("crossing_cut", n, [0] * 40 + [2] * 20, [
        [Placement(0, 2, _path(f, 0, 39, 160, 480), 200, 90), Placement(1, 3, _path(f, 0, 39, 480, 160), 165, 90)]
        if f < 40 else
        [Placement(2, 1, 480, 180, 90), Placement(3, 5, 160, 170, 90)]
        for f in range(n)
    ], cuts=[40]))
    return out


def render(scenario: Scenario, patches: list[FacePatch], bgs: list[np.ndarray]):
    """Frames (F, H, W, 3) uint8 and ground truth: per frame (person ids (G,), boxes (G, 4)) of the faces at
    least half visible, and (K, 4) boxes of the faces mostly hidden (detections there are not counted)."""
    frames, truth = [], []
    for f in range(scenario.frames):
        frame = bgs[scenario.backgrounds[f]].copy()
        ids, boxes, pasted = [], [], []
        for p in scenario.placements[f]:
            patch = patches[p.patch]
            face_side = (patch.box[2] - patch.box[0]) * patch.image.shape[0]
            size = max(int(round(patch.image.shape[0] * p.side / face_side)), 2)
            scaled = cv2.resize(patch.image, (size, size), interpolation=cv2.INTER_AREA)
            fx = (patch.box[0] + patch.box[2]) / 2 * size
            fy = (patch.box[1] + patch.box[3]) / 2 * size
            left, top = int(round(p.cx - fx)), int(round(p.cy - fy))
            x1, y1, x2, y2 = max(left, 0), max(top, 0), min(left + size, WIDTH), min(top + size, HEIGHT)
            if x2 <= x1 or y2 <= y1:
                continue
            frame[y1:y2, x1:x2] = scaled[y1 - top:y2 - top, x1 - left:x2 - left]
            box = patch.box * size + np.array([left, top, left, top])
            ids.append(p.person)
            boxes.append(box)
            pasted.append((x1, y1, x2, y2))
        if scenario.pillar is not None:
            a, b = scenario.pillar
            frame[:, a:b] = bgs[(scenario.backgrounds[f] + 1) % len(bgs)][:, a:b]
        # Ground truth: faces at least half inside the picture and not mostly behind the pillar or a face in front.
        boxes = np.array(boxes, np.float64).reshape(-1, 4)
        keep = np.array([_visible_fraction(boxes, pasted, i, scenario.pillar) >= 0.5 for i in range(len(boxes))], bool)
        frames.append(frame)
        truth.append((np.array(ids, np.int64)[keep], boxes[keep], boxes[~keep]))
    return np.stack(frames), truth


def _visible_fraction(boxes: np.ndarray, pasted: list, i: int, pillar) -> float:
    """Share of face i's box inside the picture and covered neither by the pillar nor by the patches pasted
    after it (``pasted``: each patch's x1, y1, x2, y2 in the frame)."""
    x1, y1, x2, y2 = boxes[i]
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[max(int(y1), 0):max(int(y2), 0), max(int(x1), 0):max(int(x2), 0)] = True
    for a1, b1, a2, b2 in pasted[i + 1:]:
        mask[b1:b2, a1:a2] = False
    if pillar is not None:
        mask[:, pillar[0]:pillar[1]] = False
    return float(mask.sum()) / max((x2 - x1) * (y2 - y1), 1.0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, 4) and (B, 4) boxes -> (A, B) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def iou_baseline(face_frames: np.ndarray, boxes: np.ndarray, frames: int) -> np.ndarray:
    """Plain frame-to-frame IoU linker: each face takes the track of the previous frame's face it
    overlaps most (IoU >= 0.3, greedy by IoU), else a new track. No gaps, no motion, no cuts."""
    ids = np.full(len(face_frames), -1, np.int64)
    next_id = 0
    previous = np.zeros(0, np.int64)
    for f in range(frames):
        current = np.flatnonzero(face_frames == f)
        if len(previous) and len(current):
            overlap = iou_matrix(boxes[previous], boxes[current])
            for flat in np.argsort(-overlap, axis=None):
                p, c = np.unravel_index(flat, overlap.shape)
                if overlap[p, c] < BASELINE_IOU:
                    break
                if ids[current[c]] < 0 and not np.isin(ids[previous[p]], ids[current]):
                    ids[current[c]] = ids[previous[p]]
        for c in current:
            if ids[c] < 0:
                ids[c] = next_id
                next_id += 1
        previous = current
    return ids


def _ignored(truth, face_frames, boxes) -> np.ndarray:
    """(N,) bool: detections lying mostly (>= half their area) on a face that is mostly hidden, which the
    ground truth does not count (a half face at a pillar's edge is neither a hit nor a false alarm)."""
    out = np.zeros(len(face_frames), bool)
    for f, (_, _, hidden) in enumerate(truth):
        here = np.flatnonzero(face_frames == f)
        if len(here) and len(hidden):
            lt = np.maximum(boxes[here, None, :2], hidden[None, :, :2])
            rb = np.minimum(boxes[here, None, 2:], hidden[None, :, 2:])
            inter = np.clip(rb - lt, 0, None).prod(-1)
            area = (boxes[here, 2:] - boxes[here, :2]).prod(-1)
            out[here] = (inter / area[:, None]).max(1) >= 0.5
    return out


def evaluate(truth, face_frames, boxes, track_ids, cuts: list[int]) -> dict:
    """Detection recall, IDF1, identity switches and tracks spanning a cut for one scenario."""
    counted = ~_ignored(truth, face_frames, boxes)
    face_frames, boxes, track_ids = face_frames[counted], boxes[counted], track_ids[counted]
    gt_total = sum(len(ids) for ids, _, _ in truth)
    matches = []  # (frame, person, track)
    for f, (persons, gt_boxes, _) in enumerate(truth):
        here = np.flatnonzero(face_frames == f)
        if not len(here) or not len(persons):
            continue
        overlap = iou_matrix(gt_boxes, boxes[here])
        rows, cols = linear_sum_assignment(-overlap)
        for r, c in zip(rows, cols):
            if overlap[r, c] >= MATCH_IOU:
                matches.append((f, int(persons[r]), int(track_ids[here[c]])))
    people = sorted({p for ids, _, _ in truth for p in ids.tolist()})
    tracks = sorted(set(track_ids.tolist()))
    shared = np.zeros((len(people), len(tracks)))
    for _, person, track in matches:
        shared[people.index(person), tracks.index(track)] += 1
    rows, cols = linear_sum_assignment(-shared) if shared.size else ([], [])
    idtp = float(shared[rows, cols].sum()) if shared.size else 0.0
    switches = 0
    for person in people:
        sequence = [track for _, p, track in sorted(matches) if p == person]
        switches += sum(a != b for a, b in zip(sequence, sequence[1:]))
    spanning = 0
    for cut in cuts:
        before = set(track_ids[face_frames < cut].tolist())
        after = set(track_ids[face_frames >= cut].tolist())
        spanning += len(before & after)
    return {
        "gt_faces": gt_total,
        "detections": int(len(face_frames)),
        "matched": len(matches),
        "recall": len(matches) / max(gt_total, 1),
        "idtp": idtp,
        "idf1": 2 * idtp / max(gt_total + len(face_frames), 1),
        "id_switches": switches,
        "tracks": len(tracks),
        "true_identities": len(people),
        "tracks_across_cut": spanning,
    }


def _totals(rows: list[dict]) -> dict:
    gt = sum(r["gt_faces"] for r in rows)
    det = sum(r["detections"] for r in rows)
    idtp = sum(r["idtp"] for r in rows)
    return {
        "recall": sum(r["matched"] for r in rows) / max(gt, 1),
        "idf1": 2 * idtp / max(gt + det, 1),
        "id_switches": sum(r["id_switches"] for r in rows),
        "tracks_across_cut": sum(r["tracks_across_cut"] for r in rows),
        "tracks": sum(r["tracks"] for r in rows),
        "true_identities": sum(r["true_identities"] for r in rows),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, required=True, help="the shared media folder (photos/, negatives/)")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 3], help="sample every k-th frame (default: 1 3)")
    parser.add_argument("--frames-dir", type=Path, help="also write each scenario's frames as an MP4 here")
    args = parser.parse_args(argv)

    from raydetect import FaceDetector

    detector = FaceDetector(min_face_size=20, device="cpu")
    patches = face_patches(args.shared, detector)
    bgs = backgrounds(args.shared)
    options = TrackingOptions()
    results = {f"{name} every {k}": [] for k in args.every for name in ("raydetect", "iou_baseline")}
    link_seconds = []
    for scenario in scenarios():
        frames, truth = render(scenario, patches, bgs)
        if args.frames_dir:
            args.frames_dir.mkdir(parents=True, exist_ok=True)
            writer = cv2.VideoWriter(
                str(args.frames_dir / f"{scenario.name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT)
            )
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            writer.release()
        all_detections = detector.detect(list(frames))
        for k in args.every:
            # Every k-th frame as the job's --every k samples them; frames are renumbered by position.
            kept = np.arange(0, scenario.frames, k)
            detections = [all_detections[i] for i in kept]
            sampled_truth = [truth[i] for i in kept]
            # A cut between two samples shows at the first sample after it.
            sampled_cuts = sorted({int(np.searchsorted(kept, c)) for c in scenario.cuts})
            face_frames = np.concatenate([np.full(len(d), f, np.int64) for f, d in enumerate(detections)])
            boxes = np.concatenate([d.boxes for d in detections]).reshape(-1, 4)
            scores = np.concatenate([d.scores for d in detections])
            positions = np.arange(len(kept), dtype=np.int64)
            start = time.perf_counter()
            cuts = find_cuts(np.stack([frame_signature(frames[i]) for i in kept]), options)
            ours = link_tracks(positions, kept / FPS, cuts, face_frames, boxes, scores, options)
            link_seconds.append((time.perf_counter() - start) / len(kept))
            found_cuts = kept[cuts].tolist()
            baseline = iou_baseline(face_frames, boxes, len(kept))
            for name, ids in (("raydetect", ours), ("iou_baseline", baseline)):
                row = {"scenario": scenario.name, "every": k, "cuts_found": found_cuts, "cuts_true": scenario.cuts,
                       **evaluate(sampled_truth, face_frames, boxes, ids, sampled_cuts)}
                results[f"{name} every {k}"].append(row)
                print(f"{name:13s} every {k} {scenario.name:13s} recall {row['recall']:.3f} IDF1 {row['idf1']:.3f} "
                      f"switches {row['id_switches']} tracks {row['tracks']}/{row['true_identities']} "
                      f"across cut {row['tracks_across_cut']} cuts {found_cuts}", flush=True)
    print(f"signatures + cuts + linking: median {1000 * float(np.median(link_seconds)):.2f} ms per sampled frame")
    summary = {name: _totals(rows) for name, rows in results.items()}
    for name, total in summary.items():
        print(f"{name:21s} TOTAL recall {total['recall']:.3f} IDF1 {total['idf1']:.3f} switches {total['id_switches']} "
              f"across cut {total['tracks_across_cut']} tracks {total['tracks']}/{total['true_identities']}")
    if args.output:
        link_ms = 1000 * float(np.median(link_seconds))
        args.output.write_text(
            json.dumps({"scenarios": results, "total": summary, "link_ms_per_frame_median": link_ms}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
