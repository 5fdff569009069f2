"""AP and recall, WIDER style, against cases worked out by hand and a slow reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raydetect.tuning.annotations import AnnotationSet, ImageFaces
from raydetect.tuning.evaluation import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    average_precision,
    box_iou,
    evaluate,
    match_detections,
)
from raydetect.core.results import Detections


def _faces(boxes, care):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return ImageFaces(boxes, {"care": np.array(care, bool), "all": np.ones(len(boxes), bool)})


# Three images. Image A has faces g1, g2 (in subset "care") and g3 (outside it); B has h1;
# C has c1 and no detection at all.
ANNOTATIONS = AnnotationSet(
    {
        "a.jpg": _faces([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [True, True, False]),
        "b.jpg": _faces([[0, 0, 20, 20]], [True]),
        "c.jpg": _faces([[0, 0, 10, 10]], [True]),
    },
    subsets=("care", "all"),
)
# (x1, y1, x2, y2, score); the comment says what each one is in subset "care".
DETECTIONS = {
    "a.jpg": np.array(
        [
            [60, 0, 70, 10, 0.95],  # a4: overlaps nothing -> FP
            [0, 0, 10, 10, 0.90],  # a1: g1 exactly -> TP
            [1, 0, 11, 10, 0.80],  # a2: best face g1 (IoU 90/110 = 0.82) already matched -> FP
            [20, 0, 30, 10, 0.80],  # a5: g2 -> TP, same score as a2
            [40, 0, 50, 10, 0.70],  # a3: best face g3 is outside "care" -> ignored
        ]
    ),
    "b.jpg": np.array(
        [
            [0, 0, 20, 10, 0.85],  # b1: half of h1, IoU 200/400 = 0.5, exactly the threshold -> TP
            [100, 100, 110, 110, 0.70],  # b2: nothing there -> FP
        ]
    ),
}


def test_hand_computed_subset_with_ignored_face():
    # Subset "care": 4 faces (g1, g2, h1, c1). Counted detections by score, ties together:
    #   0.95 a4 FP          -> TP 0 of 1 : precision 0,    recall 0
    #   0.90 a1 TP          -> TP 1 of 2 : precision 1/2,  recall 1/4
    #   0.85 b1 TP          -> TP 2 of 3 : precision 2/3,  recall 2/4
    #   0.80 a2 FP, a5 TP   -> TP 3 of 5 : precision 3/5,  recall 3/4
    #   0.70 b2 FP (a3 ignored) -> TP 3 of 6 : precision 1/2, recall 3/4
    # Envelope (max precision at or beyond each recall): 2/3 up to recall 2/4, then 3/5.
    # AP = 1/4 * 2/3 + 1/4 * 2/3 + 1/4 * 3/5 + 1/4 * 0 = 1/3 + 3/20 = 29/60.
    report = evaluate(DETECTIONS, ANNOTATIONS, iou=0.5)
    care = report["care"]
    assert care.ap == pytest.approx(29 / 60)
    assert care.recall == pytest.approx(3 / 4)
    assert (care.num_faces, care.num_detections, care.true_positives, care.false_positives) == (4, 6, 3, 3)
    np.testing.assert_allclose(care.precision_curve, [0, 1 / 2, 2 / 3, 3 / 5, 1 / 2])
    np.testing.assert_allclose(care.recall_curve, [0, 1 / 4, 2 / 4, 3 / 4, 3 / 4])
    np.testing.assert_allclose(care.score_curve, [0.95, 0.90, 0.85, 0.80, 0.70])
    assert care.at_score(0.85) == pytest.approx((2 / 3, 1 / 2))


def test_hand_computed_subset_counting_every_face():
    # Subset "all": 5 faces, a3 now matches g3 and is a TP.
    #   0.95 a4 FP -> 0/1, r 0;  0.90 a1 TP -> 1/2, r 1/5;  0.85 b1 TP -> 2/3, r 2/5
    #   0.80 a2 FP, a5 TP -> 3/5, r 3/5;  0.70 a3 TP, b2 FP -> 4/7, r 4/5
    # Envelope: 2/3 up to recall 2/5, 3/5 to 3/5, 4/7 to 4/5, then 0.
    # AP = 1/5 * (2/3 + 2/3 + 3/5 + 4/7) = 1/5 * 263/105 = 263/525.
    report = evaluate(DETECTIONS, ANNOTATIONS, iou=0.5)
    assert report["all"].ap == pytest.approx(263 / 525)
    assert report["all"].recall == pytest.approx(4 / 5)
    assert list(report.subsets) == ["care", "all"]


def test_ties_enter_the_curve_together():
    # Were a5 (TP) counted before a2 (FP) at 0.80, the curve would gain a point
    # (precision 3/4, recall 3/4) and AP would be 3/4 * 3/4 = 9/16: grouping must prevent it.
    report = evaluate(DETECTIONS, ANNOTATIONS, iou=0.5)
    assert report["care"].ap != pytest.approx(9 / 16)
    reordered = {**DETECTIONS, "a.jpg": DETECTIONS["a.jpg"][[0, 1, 3, 2, 4]]}
    assert evaluate(reordered, ANNOTATIONS)["care"].ap == pytest.approx(29 / 60)


def test_iou_threshold_is_inclusive_and_configurable():
    # b1 has IoU exactly 0.5 with h1; at 0.6 it misses and becomes an FP.
    # "care" at IoU 0.6: 0.95 FP 0/1; 0.90 TP 1/2 r1/4; 0.85 FP 1/3; 0.80 FP+TP 2/5 r2/4; 0.70 FP 2/6.
    # AP = 1/4 * 1/2 + 1/4 * 2/5 = 9/40.
    report = evaluate(DETECTIONS, ANNOTATIONS, iou=0.6)
    assert report["care"].ap == pytest.approx(9 / 40)
    assert report["care"].recall == pytest.approx(2 / 4)


def test_match_labels_follow_score_order_not_input_order():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    boxes = np.array([[0, 0, 10, 11], [0, 0, 10, 10]], np.float32)
    labels = match_detections(boxes, np.array([0.3, 0.9]), gt, np.array([True]), 0.5)
    assert labels.tolist() == [FALSE_POSITIVE, TRUE_POSITIVE]  # the better-scored one takes the face
    labels = match_detections(boxes, np.array([0.3, 0.9]), gt, np.array([False]), 0.5)
    assert labels.tolist() == [IGNORED, IGNORED]  # every detection of an ignored face is ignored


def test_accepts_detections_objects_and_plain_annotations():
    detections = {
        "x.png": Detections(
            boxes=np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32),
            scores=np.array([0.9, 0.8], np.float32),
            landmarks=np.zeros((2, 5, 2), np.float32),
        ),
        "y.png": (np.zeros((0, 4)), np.zeros(0)),
    }
    annotations = {"x.png": [[0, 0, 10, 10]], "y.png": [[5, 5, 15, 15]], "z.png": []}
    # 2 faces; 0.9 TP (1/1, r 1/2), 0.8 FP (1/2, r 1/2): AP = 1/2 * 1 = 1/2.
    report = evaluate(detections, annotations)
    assert report["all"].ap == pytest.approx(0.5)
    assert report.num_images == 3
    assert report.as_dict()["subsets"]["all"]["faces"] == 2


def test_false_positives_on_images_without_faces_count():
    report = evaluate({"neg.jpg": np.array([[0, 0, 5, 5, 0.99]]), "pos.jpg": np.array([[0, 0, 10, 10, 0.5]])},
                      {"neg.jpg": [], "pos.jpg": [[0, 0, 10, 10]]})
    # 0.99 FP (0/1), 0.5 TP (1/2, r 1): AP = 1 * 1/2.
    assert report["all"].ap == pytest.approx(0.5)


def test_no_detections_gives_zero_ap_and_recall():
    report = evaluate({}, ANNOTATIONS)
    assert report["care"].ap == 0.0 and report["care"].recall == 0.0
    assert report["care"].num_detections == 0 and math.isnan(report["care"].precision)


def test_subset_without_faces_is_nan():
    report = evaluate({"n.jpg": np.array([[0, 0, 1, 1, 0.5]])}, {"n.jpg": []})
    assert math.isnan(report["all"].ap) and math.isnan(report["all"].recall)


def test_average_precision_of_perfect_and_empty_curves():
    assert average_precision(np.array([1.0, 1.0]), np.array([0.5, 1.0])) == pytest.approx(1.0)
    assert average_precision(np.zeros(0), np.zeros(0)) == 0.0


def test_box_iou_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]])


def _reference_ap(detections, annotations, subset, iou):
    """Slow reference: the official tool's thresholding, one pass per distinct score."""
    labels = {}
    for key, faces in annotations.images.items():
        dets = detections.get(key, np.zeros((0, 5)))
        order = np.argsort(-dets[:, 4], kind="stable")
        matched, lab = set(), []
        for d in order:
            ious = [_iou_slow(dets[d, :4], g) for g in faces.boxes]
            best = int(np.argmax(ious)) if ious else -1
            if best < 0 or ious[best] < iou:
                lab.append((dets[d, 4], 0))
            elif not faces.care_mask(subset)[best]:
                continue
            elif best not in matched:
                matched.add(best)
                lab.append((dets[d, 4], 1))
            else:
                lab.append((dets[d, 4], 0))
        labels[key] = lab
    total = sum(int(f.care_mask(subset).sum()) for f in annotations.images.values())
    all_scores = sorted({s for lab in labels.values() for s, _ in lab}, reverse=True)
    points = []
    for t in all_scores:
        kept = [hit for lab in labels.values() for s, hit in lab if s >= t]
        points.append((sum(kept) / total, sum(kept) / len(kept)))
    ap, previous_recall = 0.0, 0.0
    for recall, _ in points:
        if recall > previous_recall:
            ap += (recall - previous_recall) * max(p for r, p in points if r >= recall)
            previous_recall = recall
    return ap


