"""NMS against a slow, obviously correct greedy loop."""

import pytest
import torch

import raydetect.mtcnn.nms as nms_module
from raydetect.mtcnn.nms import box_overlap, nms


def overlap(a, b, kind, inclusive):
    extra = 1.0 if inclusive else 0.0
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + extra)
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + extra)
    area_a = (a[2] - a[0] + extra) * (a[3] - a[1] + extra)
    area_b = (b[2] - b[0] + extra) * (b[3] - b[1] + extra)
    inter = width * height
    return inter / (area_a + area_b - inter) if kind == "union" else inter / min(area_a, area_b)


def reference_nms(boxes, scores, threshold, groups, kind, inclusive):
    """Textbook greedy NMS in plain Python floats (float64: a hair more precise than torch's float32)."""
    boxes, scores = boxes.tolist(), scores.tolist()
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(
            (groups is not None and groups[k] != groups[i]) or overlap(boxes[k], boxes[i], kind, inclusive) <= threshold
            for k in kept
        ):
            kept.append(i)
    return kept


def random_boxes(count, seed):
    gen = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=gen) * 300
    side = torch.rand(count, 1, generator=gen) * 40 * (torch.rand(count, 1, generator=gen) * 3 + 1) + 2
    boxes = torch.cat([corner, corner + side * (0.8 + 0.4 * torch.rand(count, 2, generator=gen))], dim=1)
    return boxes, torch.rand(count, generator=gen), torch.randint(0, 3, (count,), generator=gen)


@pytest.mark.parametrize("kind,threshold,inclusive", [("union", 0.5, False), ("union", 0.7, True), ("min", 0.7, True)])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dense_limit", [0, 10**9], ids=["swept", "dense"])
def test_matches_greedy_reference(monkeypatch, kind, threshold, inclusive, seed, dense_limit):
    monkeypatch.setattr(nms_module, "DENSE_LIMIT", dense_limit)
    boxes, scores, groups = random_boxes(300 + 50 * seed, seed)
    got = nms(boxes, scores, threshold, groups, kind, inclusive).tolist()
    assert got == reference_nms(boxes, scores, threshold, groups.tolist(), kind, inclusive)


@pytest.mark.parametrize("seed", range(3))
def test_swept_pairs_equal_dense_pairs(monkeypatch, seed):
    boxes, scores, groups = random_boxes(3000, seed)
    monkeypatch.setattr(nms_module, "DENSE_LIMIT", 10**9)
    dense = nms(boxes, scores, 0.5, groups).tolist()
    monkeypatch.setattr(nms_module, "DENSE_LIMIT", 0)
    swept = nms(boxes, scores, 0.5, groups).tolist()
    assert swept == dense
    assert 0 < len(swept) < 3000


def test_swept_path_against_reference(monkeypatch):
    monkeypatch.setattr(nms_module, "DENSE_LIMIT", 0)
    boxes, scores, groups = random_boxes(400, 11)
    got = nms(boxes, scores, 0.7, groups, "union", True).tolist()
    assert got == reference_nms(boxes, scores, 0.7, groups.tolist(), "union", True)


def test_empty_input_returns_typed_empty():
    kept = nms(torch.zeros((0, 4)), torch.zeros(0), 0.5)
    assert kept.dtype == torch.long and kept.shape == (0,)


def test_groups_never_suppress_each_other():
    box = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    boxes = box.repeat(3, 1)
    kept = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5, groups=torch.tensor([0, 1, 0]))
    assert kept.tolist() == [0, 1]


def test_overlap_kinds_by_hand():
    a = torch.tensor([0.0, 0.0, 10.0, 10.0])
    b = torch.tensor([5.0, 0.0, 10.0, 10.0])
    assert float(box_overlap(a, b, "union")) == pytest.approx(50 / 100)
    assert float(box_overlap(a, b, "min")) == pytest.approx(1.0)
    # Inclusive pixel boxes: 11 x 11 and 6 x 11, intersection 6 x 11.
    assert float(box_overlap(a, b, "union", inclusive=True)) == pytest.approx(66 / 121)
    with pytest.raises(ValueError, match="unknown overlap kind"):
        box_overlap(a, b, "giou")


@pytest.mark.parametrize("dense_limit", [0, 10**9], ids=["swept", "dense"])
def test_grouped_call_equals_one_call_per_group(monkeypatch, dense_limit):
    monkeypatch.setattr(nms_module, "DENSE_LIMIT", dense_limit)
    boxes, scores, groups = random_boxes(600, 5)
    groups = groups * 10**9 + 7  # any integers name the groups
    together = sorted(nms(boxes, scores, 0.5, groups).tolist())
    separately = []
    for value in groups.unique().tolist():
        members = torch.nonzero(groups == value).squeeze(1)
        separately += members[nms(boxes[members], scores[members], 0.5)].tolist()
    assert together == sorted(separately)
