"""Per-track clips end to end: ``raydetect detect --clip-frames`` on a real video (local Ray), FaceClips on
what it wrote, and ``raydetect preview DEST``'s sheets of aligned crops, clips and real/fake pairs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raydetect.cli import main
from raydetect.core.clips import ClipOptions, track_clips
from raydetect.core.crops import CropOptions, decode_crop, encode_crop
from raydetect.offline.output import face_schema, video_file_name, video_key
from raydetect.tuning.drawing import title_height, titled, track_sheet
from raydetect.tuning.image_folders import read_image

HAMILTON = "hamilton_45f_640x360.avi"
CLIP = ClipOptions(frames=4, fps=15)  # 29.97 fps video: every second frame
CROP_W, CROP_H = 80, 96


@pytest.fixture(scope="module")
def clip_job(ray_session, data_dir, tmp_path_factory):
    """The detect command on a real video: every frame sampled, the detector on every third, aligned PNG
    crops, clips of 4 faces at 15 fps (so clips hold interpolated faces)."""
    from raydetect.commands.detect import main as detect

    dest = tmp_path_factory.mktemp("clip-job")
    video = str(data_dir / HAMILTON)
    assert detect([video, "--output", str(dest), "--min-face-size", "30", "--max-side", "320", "--detect-every", "3",
                   "--crops", "--align", "--crop-size", f"{CROP_W}x{CROP_H}", "--crop-format", "png",
                   "--clip-frames", str(CLIP.frames), "--clip-fps", str(CLIP.fps), "--actors", "1",
                   "--cpus-per-actor", "1", "--threads-per-actor", "1", "-q"]) == 0
    return dest, video, pd.read_parquet(dest / "faces"), pd.read_parquet(dest / "clips")


def test_the_job_writes_each_tracks_clips_by_the_rule(clip_job, capsys):
    dest, video, faces, clips = clip_job
    expected = []
    for track, group in faces.sort_values("frame_index").groupby("track_id"):
        found = track_clips(group["frame_index"].to_numpy(), group["timestamp_s"].to_numpy(), CLIP)
        expected += [(track, i, clip.tolist()) for i, clip in enumerate(found)]
    written = [(r.track_id, r.clip_index, list(r.frame_indices)) for r in clips.itertuples()]
    assert written == sorted(expected) and len(written) >= 2
    assert set(clips["video"]) == {video} and clips["label"].isna().all()
    by_face = faces.set_index(["track_id", "frame_index"])
    in_clips = [by_face.loc[(t, f), "interpolated"] for t, _, frames in written for f in frames]
    assert any(in_clips) and not all(in_clips)  # interpolated faces are faces of their track
    videos = pd.read_parquet(dest / "videos")
    assert videos["clips"].tolist() == [len(clips)]
    assert json.loads((dest / "_job.json").read_text())["options"]["clips"] == {
        "frames": 4, "fps": 15.0, "spacing": "contiguous"}


def test_face_clips_reads_the_jobs_aligned_clips(clip_job):
    from raydetect.datasets import FaceClips

    dest, video, faces, clips = clip_job
    crops = faces.set_index(["track_id", "frame_index"])["crop"]
    dataset = FaceClips(str(dest))
    assert len(dataset) == len(clips)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["images"].shape == (CLIP.frames, 3, CROP_H, CROP_W) and item["images"].dtype == torch.uint8
        row = clips.iloc[index]
        assert (item["video"], item["track_id"], item["clip_index"]) == (video, row.track_id, row.clip_index)
        assert item["frame_indices"].tolist() == list(row.frame_indices)
        for image, frame in zip(item["images"], row.frame_indices):  # each the crop of that track's face
            np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), decode_crop(crops[(row.track_id, frame)]))


def _row_height(tile_size: int, columns: int) -> int:
    """Height of one titled row of ``columns`` captioned tiles on a track sheet."""
    tile = np.zeros((8, 8, 3), np.uint8)
    return track_sheet([("t", [tile] * columns, ["c"] * columns)], tile_size=tile_size).shape[0]


def test_preview_of_the_job_says_the_crops_are_aligned_and_draws_its_clips(clip_job, tmp_path, capsys):
    from raydetect.commands.preview_sheets import read_clip_rows

    dest, _, faces, clips = clip_job
    output = tmp_path / "sheet.png"
    assert main(["preview", str(dest), "-o", str(output), "--tile-size", "48", "--max-clips", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"aligned crops {CROP_W}x{CROP_H}" in printed and "clip sheet of 2 clips, 8 faces" in printed
    # The track sheet under its title: the same sheet a face table outside any DEST gets, untitled.
    (tmp_path / "bare").mkdir()
    plain = tmp_path / "plain.png"
    for path in (dest / "faces").glob("*.parquet"):
        (tmp_path / "bare" / path.name).write_bytes(path.read_bytes())
    assert main(["preview", str(tmp_path / "bare"), "-o", str(plain), "--tile-size", "48"]) == 0
    np.testing.assert_array_equal(read_image(output),
                                  titled(read_image(plain), f"aligned crops {CROP_W}x{CROP_H} (margin 0.3)"))

    sheet = read_image(tmp_path / "sheet-clips.png")
    width = CLIP.frames * (48 + 4) + 4
    title = f"{dest.name}: 2 clips of 4 faces, aligned crops {CROP_W}x{CROP_H} (margin 0.3)"
    assert sheet.shape == (title_height(title, width) + 2 * _row_height(48, CLIP.frames), width, 3)
    crops = faces.set_index(["track_id", "frame_index"])["crop"]
    shown = read_clip_rows(dest, 2)
    assert [(c["track_id"], c["clip_index"]) for c in shown] == list(
        zip(clips["track_id"][:2], clips["clip_index"][:2]))
    for clip in shown:
        assert clip["crops"] == [crops[(clip["track_id"], f)] for f in clip["frame_indices"]]


def _fake_dest(source_faces: pd.DataFrame, original: str, dest):
    """A small DEST written here by hand: the real job's faces of ``original`` and a "fake" of it that
    reuses its boxes (same frame, face and track; ``original`` set), its crops the originals' negatives,
    plus one fake face whose original row is absent (a case a real job does not produce; the pairs
    of a real --reuse-original-boxes job are drawn in test_dfdc_reuse.py)."""
    rows = source_faces.sort_values(["frame_index", "face_index"]).head(5).reset_index(drop=True)
    schema = face_schema(True)
    real = rows.assign(original=None)
    negatives = [255 - decode_crop(c) for c in rows["crop"]]
    png = CropOptions(format="png")
    fake = rows.assign(video="fakes/fake.mp4", original=original, crop=[encode_crop(n, png) for n in negatives])
    lost = fake.tail(1).assign(frame_index=9_999)
    (dest / "faces").mkdir(parents=True)
    for video, table in ((original, real), ("fakes/fake.mp4", pd.concat([fake, lost]))):
        pq.write_table(pa.Table.from_pandas(table[schema.names], schema=schema, preserve_index=False),
                       dest / "faces" / video_file_name(video_key(video)))
    return rows


def test_pair_sheet_puts_each_fake_face_beside_its_originals(clip_job, tmp_path, capsys):
    from raydetect.commands.preview_sheets import read_pair_rows

    _, video, faces, _ = clip_job
    dest = tmp_path / "dest"
    rows = _fake_dest(faces, video, dest)
    output = tmp_path / "sheet.png"
    assert main(["preview", str(dest), "-o", str(output), "--tile-size", "40"]) == 0
    assert f"real/fake sheet of {len(rows) + 1} pairs" in capsys.readouterr().out

    pairs = read_pair_rows(dest / "faces", 16)
    assert [(p["frame_index"], p["face_index"]) for p in pairs[:-1]] == list(zip(rows["frame_index"],
                                                                                rows["face_index"]))
    for pair in pairs[:-1]:
        assert pair["video"] == "fakes/fake.mp4" and pair["original"] == video
        np.testing.assert_array_equal(decode_crop(pair["original_crop"]), 255 - decode_crop(pair["crop"]))
    assert pairs[-1]["frame_index"] == 9_999 and pairs[-1]["original_crop"] is None
    sheet = read_image(tmp_path / "sheet-pairs.png")
    width = 2 * (40 + 4) + 4
    title = f"real | fake, {len(pairs)} faces"
    assert sheet.shape == (title_height(title, width) + len(pairs) * _row_height(40, 2), width, 3)
    assert len(read_pair_rows(dest / "faces", 2)) == 2  # bounded by --max-pairs


def test_preview_refuses_bad_sheet_options_and_clips_without_faces(clip_job, tmp_path, capsys):
    import shutil

    dest = clip_job[0]
    for flag in ("--max-clips", "--max-pairs"):
        assert main(["preview", str(dest), "-o", str(tmp_path / "s.png"), flag, "0"]) == 2
        assert f"{flag} must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()  # refused before any sheet
    # Clips whose faces are not there (e.g. faces copied from another run) are named, not drawn blank.
    broken = tmp_path / "broken"
    shutil.copytree(dest / "faces", broken / "faces")
    (broken / "clips").mkdir()
    table = pq.read_table(dest / "clips").slice(0, 1).to_pylist()
    table[0]["frame_indices"][-1] = 9_999
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(next((dest / "clips").glob("*.parquet")))),
                   broken / "clips" / "part-0.parquet")
    assert main(["preview", str(broken), "-o", str(tmp_path / "b.png")]) == 2
    assert "no face row with a crop for frame(s) [9999]" in capsys.readouterr().err
