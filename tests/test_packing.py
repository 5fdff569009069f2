"""The packed pyramid pass (the GPU setting) against one P-Net pass per level."""

import cv2
import numpy as np
import pytest
import torch

from raydetect import FaceDetector
from raydetect.mtcnn.pyramid import level_size, pyramid_scales
from raydetect.mtcnn.nets import normalize
from raydetect.mtcnn.packing import pack, shelf_layout, unpack
from raydetect.mtcnn.resample import SummedAreaTables
from raydetect.mtcnn.weights import load_networks


def test_shelf_layout_places_every_level_inside_without_overlap():
    sizes = [level_size(720, 1280, s) for s in pyramid_scales(720, 1280, 20, 0.709)]
    height, width, places = shelf_layout(sizes)
    occupied = np.zeros((height, width), np.int32)
    for (h, w), place in zip(sizes, places):
        assert (place.height, place.width) == (h, w)
        occupied[place.top : place.top + h, place.left : place.left + w] += 1
    assert occupied.max() == 1
    assert occupied.mean() > 0.7  # the canvas is mostly used


def test_packed_trunk_equals_per_level_trunk(data_dir):
    pnet = load_networks()[0]
    image = torch.from_numpy(cv2.cvtColor(cv2.imread(str(data_dir / "multiface.jpg")), cv2.COLOR_BGR2RGB))
    tables = SummedAreaTables([image])
    h, w = image.shape[:2]
    whole = torch.tensor([[0, 0, w, h]])
    levels = [tables.resample(torch.tensor([0]), whole, *level_size(h, w, s)) for s in pyramid_scales(h, w, 20, 0.709)]
    with torch.inference_mode():
        canvas, places = pack([pnet.stem(normalize(level)) for level in levels])
        packed_prob, packed_offsets = pnet.trunk(canvas)
        for level, place in zip(levels, places):
            prob, offsets = pnet(normalize(level))
            torch.testing.assert_close(unpack(packed_prob, place, 4), prob, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(unpack(packed_offsets, place, 4), offsets, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["multiface.jpg", "dlib_faces/2007_007763.jpg"])
def test_packed_detector_finds_the_same_faces(data_dir, name):
    image = cv2.cvtColor(cv2.imread(str(data_dir / name)), cv2.COLOR_BGR2RGB)
    per_level = FaceDetector(device="cpu", packed_pyramid=False).detect([image, image[:300]])
    for packing in (True, None):  # every level, and the CPU default: only the small levels
        packed = FaceDetector(device="cpu", packed_pyramid=packing).detect([image, image[:300]])
        for a, b in zip(per_level, packed):
            assert len(a) == len(b)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
