"""The per-video finalising step of the offline job: staged chunks in, the video's faces, tracks and clips out.

Runs once per video, after every chunk of the video is staged (see :mod:`raydetect.offline.output`):

1. reads the staged frames (index, time, shot-cut signature) and the staged faces without their
   crops, finds the cuts and links the detected faces into tracks over the whole video at once
   (:func:`~raydetect.core.tracking.link_tracks`), so the tracks are those of an unsharded run;
2. keeps an interpolated face (``--detect-every``) only where the video's tracks join the two
   detected faces it lies between, and drops the faces of tracks shorter than ``min_track_faces``;
3. writes the video's faces, chunk file by chunk file into one Parquet file (memory holds one
   chunk's crops at a time), then its tracks, then (with clip options) its clips: each track's kept
   faces, interpolated ones included, cut into clips by :func:`~raydetect.core.clips.track_clips`.

Writing the same files again gives the same content, so a step that died is simply run again;
the staged files stay until the video's ``ok`` row is written. No Ray here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from raydetect.core.clips import ClipOptions, track_clips
from raydetect.core.tracking import TrackingOptions, find_cuts, link_tracks, long_track_faces
from raydetect.offline.output import (
    CLIP_SCHEMA, CLIPS, FACES, TRACKS, JobOutput, face_schema, staged_face_schema, track_schema, video_file_name,
)

# Face numbers packed with their frame index into one int64 key: a frame holds fewer faces than this.
_FACES_PER_FRAME = 1 << 20


@dataclass(frozen=True)
class Finalised:
    """What finalising one video wrote: ``faces`` rows (``interpolated`` of them filled in),
    ``tracks`` rows, ``cuts``: the frame indices that start a new shot, and ``clips`` rows."""

    faces: int
    interpolated: int
    tracks: int
    cuts: list[int]
    clips: int = 0


def finalise_video(output: JobOutput, key: str, video: str, label: str | None, tracking: TrackingOptions,
                   crops: bool, clips: ClipOptions | None = None, original: str | None = None) -> Finalised:
    """Link, filter and write one video's faces, tracks and (with ``clips``) clips from its staged chunks
    (see the module docstring). ``original``: a DFDC fake's original, written in every row's ``original``
    column."""
    face_files, frame_files = output.staged_files(key)
    frames = pa.concat_tables([output.read(path) for path in frame_files]) if frame_files else None
    if frames is None or frames.num_rows == 0:
        return Finalised(0, 0, 0, [])
    frames = frames.sort_by("frame_index")
    frame_index = frames.column("frame_index").to_numpy()
    timestamps = frames.column("timestamp_s").to_numpy()
    signatures = np.stack(frames.column("signature").to_numpy(zero_copy_only=False)).astype(np.float32)
    cuts = find_cuts(signatures, tracking)
    cut_frames = frame_index[cuts].tolist()

    # Everything but the crops, which are read again one file at a time while writing.
    parts = [output.read(path, staged_face_schema(False).names) for path in face_files]
    sizes = [part.num_rows for part in parts]
    if not sum(sizes):
        return Finalised(0, 0, 0, cut_frames)
    faces = pa.concat_tables(parts)
    track_id = _track_ids(faces, frame_index, timestamps, cuts, tracking)

    keep = track_id >= 0
    keep[keep] = long_track_faces(track_id[keep], tracking)

    with_ids = faces.append_column("track_id", pa.array(track_id, pa.int64()))
    tracks = _tracks(with_ids.filter(pa.array(keep)), video, label, original, tracking)
    best_keys = (tracks.column("best_frame").to_numpy() * _FACES_PER_FRAME
                 + tracks.column("best_face_index").to_numpy().astype(np.int64))
    best_crops: dict[int, bytes] = {}

    schema = face_schema(crops)
    offsets = np.concatenate([[0], np.cumsum(sizes)])

    def video_faces():
        for number, path in enumerate(face_files):
            rows = slice(offsets[number], offsets[number + 1])
            if not keep[rows].any():
                continue
            table = output.read(path) if crops else parts[number]
            table = table.append_column("track_id", pa.array(track_id[rows], pa.int64())).filter(pa.array(keep[rows]))
            table = _number_interpolated(table)
            table = table.append_column("original", pa.array([original] * table.num_rows, pa.string()))
            table = table.sort_by([("frame_index", "ascending"), ("face_index", "ascending")])
            if crops:  # the best faces' crops become the tracks' thumbnails
                keys = (table.column("frame_index").to_numpy() * _FACES_PER_FRAME
                        + table.column("face_index").to_numpy().astype(np.int64))
                detected = ~table.column("interpolated").to_numpy(zero_copy_only=False)
                for row in np.flatnonzero(np.isin(keys, best_keys) & detected):
                    best_crops[int(keys[row])] = table.column("crop")[int(row)].as_py()
            yield table.select(schema.names).cast(schema)

    written = output.write_tables(schema, video_faces(), FACES, video_file_name(key))
    if crops:
        tracks = tracks.append_column("best_crop", pa.array([best_crops.get(int(k)) for k in best_keys], pa.binary()))
    output.write_table(tracks.cast(track_schema(crops)), TRACKS, video_file_name(key))
    clip_rows = 0
    if clips is not None:
        table = _clips(with_ids.filter(pa.array(keep)), video, label, original, clips)
        output.write_table(table, CLIPS, video_file_name(key))
        clip_rows = table.num_rows
    interpolated = int(np.count_nonzero(keep & faces.column("interpolated").to_numpy(zero_copy_only=False)))
    return Finalised(written, interpolated, tracks.num_rows, cut_frames, clip_rows)


def _clips(faces: pa.Table, video: str, label: str | None, original: str | None,
           options: ClipOptions) -> pa.Table:
    """One row per clip of the kept ``faces`` (detected and interpolated alike), track by track in id order."""
    track = faces.column("track_id").to_numpy()
    frame = faces.column("frame_index").to_numpy()
    time_s = faces.column("timestamp_s").to_numpy()
    order = np.lexsort((frame, track))
    ids, starts = np.unique(track[order], return_index=True)
    rows = []
    for track_id, rows_of_track in zip(ids, np.split(order, starts[1:])):
        for number, clip in enumerate(track_clips(frame[rows_of_track], time_s[rows_of_track], options)):
            rows.append({"video": video, "label": label or None, "track_id": int(track_id), "clip_index": number,
                         "frame_indices": clip.tolist(), "original": original})
    return pa.Table.from_pylist(rows, schema=CLIP_SCHEMA)


def _track_ids(faces: pa.Table, frame_index: np.ndarray, timestamps: np.ndarray, cuts: np.ndarray,
               tracking: TrackingOptions) -> np.ndarray:
    """(N,) int64 track id of every staged face; -1 for an interpolated face whose ends the tracks do not join."""
    interpolated = faces.column("interpolated").to_numpy(zero_copy_only=False)
    detected = np.flatnonzero(~interpolated)
    column = {name: faces.column(name).to_numpy(zero_copy_only=False) for name in ("x1", "y1", "x2", "y2")}
    boxes = np.stack([column[n] for n in ("x1", "y1", "x2", "y2")], axis=1)
    face_frames = faces.column("frame_index").to_numpy()
    scores = faces.column("score").to_numpy()
    ids = np.full(faces.num_rows, -1, np.int64)
    ids[detected] = link_tracks(frame_index, timestamps, cuts, face_frames[detected], boxes[detected],
                                scores[detected], tracking)
    filled = np.flatnonzero(interpolated)
    if len(filled) and len(detected):
        keys = face_frames[detected] * _FACES_PER_FRAME + faces.column("face_index").to_numpy()[detected]
        order = np.argsort(keys)

        def id_of(frame_name: str, face_name: str) -> np.ndarray:
            wanted = (faces.column(frame_name).to_numpy(zero_copy_only=False)[filled].astype(np.int64) * _FACES_PER_FRAME
                      + faces.column(face_name).to_numpy(zero_copy_only=False)[filled].astype(np.int64))
            at = np.minimum(np.searchsorted(keys, wanted, sorter=order), len(order) - 1)
            found = keys[order[at]] == wanted
            return np.where(found, ids[detected][order[at]], -2)

        start, end = id_of("from_frame", "from_face"), id_of("to_frame", "to_face")
        ids[filled] = np.where((start == end) & (start >= 0), start, -1)
    return ids


def _number_interpolated(table: pa.Table) -> pa.Table:
    """Interpolated faces take face numbers 0, 1, ... on their frame by track id (a frame with filled-in
    faces has no detected face)."""
    interpolated = table.column("interpolated").to_numpy(zero_copy_only=False)
    if not interpolated.any():
        return table
    face_index = table.column("face_index").to_numpy().copy()
    rows = np.flatnonzero(interpolated)
    frames = table.column("frame_index").to_numpy()[rows]
    tracks = table.column("track_id").to_numpy()[rows]
    order = np.lexsort((tracks, frames))
    sorted_frames = frames[order]
    first = np.searchsorted(sorted_frames, sorted_frames, side="left")
    face_index[rows[order]] = np.arange(len(order)) - first
    position = table.schema.get_field_index("face_index")
    return table.set_column(position, "face_index", pa.array(face_index, pa.int32()))


def _tracks(faces: pa.Table, video: str, label: str | None, original: str | None,
            tracking: TrackingOptions) -> pa.Table:
    """One row per track of the kept faces (see docs/detect.md for the columns).

    ``best_frame``, ``best_face_index``: the track's largest confident detected face (score >=
    ``high_score``; without one, its highest-scoring detected face), the earliest on a tie. Every track
    has a detected face: interpolated ones lie between two.
    """
    if faces.num_rows == 0:
        return track_schema(False).empty_table()
    track = faces.column("track_id").to_numpy()
    frame = faces.column("frame_index").to_numpy()
    time_s = faces.column("timestamp_s").to_numpy()
    score = faces.column("score").to_numpy()
    interpolated = faces.column("interpolated").to_numpy(zero_copy_only=False)
    side = np.sqrt(
        np.clip(faces.column("x2").to_numpy() - faces.column("x1").to_numpy(), 0, None)
        * np.clip(faces.column("y2").to_numpy() - faces.column("y1").to_numpy(), 0, None)
    )
    face_index = faces.column("face_index").to_numpy()
    order = np.lexsort((frame, track))  # by track, then frame
    ids, starts, counts = np.unique(track[order], return_index=True, return_counts=True)
    ends = starts + counts - 1
    confident = score >= tracking.high_score
    # Best face per track: detected, then confident and largest (or the highest scoring), then earliest.
    merit = np.where(confident, side, -1.0 + score)
    best_order = np.lexsort((frame, -merit, interpolated, track))
    best = best_order[np.unique(track[best_order], return_index=True)[1]]
    return pa.table(
        {
            "video": pa.array([video] * len(ids), pa.string()),
            "label": pa.array([label or None] * len(ids), pa.string()),
            "original": pa.array([original] * len(ids), pa.string()),
            "track_id": pa.array(ids, pa.int64()),
            "first_frame": pa.array(frame[order][starts], pa.int64()),
            "last_frame": pa.array(frame[order][ends], pa.int64()),
            "first_timestamp_s": pa.array(time_s[order][starts], pa.float64()),
            "last_timestamp_s": pa.array(time_s[order][ends], pa.float64()),
            "faces": pa.array(counts, pa.int64()),
            "interpolated_faces": pa.array(np.add.reduceat(interpolated[order].astype(np.int64), starts), pa.int64()),
            "score_mean": pa.array((np.add.reduceat(score[order].astype(np.float64), starts) / counts).astype(np.float32)),
            "score_min": pa.array(np.minimum.reduceat(score[order], starts).astype(np.float32)),
            "box_side_median": pa.array(
                np.array([np.median(s) for s in np.split(side[order], starts[1:])], np.float32)
            ),
            "best_frame": pa.array(frame[best], pa.int64()),
            "best_face_index": pa.array(face_index[best], pa.int32()),
        }
    )
