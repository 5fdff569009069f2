"""Greedy NMS as one compiled loop over a grid of kept boxes, for the CPU.

:func:`raydetect.mtcnn.nms.nms` solves greedy NMS with whole-tensor operations, which suits a GPU.
On a CPU the plain greedy loop is faster when each box meets only the kept boxes near it: kept
boxes go into grid cells at least as wide as themselves, one grid per power-of-two size class, so
a box is tested only against the kept boxes of the few cells its extent reaches. For intersection
over union, classes too small to reach the threshold are skipped altogether. The overlaps are
computed in float32 in the same order as :func:`raydetect.mtcnn.nms.box_overlap` and compared with
the float32 threshold, as torch compares, so both paths keep the same boxes.
"""

from __future__ import annotations

import numpy as np

from raydetect.mtcnn.cpu_kernels import AVAILABLE, compiled

__all__ = ["AVAILABLE", "greedy_keep"]

# The finest grid of a group has at most this many cells per box (and at least _MIN_CELLS): boxes much
# smaller than their group's extent share coarser cells rather than allocate a huge grid.
_CELLS_PER_BOX = 8
_MIN_CELLS = 1024
# Whole pixels of slack around a box's reach: cell look-ups never miss a neighbour to float rounding.
_SLACK = 2.0
# Skip a size class for IoU only when even its largest box falls short of the threshold by this factor.
_AREA_MARGIN = 1.01


@compiled(fastmath=False)
def greedy_keep(boxes, group_starts, threshold, use_min, extra, keep):
    """Greedy NMS within each group of boxes already in visiting order.

    Args:
        boxes: (N, 4) float32 x1, y1, x2, y2, finite; sorted by group, and within a group by
            decreasing score (ties in the order they should be visited).
        group_starts: (G + 1,) int64 first row of each group, then N.
        threshold: np.float32, above 0: a box overlapping a kept box of its group by more is dropped.
        use_min: overlap as intersection over the smaller area (else over the union).
        extra: np.float32 added to widths and heights: 1 for inclusive pixel boxes, else 0.
        keep: (N,) bool, written in full: whether each box is kept.
    """
    count = boxes.shape[0]
    next_in_cell = np.empty(count, np.int64)
    size_class = np.empty(count, np.int64)
    for group in range(group_starts.shape[0] - 1):
        start, stop = group_starts[group], group_starts[group + 1]
        if stop <= start:
            continue
        left, top = np.inf, np.inf  # the extent of every coordinate, so that even a box with x2 < x1 lies inside
        right, bottom = -np.inf, -np.inf
        for i in range(start, stop):
            for x in (float(boxes[i, 0]), float(boxes[i, 2])):
                left, right = min(left, x), max(right, x)
            for y in (float(boxes[i, 1]), float(boxes[i, 3])):
                top, bottom = min(top, y), max(bottom, y)
        span_x, span_y = max(right - left, 0.0), max(bottom - top, 0.0)
        # The finest class whose grid stays within the cell budget; every box's class is at least this.
        budget = max(_MIN_CELLS, _CELLS_PER_BOX * (stop - start))
        finest = 0
        while (span_x / 2.0**finest + 2.0) * (span_y / 2.0**finest + 2.0) > budget:
            finest += 1
        lowest, highest = 62, 0
        for i in range(start, stop):
            side = max(float(boxes[i, 2] - boxes[i, 0] + extra), float(boxes[i, 3] - boxes[i, 1] + extra))
            c = finest
            while 2.0**c < side:  # cells at least as wide as the box
                c += 1
            size_class[i] = c
            lowest, highest = min(lowest, c), max(highest, c)
        classes = highest - lowest + 1
        columns = np.empty(classes, np.int64)
        first_cell = np.empty(classes + 1, np.int64)
        first_cell[0] = 0
        for k in range(classes):
            cell = 2.0 ** (lowest + k)
            columns[k] = int(span_x / cell) + 1
            first_cell[k + 1] = first_cell[k] + columns[k] * (int(span_y / cell) + 1)
        head = np.full(first_cell[classes], -1, np.int64)  # the last kept box of each cell, chained backwards
        kept_in_class = np.zeros(classes, np.int64)
        share = 1.0 if use_min else 1.0 - float(threshold)  # of a box's width within which partners start
        for i in range(start, stop):
            x1, y1, x2, y2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
            width, height = x2 - x1 + extra, y2 - y1 + extra
            area = width * height
            suppressed = False
            for k in range(classes):
                if suppressed:
                    break
                if kept_in_class[k] == 0:
                    continue
                cell = 2.0 ** (lowest + k)
                # IoU is at most the smaller area over the larger; this class's boxes have areas up to cell ** 2.
                if not use_min and cell * cell * _AREA_MARGIN < threshold * float(area):
                    continue
                rows = (first_cell[k + 1] - first_cell[k]) // columns[k]
                # A kept box of width w <= cell intersects this one (of width w') only if its x1 lies in
                # (x1 - w, x1 + w'); for an IoU above t the intersection is wider than t * max(w, w'), which
                # narrows that to (x1 - (1 - t) * w, x1 + (1 - t) * w'). Likewise for y1.
                reach = cell * share
                col_lo = max(int(np.floor((x1 - left - reach - _SLACK) / cell)), 0)
                col_hi = min(int(np.floor((x1 - left + width * share + _SLACK) / cell)), columns[k] - 1)
                row_lo = max(int(np.floor((y1 - top - reach - _SLACK) / cell)), 0)
                row_hi = min(int(np.floor((y1 - top + height * share + _SLACK) / cell)), rows - 1)
                for row in range(row_lo, row_hi + 1):
                    if suppressed:
                        break
                    for column in range(col_lo, col_hi + 1):
                        j = head[first_cell[k] + row * columns[k] + column]
                        while j >= 0:
                            if _overlap(boxes, j, x1, y1, x2, y2, area, use_min, extra) > threshold:
                                suppressed = True
                                break
                            j = next_in_cell[j]
                        if suppressed:
                            break
            keep[i] = not suppressed
            if not suppressed:
                k = size_class[i] - lowest
                cell = 2.0 ** size_class[i]
                rows = (first_cell[k + 1] - first_cell[k]) // columns[k]
                row = min(int((y1 - top) / cell), rows - 1)
                column = min(int((x1 - left) / cell), columns[k] - 1)
                slot = first_cell[k] + row * columns[k] + column
                next_in_cell[i] = head[slot]
                head[slot] = i
                kept_in_class[k] += 1


@compiled(fastmath=False)
def _overlap(boxes, j, x1, y1, x2, y2, area, use_min, extra):
    """Overlap of kept box j with (x1, y1, x2, y2) of area ``area``, float32, as nms.box_overlap computes it."""
    width = max(min(boxes[j, 2], x2) - max(boxes[j, 0], x1) + extra, np.float32(0.0))
    height = max(min(boxes[j, 3], y2) - max(boxes[j, 1], y1) + extra, np.float32(0.0))
    inter = width * height
    area_j = (boxes[j, 2] - boxes[j, 0] + extra) * (boxes[j, 3] - boxes[j, 1] + extra)
    if use_min:
        return inter / min(area_j, area)
    return inter / (area_j + area - inter)
