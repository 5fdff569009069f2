"""Lazy row access to a folder of Parquet files (a local path or any fsspec URL).

At construction only the files' footers are read (row counts per row group); a row is read on
demand with the rest of its row group, and the last few row groups read are kept. The object
pickles as its index alone (no open files, no rows), so every ``DataLoader`` worker starts empty
and reads only the row groups its indices fall in.
"""

from __future__ import annotations

import bisect
import os
import posixpath
import random
from collections import OrderedDict

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raydetect.errors import RaydetectError


class DatasetError(RaydetectError, ValueError):
    """A dataset cannot be read: the folder is missing, empty of Parquet files, or lacks a column."""


class ParquetRows:
    """Rows of every ``*.parquet`` file in ``folder`` (files starting with ``.`` or ``_`` skipped),
    in file-name order, then row order.

    Args:
        folder: local path or fsspec URL of the folder.
        columns: the columns to read; ``optional`` ones are read when the files have them;
            ``required`` ones must be there but are not read per row.
        storage_options: fsspec keyword arguments for a URL.
        cached_row_groups: row groups each process keeps in memory.
    """

    def __init__(self, folder: str, columns: list[str], optional: tuple[str, ...] = (),
                 storage_options: dict | None = None, cached_row_groups: int = 4, required: tuple[str, ...] = ()):
        self.folder = folder
        self.storage_options = dict(storage_options or {})
        self.cached_row_groups = cached_row_groups
        fs, root = fsspec.core.url_to_fs(folder, **self.storage_options)
        if not fs.isdir(root):
            raise DatasetError(f"{folder} is not a folder")
        paths = sorted(
            p for p in fs.ls(root, detail=False)
            if p.endswith(".parquet") and not posixpath.basename(p).startswith((".", "_"))
        )
        if not paths:
            raise DatasetError(f"{folder} holds no Parquet files")
        self.paths: list[str] = []
        groups: list[tuple[int, int, int]] = []  # (file number, row group, rows)
        names: set[str] | None = None
        for path in paths:
            with fs.open(path, "rb") as stream:
                metadata = pq.ParquetFile(stream).metadata
            file_names = set(metadata.schema.to_arrow_schema().names)
            names = file_names if names is None else names & file_names
            for group in range(metadata.num_row_groups):
                rows = metadata.row_group(group).num_rows
                if rows:
                    groups.append((len(self.paths), group, rows))
            self.paths.append(path)
        missing = [c for c in list(columns) + list(required) if c not in names]
        if missing:
            hint = " (the job was run without --crops: its faces have no images)" if "crop" in missing else ""
            raise DatasetError(f"{folder} has no column(s) {', '.join(missing)}{hint}")
        self.columns = list(columns) + [c for c in optional if c in names]
        self.groups = groups
        self.starts = np.cumsum([0] + [rows for _, _, rows in groups]).tolist()
        self._fs, self._fs_pid = None, None
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()

    def __len__(self) -> int:
        return self.starts[-1]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fs"], state["_fs_pid"], state["_cache"] = None, None, OrderedDict()  # each process opens its own
        return state

    def row(self, index: int) -> dict:
        """One row as a dict of Python values (``IndexError`` outside ``[-len, len)``)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        index %= len(self)
        group = bisect.bisect_right(self.starts, index) - 1
        table = self._row_group(group)
        offset = index - self.starts[group]
        return {name: table.column(name)[offset].as_py() for name in self.columns}

    def row_group_of(self, index: int) -> int:
        return bisect.bisect_right(self.starts, index) - 1

    def grouped_shuffle(self, seed: int | None = None) -> list[int]:
        """Every row index once: row groups in random order, rows shuffled within each. A sampler
        for ``DataLoader(sampler=...)`` that shuffles without reading a row group per row."""
        rng = random.Random(seed)
        order = list(range(len(self.groups)))
        rng.shuffle(order)
        indices: list[int] = []
        for group in order:
            rows = list(range(self.starts[group], self.starts[group + 1]))
            rng.shuffle(rows)
            indices.extend(rows)
        return indices

    def _row_group(self, group: int) -> pa.Table:
        if group in self._cache:
            self._cache.move_to_end(group)
            return self._cache[group]
        if self._fs is None or self._fs_pid != os.getpid():
            # A forked DataLoader worker opens its own: a filesystem's connections stay with their process.
            self._fs, _ = fsspec.core.url_to_fs(self.folder, **self.storage_options)
            self._fs_pid = os.getpid()
        number, row_group, _ = self.groups[group]
        with self._fs.open(self.paths[number], "rb") as stream:
            table = pq.ParquetFile(stream).read_row_group(row_group, columns=self.columns)
        self._cache[group] = table
        while len(self._cache) > self.cached_row_groups:
            self._cache.popitem(last=False)
        return table
