"""Average precision and recall of face detections against annotated boxes, WIDER FACE style.

The rules follow the official WIDER FACE evaluation (and PASCAL VOC's "difficult" boxes):

* In each image, detections are taken highest score first. Each one is compared with every
  annotated face by IoU; its best face (highest IoU) decides:
  - IoU below the threshold: a false positive;
  - the best face is outside the subset being evaluated: the detection is ignored
    (neither true nor false positive);
  - the best face is in the subset and not yet matched: a true positive, the face is matched;
  - the best face is already matched: a false positive (a duplicate).
* All counted detections of all images are then ranked by score; precision and recall are
  taken after every distinct score (ties enter together), and AP is the area under the
  precision envelope by all-point interpolation (VOC 2010+, the WIDER tool's ``voc_ap``).

Differences from the official tool, both deliberate: IoU uses continuous areas (no ``+1``
pixel, since boxes here are floats, often rescaled), and the curve is exact at every score
instead of sampled at 1,000 normalised thresholds. Detections on images with no annotated
face count as false positives (the official tool skips such images; negatives matter when
tuning thresholds on one's own data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np

from raydetect.tuning.annotations import ALL_FACES, AnnotationSet, ImageFaces
from raydetect.core.results import Detections

TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1

# Detections of one image: a Detections, a (boxes (N, 4), scores (N,)) pair, or an (N, 5)
# array of x1, y1, x2, y2, score.
ImageDetections = Union[Detections, tuple, np.ndarray]


@dataclass(frozen=True)
class SubsetResult:
    """Evaluation of one subset (e.g. WIDER "hard").

    Attributes:
        name: subset name.
        ap: average precision in [0, 1]; NaN when the subset has no face.
        recall: recall with every detection kept (the end of the curve).
        num_faces: faces that count in the subset.
        num_detections: detections counted (true + false positives; ignored ones excluded).
        true_positives: matched faces.
        precision_curve, recall_curve: float64 (K,), one point per distinct score, best first.
        score_curve: float64 (K,), the score cut-off of each point (detections >= it are kept).
    """

    name: str
    ap: float
    recall: float
    num_faces: int
    num_detections: int
    true_positives: int
    precision_curve: np.ndarray
    recall_curve: np.ndarray
    score_curve: np.ndarray

    @property
    def false_positives(self) -> int:
        return self.num_detections - self.true_positives

    @property
    def precision(self) -> float:
        """Precision with every detection kept (NaN when nothing was counted)."""
        return self.true_positives / self.num_detections if self.num_detections else math.nan

    def at_score(self, threshold: float) -> tuple[float, float]:
        """(precision, recall) keeping detections with score >= ``threshold``."""
        kept = np.flatnonzero(self.score_curve >= threshold)
        if not len(kept):
            return math.nan, 0.0
        return float(self.precision_curve[kept[-1]]), float(self.recall_curve[kept[-1]])


@dataclass(frozen=True)
class EvaluationReport:
    """Per-subset results, in the order the annotations list their subsets."""

    subsets: dict[str, SubsetResult]
    iou_threshold: float
    num_images: int

    def __getitem__(self, name: str) -> SubsetResult:
        return self.subsets[name]

    def as_dict(self) -> dict:
        """JSON-ready summary (no curves)."""
        return {
            "iou_threshold": self.iou_threshold,
            "images": self.num_images,
            "subsets": {
                name: {
                    "ap": r.ap,
                    "recall": r.recall,
                    "faces": r.num_faces,
                    "detections": r.num_detections,
                    "true_positives": r.true_positives,
                }
                for name, r in self.subsets.items()
            },
        }


def evaluate(
    detections_by_image: Mapping[str, ImageDetections],
    annotations: AnnotationSet | Mapping[str, object],
    iou: float = 0.5,
    subsets: Sequence[str] | None = None,
) -> EvaluationReport:
    """AP and recall per subset at IoU ``iou``.

    Args:
        detections_by_image: image key -> detections of that image (a ``Detections``, a
            ``(boxes (N, 4), scores (N,))`` pair or an (N, 5) ``x1, y1, x2, y2, score`` array).
            An annotated image without an entry counts as having no detection.
        annotations: an ``AnnotationSet`` (``raydetect.tuning.annotations.load_annotations``) or a
            plain mapping image key -> (M, 4) ``x1, y1, x2, y2`` boxes (one subset, ``all``).
        iou: minimum intersection over union for a match, in (0, 1].
        subsets: names to evaluate; defaults to the annotation set's own list.

    Raises:
        ValueError: bad IoU, unknown subset, malformed detections, or detections for an
            image the annotations do not know (the message names it).
    """
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    annotation_set = annotations if isinstance(annotations, AnnotationSet) else _plain_annotations(annotations)
    names = tuple(subsets) if subsets is not None else annotation_set.subsets
    unknown = [n for n in names if n != ALL_FACES and not _subset_known(annotation_set, n)]
    if unknown:
        raise ValueError(f"unknown subset(s) {unknown}; these annotations have {list(annotation_set.subsets)}")
    strays = [key for key in detections_by_image if key not in annotation_set.images]
    if strays:
        raise ValueError(
            f"detections given for {len(strays)} image(s) without annotations, e.g. {strays[0]!r}; "
            f"keys must match the annotation file's image paths"
        )
    per_image = {key: _as_boxes_scores(key, value) for key, value in detections_by_image.items()}
    results = {}
    for name in names:
        scores, labels, num_faces = [], [], 0
        for key, faces in annotation_set.images.items():
            boxes, image_scores = per_image.get(key, (np.zeros((0, 4)), np.zeros(0)))
            care = faces.care_mask(name)
            num_faces += int(care.sum())
            labels.append(match_detections(boxes, image_scores, faces.boxes, care, iou))
            scores.append(image_scores)
        results[name] = _subset_result(name, np.concatenate(scores), np.concatenate(labels), num_faces)
    return EvaluationReport(results, iou, len(annotation_set.images))


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) of ``x1, y1, x2, y2`` boxes (N, 4) and (M, 4), continuous areas."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_detections(
    boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, care: np.ndarray, iou: float
) -> np.ndarray:
    """Label each detection of one image: 1 true positive, 0 false positive, -1 ignored.

    Args:
        boxes: (N, 4) detections; scores: (N,); gt_boxes: (M, 4); care: bool (M,), the faces
        that count (the others are ignored, and so are detections whose best face they are).

    Returns:
        int8 (N,) labels in the order of ``boxes`` (matching runs highest score first).
    """
    labels = np.full(len(boxes), FALSE_POSITIVE, np.int8)
    if not len(boxes) or not len(gt_boxes):
        return labels
    overlaps = box_iou(boxes, gt_boxes)
    matched = np.zeros(len(gt_boxes), bool)
    for d in np.argsort(-np.asarray(scores), kind="stable"):
        best = int(np.argmax(overlaps[d]))
        if overlaps[d, best] < iou:
            continue
        if not care[best]:
            labels[d] = IGNORED
        elif not matched[best]:
            matched[best] = True
            labels[d] = TRUE_POSITIVE
    return labels


def precision_recall_curve(
    scores: np.ndarray, labels: np.ndarray, num_faces: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and score cut-off after each distinct score, highest first.

    Args:
        scores: (N,) detection scores; labels: (N,) from ``match_detections`` (ignored ones
        are dropped); num_faces: faces that count (the recall denominator).

    Returns:
        three float64 (K,) arrays, K = number of distinct scores among counted detections.
    """
    counted = labels != IGNORED
    scores = np.asarray(scores, np.float64)[counted]
    hits = (labels[counted] == TRUE_POSITIVE).astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    # The last index of each run of equal scores: ties enter the curve together.
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True)) if len(scores) else np.zeros(0, int)
    true_positives = np.cumsum(hits)[ends]
    precision = true_positives / (ends + 1)
    recall = true_positives / num_faces if num_faces else np.zeros_like(true_positives)
    return precision, recall, scores[ends]


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision envelope, all-point interpolation (VOC 2010+, WIDER ``voc_ap``).

    The curve is closed with (recall 0, precision 0) and (recall 1, precision 0); precision
    is replaced by its running maximum from the right; AP = sum of (r[i+1] - r[i]) * p[i+1].
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _subset_result(name: str, scores: np.ndarray, labels: np.ndarray, num_faces: int) -> SubsetResult:
    precision, recall, cut_offs = precision_recall_curve(scores, labels, num_faces)
    counted = int((labels != IGNORED).sum())
    true_positives = int((labels == TRUE_POSITIVE).sum())
    return SubsetResult(
        name=name,
        ap=average_precision(precision, recall) if num_faces else math.nan,
        recall=true_positives / num_faces if num_faces else math.nan,
        num_faces=num_faces,
        num_detections=counted,
        true_positives=true_positives,
        precision_curve=precision,
        recall_curve=recall,
        score_curve=cut_offs,
    )


