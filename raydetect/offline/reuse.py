"""Fakes without re-detection (``--reuse-original-boxes``): a DFDC fake gets its original's faces.

A DFDC fake is its original with the faces altered, frame for frame at the original's size, so the
original's boxes, landmarks and tracks are the fake's. With the option the job detects the originals
only; then each fake whose probe matches its original's DEST/videos row (:func:`mismatch`: frame count,
frame rate, width, height) gets:

- faces: the original's rows, with the fake's ``video`` and ``label`` and ``original`` = the original's
  video; with crops, ``crop`` and ``crop_matrix`` cut from the fake's own frames, decoded with the same
  sampling, by the same batched cut as detection (:func:`~raydetect.offline.chunk_detection.chunk_crops`),
  so the crops of a real/fake pair cover the same pixels;
- every per-video table of :data:`~raydetect.offline.output.COPIED_FOR_FAKES` (tracks, clips): the original's
  rows, likewise relabelled (a track's ``best_crop`` is the fake's crop of its best face).

A fake that cannot reuse (original missing from the manifest, failed, or of another size, length or
rate) is detected like any video and its DEST/videos row says why (``boxes_note``). No Ray here.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raydetect.core.crops import CropOptions
from raydetect.offline.chunk_detection import ACCOUNTING_FIELDS, chunk_crops
from raydetect.offline.finalise import Finalised
from raydetect.offline.output import (
    CLIPS, COPIED_FOR_FAKES, FACES, TRACKS, JobOutput, face_schema, video_file_name, video_key,
)
from raydetect.offline.retrying_io import RetryPolicy
from raydetect.offline.shards import chunk_frames, frame_indices
from raydetect.offline.sources import VideoInput

# Frame-rate difference (frames per second) below which a fake and its original sample the same frames.
FPS_TOLERANCE = 1e-3
# Originals' faces tables (no crops: about 100 bytes a face) a cropping actor keeps; DFDC has a few fakes
# per original, and their chunks mostly arrive together.
ORIGINALS_CACHED = 8


@dataclass(frozen=True)
class ReusePlan:
    """How the inputs of a run split (see :func:`plan_reuse`).

    Attributes:
        detect: inputs to detect now: the originals and every other video, and fakes that cannot reuse.
        fakes: fakes that reuse their original's faces once the original has an ``ok`` row.
        notes: video -> why a fake with an original is detected (its ``boxes_note``).
    """

    detect: list[VideoInput]
    fakes: list[VideoInput]
    notes: dict[str, str]


def plan_reuse(todo: list[VideoInput], inputs: list[VideoInput]) -> ReusePlan:
    """Split ``todo`` (inputs without an ``ok`` row) for reuse; ``inputs``: every listed input, done or not."""
    listed = {item.video: item for item in inputs}
    detect, fakes, notes = [], [], {}
    for item in todo:
        if item.original is None:
            detect.append(item)
            continue
        original = listed.get(item.original)
        if original is None:
            notes[item.video] = f"original {item.original} is not in the manifest: detected"
        elif original.original is not None:
            notes[item.video] = f"original {item.original} is itself a fake (of {original.original}): detected"
        else:
            fakes.append(item)
            continue
        detect.append(item)
    return ReusePlan(detect, fakes, notes)


def mismatch(fake: dict, original: dict) -> str | None:
    """Why ``fake`` (its probe: ``frame_count``, ``fps``, ``width``, ``height``) cannot take the faces
    of ``original`` (its DEST/videos row, with ``video`` and ``status``), or None when it can."""
    name = original["video"]
    if original["status"] != "ok":
        return f"original {name} failed: detected"
    if (fake["width"], fake["height"]) != (original["width"], original["height"]):
        return (f"original {name} is {original['width']}x{original['height']}, "
                f"this video {fake['width']}x{fake['height']}: detected")
    if fake["frame_count"] != original["frame_count"]:
        return f"original {name} has {original['frame_count']} frames, this video {fake['frame_count']}: detected"
    if abs(fake["fps"] - original["fps"]) > FPS_TOLERANCE:
        return f"original {name} runs at {original['fps']:g} fps, this video at {fake['fps']:g}: detected"
    return None


def probe_record(shard: dict) -> dict:
    """The accounting record of a shard of a fake reused without crops: nothing decoded, nothing detected."""
    record = {name: shard.get(name, 0) for name in ACCOUNTING_FIELDS}
    record.update(chunk_index=0, last_chunk=True, frames_read=0, frames_detected=0, faces=0, seconds=0.0)
    return record


def _as_fake(table: pa.Table, fake: VideoInput) -> pa.Table:
    """``table`` (rows of the original) with the fake's ``video``, ``label`` and ``original``, where present."""
    for name, value in (("video", fake.video), ("label", fake.label), ("original", fake.original)):
        if name in table.column_names:
            position = table.schema.get_field_index(name)
            table = table.set_column(position, name, pa.array([value] * table.num_rows, pa.string()))
    return table


