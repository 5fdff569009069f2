"""The cascade's stage functions on their own, each against a slow reference that loops level by level
or crop by crop (plain area interpolation, one network call per crop, textbook greedy NMS)."""

import cv2
import pytest
import torch
import torch.nn.functional as F

from raydetect.mtcnn import boxes as box_ops
from raydetect.mtcnn.pyramid import level_size, level_sizes, pyramid_scales
from raydetect.mtcnn.cascade import (
    NMS_ACROSS_LEVELS,
    NMS_FINAL,
    NMS_REFINE,
    NMS_WITHIN_LEVEL,
    CascadeConfig,
    Candidates,
    _crop_candidates,
    finish,
    propose,
    refine,
)
from raydetect.mtcnn.nets import normalize
from raydetect.mtcnn.resample import SummedAreaTables
from raydetect.mtcnn.streams import SERIAL, Streams
from raydetect.mtcnn.weights import load_networks
from test_nms import reference_nms


@pytest.fixture(scope="module")
def nets():
    return tuple(net.to(memory_format=torch.channels_last) for net in load_networks())


@pytest.fixture(scope="module")
def images(data_dir):
    photo = cv2.cvtColor(cv2.imread(str(data_dir / "multiface.jpg")), cv2.COLOR_BGR2RGB)
    frame = torch.from_numpy(photo)
    return [frame, frame[40:400, 100:700].contiguous(), frame]  # two sizes, one repeated


