"""``raydetect preview``: look at what the detector finds.

* an image -> a PNG/JPEG with boxes, scores and landmarks;
* a video -> an annotated MP4 of its frames (``--every``, ``--max-frames``), each box in the
  colour of its track (faces linked across the drawn frames by ``FaceTracker``), or one annotated
  frame as PNG/JPEG (``--frame``);
* an offline job's face table (``DEST/faces``, ``DEST`` or a ``.parquet`` file) -> a contact
  sheet PNG of the face crops, captioned with video, frame and score; when the table has
  ``track_id``, one row per track (``--max-tracks`` rows of up to ``--columns`` faces spread over
  the track's time), titled with video, track id and time span. The sheet's title says whether the
  crops are aligned (from DEST/_job.json). Beside it, when present: ``NAME-clips.png``, one row per
  clip of DEST/clips (``--max-clips``), and ``NAME-pairs.png``, real/fake pairs side by side for
  fakes that reuse their original's boxes (faces with an ``original``; ``--max-pairs``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raydetect.commands.detector_args import add_detector_arguments

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".avi")


class PreviewError(ValueError):
    """Bad input or options for preview; the message is shown as is."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preview",
        help="draw detections on an image or video, or a contact sheet of an offline job's face crops",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input", metavar="VIDEO_OR_IMAGE_OR_FACES", help="image, video, or faces Parquet (file or folder)"
    )
    parser.add_argument("--output", "-o", required=True, help="PNG/JPEG picture or MP4/AVI video to write")
    parser.add_argument(
        "--output-max-side", type=int, default=None, metavar="PX",
        help="shrink the drawn picture or video to at most PX on its longer side (detection runs at full size)",
    )
    add_detector_arguments(parser)
    video = parser.add_argument_group("video input")
    video.add_argument("--every", type=int, default=1, help="draw every Nth frame (default 1)")
    video.add_argument("--max-frames", type=int, default=300, help="at most this many frames in the MP4 (default 300)")
    video.add_argument("--frame", type=int, default=0, help="frame index drawn when the output is a picture")
    video.add_argument("--batch", type=int, default=8, help="frames per detector call (default 8)")
    sheet = parser.add_argument_group("contact sheet")
    sheet.add_argument("--limit", type=int, default=64, help="faces on the sheet (default 64)")
    sheet.add_argument("--columns", type=int, default=8, help="tiles per row (default 8); faces per track row")
    sheet.add_argument("--max-tracks", type=int, default=20, help="track rows when the table has track_id (default 20)")
    sheet.add_argument("--tile-size", type=int, default=112, help="tile side in pixels (default 112)")
    sheet.add_argument("--max-clips", type=int, default=12, help="clip rows on the clips sheet (default 12)")
    sheet.add_argument("--max-pairs", type=int, default=16, help="real/fake rows on the pairs sheet (default 16)")
    sheet.add_argument(
        "--order", choices=("file", "best", "worst"), default="file",
        help="which faces: first in the table, highest scores, or lowest scores (default file); with track_id, "
        "which tracks: by video and id, highest or lowest mean score",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from raydetect.errors import RaydetectError

    try:
        source, output = Path(args.input), Path(args.output)
        if not source.exists():
            raise PreviewError(f"input not found: {source}")
        if args.output_max_side is not None and args.output_max_side < 16:
            raise PreviewError(f"--output-max-side must be at least 16 pixels, got {args.output_max_side}")
        kind = input_kind(source)
        if kind == "faces":
            _require_suffix(output, PICTURE_SUFFIXES, "a contact sheet")
            preview_faces(source, output, args)
        elif kind == "image":
            _require_suffix(output, PICTURE_SUFFIXES, "an image preview")
            faces = preview_image(source, output, args)
            print(f"wrote {output}: {faces} faces")
        else:
            _require_suffix(output, PICTURE_SUFFIXES + VIDEO_SUFFIXES, "a video preview")
            frames, faces = preview_video(source, output, args)
            print(f"wrote {output}: {frames} frames, {faces} faces")
    except (PreviewError, RaydetectError, ValueError) as exc:
        print(f"raydetect preview: {exc}", file=sys.stderr)
        return 2
    return 0


def preview_faces(source: Path, output: Path, args: argparse.Namespace) -> None:
    """The sheets of a job's output: faces or tracks, then clips and real/fake pairs when present."""
    from raydetect.commands import preview_sheets as sheets

    for flag, value in (("--max-clips", args.max_clips), ("--max-pairs", args.max_pairs)):
        if value < 1:
            raise PreviewError(f"{flag} must be >= 1, got {value}")
    folders = sheets.job_folders(source)
    crops = sheets.crop_description(folders.dest)
    if has_track_ids(folders.faces):
        tracks, count = write_track_sheet(
            folders.faces, output, args.max_tracks, args.columns, args.tile_size, args.order, title=crops
        )
        print(f"wrote {output}: track sheet of {tracks} tracks, {count} faces" + (f" ({crops})" if crops else ""))
    else:
        count = write_contact_sheet(folders.faces, output, args.limit, args.columns, args.tile_size, args.order,
                                    title=crops)
        print(f"wrote {output}: contact sheet of {count} faces" + (f" ({crops})" if crops else ""))
    if folders.dest is not None and sheets.parquet_files(folders.dest / sheets.CLIPS):
        path = sheets.sheet_path(output, "clips")
        clips, count = sheets.write_clip_sheet(folders.dest, path, args.max_clips, args.tile_size, crops)
        print(f"wrote {path}: clip sheet of {clips} clips, {count} faces")
    reused = sheets.reused_fakes(folders.dest)
    if sheets.has_originals(folders.faces) and (reused is None or reused):
        path = sheets.sheet_path(output, "pairs")
        pairs = sheets.write_pair_sheet(folders.faces, path, args.max_pairs, args.tile_size, crops, reused)
        print(f"wrote {path}: real/fake sheet of {pairs} pairs")


def input_kind(path: Path) -> str:
    """``"faces"`` (Parquet), ``"image"`` or ``"video"``, from the path alone."""
    from raydetect.tuning.image_folders import is_image_path
    from raydetect.offline.video import VIDEO_EXTENSIONS

    if path.is_dir():
        if any(path.rglob("*.parquet")):
            return "faces"
        raise PreviewError(f"{path} is a folder without Parquet files (expected an offline job's DEST/faces)")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "faces"
    if is_image_path(path):
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    raise PreviewError(f"{path}: unknown input type {suffix!r} (expected an image, a video or Parquet)")


def preview_image(source: Path, output: Path, args: argparse.Namespace) -> int:
    from raydetect.commands.detector_args import build_detector
    from raydetect.tuning.drawing import draw_detections
    from raydetect.tuning.image_folders import read_image, write_image

    image = read_image(source)
    detections = build_detector(args).detect([image])[0]
    write_image(output, draw_detections(*_shrink(image, detections, args.output_max_side)))
    return len(detections)


def preview_video(source: Path, output: Path, args: argparse.Namespace) -> tuple[int, int]:
    """Annotate frames of ``source``; returns (frames written, faces drawn)."""
    import cv2

    from raydetect.commands.detector_args import build_detector
    from raydetect.core.tracking import FaceTracker
    from raydetect.tuning.drawing import draw_caption, draw_detections
    from raydetect.tuning.image_folders import write_image
    from raydetect.offline.video import FrameRange, Sampling, probe

    if args.every < 1 or args.max_frames < 1 or args.batch < 1:
        raise PreviewError("--every, --max-frames and --batch must be >= 1")
    info = probe(str(source))
    detector = build_detector(args)
    if output.suffix.lower() in PICTURE_SUFFIXES:
        if not 0 <= args.frame < info.frame_count:
            raise PreviewError(f"--frame {args.frame} is outside the video's {info.frame_count} frames")
        frames = list(FrameRange(str(source), args.frame, args.frame + 1, Sampling().selector(info), info.fps))
        if not frames:
            raise PreviewError(f"{source}: frame {args.frame} could not be decoded")
        detections = detector.detect([frames[0].image])[0]
        picture = draw_detections(*_shrink(frames[0].image, detections, args.output_max_side))
        write_image(output, draw_caption(picture, f"frame {frames[0].index}: {len(detections)} faces"))
        return 1, len(detections)

    stop = min(info.frame_count, args.max_frames * args.every)
    frame_range = FrameRange(str(source), 0, stop, Sampling(every=args.every).selector(info), info.fps)
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if output.suffix.lower() == ".mp4" else "MJPG"))
    output.parent.mkdir(parents=True, exist_ok=True)
    size = _shrunk_size(info.height, info.width, args.output_max_side)
    writer = cv2.VideoWriter(str(output), fourcc, max(info.fps / args.every, 1.0), (size[1], size[0]))
    if not writer.isOpened():
        raise PreviewError(f"cannot write video {output}")
    written = faces = 0
    tracker = FaceTracker()  # the library's linker and defaults, over the drawn frames
    try:
        batch = []
        for frame in [*frame_range, None]:
            if frame is not None:
                batch.append(frame)
            if batch and (frame is None or len(batch) == args.batch):
                for item, detections in zip(batch, detector.detect([f.image for f in batch])):
                    track_ids = tracker.update(detections, item.index, item.timestamp_s, frame=item.image)
                    shrunk = _shrink(item.image, detections, args.output_max_side)
                    picture = draw_detections(*shrunk, track_ids=track_ids)
                    picture = draw_caption(picture, f"frame {item.index}: {len(detections)} faces")
                    writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                    written += 1
                    faces += len(detections)
                batch = []
    finally:
        writer.release()
    if not written:
        output.unlink(missing_ok=True)
        raise PreviewError(f"{source}: no frame decoded")
    return written, faces


