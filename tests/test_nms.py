"""NMS against a slow, obviously correct greedy loop, on each of its three paths: the compiled grid loop
(CPU), and the whole-tensor solution with swept or dense overlapping pairs (every other device)."""

import json

import numpy as np
import pytest
import torch
from benchmark_modules import load_benchmark

import raydetect.mtcnn.nms as nms_module
from raydetect.mtcnn.nms import box_overlap, nms

PATHS = ["grid", "swept", "dense"]


def use_path(monkeypatch, path):
    """Send nms() down one path: the compiled grid loop, or the tensor solution with swept or dense pairs."""
    if path != "grid":
        monkeypatch.setattr(nms_module, "_runs_compiled", lambda *args: False)
    monkeypatch.setattr(nms_module, "DENSE_LIMIT", 10**9 if path == "dense" else 0)


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
@pytest.mark.parametrize("path", PATHS)
def test_matches_greedy_reference(monkeypatch, kind, threshold, inclusive, seed, path):
    use_path(monkeypatch, path)
    boxes, scores, groups = random_boxes(300 + 50 * seed, seed)
    got = nms(boxes, scores, threshold, groups, kind, inclusive).tolist()
    assert got == reference_nms(boxes, scores, threshold, groups.tolist(), kind, inclusive)


def kept_on(monkeypatch, path, *args, **kwargs):
    with monkeypatch.context() as patch:
        use_path(patch, path)
        return nms(*args, **kwargs).tolist()


@pytest.mark.parametrize("seed", range(3))
def test_all_paths_keep_the_same_boxes(monkeypatch, seed):
    boxes, scores, groups = random_boxes(3000, seed)
    dense, swept, grid = (kept_on(monkeypatch, path, boxes, scores, 0.5, groups) for path in ("dense", "swept", "grid"))
    assert swept == dense and grid == dense
    assert 0 < len(dense) < 3000


def test_swept_path_against_reference(monkeypatch):
    use_path(monkeypatch, "swept")
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


@pytest.mark.parametrize("path", PATHS)
def test_grouped_call_equals_one_call_per_group(monkeypatch, path):
    use_path(monkeypatch, path)
    boxes, scores, groups = random_boxes(600, 5)
    groups = groups * 10**9 + 7  # any integers name the groups
    together = sorted(nms(boxes, scores, 0.5, groups).tolist())
    separately = []
    for value in groups.unique().tolist():
        members = torch.nonzero(groups == value).squeeze(1)
        separately += members[nms(boxes[members], scores[members], 0.5)].tolist()
    assert together == sorted(separately)


def test_cpu_boxes_take_the_compiled_grid_loop(monkeypatch):
    calls = []
    monkeypatch.setattr(nms_module.nms_grid, "greedy_keep", lambda *args: calls.append(args) or args[-1].fill(True))
    nms(*random_boxes(50, 0)[:2], 0.5)
    assert len(calls) == 1


@pytest.mark.parametrize("path", PATHS)
def test_overlap_equal_to_the_threshold_in_float32_suppresses_nothing(monkeypatch, path):
    # IoU 3 / 10 is float32(0.3), a hair above 0.3: compared in float32, as torch compares, it is not above it.
    use_path(monkeypatch, path)
    boxes = torch.tensor([[0.0, 0.0, 7.0, 1.0], [4.0, 0.0, 10.0, 1.0]])
    assert float(box_overlap(boxes[0], boxes[1])) == float(np.float32(0.3)) > 0.3
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.3).tolist() == [0, 1]


@pytest.mark.parametrize("kind,inclusive", [("union", False), ("union", True), ("min", True)])
def test_degenerate_and_far_apart_sizes_agree_on_every_path(monkeypatch, kind, inclusive):
    """Boxes from a pixel to thousands of pixels wide (the grid's coarse cells), inverted and empty ones
    (x2 < x1, zero area: they overlap nothing) and exact duplicates with equal scores (visited by index)."""
    gen = torch.Generator().manual_seed(3)
    boxes, scores, groups = random_boxes(500, 7)
    huge = torch.tensor([[0.0, 0.0, 5000.0, 4000.0], [10.0, 10.0, 4990.0, 3990.0], [-3000.0, 5.0, 200.0, 6000.0]])
    tiny = torch.rand(100, 2, generator=gen) * 300
    tiny = torch.cat([tiny, tiny + torch.rand(100, 2, generator=gen) * 1.5], dim=1)
    inverted = torch.tensor([[50.0, 50.0, 40.0, 80.0], [60.0, 60.0, 60.0, 60.0], [70.0, 70.0, 69.5, 69.5]])
    duplicates = boxes[:20]
    boxes = torch.cat([boxes, huge, tiny, inverted, duplicates])
    scores = torch.cat([scores, torch.rand(106, generator=gen), scores[:20]])
    groups = torch.cat([groups, torch.randint(0, 3, (106,), generator=gen), groups[:20]])
    expected = reference_nms(boxes, scores, 0.5, groups.tolist(), kind, inclusive)
    for path in PATHS:
        assert kept_on(monkeypatch, path, boxes, scores, 0.5, groups, kind, inclusive) == expected, path


def test_non_finite_boxes_take_the_tensor_path(monkeypatch):
    monkeypatch.setattr(nms_module.nms_grid, "greedy_keep", None)  # would fail if called
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, float("inf"), 10.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]


def test_the_nms_benchmark_times_both_paths_on_the_cascades_own_calls(data_dir, tmp_path, capsys):
    """benchmarks/nms_speed.py checks that both paths keep the same boxes before timing them; one round here."""
    benchmark = load_benchmark("nms_speed")
    inputs = ["street_crowd_24f_640x360.mp4@frames=0", "multiface.jpg"]
    argv = ["--rounds", "1", "--data-root", str(data_dir), "--inputs", *inputs, "--output", str(tmp_path / "nms.json")]
    assert benchmark.main(argv) == 0
    rows = json.loads((tmp_path / "nms.json").read_text())["rows"]
    assert {row["input"] for row in rows} == set(inputs)
    assert [row["stage"] for row in rows if row["input"] == "multiface.jpg"] == benchmark.STAGES
    assert all(row["grid_ms"] > 0 and row["tensor_ms"] > 0 and row["boxes"] >= row["kept"] for row in rows)
    assert "| input | NMS | boxes | kept | grid | tensor | grid / tensor |" in capsys.readouterr().out


def test_the_nms_benchmark_refuses_no_rounds(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark("nms_speed").main(["--rounds", "0"])
    assert exit_info.value.code == 2
    assert "--rounds must be at least 1, got 0" in capsys.readouterr().err
