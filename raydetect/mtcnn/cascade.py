"""The three stages of the MTCNN cascade over a batch of images, as tensor operations.

propose (P-Net over the image pyramid) -> refine (R-Net over 24x24 crops) ->
finish (O-Net over 48x48 crops, with landmarks). Candidates of all images travel
together as flat tensors tagged with their image index; every crop of a stage is
cut and resampled in one gather, and the networks run in chunks sized by the
configured number of crops per forward pass, never one face at a time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from raydetect.mtcnn import boxes as box_ops
from raydetect.mtcnn import defaults
from raydetect.mtcnn.nets import ONET_INPUT_SIZE, RNET_INPUT_SIZE, ONet, PNet, RNet
from raydetect.mtcnn.nms import nms
from raydetect.mtcnn.packing import pack, unpack
from raydetect.mtcnn.pyramid import level_size, pyramid_scales
from raydetect.mtcnn.resample import SummedAreaTables
from raydetect.mtcnn.streams import SERIAL, Streams

# Overlap thresholds of the original cascade.
NMS_WITHIN_LEVEL = 0.5
NMS_ACROSS_LEVELS = 0.7
NMS_REFINE = 0.7
NMS_FINAL = 0.7  # intersection over the smaller box

# Chunks of crops that streams share are no smaller than this (a hand-over costs about as much as a few crops).
MIN_CROPS_PER_CHUNK = 8

# What a pyramid level costs beyond its pixels (its own gathers, stem and proposals), in pixels' worth, for
# splitting levels between streams: a 720p frame's P-Net stage ran 3% faster with this than with pixels alone.
LEVEL_OVERHEAD_PIXELS = 16_000

# pack_levels_below for packing every pyramid level.
ALL_LEVELS = 2**62


@dataclass(frozen=True)
class CascadeConfig:
    """Detection settings.

    Attributes:
        min_face_size: smallest face side to look for, in pixels.
        thresholds: face probability thresholds of P-Net, R-Net and O-Net.
        scale_factor: ratio between successive pyramid levels, in (0, 1).
        rnet_batch: at most this many 24x24 crops per R-Net forward pass.
        onet_batch: at most this many 48x48 crops per O-Net forward pass.
        compute_dtype: None for float32, else the autocast dtype of the forward passes
            (torch.float16 or torch.bfloat16 on CUDA; on CPUs bfloat16 goes through the
            networks' ``conv_dtype`` instead).
        pack_levels_below: pyramid levels of fewer pixels than this go through P-Net's
            trunk together, packed into one canvas (one pass instead of several small
            ones, whose fixed costs dominate); larger levels run one by one (no arithmetic
            on the canvas's unused cells). 0 packs none; ALL_LEVELS packs every level,
            the GPU setting. The candidates agree to float rounding.
    """

    min_face_size: float = defaults.MIN_FACE_SIZE
    thresholds: tuple[float, float, float] = defaults.THRESHOLDS
    scale_factor: float = defaults.SCALE_FACTOR
    rnet_batch: int = 512
    onet_batch: int = 64
    compute_dtype: torch.dtype | None = None
    pack_levels_below: int = 0


@dataclass
class Candidates:
    """Face candidates of a batch of images, flat: K rows across all images."""

    image_index: torch.Tensor  # (K,) int64
    boxes: torch.Tensor  # (K, 4) float32, x1, y1, x2, y2
    scores: torch.Tensor  # (K,) float32

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, rows: torch.Tensor) -> "Candidates":
        # index_select: several times faster than advanced indexing on the CPU
        return Candidates(
            self.image_index.index_select(0, rows), self.boxes.index_select(0, rows), self.scores.index_select(0, rows)
        )


@dataclass
class CascadeOutput:
    """Faces of a batch of images, flat and ordered by image then decreasing score."""

    image_index: torch.Tensor  # (F,) int64
    boxes: torch.Tensor  # (F, 4) float32
    scores: torch.Tensor  # (F,) float32
    landmarks: torch.Tensor  # (F, 5, 2) float32
    stats: dict = field(default_factory=dict)


def _precision(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _forward(net: torch.nn.Module, inputs: torch.Tensor, dtype: torch.dtype | None):
    """Run a network on normalised input under the configured precision; outputs come back as float32."""
    with _precision(inputs.device, dtype):
        outputs = net(inputs)
    return tuple(out.float() for out in outputs)


def _pnet_over_levels(pnet: PNet, levels: list[torch.Tensor], config: CascadeConfig):
    """(face_prob, offsets) of every level (normalised network input): large levels one by one, small ones in
    one packed trunk pass."""
    packed = [i for i, level in enumerate(levels) if level.shape[2] * level.shape[3] < config.pack_levels_below]
    if len(packed) < 2:
        return [_forward(pnet, level, config.compute_dtype) for level in levels]
    outputs = {i: _forward(pnet, level, config.compute_dtype) for i, level in enumerate(levels) if i not in packed}
    with _precision(levels[0].device, config.compute_dtype):
        canvas, placements = pack([pnet.stem(levels[i]) for i in packed])
        face_prob, offsets = pnet.trunk(canvas)
    shrink = PNet.TRUNK_SHRINK
    for i, place in zip(packed, placements):
        outputs[i] = (unpack(face_prob, place, shrink).float(), unpack(offsets, place, shrink).float())
    return [outputs[i] for i in range(len(levels))]


def propose(pnet: PNet, tables: SummedAreaTables, sizes: torch.Tensor, config: CascadeConfig,
            streams: Streams = SERIAL):
    """Stage 1: P-Net over every pyramid level of every image.

    Args:
        tables: summed-area tables of the batch's images, from which levels are resampled.
        sizes: (N, 2) int64 height, width of each image.
        streams: the levels of each image size are split into groups of about equal
            cost (pixels, plus LEVEL_OVERHEAD_PIXELS per level), one group per stream.

    Images of equal size share each level's forward pass. Returns the square,
    calibrated proposals and the number of level pixels P-Net processed.
    """
    device = sizes.device
    pieces = []  # (the pyramid of one image size, positions of the levels this piece runs)
    pixels = 0
    for (height, width), members in _group_by_shape(sizes.tolist()).items():
        pyramid = _Pyramid(members, torch.tensor(members, dtype=torch.long, device=device), height, width, config)
        pixels += len(members) * sum(pyramid.level_pixels)
        level_costs = [level + LEVEL_OVERHEAD_PIXELS for level in pyramid.level_pixels]
        pieces.extend((pyramid, positions) for positions in streams.split(level_costs))
    found_by_level = {}  # (first image of the pyramid, level position) -> image index, boxes, scores, offsets
    for found in streams.map(lambda piece: _propose_levels(pnet, tables, *piece, config), pieces):
        found_by_level.update(found)
    found = [found_by_level[key] for key in sorted(found_by_level)]
    if not found:
        return _no_candidates(device), pixels
    image_index, boxes, scores, box_offsets = (torch.cat(parts) for parts in zip(*found))
    # NMS within each level of each image, all in one call: one group per (level, image).
    level = torch.repeat_interleave(
        torch.arange(len(found), device=device), torch.tensor([len(part[2]) for part in found], device=device)
    )
    keep = nms(boxes, scores, NMS_WITHIN_LEVEL, groups=level * len(sizes) + image_index)
    keep = keep.index_select(0, torch.sort(level.index_select(0, keep), stable=True).indices)  # level by level
    merged = Candidates(image_index, torch.cat([boxes, box_offsets], dim=1), scores).select(keep)  # offsets ride along
    keep = nms(merged.boxes[:, :4], merged.scores, NMS_ACROSS_LEVELS, groups=merged.image_index)
    merged = merged.select(keep)
    boxes = box_ops.calibrate(merged.boxes[:, :4], merged.boxes[:, 4:], inclusive=False)
    return Candidates(merged.image_index, box_ops.square(boxes), merged.scores), pixels


def refine(rnet: RNet, tables: SummedAreaTables, sizes: torch.Tensor, candidates: Candidates, config: CascadeConfig,
           streams: Streams = SERIAL):
    """Stage 2: R-Net rescoring and calibration of every proposal, in crop chunks spread over the streams."""
    candidates, crops, restore = _crop_candidates(tables, sizes, candidates, RNET_INPUT_SIZE)
    scores, offsets = restore(
        _run_chunked(rnet, crops, len(candidates), config.rnet_batch, config.compute_dtype, streams)
    )
    passed = torch.nonzero(scores > config.thresholds[1]).squeeze(1)
    candidates = Candidates(candidates.image_index, candidates.boxes, scores).select(passed)
    offsets = offsets.index_select(0, passed)
    keep = nms(candidates.boxes, candidates.scores, NMS_REFINE, groups=candidates.image_index)
    candidates = candidates.select(keep)
    boxes = box_ops.calibrate(candidates.boxes, offsets.index_select(0, keep), inclusive=True)
    return Candidates(candidates.image_index, box_ops.square(boxes), candidates.scores)


def finish(onet: ONet, tables: SummedAreaTables, sizes: torch.Tensor, candidates: Candidates, config: CascadeConfig,
           streams: Streams = SERIAL):
    """Stage 3: O-Net scores, boxes and landmarks; final per-image NMS over the smaller area."""
    candidates, crops, restore = _crop_candidates(tables, sizes, candidates, ONET_INPUT_SIZE)
    scores, offsets, fractions = restore(
        _run_chunked(onet, crops, len(candidates), config.onet_batch, config.compute_dtype, streams)
    )
    passed = torch.nonzero(scores > config.thresholds[2]).squeeze(1)
    seen_boxes = candidates.boxes[passed]
    landmarks = box_ops.landmarks_in_image(seen_boxes, fractions[passed])
    boxes = box_ops.calibrate(seen_boxes, offsets[passed], inclusive=True)
    faces = Candidates(candidates.image_index[passed], boxes, scores[passed])
    keep = nms(faces.boxes, faces.scores, NMS_FINAL, groups=faces.image_index, kind="min", inclusive=True)
    return faces.select(keep), landmarks[keep]


def run_cascade(nets: tuple[PNet, RNet, ONet], images: list[torch.Tensor], config: CascadeConfig,
                streams: Streams = SERIAL) -> CascadeOutput:
    """Detect faces in ``images``: (H, W, 3) uint8 RGB tensors on the networks' device.

    ``streams`` runs each stage's independent pieces side by side (CPU); the calling
    thread should be inside ``streams.running()``.
    """
    pnet, rnet, onet = nets
    device = images[0].device
    sizes = torch.tensor([[img.shape[0], img.shape[1]] for img in images], dtype=torch.long, device=device)
    tables = SummedAreaTables(images)
    proposals, pixels = propose(pnet, tables, sizes, config, streams)
    stats = {"images": len(images), "pnet_pixels": pixels, "rnet_candidates": len(proposals), "onet_candidates": 0}
    if len(proposals) == 0:
        return _empty_output(device, stats)
    refined = refine(rnet, tables, sizes, proposals, config, streams)
    stats["onet_candidates"] = len(refined)
    if len(refined) == 0:
        return _empty_output(device, stats)
    faces, landmarks = finish(onet, tables, sizes, refined, config, streams)
    order = torch.sort(faces.image_index, stable=True).indices  # NMS left them by score
    stats["faces"] = len(faces)
    return CascadeOutput(
        faces.image_index[order], faces.boxes[order], faces.scores[order], landmarks[order], stats
    )


def _crop_candidates(tables, sizes, candidates: Candidates, size: int):
    """Drop candidates lying outside their image, and cut the rest (lazily, per chunk).

    Crops are cut in reading order (image, then top edge, then left edge), not in score
    order: overlapping candidates then read the same parts of the summed-area table one
    after the other, which keeps them in cache. ``crops(start, stop)`` cuts positions start..stop of that order, and
    ``restore`` maps the networks' outputs back to the candidates' order.
    """
    image_sizes = sizes.index_select(0, candidates.image_index)
    regions, valid = box_ops.crop_regions(candidates.boxes, image_sizes[:, 0], image_sizes[:, 1])
    if not bool(valid.all()):
        kept = torch.nonzero(valid).squeeze(1)
        candidates, regions = candidates.select(kept), regions.index_select(0, kept)
    # Coordinates are below 2**20 (InvalidImageError refuses larger images), image indices far below 2**23.
    reading_order = torch.argsort((candidates.image_index << 40) | (regions[:, 1] << 20) | regions[:, 0])
    image_index = candidates.image_index.index_select(0, reading_order)
    regions = regions.index_select(0, reading_order)

    def crops(start: int, stop: int) -> torch.Tensor:
        return tables.resample(image_index[start:stop], regions[start:stop], size, normalized=True)

    def restore(outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        positions = torch.argsort(reading_order)  # the inverse permutation
        return tuple(output.index_select(0, positions) for output in outputs)

    return candidates, crops, restore


def _run_chunked(net, crops, count: int, chunk: int, dtype, streams: Streams = SERIAL):
    """Forward ``count`` crops through ``net`` at most ``chunk`` at a time; outputs concatenated.

    Chunks are cut and run on the streams side by side: as many chunks as the budget
    needs, rounded up to whole rounds of streams (none smaller than MIN_CROPS_PER_CHUNK).
    """
    if count == 0:  # the network's outputs for an empty batch keep their shapes and dtypes
        return _forward(net, crops(0, 0), dtype)
    chunks = -(-count // chunk)
    if streams.count > 1:
        whole_rounds = -(-chunks // streams.count) * streams.count
        chunks = max(chunks, min(whole_rounds, count // MIN_CROPS_PER_CHUNK))
    size = -(-count // chunks)
    bounds = [(start, min(start + size, count)) for start in range(0, count, size)]
    outputs = streams.map(lambda bound: _forward(net, crops(*bound), dtype), bounds)
    return tuple(torch.cat(parts) for parts in zip(*outputs))


@dataclass(frozen=True, eq=False)
class _Pyramid:
    """The pyramid shared by a group of images of one size."""

    members: list[int]  # positions of the images in the batch
    member_index: torch.Tensor  # the same, (M,) int64 on the device
    height: int
    width: int
    config: CascadeConfig

    @property
    def scales(self) -> list[float]:
        return pyramid_scales(self.height, self.width, self.config.min_face_size, self.config.scale_factor)

    @property
    def level_sizes(self) -> list[tuple[int, int]]:
        return [level_size(self.height, self.width, scale) for scale in self.scales]

    @property
    def level_pixels(self) -> list[int]:
        return [height * width for height, width in self.level_sizes]


def _propose_levels(pnet: PNet, tables: SummedAreaTables, pyramid: _Pyramid, positions: list[int],
                    config: CascadeConfig) -> dict:
    """P-Net proposals of some levels of one pyramid.

    Returns:
        {(first image of the pyramid, level position): (image index, boxes, scores, offsets)}.
    """
    level_sizes, scales = pyramid.level_sizes, pyramid.scales
    levels = [tables.resample_whole(pyramid.members, *level_sizes[p], normalized=True) for p in positions]
    found = {}
    for position, (face_prob, offsets) in zip(positions, _pnet_over_levels(pnet, levels, config)):
        local_index, boxes, scores, box_offsets = box_ops.pnet_proposals(
            face_prob, offsets, scales[position], config.thresholds[0]
        )
        found[(pyramid.members[0], position)] = (
            pyramid.member_index.index_select(0, local_index), boxes, scores, box_offsets
        )
    return found


def _group_by_shape(sizes: list[list[int]]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (height, width) in enumerate(sizes):
        groups.setdefault((height, width), []).append(index)
    return groups


def _no_candidates(device) -> Candidates:
    return Candidates(
        torch.zeros(0, dtype=torch.long, device=device),
        torch.zeros((0, 4), device=device),
        torch.zeros(0, device=device),
    )


def _empty_output(device, stats: dict) -> CascadeOutput:
    stats["faces"] = 0
    return CascadeOutput(
        torch.zeros(0, dtype=torch.long, device=device),
        torch.zeros((0, 4), device=device),
        torch.zeros(0, device=device),
        torch.zeros((0, 5, 2), device=device),
        stats,
    )