def _area(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(image.permute(2, 0, 1)[None].float(), size=(height, width), mode="area")


def _keep(boxes, scores, threshold, kind="union", inclusive=False):
    return torch.tensor(reference_nms(boxes, scores, threshold, None, kind, inclusive), dtype=torch.long)


def _slow_propose(pnet, image, config):
    height, width = image.shape[:2]
    found = []
    for scale in pyramid_scales(height, width, config.min_face_size, config.scale_factor):
        face_prob, offsets = pnet(normalize(_area(image, *level_size(height, width, scale))))
        _, boxes, scores, box_offsets = box_ops.pnet_proposals(face_prob, offsets, scale, config.thresholds[0])
        keep = _keep(boxes, scores, NMS_WITHIN_LEVEL)
        found.append((boxes[keep], scores[keep], box_offsets[keep]))
    boxes, scores, offsets = (torch.cat(parts) for parts in zip(*found))
    keep = _keep(boxes, scores, NMS_ACROSS_LEVELS)
    return box_ops.square(box_ops.calibrate(boxes[keep], offsets[keep], inclusive=False)), scores[keep]


def _crop_one_by_one(net, image, boxes, size):
    """Per box: its clipped region, area-resampled alone, through the network alone."""
    height, width = image.shape[:2]
    regions, valid = box_ops.crop_regions(boxes, torch.tensor([height]), torch.tensor([width]))
    outputs = []
    for x0, y0, x1, y1 in regions[valid].tolist():
        crop = image[y0:y1, x0:x1].permute(2, 0, 1)[None].float()
        outputs.append(net(normalize(F.interpolate(crop, size=(size, size), mode="area"))))
    return valid, [torch.cat(parts) for parts in zip(*outputs)]


def _sizes(images):
    return torch.tensor([[img.shape[0], img.shape[1]] for img in images])


# Each stage alone and in two streams (level groups and crop chunks side by side).
STREAMS = pytest.mark.parametrize("streams", [SERIAL, Streams(2)], ids=["one stream", "two streams"])


def _per_image(candidates: Candidates, index: int):
    rows = candidates.image_index == index
    return candidates.boxes[rows], candidates.scores[rows]


@STREAMS
def test_propose_equals_level_by_level_reference(nets, images, streams):
    config = CascadeConfig(pack_levels_below=32_768)
    with torch.inference_mode(), streams.running():
        proposals, pixels = propose(nets[0], SummedAreaTables(images), _sizes(images), config, streams)
        assert pixels == sum(
            h * w for img in images for h, w in level_sizes(img.shape[0], img.shape[1], 20, 0.709)
        )
        for index, image in enumerate(images):
            boxes, scores = _per_image(proposals, index)
            slow_boxes, slow_scores = _slow_propose(nets[0], image, config)
            assert len(boxes) == len(slow_boxes) > 10
            torch.testing.assert_close(scores, slow_scores, atol=1e-5, rtol=0)
            torch.testing.assert_close(boxes, slow_boxes, atol=1e-3, rtol=0)


@STREAMS
def test_refine_equals_one_crop_at_a_time(nets, images, streams):
    config = CascadeConfig(rnet_batch=64)  # several passes
    with torch.inference_mode(), streams.running():
        proposals, _ = propose(nets[0], SummedAreaTables(images), _sizes(images), config)
        refined = refine(nets[1], SummedAreaTables(images), _sizes(images), proposals, config, streams)
        for index, image in enumerate(images):
            boxes, _ = _per_image(proposals, index)
            valid, (scores, offsets) = _crop_one_by_one(nets[1], image, boxes, 24)
            boxes = boxes[valid]
            passed = scores > config.thresholds[1]
            boxes, scores, offsets = boxes[passed], scores[passed], offsets[passed]
            keep = _keep(boxes, scores, NMS_REFINE)
            expected = box_ops.square(box_ops.calibrate(boxes[keep], offsets[keep], inclusive=True))
            got_boxes, got_scores = _per_image(refined, index)
            assert len(got_boxes) == len(expected) > 3
            torch.testing.assert_close(got_scores, scores[keep], atol=1e-5, rtol=0)
            torch.testing.assert_close(got_boxes, expected, atol=1e-3, rtol=0)


@STREAMS
def test_finish_equals_one_crop_at_a_time(nets, images, streams):
    config = CascadeConfig(onet_batch=4)  # several passes
    with torch.inference_mode(), streams.running():
        tables, sizes = SummedAreaTables(images), _sizes(images)
        refined = refine(nets[1], tables, sizes, propose(nets[0], tables, sizes, config)[0], config)
        faces, landmarks = finish(nets[2], tables, sizes, refined, config, streams)
        for index, image in enumerate(images):
            boxes, _ = _per_image(refined, index)
            valid, (scores, offsets, fractions) = _crop_one_by_one(nets[2], image, boxes, 48)
            boxes = boxes[valid]
            passed = scores > config.thresholds[2]
            boxes, scores, offsets, fractions = boxes[passed], scores[passed], offsets[passed], fractions[passed]
            points = box_ops.landmarks_in_image(boxes, fractions)
            boxes = box_ops.calibrate(boxes, offsets, inclusive=True)
            keep = _keep(boxes, scores, NMS_FINAL, kind="min", inclusive=True)
            rows = faces.image_index == index
            assert int(rows.sum()) == len(keep) > 0
            torch.testing.assert_close(faces.scores[rows], scores[keep], atol=1e-5, rtol=0)
            torch.testing.assert_close(faces.boxes[rows], boxes[keep], atol=1e-3, rtol=0)
            torch.testing.assert_close(landmarks[rows], points[keep], atol=1e-3, rtol=0)


def test_crops_are_cut_in_reading_order_and_outputs_restored_to_candidate_order(nets, images):
    tables, sizes = SummedAreaTables(images), _sizes(images)
    with torch.inference_mode():
        proposals, _ = propose(nets[0], tables, sizes, CascadeConfig())
    kept, crops, restore = _crop_candidates(tables, sizes, proposals, 24)
    image_sizes = sizes[kept.image_index]
    regions, _ = box_ops.crop_regions(kept.boxes, image_sizes[:, 0], image_sizes[:, 1])
    in_candidate_order = tables.resample(kept.image_index, regions, 24, normalized=True)
    assert torch.equal(in_candidate_order, normalize(tables.resample(kept.image_index, regions, 24)))
    cut = crops(0, len(kept))
    assert not torch.equal(cut, in_candidate_order)  # really reordered
    (restored,) = restore((cut,))
    assert torch.equal(restored, in_candidate_order)
