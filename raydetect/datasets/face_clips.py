"""``FaceClips``: a PyTorch dataset of per-track clips (DEST/clips), each a (T, 3, H, W) stack of face crops."""

from __future__ import annotations

import posixpath
from typing import Callable

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from raydetect.core.crops import decode_crop
from raydetect.datasets.face_crops import label_value
from raydetect.datasets.parquet_rows import DatasetError, ParquetRows
from raydetect.offline.output import CLIP_SCHEMA, CLIPS, FACES

# A face's key within its video: track id in the high 32 bits, frame index in the low 32.
_FRAME_BITS = 32


class FaceClips(Dataset):
    """The clips of a detect job's output, read lazily.

    At construction the clips' footers and three small columns of the faces (video, track_id,
    frame_index; never the crops) are read, to find each clip's face rows; crops are read and
    decoded when a clip is asked for.

    Args: as :class:`raydetect.datasets.FaceCrops`; ``transform`` is applied to the (T, 3, H, W) tensor.

    Each item is a dict: ``images`` (T, 3, H, W) uint8 RGB tensor, ``label``, ``video`` (str),
    ``track_id`` (int), ``clip_index`` (int) and ``frame_indices`` (T,) int64 tensor.
    """

    def __init__(self, dest: str, storage_options: dict | None = None, labels: dict[str, int] | None = None,
                 transform: Callable | None = None, cached_row_groups: int = 8):
        root = dest.rstrip("/")
        self.clips = ParquetRows(posixpath.join(root, CLIPS), CLIP_SCHEMA.names, storage_options=storage_options)
        # The keys are read once, below; an item reads only crops.
        self.faces = ParquetRows(posixpath.join(root, FACES), ["crop"], storage_options=storage_options,
                                 cached_row_groups=cached_row_groups, required=("video", "track_id", "frame_index"))
        self.keys = _face_keys(self.faces, storage_options)
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        clip = self.clips.row(index)
        frames = np.asarray(clip["frame_indices"], np.int64)
        keys, rows = self.keys.get(clip["video"], (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        wanted = (np.int64(clip["track_id"]) << _FRAME_BITS) + frames
        found = np.searchsorted(keys, wanted)
        missing = [int(f) for f, at in zip(frames, found) if at >= len(keys) or keys[at] != (
            (np.int64(clip["track_id"]) << _FRAME_BITS) + f)]
        if missing:
            raise DatasetError(f"clip {index} ({clip['video']}, track {clip['track_id']}): no face row for "
                               f"frame(s) {missing}")
        images = np.stack([decode_crop(self.faces.row(int(rows[at]))["crop"]) for at in found])
        tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return {
            "images": self.transform(tensor) if self.transform else tensor,
            "label": label_value(clip["label"], self.labels),
            "video": clip["video"],
            "track_id": clip["track_id"],
            "clip_index": clip["clip_index"],
            "frame_indices": torch.from_numpy(frames),
        }


def _face_keys(faces: ParquetRows, storage_options: dict | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Video -> (sorted face keys, their row numbers in ``faces``)."""
    fs, _ = fsspec.core.url_to_fs(faces.folder, **(storage_options or {}))
    videos, keys = [], []
    for path in faces.paths:  # the row order of ParquetRows: files, then row groups, then rows
        with fs.open(path, "rb") as stream:
            table = pq.read_table(stream, columns=["video", "track_id", "frame_index"])
        videos.extend(table.column("video").to_pylist())
        keys.append((table.column("track_id").to_numpy().astype(np.int64) << _FRAME_BITS)
                    + table.column("frame_index").to_numpy().astype(np.int64))
    all_keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    names, codes = np.unique(np.array(videos, dtype=object), return_inverse=True)
    index = {}
    for code, name in enumerate(names):
        rows = np.flatnonzero(codes == code)
        order = np.argsort(all_keys[rows], kind="stable")
        index[str(name)] = (all_keys[rows][order], rows[order])
    return index
