"""``--reuse-original-boxes`` on a generated DFDC-style folder, end to end on the session's local Ray.

The folder (benchmarks/dfdc_folder.py): one original cut from the vendored Hamilton clip, two fakes
whose face boxes were inverted, a fake whose original is not in the manifest, one of 3/4 the size
and one whose file is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark_modules import load_benchmark
from raydetect.core.clips import ClipOptions
from raydetect.core.crops import CropOptions, decode_crop
from raydetect.offline.chunk_detection import DetectionOptions
from raydetect.offline.job import JobSpec, Resources, run_job
from raydetect.offline.reuse import mismatch, plan_reuse
from raydetect.offline.shards import ShardOptions
from raydetect.offline.sources import SourceError, VideoInput
from raydetect.offline.video import Sampling

HAMILTON = "hamilton_45f_640x360.avi"
CROP = CropOptions(width=96, height=96, margin=0.3)
GEOMETRY = ["frame_index", "face_index", "track_id", "interpolated", "x1", "y1", "x2", "y2", "score"]


def _spec(sources, dest, crops=True, reuse=True):
    return JobSpec(
        clips=ClipOptions(frames=2),
        sources=[str(s) for s in sources], output=str(dest),
        detection=DetectionOptions(min_face_size=30, crops=crops, crop=CROP),
        shards=ShardOptions(shard_frames=12, sampling=Sampling(every=3)),  # 2 shards of 4 sampled frames
        resources=Resources(actors=1, cpus_per_actor=1, torch_threads=1),
        reuse_original_boxes=reuse,
    )


@pytest.fixture(scope="module")
def dfdc(ray_session, data_dir, tmp_path_factory):
    """The folder, and DEST after one run with crops."""
    folder = tmp_path_factory.mktemp("dfdc")
    load_benchmark("dfdc_folder").make_folder([str(data_dir / HAMILTON)], folder, fakes=2, frames=24, size=(640, 360),
                                unmatched=True)
    metadata = json.loads((folder / "metadata.json").read_text())  # and a fake whose file is missing
    metadata["fake_missing.avi"] = {"label": "FAKE", "split": "train", "original": "real_00.avi"}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    dest = tmp_path_factory.mktemp("dfdc-out")
    summary = run_job(_spec([folder / "metadata.json"], dest))
    return folder, dest, summary


def _read(dest, table) -> pd.DataFrame:
    return pd.read_parquet(Path(dest) / table)


def _video(folder, name) -> str:
    return f"{folder}/{name}"


def test_fakes_take_their_originals_rows(dfdc):
    folder, dest, summary = dfdc
    assert (summary.ok, summary.failed) == (5, 1), summary.text()
    assert summary.errors == [f"{folder}/fake_missing.avi: no such file"]
    faces, tracks, videos = _read(dest, "faces"), _read(dest, "tracks"), _read(dest, "videos").set_index("video")
    real = _video(folder, "real_00.avi")
    original = faces[faces.video == real].sort_values(["frame_index", "face_index"]).reset_index(drop=True)
    assert len(original) >= 8 and original.original.isna().all()
    for name in ("fake_00_00.avi", "fake_00_01.avi"):
        fake = faces[faces.video == _video(folder, name)].sort_values(["frame_index", "face_index"])
        fake = fake.reset_index(drop=True)
        assert (fake.original == real).all() and (fake.label == "FAKE").all()
        pd.testing.assert_frame_equal(fake[GEOMETRY], original[GEOMETRY])
        np.testing.assert_array_equal(np.stack(fake.landmarks), np.stack(original.landmarks))
        np.testing.assert_allclose(np.stack(fake.crop_matrix), np.stack(original.crop_matrix), atol=1e-4)
        row = videos.loc[_video(folder, name)]
        assert row.boxes_from == real and pd.isna(row.boxes_note) and row.frames_detected == 0
        assert row.faces == len(fake) and row.frames_decoded == 24 and row.status == "ok"
        fake_tracks = tracks[tracks.video == _video(folder, name)].sort_values("track_id").reset_index(drop=True)
        real_tracks = tracks[tracks.video == real].sort_values("track_id").reset_index(drop=True)
        columns = ["track_id", "first_frame", "last_frame", "faces", "best_frame", "best_face_index"]
        pd.testing.assert_frame_equal(fake_tracks[columns], real_tracks[columns])
        assert (fake_tracks.original == real).all() and fake_tracks.best_crop.notna().all()
        assert list(fake_tracks.best_crop) != list(real_tracks.best_crop)  # the fake's own thumbnails
    assert videos.loc[real, "frames_detected"] == 8 and pd.isna(videos.loc[real, "original"])


def test_fakes_take_their_originals_clips(dfdc):
    folder, dest, summary = dfdc
    clips = _read(dest, "clips")
    real = _video(folder, "real_00.avi")
    columns = ["track_id", "clip_index", "frame_indices"]
    original = clips[clips.video == real].sort_values(columns[:2]).reset_index(drop=True)
    assert len(original) >= 2 and original.original.isna().all()
    for name in ("fake_00_00.avi", "fake_00_01.avi"):
        fake = clips[clips.video == _video(folder, name)].sort_values(columns[:2]).reset_index(drop=True)
        assert (fake.original == real).all() and (fake.label == "FAKE").all()
        pd.testing.assert_frame_equal(fake[columns], original[columns])
        assert _read(dest, "videos").set_index("video").loc[_video(folder, name), "clips"] == len(fake)


def test_real_and_fake_crops_line_up(dfdc):
    """Same crop region: outside the inverted box the pixels agree within JPEG noise, inside they differ."""
    folder, dest, _ = dfdc
    faces = _read(dest, "faces").sort_values(["frame_index", "face_index"])
    real = faces[faces.video == _video(folder, "real_00.avi")].reset_index(drop=True)
    fake = faces[faces.video == _video(folder, "fake_00_00.avi")].reset_index(drop=True)
    inside_diffs, outside_diffs = [], []
    for (_, a), (_, b) in zip(real.iterrows(), fake.iterrows()):
        crop_a, crop_b = decode_crop(a.crop).astype(int), decode_crop(b.crop).astype(int)
        matrix = np.asarray(a.crop_matrix, np.float64).reshape(2, 3)
        (x1, y1), (x2, y2) = (matrix @ [a.x1, a.y1, 1], matrix @ [a.x2, a.y2, 1])
        ys, xs = np.mgrid[:CROP.height, :CROP.width]
        inside = (xs > x1 + 3) & (xs < x2 - 3) & (ys > y1 + 3) & (ys < y2 - 3)
        # 8x8 JPEG blocks of the source that straddle the box edge differ too: keep well clear of it
        # (a crop pixel spans about (box side x 1.3) / 96 source pixels).
        clear = 10
        outside = (xs < x1 - clear) | (xs > x2 + clear) | (ys < y1 - clear) | (ys > y2 + clear)
        difference = np.abs(crop_a - crop_b).mean(axis=2)
        inside_diffs.append(difference[inside].mean())
        if outside.any():
            outside_diffs.append(difference[outside].mean())
    assert min(inside_diffs) > 60, inside_diffs  # inverted pixels
    assert outside_diffs and max(outside_diffs) < 6, outside_diffs


def test_face_crops_dataset_names_the_original(dfdc):
    from raydetect.datasets import FaceCrops

    folder, dest, _ = dfdc
    items = [FaceCrops(str(dest))[i] for i in range(len(FaceCrops(str(dest))))]
    fakes = [item for item in items if item["video"] == _video(folder, "fake_00_00.avi")]
    assert fakes and all(item["original"] == _video(folder, "real_00.avi") for item in fakes)
    assert all(item["original"] == "" for item in items if item["video"] == _video(folder, "real_00.avi"))


def test_fakes_that_cannot_reuse_are_detected_and_say_why(dfdc):
    folder, dest, _ = dfdc
    videos = _read(dest, "videos").set_index("video")
    faces = _read(dest, "faces")
    real = _video(folder, "real_00.avi")
    orphan, small = videos.loc[_video(folder, "fake_orphan.avi")], videos.loc[_video(folder, "fake_small.avi")]
    assert pd.isna(orphan.boxes_from) and orphan.frames_detected == 8 and orphan.status == "ok"
    assert orphan.boxes_note == f"original {folder}/not_listed.avi is not in the manifest: detected"
    assert pd.isna(small.boxes_from) and small.frames_detected == 8
    assert small.boxes_note == f"original {real} is 640x360, this video 480x270: detected"
    orphan_faces = faces[faces.video == _video(folder, "fake_orphan.avi")]  # the inverted faces are hard to find
    assert (orphan_faces.original == f"{folder}/not_listed.avi").all()


def test_a_rerun_skips_everything(dfdc):
    folder, dest, _ = dfdc
    before = len(_read(dest, "faces"))
    again = run_job(_spec([folder / "metadata.json"], dest))
    assert (again.skipped, again.ok, again.failed, again.frames_decoded) == (5, 0, 1, 0)  # the missing fake again
    assert len(_read(dest, "faces")) == before


def test_without_crops_fakes_are_copied_undecoded(dfdc, tmp_path):
    folder, _, _ = dfdc
    pair = tmp_path / "pair"  # the original and one fake only: one pass of detection
    pair.mkdir()
    for name in ("real_00.avi", "fake_00_01.avi"):
        (pair / name).symlink_to(folder / name)
    metadata = json.loads((folder / "metadata.json").read_text())
    (pair / "metadata.json").write_text(json.dumps({k: metadata[k] for k in ("real_00.avi", "fake_00_01.avi")}))
    summary = run_job(_spec([pair / "metadata.json"], tmp_path / "out", crops=False))
    assert summary.exit_status == 0 and summary.frames_detected == 8, summary.text()
    videos = _read(tmp_path / "out", "videos").set_index("video")
    fake = videos.loc[_video(pair, "fake_00_01.avi")]
    assert fake.boxes_from == _video(pair, "real_00.avi") and fake.frames_decoded == 0 and fake.tracks > 0
    faces = _read(tmp_path / "out", "faces").sort_values(["video", "frame_index", "face_index"])
    real_rows, fake_rows = faces[faces.video == _video(pair, "real_00.avi")], faces[faces.video == fake.name]
    assert "crop" not in faces.columns and (fake_rows.original == _video(pair, "real_00.avi")).all()
    np.testing.assert_array_equal(fake_rows[GEOMETRY].to_numpy(), real_rows[GEOMETRY].to_numpy())


def test_the_option_is_refused_without_a_dfdc_manifest(data_dir, tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(SourceError, match="--reuse-original-boxes needs DFDC metadata.json sources") as caught:
        _spec([data_dir / HAMILTON], dest)
    assert HAMILTON in str(caught.value)
    assert not dest.exists()  # refused before any work


def test_the_command_refuses_the_option_without_a_dfdc_manifest(data_dir, tmp_path, capsys):
    from raydetect.commands.detect import main

    dest = tmp_path / "out"
    assert main([str(data_dir / HAMILTON), "--output", str(dest), "--reuse-original-boxes"]) == 2
    error = capsys.readouterr().err
    assert "--reuse-original-boxes needs DFDC metadata.json sources" in error and HAMILTON in error
    assert not dest.exists()  # before Ray or DEST is touched


def test_plan_and_mismatch_rules():
    real, fake = VideoInput("d/r.mp4", "REAL"), VideoInput("d/f.mp4", "FAKE", "d/r.mp4")
    chained = VideoInput("d/g.mp4", "FAKE", "d/f.mp4")
    orphan = VideoInput("d/o.mp4", "FAKE", "d/gone.mp4")
    plan = plan_reuse([fake, chained, orphan], [real, fake, chained, orphan])  # the real one is done already
    assert plan.fakes == [fake] and plan.detect == [chained, orphan]
    assert plan.notes == {"d/g.mp4": "original d/f.mp4 is itself a fake (of d/r.mp4): detected",
                          "d/o.mp4": "original d/gone.mp4 is not in the manifest: detected"}
    row = {"video": "d/r.mp4", "status": "ok", "frame_count": 300, "fps": 30.0, "width": 1920, "height": 1080}
    probe = {k: row[k] for k in ("frame_count", "fps", "width", "height")}
    assert mismatch(probe, row) is None
    assert mismatch({**probe, "frame_count": 298}, row) == "original d/r.mp4 has 300 frames, this video 298: detected"
    assert mismatch({**probe, "fps": 25.0}, row) == "original d/r.mp4 runs at 30 fps, this video at 25: detected"
    assert mismatch(probe, {**row, "status": "error"}) == "original d/r.mp4 failed: detected"


def test_preview_pairs_each_fake_face_with_its_originals(dfdc, tmp_path, capsys):
    """`raydetect preview DEST` on the real output: a pair sheet whose rows are fake faces, each next to
    the original's crop of the same frame and face."""
    from raydetect.cli import main
    from raydetect.commands.preview_sheets import read_pair_rows, reused_fakes

    folder, dest, _ = dfdc
    output = tmp_path / "sheet.png"
    assert main(["preview", str(dest), "-o", str(output), "--tile-size", "40", "--max-pairs", "6"]) == 0
    printed = capsys.readouterr().out
    assert "real/fake sheet of 6 pairs" in printed and (tmp_path / "sheet-pairs.png").is_file()
    faces = _read(dest, "faces").set_index(["video", "frame_index", "face_index"])["crop"]
    # Only fakes whose faces are their original's: a detected fake's faces pair with nothing.
    reused = reused_fakes(Path(dest))
    assert reused == {_video(folder, "fake_00_00.avi"), _video(folder, "fake_00_01.avi")}
    assert {pair["video"] for pair in read_pair_rows(Path(dest) / "faces", 1000)} > reused
    assert {pair["video"] for pair in read_pair_rows(Path(dest) / "faces", 1000, reused)} == reused
    pairs = read_pair_rows(Path(dest) / "faces", 6, reused)
    assert len(pairs) == 6
    for pair in pairs:
        assert pair["original"] == _video(folder, "real_00.avi")
        assert pair["original_crop"] == faces[(pair["original"], pair["frame_index"], pair["face_index"])]
        assert pair["crop"] == faces[(pair["video"], pair["frame_index"], pair["face_index"])]


def test_dry_run_counts_the_fakes_that_reuse_as_not_detected(dfdc, tmp_path):
    from raydetect.offline.job import dry_run

    folder, _, _ = dfdc
    metadata = folder / "metadata.json"
    with_reuse = dry_run(_spec([metadata], tmp_path / "a"), calibrate=False)
    without = dry_run(_spec([metadata], tmp_path / "b", reuse=False), calibrate=False)
    # Six inputs, five probed (one file is missing), 8 sampled frames each (every 3rd of 24).
    assert (without.videos, without.probed, without.sampled, without.reused) == (6, 5, 40, 0)
    # The two altered fakes take the original's faces; the orphan and the 3/4-size fake are detected.
    assert (with_reuse.probed, with_reuse.reused, with_reuse.reused_sampled, with_reuse.sampled) == (5, 2, 16, 24)
    assert with_reuse.output_bytes == without.output_bytes
    assert "2 DFDC fakes take their original's faces" in with_reuse.text()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
