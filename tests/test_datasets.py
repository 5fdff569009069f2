"""raydetect.datasets on the output of a real detect job (local Ray, a vendored video)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from raydetect.core.clips import ClipOptions, track_clips
from raydetect.core.crops import CropOptions, decode_crop
from raydetect.datasets import DatasetError, FaceCrops
from raydetect.offline.chunk_detection import DetectionOptions
from raydetect.offline.job import JobSpec, Resources, run_job
from raydetect.offline.shards import ShardOptions
from raydetect.offline.video import Sampling

HAMILTON = "hamilton_45f_640x360.avi"
CROWD = "street_crowd_24f_640x360.mp4"


@pytest.fixture(scope="module")
def job_output(ray_session, data_dir, tmp_path_factory):
    """A detect job with 96 x 112 PNG crops and clips of 3 faces at 5 fps over two vendored clips: several
    face files."""
    dest = tmp_path_factory.mktemp("crops-job")
    manifest = dest.parent / f"{dest.name}-manifest.csv"
    manifest.write_text(f"path,label\n{data_dir / HAMILTON},REAL\n{data_dir / CROWD},FAKE\n")
    spec = JobSpec(
        sources=[str(manifest)], output=str(dest),
        detection=DetectionOptions(min_face_size=30, max_side=320, crops=True,
                                   crop=CropOptions(width=96, height=112, format="png")),
        shards=ShardOptions(shard_frames=16, sampling=Sampling(every=3)),
        resources=Resources(actors=1, cpus_per_actor=1, torch_threads=1),
        clips=ClipOptions(frames=3, fps=5),
    )
    summary = run_job(spec)
    assert summary.exit_status == 0, summary.text()
    faces = pd.read_parquet(dest / "faces")
    assert len(list((dest / "faces").glob("*.parquet"))) == 2 and len(faces) >= 20  # one file per video
    return dest, faces


def _key(item):
    return item["video"], int(item["frame_index"]), int(item["face_index"])


def test_items_are_the_decoded_crops_with_their_rows(job_output):
    dest, faces = job_output
    dataset = FaceCrops(str(dest))
    assert len(dataset) == len(faces)
    by_key = faces.set_index(["video", "frame_index", "face_index"])
    for index in (0, len(dataset) // 2, len(dataset) - 1, -1):
        item = dataset[index]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 112, 96)
        row = by_key.loc[_key(item)]
        np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), decode_crop(row["crop"]))
        assert item["label"] == row["label"] and item["track_id"] == row["track_id"]
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_a_dataloader_with_two_workers_yields_every_face_once(job_output):
    dest, faces = job_output
    dataset = FaceCrops(f"file://{dest}", storage_options={})
    # The workers receive the index, not the rows: far smaller than the crops it points at.
    assert len(pickle.dumps(dataset)) < faces["crop"].map(len).sum() / 10
    loader = DataLoader(dataset, batch_size=8, num_workers=2, sampler=dataset.grouped_shuffle(seed=0))
    seen = []
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 112, 96)
        seen.extend(zip(batch["video"], batch["frame_index"].tolist(), batch["face_index"].tolist()))
    assert sorted(seen) == sorted(zip(faces["video"], faces["frame_index"], faces["face_index"]))


def test_crops_from_s3_through_two_workers(job_output, s3_server):
    import fsspec

    dest, faces = job_output
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("datasets-bucket")
    fs.put(str(dest / "faces"), "datasets-bucket/out/faces", recursive=True)
    dataset = FaceCrops("s3://datasets-bucket/out/", storage_options=s3_server)
    assert len(dataset) == len(faces)
    dataset[0]  # the parent opens the bucket first; forked workers must open their own
    seen = []
    for batch in DataLoader(dataset, batch_size=16, num_workers=2, sampler=dataset.grouped_shuffle(seed=2)):
        seen.extend(zip(batch["video"], batch["frame_index"].tolist(), batch["face_index"].tolist()))
    assert sorted(seen) == sorted(zip(faces["video"], faces["frame_index"], faces["face_index"]))


def test_grouped_shuffle_is_a_permutation_that_keeps_row_groups_together(job_output):
    dataset = FaceCrops(str(job_output[0]))
    order = dataset.grouped_shuffle(seed=1)
    assert sorted(order) == list(range(len(dataset))) and order != list(range(len(dataset)))
    groups = [dataset.rows.row_group_of(i) for i in order]
    assert sum(a != b for a, b in zip(groups, groups[1:])) == len(set(groups)) - 1


def test_labels_map_to_class_numbers(job_output):
    dest, faces = job_output
    dataset = FaceCrops(str(dest), labels={"REAL": 0, "FAKE": 1})
    labels = [dataset[i]["label"] for i in range(len(dataset))]
    assert sorted(labels) == sorted(faces["label"].map({"REAL": 0, "FAKE": 1}))
    assert FaceCrops(str(dest))[0]["label"] in ("REAL", "FAKE")
    with pytest.raises(KeyError, match="not in the label map"):
        [FaceCrops(str(dest), labels={"FAKE": 1})[i] for i in range(len(dataset))]


def test_outputs_without_crops_or_faces_are_refused_clearly(tmp_path):
    with pytest.raises(DatasetError, match="is not a folder"):
        FaceCrops(str(tmp_path / "nothing"))
    (tmp_path / "faces").mkdir()
    with pytest.raises(DatasetError, match="no Parquet files"):
        FaceCrops(str(tmp_path))
    from raydetect.offline.output import JobOutput

    JobOutput(str(tmp_path)).ensure_readable_faces(crops=False)
    with pytest.raises(DatasetError, match="no column.*crop"):
        FaceCrops(str(tmp_path))


# --------------------------------------------------------------------------- clips
@pytest.fixture(scope="module")
def clips_output(job_output):
    """The job's own DEST/clips, checked against the clip rule applied to its faces here."""
    dest, faces = job_output
    clips = pd.read_parquet(dest / "clips")
    expected = []
    for (video, track), group in faces.sort_values("frame_index").groupby(["video", "track_id"]):
        found = track_clips(group["frame_index"].to_numpy(), group["timestamp_s"].to_numpy(),
                            ClipOptions(frames=3, fps=5))
        expected += [(video, group["label"].iloc[0], track, i, clip.tolist()) for i, clip in enumerate(found)]
    written = [(r.video, r.label, r.track_id, r.clip_index, list(r.frame_indices)) for r in clips.itertuples()]
    assert sorted(written) == sorted(expected) and len(written) >= 2
    videos = pd.read_parquet(dest / "videos").set_index("video")
    assert clips.groupby("video").size().reindex(videos.index, fill_value=0).tolist() == videos["clips"].tolist()
    return dest, faces, clips


