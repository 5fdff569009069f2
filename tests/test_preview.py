"""``raydetect preview`` and the drawing helpers, on real photos, a real video and a real Parquet table."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydetect.cli import main
from raydetect.commands.preview import read_face_rows, read_track_rows
from raydetect.core.crops import face_crops
from raydetect.tuning.drawing import BOX_COLOR, contact_sheet, decode_jpeg, draw_boxes, draw_detections
from raydetect.tuning.image_folders import read_image
from raydetect.offline.output import face_schema
from raydetect.core.results import Detections

PHOTO = "dlib_faces/2007_007763.jpg"
VIDEO = "hamilton_45f_640x360.avi"


def _detections(boxes, scores):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    return Detections(boxes, np.array(scores, np.float32), np.repeat(centres[:, None, :], 5, axis=1))


def test_draw_detections_marks_boxes_and_leaves_the_input_alone():
    image = np.zeros((200, 300, 3), np.uint8)
    drawn = draw_detections(image, _detections([[50, 60, 120, 150]], [0.93]))
    assert image.max() == 0  # untouched
    assert tuple(drawn[100, 50]) == BOX_COLOR  # left edge of the box
    assert tuple(drawn[150, 80]) == BOX_COLOR  # bottom edge
    assert drawn[105, 85].any()  # a landmark at the centre
    assert drawn[45:60, 50:80].any()  # the score label above the box
    assert not drawn[180:, 200:].any()  # nothing far away
    plain = draw_detections(image, _detections([[50, 60, 120, 150]], [0.93]), scores=False, landmarks=False)
    assert not plain[105, 85].any() and not plain[45:58, 52:80].any()


def test_draw_boxes_and_bad_images():
    drawn = draw_boxes(np.zeros((50, 50, 3), np.uint8), [[10, 10, 40, 40]])
    assert drawn[10, 20].any() and not drawn[25, 25].any()
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        draw_detections(np.zeros((50, 50), np.float32), Detections.empty())


def test_contact_sheet_layout():
    tiles = [np.full((30 + k, 20, 3), 40 * k, np.uint8) for k in range(5)]
    sheet = contact_sheet(tiles, columns=2, tile_size=32, padding=4)
    assert sheet.shape == (3 * 36 + 4, 2 * 36 + 4, 3)  # 3 rows, 2 columns, no captions
    assert tuple(sheet[4 + 36 + 10, 4 + 36 + 10]) == (120, 120, 120)  # tile 3 (row 1, column 1)
    captioned = contact_sheet(tiles, [f"face {k}" for k in range(5)], columns=5, tile_size=64)
    assert captioned.shape[0] > 64 + 8 and captioned.shape[1] == 5 * 68 + 4
    with pytest.raises(ValueError, match="no face crops"):
        contact_sheet([])
    with pytest.raises(ValueError, match="2 captions for 5 tiles"):
        contact_sheet(tiles, ["a", "b"])


def test_preview_image(data_dir, tmp_path, capsys):
    output = tmp_path / "faces.png"
    assert main(["preview", str(data_dir / PHOTO), "--output", str(output), "--min-face-size", "30"]) == 0
    faces = int(capsys.readouterr().out.split(": ")[1].split()[0])
    original, drawn = read_image(data_dir / PHOTO), read_image(output)
    assert drawn.shape == original.shape
    assert faces >= 5  # the photo has seven annotated faces
    changed = np.any(drawn != original, axis=2)
    assert changed.mean() < 0.2 and (drawn == BOX_COLOR).all(axis=2).sum() > 100


def test_preview_video_to_mp4(data_dir, tmp_path, capsys):
    output = tmp_path / "preview.mp4"
    argv = ["preview", str(data_dir / VIDEO), "-o", str(output), "--every", "15", "--max-frames", "3",
            "--min-face-size", "60", "--output-max-side", "320"]
    assert main(argv) == 0
    assert "3 frames" in capsys.readouterr().out
    capture = cv2.VideoCapture(str(output))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 3 and frames[0].shape == (180, 320, 3)  # drawn at half size
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(29.97 / 15, rel=0.01)


def test_preview_one_video_frame_as_png(data_dir, tmp_path, capsys):
    output = tmp_path / "frame.png"
    assert main(["preview", str(data_dir / VIDEO), "-o", str(output), "--frame", "20", "--min-face-size", "60"]) == 0
    assert "1 frames" in capsys.readouterr().out
    assert read_image(output).shape == (360, 640, 3)


def _face_table(data_dir, path, with_crops=True):
    """A face table like an offline job's: crops of the annotated faces of a real photo."""
    image = read_image(data_dir / PHOTO)
    boxes = np.array(json.loads((data_dir / "dlib_faces" / "annotations.json").read_text())["images"]
                     ["2007_007763.jpg"], np.float32)
    boxes[:, 2:] += boxes[:, :2]
    n = len(boxes)
    columns = {
        "video": ["clips/a.mp4"] * n, "label": [None] * n, "frame_index": list(range(n)),
        "timestamp_s": [i / 25 for i in range(n)], "face_index": [0] * n,
        "x1": boxes[:, 0], "y1": boxes[:, 1], "x2": boxes[:, 2], "y2": boxes[:, 3],
        "score": np.linspace(0.9, 0.99, n), "landmarks": [[0.0] * 10] * n,
        "width": [image.shape[1]] * n, "height": [image.shape[0]] * n,
    }
    if with_crops:
        columns["crop"] = face_crops(image, boxes, size=96, margin=0.2)
        columns["crop_matrix"] = [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]] * n  # not read by the preview
    # The offline job's own schema, so a renamed column there fails here; without the track columns and
    # `original`, as a table from before tracks (the contact sheet of faces, not of tracks).
    schema = pa.schema([f for f in face_schema(with_crops) if f.name not in ("track_id", "interpolated", "original")])
    pq.write_table(pa.table(columns, schema=schema), path)
    return n