def _shrunk_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(height, width) <= max_side:
        return height, width
    factor = max_side / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def _shrink(image, detections, max_side: int | None):
    """(image, detections) shrunk together so the picture's longer side is at most ``max_side``."""
    import cv2

    height, width = _shrunk_size(image.shape[0], image.shape[1], max_side)
    if (height, width) == image.shape[:2]:
        return image, detections
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return small, detections.scaled(width / image.shape[1], height / image.shape[0])


def write_contact_sheet(source: Path, output: Path, limit: int, columns: int, tile_size: int, order: str,
                        title: str | None = None) -> int:
    """Read face crops from Parquet and write the sheet (under ``title`` if given); returns the number of
    faces shown."""
    from raydetect.tuning.drawing import contact_sheet, decode_jpeg, titled
    from raydetect.tuning.image_folders import write_image

    if limit < 1:
        raise PreviewError("--limit must be >= 1")
    rows = read_face_rows(source, limit, order)
    if not rows:
        raise PreviewError(f"{source}: the face table has no rows")
    tiles, captions = [], []
    for row in rows:
        try:
            tiles.append(decode_jpeg(row["crop"]))
        except ValueError as exc:
            raise PreviewError(f"{source}: crop of {row.get('video')} frame {row.get('frame_index')}: {exc}") from None
        captions.append(_caption(row, with_video=len({r.get("video") for r in rows}) > 1))
    sheet = contact_sheet(tiles, captions, columns=columns, tile_size=tile_size)
    write_image(output, titled(sheet, title) if title else sheet)
    return len(tiles)