def _subset_known(annotation_set: AnnotationSet, name: str) -> bool:
    return name in annotation_set.subsets or any(name in f.subsets for f in annotation_set.images.values())


def _plain_annotations(mapping: Mapping[str, object]) -> AnnotationSet:
    images = {}
    for key, boxes in mapping.items():
        array = np.asarray(boxes, np.float32)
        if array.size == 0:
            array = array.reshape(0, 4)
        if array.ndim != 2 or array.shape[1] != 4:
            raise ValueError(f"annotations for {key!r} must be (M, 4) x1, y1, x2, y2 boxes, got shape {array.shape}")
        images[str(key)] = ImageFaces(array, {ALL_FACES: np.ones(len(array), bool)})
    return AnnotationSet(images, (ALL_FACES,))


def _as_boxes_scores(key: str, value: ImageDetections) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, 4) float64, scores (N,) float64) from any accepted detection form."""
    if isinstance(value, Detections):
        boxes, scores = value.boxes, value.scores
    elif isinstance(value, tuple) and len(value) == 2:
        boxes, scores = value
    else:
        array = np.asarray(value, np.float64)
        if array.size == 0:
            array = array.reshape(0, 5)
        if array.ndim != 2 or array.shape[1] != 5:
            raise ValueError(
                f"detections for {key!r} must be Detections, (boxes, scores) or an (N, 5) array, "
                f"got shape {array.shape}"
            )
        boxes, scores = array[:, :4], array[:, 4]
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"detections for {key!r}: boxes must be (N, 4) x1, y1, x2, y2, got shape {boxes.shape}")
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"detections for {key!r}: {len(boxes)} boxes but {len(scores)} scores")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError(f"detections for {key!r} contain NaN or infinity")
    return boxes, scores