def test_contact_sheet_from_face_table(data_dir, tmp_path, capsys):
    faces_dir = tmp_path / "dest" / "faces"
    faces_dir.mkdir(parents=True)
    count = _face_table(data_dir, faces_dir / "part-0.parquet")
    output = tmp_path / "sheet.png"
    assert main(["preview", str(faces_dir), "-o", str(output), "--columns", "4", "--tile-size", "64"]) == 0
    assert f"contact sheet of {count} faces" in capsys.readouterr().out
    sheet = read_image(output)
    assert sheet.shape[1] == 4 * (64 + 4) + 4  # 4 columns
    rows = -(-count // 4)
    assert sheet.shape[0] > rows * 68
    worst = read_face_rows(faces_dir, 3, "worst")
    assert [r["frame_index"] for r in worst] == [0, 1, 2]  # scores rise with the frame index
    best = read_face_rows(faces_dir, 2, "best")
    assert [r["frame_index"] for r in best] == [count - 1, count - 2]
    assert decode_jpeg(best[0]["crop"]).shape == (96, 96, 3)


@pytest.mark.parametrize(
    "make, output, message",
    [
        (lambda d, t: t / "missing.jpg", "x.png", "input not found"),
        (lambda d, t: (t / "notes.txt").write_text("x") and t / "notes.txt", "x.png", "unknown input type"),
        (lambda d, t: d / PHOTO, "x.mp4", "written as .png"),
        (lambda d, t: t, "x.png", "folder without Parquet"),
        (lambda d, t: _face_table(d, t / "nocrop.parquet", with_crops=False) and t / "nocrop.parquet", "x.png",
         "no 'crop' column"),
        (lambda d, t: (t / "bad.parquet").write_bytes(b"not parquet") and t / "bad.parquet", "x.png",
         "not a readable Parquet"),
        (lambda d, t: (t / "bad.jpg").write_bytes(b"\xff\xd8junk") and t / "bad.jpg", "x.png", "not a decodable image"),
        (lambda d, t: d / VIDEO, "x.png --frame 999", "outside the video's 45 frames"),
        (lambda d, t: d / VIDEO, "x.png --output-max-side 4", "--output-max-side must be at least 16"),
        (lambda d, t: _tracked_face_table(d, t / "tracks.parquet") and t / "tracks.parquet", "x.png --max-tracks 0",
         "--max-tracks and --columns must be >= 1"),
    ],
)
def test_preview_bad_input(data_dir, tmp_path, capsys, make, output, message):
    source = make(data_dir, tmp_path)
    out_name, *extra = output.split()
    assert main(["preview", str(source), "-o", str(tmp_path / out_name), *extra]) == 2
    assert message in capsys.readouterr().err


def test_corrupt_crop_is_named(tmp_path, capsys):
    pq.write_table(pa.table({"video": ["v.mp4"], "frame_index": [7], "score": [0.9], "crop": [b"garbage"]}),
                   tmp_path / "f.parquet")
    assert main(["preview", str(tmp_path / "f.parquet"), "-o", str(tmp_path / "s.png")]) == 2
    assert "crop of v.mp4 frame 7" in capsys.readouterr().err


def _tracked_face_table(data_dir, path, tracks=3, faces_per_track=12):
    """A face table with track columns as the offline job writes them: crops of a real photo's faces,
    each face one person (track) over several frames, rows shuffled as shards would leave them."""
    image = read_image(data_dir / PHOTO)
    boxes = np.array(json.loads((data_dir / "dlib_faces" / "annotations.json").read_text())["images"]
                     ["2007_007763.jpg"], np.float32)[:tracks]
    boxes[:, 2:] += boxes[:, :2]
    crops = face_crops(image, boxes, size=64, margin=0.2)
    rows = [(t, f) for t in range(tracks) for f in range(faces_per_track)]
    order = np.random.default_rng(1).permutation(len(rows))
    rows = [rows[i] for i in order]
    n = len(rows)
    columns = {
        "video": ["clips/a.mp4"] * n, "label": [None] * n, "frame_index": [f * 2 for _, f in rows],
        "timestamp_s": [f * 2 / 25 for _, f in rows], "face_index": [t for t, _ in rows],
        "x1": boxes[[t for t, _ in rows], 0], "y1": boxes[[t for t, _ in rows], 1],
        "x2": boxes[[t for t, _ in rows], 2], "y2": boxes[[t for t, _ in rows], 3],
        "score": [0.9 + 0.03 * t for t, _ in rows], "landmarks": [[0.0] * 10] * n,
        "width": [image.shape[1]] * n, "height": [image.shape[0]] * n,
        "crop": [crops[t] for t, _ in rows], "crop_matrix": [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]] * n,
        "track_id": [t for t, _ in rows], "interpolated": [False] * n, "original": [None] * n,
    }
    schema = face_schema(True)
    pq.write_table(pa.table(columns, schema=schema), path)
    return crops