def read_face_rows(source: Path, limit: int, order: str) -> list[dict]:
    """Up to ``limit`` rows (crop, video, frame_index, score) from a face table, in ``order``."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(str(source), format="parquet")
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise PreviewError(f"{source}: not a readable Parquet face table ({exc})") from None
    names = dataset.schema.names
    if "crop" not in names:
        raise PreviewError(f"{source}: no 'crop' column (columns: {', '.join(names)}); was the job run with crops?")
    wanted = [c for c in ("crop", "video", "frame_index", "score") if c in names]
    if order == "file":
        table = dataset.head(limit, columns=wanted)
    else:
        if "score" not in names:
            raise PreviewError(f"{source}: --order {order} needs a 'score' column")
        scores = dataset.to_table(columns=["score"])["score"]
        indices = pc.sort_indices(scores, sort_keys=[("", "descending" if order == "best" else "ascending")])
        table = dataset.take(indices[:limit], columns=wanted)  # reads only the chosen crops
    return table.to_pylist()


def has_track_ids(source: Path) -> bool:
    """Whether a face table has the ``track_id`` column (an offline job that linked tracks)."""
    import pyarrow.dataset as ds

    try:
        return "track_id" in ds.dataset(str(source), format="parquet").schema.names
    except Exception:  # unreadable: read_face_rows names the problem
        return False


def write_track_sheet(source: Path, output: Path, max_tracks: int, columns: int, tile_size: int, order: str,
                      title: str | None = None):
    """One row per track of a face table (under ``title`` if given); returns (tracks shown, faces shown)."""
    from raydetect.tuning.drawing import decode_jpeg, titled, track_sheet
    from raydetect.tuning.image_folders import write_image

    if max_tracks < 1 or columns < 1:
        raise PreviewError("--max-tracks and --columns must be >= 1")
    tracks = read_track_rows(source, max_tracks, columns, order)
    if not tracks:
        raise PreviewError(f"{source}: the face table has no rows")
    sheet_rows = []
    for track in tracks:
        tiles = []
        for face in track["faces"]:
            try:
                tiles.append(decode_jpeg(face["crop"]))
            except ValueError as exc:
                raise PreviewError(
                    f"{source}: crop of {track['video']} frame {face.get('frame_index')}: {exc}"
                ) from None
        times = [face.get("timestamp_s") for face in track["faces"]]
        captions = [
            f"{t:.2f} s" if t is not None else f"#{face.get('frame_index')}" for t, face in zip(times, track["faces"])
        ]
        span = (
            f"{track['first_timestamp_s']:.2f}-{track['last_timestamp_s']:.2f} s"
            if track["first_timestamp_s"] is not None
            else f"frames {track['first_frame']}-{track['last_frame']}"
        )
        faces = f"{track['count']} face{'s' if track['count'] != 1 else ''}"
        row_title = f"{Path(str(track['video'])).name} track {track['track_id']}: {span}, {faces}"
        sheet_rows.append((row_title, tiles, captions))
    sheet = track_sheet(sheet_rows, tile_size=tile_size)
    write_image(output, titled(sheet, title) if title else sheet)
    return len(tracks), sum(len(track["faces"]) for track in tracks)


def read_track_rows(source: Path, max_tracks: int, per_track: int, order: str) -> list[dict]:
    """Up to ``max_tracks`` tracks of a face table, each with up to ``per_track`` faces spread evenly
    over its time (first and last included). Crops are read for the chosen faces only.

    Returns dicts: video, track_id, count, first/last frame and timestamp, faces (rows with crop,
    frame_index, timestamp_s, score, in time order).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.dataset as ds

    # pandas comes with ray[data]; the grouping is clearer there than in pyarrow compute.
    try:
        dataset = ds.dataset(str(source), format="parquet")
    except Exception as exc:
        raise PreviewError(f"{source}: not a readable Parquet face table ({exc})") from None
    names = dataset.schema.names
    if "crop" not in names:
        raise PreviewError(f"{source}: no 'crop' column (columns: {', '.join(names)}); was the job run with crops?")
    wanted = [c for c in ("video", "track_id", "frame_index", "timestamp_s", "score") if c in names]
    table = dataset.to_table(columns=wanted).append_column("row", pa.array(np.arange(dataset.count_rows())))
    frame = table.to_pandas()
    if frame.empty:
        return []
    if "video" not in frame:
        frame["video"] = ""
    if "timestamp_s" not in frame:
        frame["timestamp_s"] = None
    sort_keys = [k for k in ("video", "track_id", "frame_index") if k in frame]
    frame = frame.sort_values(sort_keys, kind="stable")
    groups = frame.groupby(["video", "track_id"], sort=True)
    keys = list(groups.groups)
    if order != "file":
        if "score" not in frame:
            raise PreviewError(f"{source}: --order {order} needs a 'score' column")
        means = groups["score"].mean()
        keys = list(means.sort_values(ascending=(order == "worst"), kind="stable").index)
    keys = keys[:max_tracks]
    tracks, chosen = [], []
    for key in keys:
        faces = groups.get_group(key)
        picks = np.unique(np.linspace(0, len(faces) - 1, min(per_track, len(faces))).round().astype(int))
        picked = faces.iloc[picks]
        chosen.extend(picked["row"].tolist())
        tracks.append({
            "video": key[0], "track_id": int(key[1]), "count": len(faces),
            "first_frame": int(faces["frame_index"].iloc[0]) if "frame_index" in faces else None,
            "last_frame": int(faces["frame_index"].iloc[-1]) if "frame_index" in faces else None,
            "first_timestamp_s": _float_or_none(faces["timestamp_s"].iloc[0]),
            "last_timestamp_s": _float_or_none(faces["timestamp_s"].iloc[-1]),
            "rows": picked["row"].tolist(),
        })
    shown = [c for c in ("crop", "frame_index", "timestamp_s", "score") if c in names]
    crops = dataset.take(pa.array(chosen, pa.int64()), columns=shown)
    by_row = dict(zip(chosen, crops.to_pylist()))
    for track in tracks:
        track["faces"] = [by_row[row] for row in track.pop("rows")]
    return tracks


def _float_or_none(value):
    import math

    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _caption(row: dict, with_video: bool) -> str:
    """``video #frame | score``; the video is left out when every face comes from the same one."""
    where = []
    if with_video and row.get("video") is not None:
        where.append(Path(str(row["video"])).name)
    if row.get("frame_index") is not None:
        where.append(f"#{row['frame_index']}" if with_video else f"frame {row['frame_index']}")
    text = " ".join(where)
    if row.get("score") is not None:
        text = f"{text} | {row['score']:.2f}" if text else f"{row['score']:.2f}"
    return text


def _require_suffix(output: Path, allowed: tuple[str, ...], what: str) -> None:
    if output.suffix.lower() not in allowed:
        raise PreviewError(f"--output {output}: {what} is written as {' or '.join(allowed)}")
