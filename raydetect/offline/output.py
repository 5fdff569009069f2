"""The output folder of a detect job: layout, schemas, atomic writes and what is already done.

Layout under DEST (a local path or any fsspec URL):
- ``_staging/<key>/s<shard>-c<chunk>-faces.parquet`` and ``...-frames.parquet``: what the
  detection of one decoded chunk found (faces without track ids) and its sampled frames' shot-cut
  signatures. The names are a function of the video and the frame range alone, so a chunk that is
  redone (a restarted actor) replaces its files instead of adding a second copy.
- ``faces/<key>.parquet``: the faces of one video with their track ids, and ``tracks/<key>.parquet``
  its tracks, written by the video's finalising step once every chunk of the video is staged;
  with clip options also ``clips/<key>.parquet``, its per-track clips (the rule: :mod:`raydetect.core.clips`).
- ``videos/part-<run>-<n>.parquet``: one row per finished input, ``ok`` or ``error``. A video's
  ``ok`` row is its completion marker: it is written only after the video's faces, tracks and
  clips files; its staged files are deleted after that.
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
TRACKS = "tracks"
VIDEOS = "videos"
CLIPS = "clips"
STAGING = "_staging"
JOB_FILE = "_job.json"
TEMP_PREFIX = ".tmp-"

# ``original``: a DFDC fake's original (as listed by metadata.json), null for every other video; with
# --reuse-original-boxes a fake's rows are its original's (see DEST/videos ``boxes_from``).
FACE_SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("label", pa.string()),
        ("original", pa.string()),
        ("frame_index", pa.int64()),
        ("timestamp_s", pa.float64()),
        ("face_index", pa.int32()),
        ("track_id", pa.int64()),
        ("interpolated", pa.bool_()),
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
        ("original", pa.string()),  # as in FACE_SCHEMA
    ]
)

# A staged face has no track id yet; an interpolated one names the two detected faces it lies between
# (frame index and face index of each), which the video's tracks must join for it to be kept.
LINK_FIELDS = [
    pa.field("from_frame", pa.int64()), pa.field("from_face", pa.int32()),
    pa.field("to_frame", pa.int64()), pa.field("to_face", pa.int32()),
]
# ``original`` is the video's, not the detection's: the finalising step adds it.
STAGED_FACE_SCHEMA = pa.schema([f for f in FACE_SCHEMA if f.name not in ("track_id", "original")] + LINK_FIELDS)
FRAME_SCHEMA = pa.schema(
    [("frame_index", pa.int64()), ("timestamp_s", pa.float64()), ("signature", pa.list_(pa.float32()))]
)

TRACK_SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("label", pa.string()),
        ("original", pa.string()),  # as in FACE_SCHEMA
        ("track_id", pa.int64()),
        ("first_frame", pa.int64()),
        ("last_frame", pa.int64()),
        ("first_timestamp_s", pa.float64()),
        ("last_timestamp_s", pa.float64()),
        ("faces", pa.int64()),
        ("interpolated_faces", pa.int64()),
        ("score_mean", pa.float32()),
        ("score_min", pa.float32()),
        ("box_side_median", pa.float32()),
        ("best_frame", pa.int64()),
        ("best_face_index", pa.int32()),
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
        ("tracks", pa.int64()),
        ("cuts", pa.list_(pa.int64())),
        ("clips", pa.int64()),  # rows in DEST/clips (0 without clip options)
        ("original", pa.string()),  # as in FACE_SCHEMA
        # --reuse-original-boxes: the video whose faces and tracks a fake's are (its original), null when
        # the fake was detected; then ``boxes_note`` says why (e.g. its size differs from the original's).
        ("boxes_from", pa.string()),
        ("boxes_note", pa.string()),
    ]
)

# The tables written per video by its finalising step, one file each (removed with a failed video).
VIDEO_TABLES = (FACES, TRACKS, CLIPS)
# Per-video tables besides faces that a fake reusing its original's boxes gets as copies of the
# original's, with its own video, label and original.
COPIED_FOR_FAKES = tuple(folder for folder in VIDEO_TABLES if folder != FACES)


class OutputError(RaydetectError, ValueError):
    """DEST cannot be used: results of other options are there, or it is not writable."""


def face_schema(crops: bool) -> pa.Schema:
    return pa.schema(list(FACE_SCHEMA) + CROP_FIELDS) if crops else FACE_SCHEMA


def staged_face_schema(crops: bool) -> pa.Schema:
    return pa.schema(list(STAGED_FACE_SCHEMA) + CROP_FIELDS) if crops else STAGED_FACE_SCHEMA


def track_schema(crops: bool) -> pa.Schema:
    """``best_crop``: the crop of the track's best face, its thumbnail (with crops only)."""
    return TRACK_SCHEMA.append(pa.field("best_crop", pa.binary())) if crops else TRACK_SCHEMA


