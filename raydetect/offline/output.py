"""The output folder of a detect job: layout, schemas, atomic writes and what is already done.

Layout under DEST (a local path or any fsspec URL):
- ``faces/<key>-s<shard>-c<chunk>.parquet``: the faces of one decoded chunk of one video. The
  name is a function of the video and the frame range alone, so a chunk that is redone (a
  restarted actor, a re-run) replaces its file instead of adding a second copy.
- ``videos/part-<run>-<n>.parquet``: one row per finished input, ``ok`` or ``error``. A video's
  ``ok`` row is its completion marker: it is written only after every chunk file of the video.
- ``_job.json``: the options that decide the results; a re-run with other options is refused
  unless ``overwrite``.

Every file is written under a temporary name starting with ``.`` (which pyarrow, pandas and
DuckDB skip when reading a folder) and renamed once complete, so a partial file never looks
complete; a write or a read that meets a transient storage failure is retried (see
:mod:`raydetect.offline.retrying_io`), a write from the start under a new temporary name.
No Ray here: the pipeline's actors and driver both use this module.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import uuid
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from raydetect.errors import RaydetectError
from raydetect.offline.retrying_io import RetryPolicy, call_with_retries

FACES = "faces"
VIDEOS = "videos"
CLIPS = "clips"
JOB_FILE = "_job.json"
TEMP_PREFIX = ".tmp-"

FACE_SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("label", pa.string()),
        ("frame_index", pa.int64()),
        ("timestamp_s", pa.float64()),
        ("face_index", pa.int32()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("x2", pa.float32()),
        ("y2", pa.float32()),
        ("score", pa.float32()),
        ("landmarks", pa.list_(pa.float32())),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)
# With --crops: the encoded crop (JPEG or PNG) and the 2 x 3 affine map, row-major, from frame pixels
# (the boxes' and landmarks' coordinates) to crop pixels.
CROP_FIELDS = [pa.field("crop", pa.binary()), pa.field("crop_matrix", pa.list_(pa.float32()))]

# DEST/clips: one row per clip of T faces of one track (the rule: raydetect.core.clips).
CLIP_SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("label", pa.string()),
        ("track_id", pa.int64()),
        ("clip_index", pa.int32()),  # order of the clip within its track, from 0
        ("frame_indices", pa.list_(pa.int64())),  # T frames; each names a DEST/faces row of the track
    ]
)

VIDEO_SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("label", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("frames_decoded", pa.int64()),
        ("frames_detected", pa.int64()),
        ("faces", pa.int64()),
        ("seconds", pa.float64()),
        ("frame_count", pa.int64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("shards", pa.int32()),
        ("io_retries", pa.int64()),
    ]
)


class OutputError(RaydetectError, ValueError):
    """DEST cannot be used: results of other options are there, or it is not writable."""


def face_schema(crops: bool) -> pa.Schema:
    return pa.schema(list(FACE_SCHEMA) + CROP_FIELDS) if crops else FACE_SCHEMA


def video_key(video: str) -> str:
    """A short stable name for a video's files (20 hex digits of the SHA-1 of its location)."""
    return hashlib.sha1(video.encode("utf-8")).hexdigest()[:20]


def chunk_file_name(key: str, shard_index: int, chunk_index: int) -> str:
    return f"{key}-s{shard_index:05d}-c{chunk_index:04d}.parquet"