def test_track_sheet_draws_one_row_per_track(data_dir, tmp_path, capsys):
    faces_dir = tmp_path / "dest" / "faces"
    faces_dir.mkdir(parents=True)
    crops = _tracked_face_table(data_dir, faces_dir / "part-0.parquet", tracks=3, faces_per_track=12)
    output = tmp_path / "tracks.png"
    argv = ["preview", str(faces_dir), "-o", str(output), "--columns", "5", "--tile-size", "64"]
    assert main(argv) == 0
    assert "track sheet of 3 tracks, 15 faces" in capsys.readouterr().out
    sheet = read_image(output)
    assert sheet.shape[1] == 5 * (64 + 4) + 4
    # Each row shows its own person's crop only: compare every tile with the three crops.
    tracks = read_track_rows(faces_dir, 3, 5, "file")
    assert [t["track_id"] for t in tracks] == [0, 1, 2]
    assert [t["count"] for t in tracks] == [12, 12, 12]
    for track in tracks:
        assert [face["frame_index"] for face in track["faces"]] == [0, 6, 12, 16, 22]  # spread, ends kept
        assert all(face["crop"] == crops[track["track_id"]] for face in track["faces"])
    best = read_track_rows(faces_dir, 1, 2, "best")
    assert best[0]["track_id"] == 2  # highest mean score


def test_preview_video_colours_boxes_by_track(data_dir, tmp_path, capsys):
    # Every 3rd frame of the vendored clip: two people before its cut at frame 20 (tracks 0 and 1),
    # a close-up after it (track 2): each box in its track's colour, none carried over the cut.
    from raydetect.tuning.drawing import track_color

    output = tmp_path / "tracks.mp4"
    argv = ["preview", str(data_dir / VIDEO), "-o", str(output), "--every", "3", "--min-face-size", "40"]
    assert main(argv) == 0
    capture = cv2.VideoCapture(str(output))
    colours_seen = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).astype(int)
        found = [k for k in range(4) if (np.abs(rgb - track_color(k)).sum(axis=2) < 60).sum() > 150]
        colours_seen.append(tuple(found))
    assert len(colours_seen) == 15
    assert set(colours_seen[:7]) == {(0, 1)}
    # Right after the cut the close-up's box lies mostly outside the frame: too few pixels to see.
    assert set(colours_seen[7:]) <= {(2,), ()} and colours_seen[7:].count((2,)) >= 6


def test_a_sheet_title_wraps_over_the_sheet_and_leaves_it_unchanged():
    from raydetect.tuning.drawing import title_height, titled

    sheet = np.full((50, 120, 3), 7, np.uint8)
    short, long = "4 clips", "aligned crops 224x224 (margin 0.3), 12 clips of 7 faces from dfdc_train_part_0"
    one, several = titled(sheet, short), titled(sheet, long)
    assert one.shape == (title_height(short, 120) + 50, 120, 3) and (one[-50:] == 7).all()
    assert several.shape[0] - 50 >= 3 * (one.shape[0] - 50) - 16  # wrapped onto several lines, none cut off
    assert one[:title_height(short, 120)].max() > 150  # the text is drawn in the band (background 32)
