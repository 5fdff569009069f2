"""Greedy non-maximum suppression for many groups (images) at once.

Greedy NMS visits boxes by decreasing score and drops every box that overlaps an
already kept one by more than a threshold. On a GPU that sequential rule is solved
without a loop over boxes: the overlapping pairs are found first (densely for few
boxes, by a sort-and-sweep over size classes and row bands for many), then the
rule "kept unless a higher-scored overlapping box is kept" is iterated as a whole
vector until it stops changing, which takes as many rounds as the longest chain of
suppressions, not as many as there are boxes. On a CPU the loop itself is faster,
compiled, with kept boxes in a grid (:mod:`raydetect.mtcnn.nms_grid`); both keep the
same boxes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from raydetect.mtcnn import nms_grid

# Up to this many boxes the full pairwise overlap matrix is cheaper than the sweep (measured with the tensor path
# on P-Net's proposals on a 2-core CPU: the sweep wins from about 200 boxes, 1.0 against 1.8 ms at 385).
DENSE_LIMIT = 160


def box_overlap(a: torch.Tensor, b: torch.Tensor, kind: str = "union", inclusive: bool = False) -> torch.Tensor:
    """Overlap of boxes ``a`` and ``b`` (broadcast over leading dims), ``(..., 4)`` as x1, y1, x2, y2.

    kind "union" gives intersection over union, "min" intersection over the smaller area.
    ``inclusive`` counts pixel boxes as in the original MTCNN code (width x2 - x1 + 1).
    """
    extra = 1.0 if inclusive else 0.0
    width = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0]) + extra).clamp(min=0)
    height = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1]) + extra).clamp(min=0)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0] + extra) * (a[..., 3] - a[..., 1] + extra)
    area_b = (b[..., 2] - b[..., 0] + extra) * (b[..., 3] - b[..., 1] + extra)
    if kind == "union":
        return inter / (area_a + area_b - inter)
    if kind == "min":
        return inter / torch.minimum(area_a, area_b)
    raise ValueError(f"unknown overlap kind {kind!r}; expected 'union' or 'min'")


def nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    threshold: float,
    groups: torch.Tensor | None = None,
    kind: str = "union",
    inclusive: bool = False,
) -> torch.Tensor:
    """Greedy NMS within each group.

    Args:
        boxes: (N, 4) float, x1, y1, x2, y2.
        scores: (N,) float.
        threshold: a box is dropped when it overlaps a kept, higher-scored box of its
            group by more than this.
        groups: (N,) int, e.g. the image index; None puts all boxes in one group.
        kind, inclusive: how overlap is measured, see :func:`box_overlap`.

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score (ties: lower index first).
    """
    count = boxes.shape[0]
    if count == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes.index_select(0, order).float()
    if groups is None:
        groups = torch.zeros(count, dtype=torch.long, device=boxes.device)
    else:  # consecutive group numbers from 0, in score order
        groups = torch.unique(groups, return_inverse=True)[1].index_select(0, order)
    if _runs_compiled(boxes, threshold, kind):
        keep = _greedy_on_grid(boxes, groups, threshold, kind, inclusive)
    else:
        first, second = _overlapping_pairs(boxes, groups, threshold, kind, inclusive)
        keep = _resolve_greedy(count, first, second)
    return order.masked_select(keep)


def _runs_compiled(boxes: torch.Tensor, threshold: float, kind: str) -> bool:
    """Whether the compiled CPU loop can take this call: it needs finite boxes and only meets intersecting pairs."""
    return (
        nms_grid.AVAILABLE
        and boxes.device.type == "cpu"
        and kind in ("union", "min")
        and threshold >= 0
        and bool(torch.isfinite(boxes).all())
    )


def _greedy_on_grid(boxes, groups, threshold, kind, inclusive) -> torch.Tensor:
    """Keep mask (in ``boxes``' score order) from :func:`nms_grid.greedy_keep`, group by group."""
    by_group = torch.sort(groups, stable=True).indices  # score order kept within each group
    group_starts = torch.searchsorted(groups.index_select(0, by_group),
                                      torch.arange(int(groups.max()) + 2, device=groups.device))
    keep = torch.empty(boxes.shape[0], dtype=torch.bool)
    nms_grid.greedy_keep(boxes.index_select(0, by_group).contiguous().numpy(), group_starts.numpy(),
                         np.float32(threshold), kind == "min", np.float32(1.0 if inclusive else 0.0), keep.numpy())
    return torch.empty_like(keep).index_copy_(0, by_group, keep)


def _overlapping_pairs(boxes, groups, threshold, kind, inclusive):
    """(first, second): positions in ``boxes`` (sorted by score) of one group, first < second, overlap > threshold."""
    if boxes.shape[0] <= DENSE_LIMIT or kind != "union" or threshold <= 0:
        return _dense_pairs(boxes, groups, threshold, kind, inclusive)
    return _swept_pairs(boxes, groups, threshold, inclusive)


def _dense_pairs(boxes, groups, threshold, kind, inclusive, rows_per_chunk: int = 1024):
    count = boxes.shape[0]
    firsts, seconds = [], []
    for start in range(0, count, rows_per_chunk):
        rows = boxes[start : start + rows_per_chunk]
        overlap = box_overlap(rows[:, None, :], boxes[None, :, :], kind, inclusive)
        later = torch.arange(count, device=boxes.device)[None, :] > torch.arange(
            start, start + rows.shape[0], device=boxes.device
        )[:, None]
        same_group = groups[start : start + rows_per_chunk, None] == groups[None, :]
        first, second = torch.nonzero((overlap > threshold) & later & same_group, as_tuple=True)
        firsts.append(first + start)
        seconds.append(second)
    return torch.cat(firsts), torch.cat(seconds)


def _swept_pairs(boxes, groups, threshold, inclusive):
    """Candidate pairs by size class and row band, then the exact overlap test.

    IoU > t needs the smaller area to exceed t times the larger, so with size classes
    of width log(1 / t) only boxes in the same or adjacent class can pair. Each box
    therefore joins two sweep groups: that of its own class with the next (as the lower
    class) and that of the class below with its own (as the upper class). Within a
    group, rows are cut into bands as tall as the group's tallest box, so a box can only
    meet boxes of its own band or the next one, within a window of x1 values. All groups
    are swept at once, laid end to end along one sort key; boxes of different ``groups``
    (images) fall in different sweep groups and never pair.
    """
    extra = 1.0 if inclusive else 0.0
    widths = boxes[:, 2] - boxes[:, 0] + extra
    heights = boxes[:, 3] - boxes[:, 1] + extra
    area = (widths * heights).clamp(min=1e-6)
    size_class = torch.floor(torch.log(area.double()) / math.log(1.0 / threshold)).long()
    size_class -= size_class.min()
    classes = int(size_class.max()) + 2
    count = boxes.shape[0]
    # Entries: every box once in sweep group (its class) and once in (its class - 1), within its own group.
    box_id = torch.arange(count, device=boxes.device).repeat(2)
    group = torch.cat([size_class, size_class - 1]) + 1 + classes * groups.repeat(2)
    first, second = _band_sweep(boxes.index_select(0, box_id), widths.index_select(0, box_id),
                                heights.index_select(0, box_id), group)
    # A group's pairs need at least one box of its lower class; the others are found in the group above.
    lower = size_class.index_select(0, box_id) + 1 == group % classes
    useful = torch.nonzero(lower.index_select(0, first) | lower.index_select(0, second)).squeeze(1)
    first = box_id.index_select(0, first.index_select(0, useful))
    second = box_id.index_select(0, second.index_select(0, useful))
    overlapping = box_overlap(boxes.index_select(0, first), boxes.index_select(0, second), "union", inclusive)
    overlaps = torch.nonzero(overlapping > threshold).squeeze(1)
    first, second = first.index_select(0, overlaps), second.index_select(0, overlaps)
    return torch.minimum(first, second), torch.maximum(first, second)


def _group_max(values: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    return torch.full((groups,), -math.inf, dtype=values.dtype, device=values.device).scatter_reduce(
        0, group, values, "amax"
    )


def _band_sweep(boxes, widths, heights, group):
    """Every pair of entries of one group whose x and y extents may touch (a superset), each pair once.

    Keys are float64 and offset by whole pixels: coordinates stay exact far beyond any image size.
    """
    groups = int(group.max()) + 1
    boxes = boxes.double()
    band_height = _group_max(heights.double(), group, groups) + 1.0
    max_width = _group_max(widths.double(), group, groups) + 1.0
    top = -_group_max(-boxes[:, 1], group, groups)
    left = -_group_max(-boxes[:, 0], group, groups)
    right = _group_max(boxes[:, 2], group, groups)
    # Per group: x measured from an origin left of every box, and a band stride wider than any x range.
    x_origin = (left - max_width - 2.0).nan_to_num(0.0, posinf=0.0, neginf=0.0)
    stride = (right - x_origin + max_width + 4.0).nan_to_num(0.0, posinf=0.0, neginf=0.0)
    bands = torch.floor((boxes[:, 1] - top.index_select(0, group)) / band_height.index_select(0, group))
    band_count = _group_max(bands, group, groups).nan_to_num(-1.0, posinf=-1.0, neginf=-1.0) + 3.0
    # Groups end to end along the key, each with two spare bands so that "next band" never reaches the next group.
    group_start = torch.cumsum(band_count * stride, 0) - band_count * stride
    g_stride, g_width = stride.index_select(0, group), max_width.index_select(0, group)
    x1 = boxes[:, 0] - x_origin.index_select(0, group)
    x2 = boxes[:, 2] - x_origin.index_select(0, group)
    band_key = group_start.index_select(0, group) + bands * g_stride
    order = torch.argsort(band_key + x1)
    band_key, x1, x2 = band_key.index_select(0, order), x1.index_select(0, order), x2.index_select(0, order)
    g_stride, g_width = g_stride.index_select(0, order), g_width.index_select(0, order)
    keys = band_key + x1
    position = torch.arange(keys.shape[0], device=keys.device)
    # Same band: later entries (by x1) that start before this one ends.
    same_lo = position + 1
    same_hi = torch.searchsorted(keys, band_key + x2 + 1.0, right=True)
    # Next band: entries starting within one maximal width before this one, up to its end.
    next_band = band_key + g_stride
    next_lo = torch.searchsorted(keys, next_band + x1 - g_width - 1.0, right=False)
    next_hi = torch.searchsorted(keys, next_band + x2 + 1.0, right=True)
    first_same, second_same = _expand_ranges(same_lo, same_hi)
    first_next, second_next = _expand_ranges(next_lo, next_hi)
    first = torch.cat([first_same, first_next])
    second = torch.cat([second_same, second_next])
    return order.index_select(0, first), order.index_select(0, second)


def _expand_ranges(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each i, the pairs (i, j) with lo[i] <= j < hi[i]."""
    counts = (hi - lo).clamp(min=0)
    owner = torch.repeat_interleave(torch.arange(lo.shape[0], device=lo.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    offset = torch.arange(owner.shape[0], device=lo.device) - starts.index_select(0, owner)
    return owner, lo.index_select(0, owner) + offset


def _resolve_greedy(count: int, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Boolean keep mask of greedy NMS, given the suppressing pairs first < second.

    keep[j] = no kept i < j overlaps j. The whole vector is updated at once; entries
    whose chain of higher-scored overlaps has length d are final after d + 1 rounds.
    """
    keep = torch.ones(count, dtype=torch.bool, device=first.device)
    if first.numel() == 0:
        return keep
    while True:
        suppressed = torch.zeros_like(keep).index_fill_(0, second.masked_select(keep.index_select(0, first)), True)
        updated = ~suppressed
        if torch.equal(updated, keep):
            return keep
        keep = updated