def video_key(video: str) -> str:
    """A short stable name for a video's files (20 hex digits of the SHA-1 of its location)."""
    return hashlib.sha1(video.encode("utf-8")).hexdigest()[:20]


def staged_file_names(shard_index: int, chunk_index: int) -> tuple[str, str]:
    """(faces, frames) file names of one chunk in its video's staging folder."""
    stem = f"s{shard_index:05d}-c{chunk_index:04d}"
    return f"{stem}-faces.parquet", f"{stem}-frames.parquet"


def video_file_name(key: str) -> str:
    return f"{key}.parquet"


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
        def write(stream) -> int:
            pq.write_table(table, stream)
            return table.num_rows

        self._write_atomically(final, write)

    def write_tables(self, schema: pa.Schema, tables, *parts: str) -> int:
        """Write every table of the iterable ``tables`` into one Parquet file at DEST/parts... (one
        row group each, so memory holds one at a time), under a temporary name renamed when complete.
        Not retried here (``tables`` is consumed once): the finalising task that calls it is.
        Returns the rows written."""

        def write(stream) -> int:
            rows = 0
            with pq.ParquetWriter(stream, schema) as writer:
                for table in tables:
                    if table.num_rows:
                        writer.write_table(table)
                        rows += table.num_rows
            return rows

        return self._write_atomically(self.path(*parts), write)

    def _write_atomically(self, final: str, write) -> int:
        """``write(stream)`` into a temporary file beside ``final``, renamed to it only when complete,
        so a reader never sees a half-written file under its final name. Returns what ``write`` does."""
        folder = posixpath.dirname(final)
        temp = posixpath.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(final)}")
        self.fs.makedirs(folder, exist_ok=True)
        try:
            with self.fs.open(temp, "wb") as stream:
                result = write(stream)
            self.fs.mv(temp, final)
        except BaseException:
            try:
                if self.fs.exists(temp):
                    self.fs.rm(temp)
            except Exception:  # the store is failing: remove_temporaries() sweeps it up later
                pass
            raise
        return result

    def write_staged_chunk(self, faces: pa.Table, frames: pa.Table, key: str, shard_index: int,
                           chunk_index: int) -> None:
        """Stage one chunk's faces (only if any) and frames (always: the cut detection needs them)."""
        faces_name, frames_name = staged_file_names(shard_index, chunk_index)
        if faces.num_rows:
            self.write_table(faces, STAGING, key, faces_name)
        self.write_table(frames, STAGING, key, frames_name)

    def stage_faces(self, faces: pa.Table, key: str, shard_index: int, chunk_index: int) -> None:
        """Stage one chunk's final face rows (faces with track ids, as the faces/ files hold them): a fake's
        rows copied from its original, with crops cut from its own frames. Nothing for no row."""
        if faces.num_rows:
            self.write_table(faces, STAGING, key, staged_file_names(shard_index, chunk_index)[0])

    def staged_files(self, key: str) -> tuple[list[str], list[str]]:
        """(faces files, frames files) staged for one video, in shard and chunk order."""
        files = self._files(posixpath.join(STAGING, key))
        named = [p for p in files if not posixpath.basename(p).startswith(TEMP_PREFIX)]
        return [p for p in named if p.endswith("-faces.parquet")], [p for p in named if p.endswith("-frames.parquet")]

    def read(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """One Parquet file under DEST, retried on transient storage failures."""
        return self._read(path, columns)

    def remove_staging_of(self, keys: set[str]) -> None:
        """Delete the staged files of these videos (done with, or about to be redone)."""
        for key in keys:
            path = self.path(STAGING, key)
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

    def remove_staging(self) -> None:
        """Delete every staged file (call when no writer is running)."""
        if self.fs.exists(self.path(STAGING)):
            self.fs.rm(self.path(STAGING), recursive=True)

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
        for folder in (*VIDEO_TABLES, VIDEOS, STAGING):
            if self.fs.exists(self.path(folder)):
                self.fs.rm(self.path(folder), recursive=True)

    # ------------------------------------------------------------------ state of earlier runs
    def _files(self, folder: str) -> list[str]:
        path = self.path(folder)
        if not self.fs.exists(path):
            return []
        return sorted(p for p in self.fs.ls(path, detail=False) if p.endswith(".parquet"))

    def _video_parts(self) -> list[str]:
        """The complete part files of DEST/videos (a writer's temporary file is not one)."""
        return [p for p in self._files(VIDEOS) if not posixpath.basename(p).startswith(TEMP_PREFIX)]

    def finished_videos(self) -> dict[str, str]:
        """Video -> status ("ok" / "error") of every input with a row in DEST/videos."""
        done: dict[str, str] = {}
        for path in self._video_parts():
            table = self._read(path, columns=["video", "status"])
            for video, status in zip(table.column("video").to_pylist(), table.column("status").to_pylist()):
                done[video] = status
        return done

    def video_rows(self, videos: set[str]) -> dict[str, dict]:
        """Video -> its whole DEST/videos row, for the ``videos`` that have one."""
        rows: dict[str, dict] = {}
        for path in self._video_parts():
            rows.update((row["video"], row) for row in self._read(path).to_pylist() if row["video"] in videos)
        return rows

    def has(self, *parts: str) -> bool:
        """Whether DEST/parts... exists."""
        return self.fs.exists(self.path(*parts))

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
        """Delete every face, track, clip and staged file of the videos with these keys; returns how many
        faces, tracks and clips files went."""
        if not keys:
            return 0
        doomed = [
            p for folder in VIDEO_TABLES for p in self._files(folder)
            if posixpath.basename(p).split("-", 1)[0].split(".", 1)[0] in keys
        ]
        if doomed:
            self.fs.rm(doomed)
        self.remove_staging_of(keys)
        return len(doomed)

    def remove_temporaries(self) -> None:
        """Delete temporary files left by writers that died (call when no writer is running)."""
        for folder in (*VIDEO_TABLES, VIDEOS, ""):
            path = self.path(folder) if folder else self.root
            if not self.fs.exists(path):
                continue
            stale = [p for p in self.fs.ls(path, detail=False) if posixpath.basename(p).startswith(TEMP_PREFIX)]
            if stale:
                self.fs.rm(stale)

    def ensure_readable_faces(self, crops: bool, clips: bool = False) -> None:
        """An empty table when no video had a face, so ``read_parquet(DEST/faces)`` and
        ``read_parquet(DEST/tracks)`` (and ``DEST/clips`` with ``clips``) still work."""
        if not self._files(FACES):
            self.write_table(face_schema(crops).empty_table(), FACES, "empty.parquet")
        if not self._files(TRACKS):
            self.write_table(track_schema(crops).empty_table(), TRACKS, "empty.parquet")
        if clips and not self._files(CLIPS):
            self.write_table(CLIP_SCHEMA.empty_table(), CLIPS, "empty.parquet")
