"""Box operations of the cascade, each against a slow reference or a hand-computed case."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raydetect.mtcnn import boxes as box_ops
from raydetect.mtcnn.nets import normalize
from raydetect.mtcnn.resample import SummedAreaTables


def test_pnet_proposals_against_a_loop_over_cells():
    gen = torch.Generator().manual_seed(0)
    prob = torch.rand(2, 7, 9, generator=gen)
    offsets = torch.randn(2, 4, 7, 9, generator=gen)
    scale = 0.37
    image_index, boxes, scores, box_offsets = box_ops.pnet_proposals(prob, offsets, scale, 0.6)
    expected = []
    for n in range(2):
        for y in range(7):
            for x in range(9):
                if prob[n, y, x] >= 0.6:
                    expected.append(
                        (n, [math.floor((2 * x + 1) / scale), math.floor((2 * y + 1) / scale),
                             math.floor((2 * x + 12) / scale), math.floor((2 * y + 12) / scale)],
                         float(prob[n, y, x]), offsets[n, :, y, x].tolist())
                    )
    assert image_index.tolist() == [e[0] for e in expected]
    assert boxes.tolist() == [e[1] for e in expected]
    assert scores.tolist() == pytest.approx([e[2] for e in expected])
    torch.testing.assert_close(box_offsets, torch.tensor([e[3] for e in expected]))


def test_calibrate_and_square_by_hand():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    offsets = torch.tensor([[0.1, -0.1, 0.0, 0.5]])
    assert box_ops.calibrate(boxes, offsets, inclusive=False).tolist() == [[12.0, 16.0, 30.0, 80.0]]
    torch.testing.assert_close(box_ops.calibrate(boxes, offsets, inclusive=True), torch.tensor([[12.1, 15.9, 30.0, 80.5]]))
    # 20 wide, 40 tall: a 40-pixel square around the same centre (20, 40).
    assert box_ops.square(boxes).tolist() == [[0.0, 20.0, 40.0, 60.0]]


def test_crop_regions_truncate_clip_and_flag_empty():
    boxes = torch.tensor([[-5.7, 3.9, 20.2, 80.0], [50.0, 50.0, 60.0, 60.0], [-30.0, -30.0, -10.0, -10.0]])
    regions, valid = box_ops.crop_regions(boxes, torch.tensor([40, 40, 40]), torch.tensor([30, 30, 30]))
    # Box 0: x from trunc(-5.7)=-5 -> clipped to 1 (0-based 0) up to 20; y from 3 (0-based 2) to 40.
    assert regions[0].tolist() == [0, 2, 20, 40]
    assert valid.tolist() == [True, False, False]


def test_landmarks_in_image_by_hand():
    boxes = torch.tensor([[10.0, 20.0, 29.0, 59.0]])  # 20 x 40 inclusive
    fractions = torch.tensor([[0.0, 0.5, 1.0, 0.25, 0.75, 0.0, 0.5, 1.0, 0.25, 0.75]])
    points = box_ops.landmarks_in_image(boxes, fractions)
    assert points.shape == (1, 5, 2)
    assert points[0, :, 0].tolist() == [9.0, 19.0, 29.0, 14.0, 24.0]
    assert points[0, :, 1].tolist() == [19.0, 39.0, 59.0, 29.0, 49.0]


@pytest.mark.parametrize("size", [24, 48])
def test_summed_area_resample_equals_area_interpolation(size):
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((97, 131), (60, 45))]
    tables = SummedAreaTables(images)
    regions = torch.tensor([[0, 0, 131, 97], [10, 5, 37, 50], [3, 7, 4, 9], [0, 0, 45, 60], [20, 30, 45, 31]])
    image_index = torch.tensor([0, 0, 0, 1, 1])
    got = tables.resample(image_index, regions, size)
    assert got.shape == (5, 3, size, size)
    for k, (x0, y0, x1, y1) in enumerate(regions.tolist()):
        crop = images[int(image_index[k])][y0:y1, x0:x1].permute(2, 0, 1)[None].float()
        expected = F.interpolate(crop, size=(size, size), mode="area")[0]
        torch.testing.assert_close(got[k], expected, rtol=0, atol=1e-3)


def test_whole_image_resample_equals_area_interpolation_and_region_resample():
    rng = np.random.default_rng(1)
    images = [torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((97, 131), (40, 50), (97, 131))]
    tables = SummedAreaTables(images)
    for height, width in ((58, 79), (97, 131), (12, 17), (150, 200)):  # down, same, far down, up
        levels = tables.resample_whole([0, 2], height, width)
        assert levels.shape == (2, 3, height, width)
        regions = torch.tensor([[0, 0, 131, 97], [0, 0, 131, 97]])
        assert torch.equal(levels, tables.resample(torch.tensor([0, 2]), regions, height, width))
        expected = F.interpolate(images[2].permute(2, 0, 1)[None].float(), size=(height, width), mode="area")[0]
        torch.testing.assert_close(levels[1], expected, rtol=0, atol=1e-3)
        # The networks' input straight from the sums: bit for bit what normalising the means gives.
        assert torch.equal(tables.resample_whole([0, 2], height, width, normalized=True), normalize(levels))
        assert torch.equal(tables.resample(torch.tensor([0, 2]), regions, height, width, normalized=True),
                           normalize(levels))
    with pytest.raises(ValueError, match="one size"):
        tables.resample_whole([0, 1], 20, 20)


def test_summed_area_tables_without_opencv_or_in_int64_equal_opencvs(monkeypatch):
    from raydetect.mtcnn import resample

    rng = np.random.default_rng(2)
    images = [torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((37, 53), (20, 11))]
    with_opencv = SummedAreaTables(images)
    wide = torch.full((38, 54, 3), -1, dtype=torch.int64)  # the int64 tables of frames over 8.4 megapixels
    resample._integral_into(images[0], wide)
    assert torch.equal(wide.view(38, -1), with_opencv.whole_tables[0].long())
    monkeypatch.setattr(resample, "cv2", None)
    without = SummedAreaTables(images)
    assert all(torch.equal(a, b) for a, b in zip(without.whole_tables, with_opencv.whole_tables))
    assert torch.equal(without.planes, with_opencv.planes)
    assert with_opencv.planes[:, 0].tolist() == [0, 0, 0]  # the zero border, channel by channel