def test_clip_items_stack_the_crops_of_their_track(clips_output):
    from raydetect.datasets import FaceClips

    dest, faces, clips = clips_output
    dataset = FaceClips(str(dest), labels={"REAL": 0, "FAKE": 1})
    assert len(dataset) == len(clips)
    crops = faces.set_index(["video", "track_id", "frame_index"])["crop"]
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["images"].shape == (3, 3, 112, 96) and item["images"].dtype == torch.uint8
        assert item["label"] == {"REAL": 0, "FAKE": 1}[clips["label"][index]]
        for image, frame in zip(item["images"], item["frame_indices"].tolist()):
            expected = decode_crop(crops[(item["video"], item["track_id"], frame)])
            np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected)


def test_clips_through_a_dataloader_with_two_workers(clips_output):
    from raydetect.datasets import FaceClips

    dest, _, clips = clips_output
    loader = DataLoader(FaceClips(str(dest)), batch_size=2, num_workers=2, shuffle=True)
    seen = []
    for batch in loader:
        assert batch["images"].shape[1:] == (3, 3, 112, 96)
        seen += list(zip(batch["video"], batch["track_id"].tolist(), batch["clip_index"].tolist()))
    assert sorted(seen) == sorted(zip(clips["video"], clips["track_id"], clips["clip_index"]))


def test_clips_need_tracks_and_their_faces(clips_output, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from raydetect.datasets import FaceClips
    from raydetect.offline.output import CLIP_SCHEMA

    dest, _, _ = clips_output
    (tmp_path / "faces").mkdir()
    for path in (dest / "faces").glob("*.parquet"):  # faces without track ids
        pq.write_table(pq.read_table(path).drop_columns(["track_id"]), tmp_path / "faces" / path.name)
    with pytest.raises(DatasetError, match="is not a folder"):
        FaceClips(str(tmp_path))  # no clips table: a job run without --clip-frames
    shutil.copytree(dest / "clips", tmp_path / "clips")
    with pytest.raises(DatasetError, match="no column.*track_id"):
        FaceClips(str(tmp_path))
    no_crops = tmp_path / "no-crops"
    (no_crops / "faces").mkdir(parents=True)
    for path in (dest / "faces").glob("*.parquet"):  # clips of a job run without --crops
        pq.write_table(pq.read_table(path).drop_columns(["crop", "crop_matrix"]), no_crops / "faces" / path.name)
    shutil.copytree(dest / "clips", no_crops / "clips")
    with pytest.raises(DatasetError, match=r"no column\(s\) crop \(the job was run without --crops"):
        FaceClips(str(no_crops))

    broken = tmp_path / "broken"
    shutil.copytree(dest / "faces", broken / "faces")
    (broken / "clips").mkdir()
    row = pq.read_table(dest / "clips").slice(0, 1).to_pylist()[0]
    row["frame_indices"] = row["frame_indices"][:-1] + [99_999]
    pq.write_table(pa.Table.from_pylist([row], schema=CLIP_SCHEMA), broken / "clips" / "part-0.parquet")
    with pytest.raises(DatasetError, match=r"no face row for frame\(s\) \[99999\]"):
        FaceClips(str(broken))[0]