@dataclass
class JobOutput:
    """DEST opened through fsspec. ``storage_options``: filesystem keyword arguments for a URL;
    ``retry``: how transient storage failures of writes and reads are retried."""

    dest: str
    storage_options: dict | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(self.dest, **(self.storage_options or {}))
        self.root = self.root.rstrip("/") or "/"

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def url(self, *parts: str) -> str:
        """A location of the same style as DEST, for messages and readers."""
        local = "://" not in self.dest
        joined = self.path(*parts)
        return joined if local else self.fs.unstrip_protocol(joined)

    # ------------------------------------------------------------------ writing
    def write_table(self, table: pa.Table, *parts: str) -> None:
        """Write ``table`` as Parquet to DEST/parts..., under a temporary name renamed when complete;
        retried whole on a transient failure. Raises StorageError naming the file and the cause."""
        final = self.path(*parts)
        call_with_retries(lambda: self._write_once(table, final), self.retry, f"writing {self.url(*parts)}")

    def _write_once(self, table: pa.Table, final: str) -> None:
        folder = posixpath.dirname(final)
        temp = posixpath.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(final)}")
        self.fs.makedirs(folder, exist_ok=True)
        try:
            with self.fs.open(temp, "wb") as stream:
                pq.write_table(table, stream)
            self.fs.mv(temp, final)
        except BaseException:
            try:
                if self.fs.exists(temp):
                    self.fs.rm(temp)
            except Exception:  # the store is failing: remove_temporaries() sweeps it up later
                pass
            raise

    def write_face_chunk(self, table: pa.Table, key: str, shard_index: int, chunk_index: int) -> None:
        self.write_table(table, FACES, chunk_file_name(key, shard_index, chunk_index))

    # ------------------------------------------------------------------ job options
    def check_options(self, options: dict, overwrite: bool) -> None:
        """Refuse to mix results of different options in one DEST; record the options for the next run."""
        job_path = self.path(JOB_FILE)
        if self.fs.exists(job_path) and not overwrite:
            with self.fs.open(job_path, "rb") as stream:
                previous = json.load(stream).get("options", {})
            if previous != options:
                changed = sorted(k for k in set(previous) | set(options) if previous.get(k) != options.get(k))
                raise OutputError(
                    f"{self.dest} holds results made with other options ({', '.join(changed)}); "
                    "use --overwrite to replace them, or another --output"
                )
        if overwrite:
            self.clear()
        self.fs.makedirs(self.root, exist_ok=True)
        data = json.dumps({"format": 1, "options": options}, indent=2, sort_keys=True).encode()
        temp = self.path(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{JOB_FILE}")
        self.fs.pipe(temp, data)
        self.fs.mv(temp, job_path)

    def clear(self) -> None:
        """Remove every result of earlier runs (for ``--overwrite``)."""
        for folder in (FACES, VIDEOS):
            if self.fs.exists(self.path(folder)):
                self.fs.rm(self.path(folder), recursive=True)

    # ------------------------------------------------------------------ state of earlier runs
    def _files(self, folder: str) -> list[str]:
        path = self.path(folder)
        if not self.fs.exists(path):
            return []
        return sorted(p for p in self.fs.ls(path, detail=False) if p.endswith(".parquet"))

    def finished_videos(self) -> dict[str, str]:
        """Video -> status ("ok" / "error") of every input with a row in DEST/videos."""
        done: dict[str, str] = {}
        for path in self._files(VIDEOS):
            if posixpath.basename(path).startswith(TEMP_PREFIX):
                continue
            table = self._read(path, columns=["video", "status"])
            for video, status in zip(table.column("video").to_pylist(), table.column("status").to_pylist()):
                done[video] = status
        return done

    def _read(self, path: str, columns: list[str] | None = None) -> pa.Table:
        def read() -> pa.Table:
            with self.fs.open(path, "rb") as stream:
                return pq.read_table(stream, columns=columns)

        return call_with_retries(read, self.retry, f"reading {path}")[0]

    def forget_videos(self, videos: set[str]) -> None:
        """Remove the rows of ``videos`` from DEST/videos (inputs about to be redone)."""
        if not videos:
            return
        for path in self._files(VIDEOS):
            if posixpath.basename(path).startswith(TEMP_PREFIX):
                continue
            table = self._read(path)
            keep = [v not in videos for v in table.column("video").to_pylist()]
            if all(keep):
                continue
            if any(keep):
                self.write_table(table.filter(pa.array(keep)), VIDEOS, posixpath.basename(path))
            else:
                self.fs.rm(path)

    def remove_faces_of(self, keys: set[str]) -> int:
        """Delete every face file of the videos with these keys; returns how many files went."""
        if not keys:
            return 0
        doomed = [p for p in self._files(FACES) if posixpath.basename(p).split("-", 1)[0] in keys]
        if doomed:
            self.fs.rm(doomed)
        return len(doomed)

    def remove_temporaries(self) -> None:
        """Delete temporary files left by writers that died (call when no writer is running)."""
        for folder in (FACES, VIDEOS, ""):
            path = self.path(folder) if folder else self.root
            if not self.fs.exists(path):
                continue
            stale = [p for p in self.fs.ls(path, detail=False) if posixpath.basename(p).startswith(TEMP_PREFIX)]
            if stale:
                self.fs.rm(stale)

    def ensure_readable_faces(self, crops: bool) -> None:
        """An empty table when no video had a face, so ``read_parquet(DEST/faces)`` still works."""
        if not self._files(FACES):
            self.write_table(face_schema(crops).empty_table(), FACES, "empty.parquet")
