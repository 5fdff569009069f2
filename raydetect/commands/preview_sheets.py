"""The sheets ``raydetect preview DEST`` draws beside the faces: what a classifier is fed.

* which crops these are: ``aligned`` when the job's ``DEST/_job.json`` records ``crop_align: true``
  (the option the job ran with; the crop matrices cannot tell an upright aligned face from a box
  crop), box crops otherwise; a face table outside a DEST with a ``_job.json`` is not labelled;
* clips (``DEST/clips``, written with ``--clip-frames``): one row per clip, its T crops side by side;
* real/fake pairs: faces rows with a non-null ``original`` (a fake that reuses its original video's
  boxes) next to the original's row of the same frame and face.

Reading stays bounded: the clip and pair rows are the first few of their tables, and a crop is read
only from the row groups that hold a wanted face (a video's faces file is found by its key).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raydetect.commands.preview import PreviewError
from raydetect.offline.output import CLIPS, FACES, JOB_FILE, TEMP_PREFIX, VIDEOS, video_file_name, video_key

# A faces row of the original video: the fake's row names it by these, with ``original`` for ``video``.
PAIR_KEY = ("frame_index", "face_index")
MISSING_TILE = 48  # grey level of the tile shown where a pair's original face is not in the table


@dataclass(frozen=True)
class JobFolders:
    """``faces``: the face table (a folder or one Parquet file); ``dest``: the job's DEST holding it, or None."""

    faces: Path
    dest: Path | None


def job_folders(source: Path) -> JobFolders:
    """Where the faces and the job's DEST are for a preview input: DEST itself (a folder holding
    ``faces/``), ``DEST/faces``, a file in it, or a face table elsewhere (no DEST)."""
    if source.is_dir() and (source / FACES).is_dir():
        return JobFolders(source / FACES, source)
    if source.is_dir() and source.name == FACES:
        return JobFolders(source, source.parent)
    if source.is_file() and source.parent.name == FACES:
        return JobFolders(source, source.parent.parent)
    return JobFolders(source, None)


def crop_description(dest: Path | None) -> str | None:
    """``aligned crops WxH`` or ``box crops WxH`` from the job's recorded options; None when there is no
    ``_job.json`` or the job made no crops."""
    if dest is None or not (dest / JOB_FILE).is_file():
        return None
    try:
        options = json.loads((dest / JOB_FILE).read_text()).get("options", {})
    except (OSError, ValueError) as exc:
        raise PreviewError(f"{dest / JOB_FILE}: unreadable job options ({exc})") from None
    if not options.get("crops"):
        return None
    size = f"{options.get('crop_width')}x{options.get('crop_height')}"
    if options.get("crop_align"):
        return f"aligned crops {size} (margin {options.get('crop_margin')})"
    return f"box crops {size} (margin {options.get('crop_margin')})"


def sheet_path(output: Path, kind: str) -> Path:
    """Where the ``kind`` sheet goes beside the main one: ``sheet.png`` -> ``sheet-clips.png``."""
    return output.with_name(f"{output.stem}-{kind}{output.suffix}")