class ChunkCropper:
    """Crop the faces of a fake's decoded chunk with its original's boxes and stage them (no detector).

    ``originals``: key of each fake -> its :class:`VideoInput` (which names its original).
    """

    def __init__(self, crop: CropOptions, dest: str, storage_options: dict | None,
                 retry: RetryPolicy | None, originals: dict[str, VideoInput]):
        import torch  # noqa: F401  (loaded here, once, rather than inside the first chunk's time)

        self.crop = crop
        self.output = JobOutput(dest, storage_options, retry or RetryPolicy())
        self.originals = originals
        self.schema = face_schema(True)
        # An original's faces file, read once for all the chunks of its fakes rather than once per chunk.
        self._original_faces = functools.lru_cache(maxsize=ORIGINALS_CACHED)(
            lambda original: original_faces(self.output, original))

    def process(self, record: dict) -> dict:
        """Handle one chunk record; returns its accounting record (``faces``: rows staged)."""
        started = time.perf_counter()
        result = {name: record[name] for name in ACCOUNTING_FIELDS}
        result.update(frames_detected=0, faces=0)
        frames = chunk_frames(record)
        if not record["error"] and len(frames):
            fake = self.originals[record["key"]]
            indices = frame_indices(record)
            owned = indices[: len(indices) - (1 if record["lookahead"] else 0)]  # the lookahead is the next chunk's
            try:
                rows = self._original_faces(fake.original)
                rows = rows.filter(pc.is_in(rows.column("frame_index"), pa.array(owned, pa.int64())))
                result["faces"] = rows.num_rows
                self.output.stage_faces(self._cropped(rows, frames, indices, record, fake), record["key"],
                                        record["shard_index"], record["chunk_index"])
            except Exception as exc:  # this fake fails, the job goes on; the message names the cause
                result["error"] = (f"{record['video']}: cropping with the boxes of {fake.original} failed on "
                                   f"frames {indices[0]}-{indices[-1]}: {type(exc).__name__}: {exc}")
        result["seconds"] = float(record["seconds"]) + time.perf_counter() - started
        return result

    def _cropped(self, rows: pa.Table, frames: np.ndarray, indices: np.ndarray, record: dict,
                 fake: VideoInput) -> pa.Table:
        """The original's ``rows`` as the fake's, with crops cut from the fake's ``frames``."""
        if rows.num_rows == 0:
            return self.schema.empty_table()
        face_frames = np.searchsorted(indices, rows.column("frame_index").to_numpy())
        boxes = np.stack([rows.column(n).to_numpy() for n in ("x1", "y1", "x2", "y2")], axis=1)
        landmarks = np.stack(rows.column("landmarks").to_numpy(zero_copy_only=False)).reshape(-1, 5, 2)
        crops, to_crop = chunk_crops(frames, face_frames, boxes, landmarks, record, self.crop)
        table = _as_fake(rows, fake)
        table = table.append_column("crop", pa.array(crops, pa.binary()))
        table = table.append_column("crop_matrix", pa.FixedSizeListArray.from_arrays(
            pa.array(to_crop.reshape(-1).astype(np.float32)), 6).cast(pa.list_(pa.float32())))
        return table.select(self.schema.names).cast(self.schema)


def original_faces(output: JobOutput, original: str) -> pa.Table:
    """The original's faces rows without crops (none when it has no faces file: no face found)."""
    schema = face_schema(False)
    name = video_file_name(video_key(original))
    if not output.has(FACES, name):
        return schema.empty_table()
    return output.read(output.path(FACES, name), schema.names).cast(schema)


def copy_from_original(output: JobOutput, fake: VideoInput, crops: bool, cuts: list[int]) -> Finalised:
    """Write the fake's faces (its staged rows with crops, else the original's rows) and its copies of
    the original's per-video tables; ``cuts``: the original's. Raises if the staged rows are not the
    original's, one for one. Writing again gives the same files, so a retried step is harmless."""
    key, original_key = video_key(fake.video), video_key(fake.original)
    expected = original_faces(output, fake.original)
    best = _best_faces(output, original_key) if crops else set()
    best_crops: dict[tuple[int, int], bytes] = {}

    def fake_faces():
        if not crops:
            yield _as_fake(expected, fake)
            return
        for path in output.staged_files(key)[0]:
            table = output.read(path).sort_by([("frame_index", "ascending"), ("face_index", "ascending")])
            frames, faces = table.column("frame_index").to_pylist(), table.column("face_index").to_pylist()
            for row, face in enumerate(zip(frames, faces)):
                if face in best:
                    best_crops[face] = table.column("crop")[row].as_py()
            yield table

    written = 0
    if expected.num_rows:
        written = output.write_tables(face_schema(crops), fake_faces(), FACES, video_file_name(key))
    if written != expected.num_rows:
        raise RuntimeError(f"{fake.video}: {written} faces cropped, its original {fake.original} has "
                           f"{expected.num_rows}")
    copied = {}
    for folder in COPIED_FOR_FAKES:
        name = video_file_name(original_key)
        if not output.has(folder, name):
            continue
        table = _as_fake(output.read(output.path(folder, name)), fake)
        copied[folder] = table.num_rows
        if folder == TRACKS:
            if crops:  # the thumbnail is the fake's crop of the track's best face
                faces = zip(table.column("best_frame").to_pylist(), table.column("best_face_index").to_pylist())
                position = table.schema.get_field_index("best_crop")
                table = table.set_column(position, "best_crop",
                                         pa.array([best_crops.get(face) for face in faces], pa.binary()))
        output.write_table(table, folder, video_file_name(key))
    interpolated = int(pc.sum(expected.column("interpolated")).as_py() or 0) if expected.num_rows else 0
    return Finalised(written, interpolated, copied.get(TRACKS, 0), list(cuts), copied.get(CLIPS, 0))


def _best_faces(output: JobOutput, original_key: str) -> set[tuple[int, int]]:
    """(frame_index, face_index) of the best face of every track of the original."""
    name = video_file_name(original_key)
    if not output.has(TRACKS, name):
        return set()
    table = output.read(output.path(TRACKS, name), ["best_frame", "best_face_index"])
    return set(zip(table.column("best_frame").to_pylist(), table.column("best_face_index").to_pylist()))