def _iou_slow(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def test_matches_slow_reference_on_random_scenes():
    rng = np.random.default_rng(0)
    images, detections = {}, {}
    for i in range(12):
        n = int(rng.integers(0, 8))
        xy = rng.uniform(0, 200, (n, 2))
        gt = np.hstack([xy, xy + rng.uniform(8, 40, (n, 2))]).astype(np.float32)
        images[f"{i}.jpg"] = _faces(gt, rng.random(n) < 0.7)
        jitter = gt[rng.integers(0, n, int(rng.integers(0, 10)))] + rng.normal(0, 4, (1, 4)) if n else np.zeros((0, 4))
        noise = rng.uniform(0, 200, (int(rng.integers(0, 3)), 2))
        boxes = np.vstack([jitter, np.hstack([noise, noise + 20])])
        scores = np.round(rng.random(len(boxes)), 1)  # coarse scores force ties across images
        detections[f"{i}.jpg"] = np.hstack([boxes, scores[:, None]])
    annotations = AnnotationSet(images, ("care", "all"))
    report = evaluate(detections, annotations)
    for subset in ("care", "all"):
        assert report[subset].ap == pytest.approx(_reference_ap(detections, annotations, subset, 0.5))


@pytest.mark.parametrize(
    "detections, message",
    [
        ({"unknown.jpg": np.zeros((0, 5))}, "without annotations"),
        ({"a.jpg": np.zeros((3, 4))}, "(N, 5)"),
        ({"a.jpg": (np.zeros((2, 4)), np.zeros(3))}, "2 boxes but 3 scores"),
        ({"a.jpg": (np.zeros((2, 3)), np.zeros(2))}, "boxes must be (N, 4)"),
        ({"a.jpg": np.array([[0, 0, 1, np.nan, 0.5]])}, "NaN"),
    ],
)
def test_bad_detections_are_named(detections, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        evaluate(detections, ANNOTATIONS)


def test_bad_arguments():
    with pytest.raises(ValueError, match="iou must be in"):
        evaluate({}, ANNOTATIONS, iou=0)
    with pytest.raises(ValueError, match="unknown subset"):
        evaluate({}, ANNOTATIONS, subsets=["easy"])
    with pytest.raises(ValueError, match=r"must be \(M, 4\)"):
        evaluate({}, {"a.jpg": [[1, 2, 3]]})