# --------------------------------------------------------------------------- reading
def parquet_files(folder: Path) -> list[Path]:
    """The complete Parquet files of a table (a folder, or one file), in name order."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith((TEMP_PREFIX, ".")))


def _files_of(faces: Path, videos: set[str]) -> list[Path]:
    """The faces files that can hold ``videos``' rows: each video's own file (the job names it by the
    video's key), else every file of the table."""
    own = [faces / video_file_name(video_key(v)) for v in sorted(videos)] if faces.is_dir() else []
    return own if own and all(p.is_file() for p in own) else parquet_files(faces)


def read_crops(faces: Path, keys: set[tuple], key_columns: tuple[str, ...]) -> dict[tuple, bytes]:
    """The crops of the faces rows whose ``(video, *key_columns)`` is in ``keys``.

    Reads the key columns of the wanted videos' files, then the crops of only the row groups that hold
    a wanted row. Returns key -> crop bytes (keys without a row are left out)."""
    columns = ("video", *key_columns)
    found: dict[tuple, bytes] = {}
    if not keys:
        return found
    for path in _files_of(faces, {key[0] for key in keys}):
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        missing = [c for c in (*columns, "crop") if c not in names]
        if missing:
            raise PreviewError(f"{path}: no column(s) {', '.join(missing)}")
        table = parquet.read(columns=list(columns))
        rows = [r for r, key in enumerate(zip(*(table.column(c).to_pylist() for c in columns))) if key in keys]
        if not rows:
            continue
        group_ends = np.cumsum([parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
        groups = sorted({int(np.searchsorted(group_ends, r, side="right")) for r in rows})
        part = parquet.read_row_groups(groups, columns=[*columns, "crop"])
        for row in part.to_pylist():
            key = tuple(row[c] for c in columns)
            if key in keys:
                found[key] = row["crop"]
    return found


def read_clip_rows(dest: Path, max_clips: int) -> list[dict]:
    """The first ``max_clips`` rows of ``DEST/clips``, each with ``crops``: its faces' crops in frame
    order (None for a frame without a face row)."""
    clips = []
    for path in parquet_files(dest / CLIPS):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            clips += parquet.read_row_group(group).to_pylist()[:max_clips - len(clips)]
            if len(clips) >= max_clips:
                break
        if len(clips) >= max_clips:
            break
    keys = {(c["video"], c["track_id"], f) for c in clips for f in c["frame_indices"]}
    crops = read_crops(dest / FACES, keys, ("track_id", "frame_index"))
    for clip in clips:
        clip["crops"] = [crops.get((clip["video"], clip["track_id"], f)) for f in clip["frame_indices"]]
    return clips


def has_originals(faces: Path) -> bool:
    """Whether any faces row names an ``original`` (a DFDC fake); reads that one column, file by file,
    up to the first such row."""
    for path in parquet_files(faces):
        parquet = pq.ParquetFile(path)
        if "original" in parquet.schema_arrow.names:
            column = parquet.read(columns=["original"]).column("original")
            if column.null_count < len(column):
                return True
    return False


def reused_fakes(dest: Path | None) -> set[str] | None:
    """The videos of DEST/videos whose faces are their original's (``boxes_from`` set), or None when
    there is no such table or column (a faces table outside a job's DEST)."""
    files = parquet_files(dest / VIDEOS) if dest is not None and (dest / VIDEOS).is_dir() else []
    if not files or "boxes_from" not in pq.ParquetFile(files[0]).schema_arrow.names:
        return None
    table = pa.concat_tables([pq.read_table(path, columns=["video", "boxes_from"]) for path in files])
    return set(table.filter(pc.is_valid(table.column("boxes_from"))).column("video").to_pylist())


def read_pair_rows(faces: Path, max_pairs: int, reused: set[str] | None = None) -> list[dict]:
    """Up to ``max_pairs`` fake faces (rows with a non-null ``original``, in table order), each a dict with
    the fake row's ``video``, ``original``, ``frame_index``, ``face_index``, ``track_id``, its ``crop``
    and ``original_crop``: the crop of the original's row of the same frame and face (None if absent).
    ``reused``: only the faces of these videos (a fake that was detected has faces of its own, which
    pair with its original's by nothing)."""
    wanted = ["video", "original", *PAIR_KEY, "track_id"]
    fakes: list[dict] = []
    for path in parquet_files(faces):
        parquet = pq.ParquetFile(path)
        if "original" not in parquet.schema_arrow.names:
            continue
        table = parquet.read(columns=[c for c in wanted if c in parquet.schema_arrow.names])
        table = table.filter(pc.is_valid(table.column("original")))
        if reused is not None:
            table = table.filter(pc.is_in(table.column("video"), pa.array(sorted(reused), pa.string())))
        fakes += table.slice(0, max_pairs - len(fakes)).to_pylist()
        if len(fakes) >= max_pairs:
            break
    fake_crops = read_crops(faces, {(f["video"], *(f[k] for k in PAIR_KEY)) for f in fakes}, PAIR_KEY)
    real_crops = read_crops(faces, {(f["original"], *(f[k] for k in PAIR_KEY)) for f in fakes}, PAIR_KEY)
    for fake in fakes:
        fake["crop"] = fake_crops.get((fake["video"], *(fake[k] for k in PAIR_KEY)))
        fake["original_crop"] = real_crops.get((fake["original"], *(fake[k] for k in PAIR_KEY)))
    return fakes


# --------------------------------------------------------------------------- drawing
def write_clip_sheet(dest: Path, output: Path, max_clips: int, tile_size: int, crops: str | None) -> tuple[int, int]:
    """One row per clip of ``DEST/clips``; returns (clips shown, faces shown)."""
    from raydetect.tuning.drawing import titled, track_sheet
    from raydetect.tuning.image_folders import write_image

    clips = read_clip_rows(dest, max_clips)
    if not clips:
        raise PreviewError(f"{dest / CLIPS}: the clips table has no rows")
    rows = []
    for clip in clips:
        name = f"{Path(str(clip['video'])).name} track {clip['track_id']} clip {clip['clip_index']}"
        missing = [f for f, crop in zip(clip["frame_indices"], clip["crops"]) if crop is None]
        if missing:
            raise PreviewError(f"{dest}: clip of {name}: no face row with a crop for frame(s) {missing}")
        tiles = [_decoded(crop, dest, f"{name} frame {f}") for f, crop in zip(clip["frame_indices"], clip["crops"])]
        frames = clip["frame_indices"]
        rows.append((f"{name}: frames {frames[0]}-{frames[-1]}", tiles, [f"#{f}" for f in frames]))
    lengths = sorted({len(c["frame_indices"]) for c in clips})
    title = f"{dest.name}: {len(clips)} clips of {'/'.join(map(str, lengths))} faces" + (f", {crops}" if crops else "")
    write_image(output, titled(track_sheet(rows, tile_size=tile_size), title))
    return len(clips), sum(len(c["frame_indices"]) for c in clips)


def write_pair_sheet(faces: Path, output: Path, max_pairs: int, tile_size: int, crops: str | None,
                     reused: set[str] | None = None) -> int:
    """One row per fake face: its original's face (left) and its own (right); returns the pairs shown."""
    from raydetect.tuning.drawing import titled, track_sheet
    from raydetect.tuning.image_folders import write_image

    pairs = read_pair_rows(faces, max_pairs, reused)
    if not pairs:
        raise PreviewError(f"{faces}: no faces row has an original")
    rows = []
    for pair in pairs:
        where = f"frame {pair['frame_index']} face {pair['face_index']}"
        fake = _decoded(pair["crop"], faces, f"{pair['video']} {where}")
        if pair["original_crop"] is None:
            real, real_caption = np.full_like(fake, MISSING_TILE), "real: no row"
        else:
            real, real_caption = _decoded(pair["original_crop"], faces, f"{pair['original']} {where}"), "real"
        # Shortened from the left when the row is narrow: the frame and face stay readable.
        title = (f"{Path(str(pair['original'])).name} | {Path(str(pair['video'])).name}: {where} "
                 f"track {pair.get('track_id')}")
        rows.append((title, [real, fake], [real_caption, "fake"]))
    title = f"real | fake, {len(pairs)} faces" + (f", {crops}" if crops else "")
    write_image(output, titled(track_sheet(rows, tile_size=tile_size), title))
    return len(pairs)


def _decoded(crop: bytes | None, where: Path, what: str) -> np.ndarray:
    from raydetect.tuning.drawing import decode_jpeg

    if crop is None:
        raise PreviewError(f"{where}: {what} has no crop (was the job run with --crops?)")
    try:
        return decode_jpeg(crop)
    except ValueError as exc:
        raise PreviewError(f"{where}: crop of {what}: {exc}") from None
