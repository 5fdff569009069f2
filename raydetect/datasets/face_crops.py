"""``FaceCrops``: a PyTorch dataset of the face crops in a detect job's output (one item per face)."""

from __future__ import annotations

import posixpath
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from raydetect.core.crops import decode_crop
from raydetect.datasets.parquet_rows import ParquetRows
from raydetect.offline.output import FACES


class FaceCrops(Dataset):
    """The faces of ``raydetect detect --crops`` output, read lazily (see :class:`ParquetRows`).

    Args:
        dest: the job's DEST (local path or fsspec URL); its ``faces/`` folder is read.
        storage_options: fsspec keyword arguments for a URL.
        labels: maps the manifest's label strings to class numbers (``{"REAL": 0, "FAKE": 1}``);
            None: the label string as written ("" where the source had none).
        transform: applied to each (3, H, W) uint8 tensor.

    Each item is a dict: ``image`` (3, H, W) uint8 RGB tensor, ``label``, ``video`` (str),
    ``frame_index`` (int), ``face_index`` (int), ``track_id`` (int) when the output has tracks, and
    ``original`` (str: a DFDC fake's original, "" for other videos) when the output has that column.
    """

    def __init__(self, dest: str, storage_options: dict | None = None, labels: dict[str, int] | None = None,
                 transform: Callable | None = None, cached_row_groups: int = 4):
        self.rows = ParquetRows(
            posixpath.join(dest.rstrip("/"), FACES), ["crop", "video", "label", "frame_index", "face_index"],
            optional=("track_id", "original"), storage_options=storage_options, cached_row_groups=cached_row_groups,
        )
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows.row(index)
        image = torch.from_numpy(np.ascontiguousarray(decode_crop(row.pop("crop")).transpose(2, 0, 1)))
        item = {"image": self.transform(image) if self.transform else image, **row}
        item["label"] = label_value(row["label"], self.labels)
        if "original" in item:
            item["original"] = item["original"] or ""  # a string for every item, so batches collate
        return item

    def grouped_shuffle(self, seed: int | None = None) -> list[int]:
        """A shuffled order that reads each row group once per epoch (pass as ``sampler``)."""
        return self.rows.grouped_shuffle(seed)


def label_value(label: str | None, labels: dict[str, int] | None):
    """The item's label: its class number under ``labels``, else the string ("" for none)."""
    label = label or ""
    if labels is None:
        return label
    if label not in labels:
        raise KeyError(f"label {label!r} is not in the label map {sorted(labels)}")
    return labels[label]
