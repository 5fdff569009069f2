"""The offline job's pieces without Ray: shard planning, chunk decoding, the detection stage, DEST."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydetect.core.crops import CropOptions
from raydetect.offline.chunk_detection import ChunkDetector, DetectionOptions
from raydetect.offline.output import FACE_SCHEMA, JobOutput, OutputError, staged_file_names, video_key
from raydetect.offline.shards import (
    ShardOptions, chunk_frames, decode_chunks, detect_flags, frame_indices, plan_shards,
)
from raydetect.offline.video import FrameRange, Sampling, fit_max_side, probe

CROWD = "street_crowd_24f_640x360.mp4"
HAMILTON = "hamilton_45f_640x360.avi"
FAST = dict(min_face_size=20, torch_threads=1)  # the crowd clip at 320 px: many faces, fast


def _item(path, label=None):
    return {"video": str(path), "label": label or "", "key": video_key(str(path))}


def _records(path, options):
    return [c for shard in plan_shards(_item(path), options) for c in decode_chunks(shard, options)]


def _staged_faces(dest) -> pd.DataFrame:
    """Every face the detection stage staged under ``dest``, in frame order."""
    files = sorted(str(p) for p in (dest / "_staging").glob("*/*-faces.parquet"))
    return pq.read_table(files).to_pandas().sort_values(["frame_index", "face_index"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def detector_stage(tmp_path_factory):
    """One detection stage for the module (loading the weights once)."""
    dest = tmp_path_factory.mktemp("dest")
    return ChunkDetector(DetectionOptions(**FAST), str(dest))


def test_shards_cover_the_video_with_an_open_ended_last_one(data_dir):
    shards = plan_shards(_item(data_dir / HAMILTON), ShardOptions(shard_frames=20))
    assert [(s["start"], s["stop"]) for s in shards] == [(0, 20), (20, 40), (40, -1)]
    assert {s["num_shards"] for s in shards} == {3} and [s["shard_number"] for s in shards] == [0, 1, 2]


def test_k_frames_per_video_plans_only_the_shards_that_hold_them(data_dir):
    shards = plan_shards(_item(data_dir / HAMILTON), ShardOptions(shard_frames=10, sampling=Sampling(count=2)))
    # Two frames of 45, evenly spaced: 11 and 33, in shards [10, 20) and [30, 40).
    assert [(s["start"], s["stop"]) for s in shards] == [(10, 20), (30, -1)]
    records = [c for s in shards for c in decode_chunks(s, ShardOptions(shard_frames=10, sampling=Sampling(count=2)))]
    assert [list(frame_indices(r)) for r in records] == [[11], [33]]


def test_a_bad_input_plans_one_error_shard(tmp_path, data_dir):
    (tmp_path / "x.mp4").write_text("no video here")
    (shard,) = plan_shards(_item(tmp_path / "x.mp4"), ShardOptions())
    assert "not a readable video" in shard["error"] and shard["num_shards"] == 1
    assert shard.keys() == plan_shards(_item(data_dir / CROWD), ShardOptions())[0].keys()
    (passed_on,) = list(decode_chunks(shard, ShardOptions()))
    assert passed_on["error"] == shard["error"] and passed_on["last_chunk"]


def test_chunks_respect_the_byte_limit_and_account_for_every_frame(data_dir):
    frame_bytes = 360 * 640 * 3
    options = ShardOptions(shard_frames=10, sampling=Sampling(every=2), chunk_bytes=2 * frame_bytes)
    records = _records(data_dir / CROWD, options)
    assert all(len(frame_indices(r)) <= 2 for r in records)
    assert [i for r in records for i in frame_indices(r)] == list(range(0, 24, 2))
    assert sum(r["frames_read"] for r in records) == 24
    assert sum(r["last_chunk"] for r in records) == 3  # one per shard
    first = records[0]
    assert chunk_frames(first).shape == (2, 360, 640, 3)
    assert chunk_frames({**first, "pixels": pa.py_buffer(first["pixels"])}).tobytes() == first["pixels"]


def test_records_hold_no_none_so_every_block_has_one_schema(data_dir, tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    good = _records(data_dir / CROWD, ShardOptions(shard_frames=12, sampling=Sampling(every=6)))
    bad = _records(tmp_path / "bad.mp4", ShardOptions())
    schemas = {pa.Table.from_pylist([r]).schema for r in good + bad}
    assert len(schemas) == 1


def test_decode_downscales_before_transfer_unless_crops_need_full_frames(data_dir):
    small = _records(data_dir / CROWD, ShardOptions(sampling=Sampling(count=1), max_side=320))[0]
    assert chunk_frames(small).shape[1:] == (180, 320, 3) and (small["scale_x"], small["scale_y"]) == (2.0, 2.0)
    full = _records(data_dir / CROWD, ShardOptions(sampling=Sampling(count=1), max_side=320, keep_full_frames=True))[0]
    assert chunk_frames(full).shape[1:] == (360, 640, 3) and full["scale_x"] == 1.0
    assert (small["width"], small["height"]) == (640, 360)


def test_a_truncated_video_yields_an_error_after_its_good_chunks(data_dir, tmp_path):
    data = (data_dir / HAMILTON).read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    records = _records(tmp_path / "cut.avi", ShardOptions(shard_frames=100))
    assert "truncated" in records[-1]["error"] and records[-1]["last_chunk"]
    assert all(not r["error"] for r in records[:-1])


def test_detection_maps_downscaled_boxes_back_to_original_pixels(data_dir, detector_stage, tmp_path):
    path = data_dir / CROWD
    (record,) = _records(path, ShardOptions(sampling=Sampling(count=1), max_side=320))
    result = detector_stage.process(record)
    assert result["faces"] > 0 and result["frames_detected"] == 1 and not result["error"]
    table = pq.read_table(detector_stage.output.path("_staging", record["key"], staged_file_names(0, 0)[0]))
    info = probe(str(path))
    (frame,) = [f for f in FrameRange(str(path), 12, 13, Sampling().selector(info), info.fps)]
    expected = detector_stage.detector.detect([fit_max_side(frame.image, 320)[0]])[0]
    np.testing.assert_allclose(table.column("x1").to_numpy(), expected.boxes[:, 0] * 2, rtol=1e-6)
    np.testing.assert_allclose(table.column("y2").to_numpy(), expected.boxes[:, 3] * 2, rtol=1e-6)
    assert table.column("frame_index").to_pylist() == [12] * len(expected)
    assert table.column("timestamp_s").to_pylist() == [12 / 25.0] * len(expected)
    assert set(table.column("width").to_pylist()) == {640} and set(table.column("height").to_pylist()) == {360}
    landmarks = np.array(table.column("landmarks").to_pylist())
    np.testing.assert_allclose(landmarks, expected.landmarks.reshape(-1, 10) * 2, rtol=1e-6)


def test_results_are_identical_whatever_the_batching(data_dir, tmp_path):
    """One frame per forward pass or the whole chunk at once: the same faces, bit for bit."""
    records = _records(data_dir / CROWD, ShardOptions(sampling=Sampling(every=4), max_side=320))
    tables = {}
    for name, budget in {"one-per-pass": {"max_images": 1}, "all-at-once": {"max_images": 64}}.items():
        stage = ChunkDetector(DetectionOptions(**FAST, budget=budget), str(tmp_path / name))
        for record in records:
            stage.process(record)
        assert stage.detector.controller.records[-1].images == (1 if name == "one-per-pass" else 6)
        tables[name] = _staged_faces(tmp_path / name)
    pd.testing.assert_frame_equal(tables["one-per-pass"], tables["all-at-once"])
    assert len(tables["all-at-once"]) > 10


def test_crops_are_jpegs_of_the_requested_size(data_dir, tmp_path):
    import cv2

    options = ShardOptions(sampling=Sampling(count=1), max_side=320, keep_full_frames=True)
    (record,) = _records(data_dir / CROWD, options)
    crop = CropOptions(width=64, height=64)
    stage = ChunkDetector(DetectionOptions(**FAST, max_side=320, crops=True, crop=crop), str(tmp_path))
    assert stage.process(record)["faces"] > 0
    table = _staged_faces(tmp_path)
    for crop in table["crop"]:
        assert cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)
    assert table["x2"].max() > 320  # boxes in pixels of the 640 x 360 original


def test_a_chunk_without_faces_stages_only_its_frames(detector_stage, tmp_path):
    record = {
        "video": "black.mp4", "label": "", "key": "k", "error": "", "shard_index": 0, "num_shards": 1,
        "shard_number": 0, "chunk_index": 0, "last_chunk": True, "frames_read": 2, "frame_count": 2, "fps": 25.0,
        "width": 64, "height": 48, "frame_height": 48, "frame_width": 64, "scale_x": 1.0, "scale_y": 1.0,
        "frame_indices": np.arange(2, dtype=np.int64).tobytes(), "detect": bytes([1, 1]), "lookahead": False,
        "pixels": bytes(2 * 48 * 64 * 3), "seconds": 0.0, "io_retries": 0,
    }
    stage = ChunkDetector(DetectionOptions(**FAST), str(tmp_path))
    result = stage.process(record)
    assert (result["frames_detected"], result["faces"], result["error"]) == (2, 0, "")
    assert sorted(p.name for p in (tmp_path / "_staging" / "k").iterdir()) == [staged_file_names(0, 0)[1]]
    frames = pd.read_parquet(tmp_path / "_staging" / "k")
    assert list(frames["frame_index"]) == [0, 1] and len(frames["signature"][0]) > 100


# --------------------------------------------------------------------------- DEST
def test_write_table_leaves_no_temporary_and_readers_skip_dot_files(tmp_path):
    output = JobOutput(str(tmp_path))
    output.write_table(FACE_SCHEMA.empty_table(), "faces", "a.parquet")
    (tmp_path / "faces" / ".tmp-123-b.parquet").write_bytes(b"half a file")
    assert sorted(p.name for p in (tmp_path / "faces").iterdir()) == [".tmp-123-b.parquet", "a.parquet"]
    assert len(pd.read_parquet(tmp_path / "faces")) == 0  # the partial file is not read
    output.remove_temporaries()
    assert [p.name for p in (tmp_path / "faces").iterdir()] == ["a.parquet"]


def test_options_are_recorded_and_a_mismatch_is_refused(tmp_path):
    output = JobOutput(str(tmp_path))
    output.check_options({"min_face_size": 20}, overwrite=False)
    output.check_options({"min_face_size": 20}, overwrite=False)
    with pytest.raises(OutputError, match="min_face_size"):
        output.check_options({"min_face_size": 40}, overwrite=False)
    output.write_table(FACE_SCHEMA.empty_table(), "faces", "a.parquet")
    output.check_options({"min_face_size": 40}, overwrite=True)
    assert not (tmp_path / "faces").exists()


def test_finished_videos_and_forgetting_them(tmp_path):
    from raydetect.offline.output import VIDEO_SCHEMA

    output = JobOutput(str(tmp_path))
    rows = [{"video": v, "status": s} for v, s in (("a", "ok"), ("b", "error"), ("c", "ok"))]
    output.write_table(pa.Table.from_pylist(rows, schema=VIDEO_SCHEMA), "videos", "part-1.parquet")
    assert output.finished_videos() == {"a": "ok", "b": "error", "c": "ok"}
    output.forget_videos({"b"})
    assert output.finished_videos() == {"a": "ok", "c": "ok"}


def test_remove_faces_of_keys(tmp_path):
    from raydetect.offline.output import CLIP_SCHEMA, FRAME_SCHEMA, track_schema

    output = JobOutput(str(tmp_path))
    for key in ("aaa", "bbb"):
        output.write_table(FACE_SCHEMA.empty_table(), "faces", f"{key}.parquet")
        output.write_table(track_schema(False).empty_table(), "tracks", f"{key}.parquet")
        output.write_table(CLIP_SCHEMA.empty_table(), "clips", f"{key}.parquet")
        output.write_staged_chunk(FACE_SCHEMA.empty_table(), FRAME_SCHEMA.empty_table(), key, 0, 0)
    assert output.remove_faces_of({"aaa"}) == 3
    for folder in ("faces", "tracks", "clips"):
        assert [p.name for p in (tmp_path / folder).iterdir()] == ["bbb.parquet"]
    assert [p.name for p in (tmp_path / "_staging").iterdir()] == ["bbb"]


# --------------------------------------------------------------------------- options and resources
class _Cluster:
    """Stands in for the ``ray`` module in :func:`raydetect.offline.job._resources`, which only reads the
    cluster's resource totals: a real cluster with GPUs cannot be started on this machine."""

    def __init__(self, cpus_per_node: list[float], gpus: float = 0):
        self.cpus, self.gpus = cpus_per_node, gpus

    def cluster_resources(self) -> dict:
        return {"CPU": sum(self.cpus), **({"GPU": self.gpus} if self.gpus else {})}

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": {"CPU": cpus}} for cpus in self.cpus]


def test_default_resources_on_cpu_leave_a_cpu_for_decoding():
    from raydetect.offline.job import Resources, _resources

    # 2-core machine: one actor holding 1 CPU, its torch using both cores.
    assert _resources(Resources(), _Cluster([2])) == (1, 0.0, 1.0, 2, "cpu")
    # Four 16-CPU nodes: actors of 4 CPUs, three per node.
    actors, gpus, cpus, threads, device = _resources(Resources(), _Cluster([16] * 4))
    assert (actors, gpus, cpus, device) == (15, 0.0, 4.0, "cpu") and threads == 5
    with pytest.raises(ValueError, match="leaves no CPU"):
        _resources(Resources(cpus_per_actor=2), _Cluster([2]))


def test_default_resources_with_gpus():
    from raydetect.offline.job import Resources, _resources

    assert _resources(Resources(), _Cluster([8, 8], gpus=2)) == (2, 1.0, 1.0, None, "cuda")
    assert _resources(Resources(gpus_per_actor=0.5), _Cluster([8], gpus=1))[:2] == (2, 0.5)
    with pytest.raises(ValueError, match="cluster has 0 GPUs"):
        _resources(Resources(gpus_per_actor=1), _Cluster([8]))


def _parse(*argv):
    import argparse

    from raydetect.commands.detect import add_arguments, job_spec

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return job_spec(parser.parse_args(list(argv)))


def test_cli_options_reach_the_job():
    spec = _parse("videos/", "-o", "out", "--frames-per-video", "32", "--max-side", "1280", "--crops",
                  "--crop-size", "112", "--shard-frames", "150", "--chunk-mib", "8", "--budget-rnet-crops", "512",
                  "--gpus-per-actor", "0.5", "--storage-options", '{"anon": true}')
    assert spec.shards.sampling == Sampling(count=32) and spec.shards.shard_frames == 150
    assert spec.shards.chunk_bytes == 8 << 20 and spec.detection.max_side == 1280
    assert spec.detection.crops and (spec.detection.crop.width, spec.detection.crop.height) == (112, 112)
    assert spec.detection.budget["rnet_crops"] == 512 and spec.detection.budget["pnet_pixels"] == 64_000_000
    assert spec.resources.gpus_per_actor == 0.5 and spec.storage_options == {"anon": True}


def test_cli_compile_option_reaches_the_detection_options():
    spec = _parse("videos/", "-o", "out", "--compile")
    assert spec.detection.compile is True
    assert "compile" not in spec.detection.result_options()  # speed only: resuming a job may change it
    assert _parse("videos/", "-o", "out").detection.compile is False


def test_cli_precision_option_reaches_the_detection_options():
    assert _parse("videos/", "-o", "out").detection.precision == "auto"
    spec = _parse("videos/", "-o", "out", "--precision", "float32")
    assert spec.detection.precision == "float32"
    assert "precision" not in spec.detection.result_options()  # like the device: rounding, not which faces
    assert _parse("videos/", "-o", "out", "--precision", "float16", "--gpus-per-actor", "1").detection.precision == (
        "float16")
    with pytest.raises(ValueError, match="float16 needs GPUs"):
        _parse("videos/", "-o", "out", "--precision", "float16")


@pytest.mark.parametrize("argv", [
    ["--every", "2", "--fps", "5"], ["--every", "0"], ["--fps", "nan"], ["--crop-quality", "101"],
    ["--storage-options", "[1]"], ["--crop-margin", "-1"], ["--budget-images", "0"],
    ["--detect-every", "0"], ["--detect-every", "-2"], ["--track-max-gap", "-0.1"], ["--track-max-gap", "inf"],
    ["--min-track-faces", "0"], ["--min-track-faces", "1.5"],
])
def test_cli_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse("v.mp4", "-o", "out", *argv)
    assert exit_info.value.code == 2 and "error" in capsys.readouterr().err


def test_a_video_is_complete_when_every_chunk_of_every_shard_reported_once():
    from raydetect.offline.job import _VideoState
    from raydetect.offline.sources import VideoInput

    def record(shard, chunk, last, faces=1, error=""):
        return {"shard_number": shard, "num_shards": 2, "chunk_index": chunk, "last_chunk": last, "error": error,
                "frames_read": 3, "frames_detected": 1, "faces": faces, "seconds": 0.5, "frame_count": 6,
                "fps": 25.0, "width": 64, "height": 48, "io_retries": 2 if last else 0}

    state = _VideoState(VideoInput("v.mp4"))
    assert state.add(record(1, 1, True)) and not state.complete  # out of order: shard 1's last chunk first
    assert state.add(record(0, 0, True)) and not state.complete  # shard 1's chunk 0 still missing
    assert not state.add(record(0, 0, True))  # a chunk redone after an actor restart counts once
    assert state.add(record(1, 0, False)) and state.complete
    assert state.row()["faces"] == 3 and state.row()["frames_decoded"] == 9 and state.row()["status"] == "ok"
    assert state.row()["io_retries"] == 4  # each shard's last chunk carries its storage retries

    failed = _VideoState(VideoInput("w.mp4", "FAKE"))
    failed.add(record(0, 0, True))
    failed.add(record(1, 0, True, error="w.mp4: truncated or corrupt"))
    assert failed.complete and failed.row()["status"] == "error" and failed.row()["label"] == "FAKE"


def test_aligned_png_crops_of_a_chunk_are_the_batched_warp_of_its_frames(data_dir, tmp_path):
    from raydetect.core.crops import cut_crops, decode_crop

    shard_options = ShardOptions(sampling=Sampling(count=3), max_side=320, keep_full_frames=True)
    records = _records(data_dir / HAMILTON, shard_options)
    crop = CropOptions(width=96, height=112, align=True, format="png", margin=0.2)
    stage = ChunkDetector(DetectionOptions(**FAST, max_side=320, crops=True, crop=crop), str(tmp_path))
    assert sum(stage.process(record)["faces"] for record in records) >= 3
    table = _staged_faces(tmp_path).sort_values(["frame_index", "face_index"])
    frames = {int(i): f for r in records for i, f in zip(frame_indices(r), chunk_frames(r))}
    for row in table.itertuples():
        landmarks = np.asarray(row.landmarks, np.float32).reshape(1, 5, 2)
        box = np.array([[row.x1, row.y1, row.x2, row.y2]], np.float32)
        expected, to_crop = cut_crops(frames[row.frame_index][None], [0], box, landmarks, crop)
        assert row.crop[:4] == b"\x89PNG"
        # Lossless; within 1 of a warp of the frame alone (the chunk's frames are sampled as one
        # stacked image, whose float32 coordinates round differently).
        decoded = decode_crop(row.crop).astype(int)
        assert decoded.shape == (112, 96, 3) and np.abs(decoded - expected[0]).max() <= 1
        np.testing.assert_allclose(np.asarray(row.crop_matrix).reshape(2, 3), to_crop[0], rtol=1e-5, atol=1e-3)


def test_cli_crop_options_reach_the_job_and_bad_ones_are_refused(capsys):
    spec = _parse("videos/", "-o", "out", "--crops", "--crop-size", "224x192", "--align", "--crop-pad", "edge",
                  "--crop-format", "png")
    assert spec.detection.crop == CropOptions(width=224, height=192, align=True, pad="edge", format="png")
    assert _parse("videos/", "-o", "out", "--crops").detection.crop == CropOptions()
    with pytest.raises(ValueError, match="--align needs --crops"):
        _parse("videos/", "-o", "out", "--align")
    with pytest.raises(ValueError, match="aligned crops are rotated"):
        _parse("videos/", "-o", "out", "--crops", "--align", "--crop-pad", "resize")
    for flag, value, message in (
        ("--crop-size", "0x5", "at least 1x1"), ("--crop-size", "224by192", "WIDTHxHEIGHT"),
        ("--crop-pad", "mirror", "invalid choice"), ("--crop-format", "webp", "invalid choice"),
    ):
        with pytest.raises(SystemExit):
            _parse("videos/", "-o", "out", "--crops", flag, value)
        assert message in capsys.readouterr().err


def test_a_rerun_with_other_crop_options_is_refused(tmp_path):
    output = JobOutput(str(tmp_path))
    square = DetectionOptions(crops=True).result_options()
    output.check_options(square, overwrite=False)
    with pytest.raises(OutputError, match=r"other options \(crop_align\)"):
        output.check_options(DetectionOptions(crops=True, crop=CropOptions(align=True)).result_options(), False)
    with pytest.raises(OutputError, match=r"crop_height, crop_pad"):
        output.check_options(DetectionOptions(crops=True, crop=CropOptions(height=192, pad="edge")).result_options(),
                             False)
    output.check_options(square, overwrite=False)


# --------------------------------------------------------------------------- detect every K-th frame
@pytest.mark.parametrize("sampling, shard_frames, detected, frames_read", [
    (Sampling(), 7, list(range(0, 45, 3)), 45),
    (Sampling(every=2), 10, list(range(0, 45, 6)), 45),
    (Sampling(fps=10), 8, [0, 9, 18, 27, 36], 45),  # 29.97 fps: a sample every ~3 frames, every 3rd detected
    (Sampling(count=9), 10, [2, 17, 32], 41),  # samples 2, 7, ..., 42: decoding starts at 2 and ends at 42
])
def test_detect_every_chunks_end_on_detected_frames_and_own_each_frame_once(data_dir, sampling, shard_frames,
                                                                            detected, frames_read):
    frame_bytes = 360 * 640 * 3
    info = probe(str(data_dir / HAMILTON))
    sampled = [i for i in range(45) if sampling.selector(info).wants(i)]
    options = ShardOptions(shard_frames=shard_frames, sampling=sampling, chunk_bytes=2 * frame_bytes, detect_every=3)
    records = _records(data_dir / HAMILTON, options)
    assert all(not r["error"] for r in records)
    owned, flagged = [], []
    for r in records:
        indices, flags = frame_indices(r).tolist(), detect_flags(r).tolist()
        assert flags[0], "a chunk starts on a detected frame"
        if r["lookahead"]:
            assert flags[-1], "and its lookahead frame is detected too"
            indices, flags = indices[:-1], flags[:-1]
        owned += indices
        flagged += [i for i, f in zip(indices, flags) if f]
    assert owned == sampled and flagged == detected
    assert sum(r["frames_read"] for r in records) == frames_read
    # Only the video's very last chunk has no lookahead.
    assert [r["lookahead"] for r in records].count(False) == 1 and not records[-1]["lookahead"]


def test_detect_every_one_is_todays_chunking(data_dir):
    plain = _records(data_dir / CROWD, ShardOptions(shard_frames=10, sampling=Sampling(every=2), chunk_bytes=1))
    assert all(detect_flags(r).all() and not r["lookahead"] for r in plain)
    assert [frame_indices(r).tolist() for r in plain] == [[i] for i in range(0, 24, 2)]


# --------------------------------------------------------------------------- finalising (tracks), without Ray
def _stage(output, key, shard, chunk, frames, faces, crops=False):
    """Stage a hand-made chunk: ``frames`` its frame indices (25 fps, one plain grey picture each),
    ``faces`` rows of (frame, face_index, x1, score, interpolated, link) with 40-pixel boxes at (x1, 100)."""
    from raydetect.core.tracking import frame_signature
    from raydetect.offline.output import FRAME_SCHEMA, staged_face_schema

    signature = frame_signature(np.full((36, 64, 3), 128, np.uint8))
    output.write_staged_chunk(
        pa.Table.from_pylist([
            {"video": "v.mp4", "label": "REAL", "frame_index": f, "timestamp_s": f / 25.0, "face_index": i,
             "interpolated": interpolated, "x1": x, "y1": 100.0, "x2": x + 40.0, "y2": 140.0, "score": score,
             "landmarks": [0.0] * 10, "width": 640, "height": 360, **(link or {}),
             **({"crop": f"{f}-{i}".encode()} if crops else {})}
            for f, i, x, score, interpolated, link in faces
        ], schema=staged_face_schema(crops)),
        pa.Table.from_pylist([{"frame_index": f, "timestamp_s": f / 25.0, "signature": signature} for f in frames],
                             schema=FRAME_SCHEMA),
        key, shard, chunk,
    )


def _stage_two_chunks(output):
    """Two chunks of one video: a face tracked over frames 0-3 (frame 1 interpolated), two one-face tracks."""
    join = {"from_frame": 0, "from_face": 0, "to_frame": 2, "to_face": 0}
    stray = {"from_frame": 0, "from_face": 1, "to_frame": 2, "to_face": 1}  # its ends are not one track
    _stage(output, "k", 0, 0, [0, 1], [
        (0, 0, 100.0, 0.99, False, None), (0, 1, 400.0, 0.95, False, None),
        (1, -1, 101.0, 0.99, True, join), (1, -1, 450.0, 0.95, True, stray),
    ], crops=True)
    # The next chunk (another shard) continues the left face; the right one jumps far away.
    _stage(output, "k", 1, 0, [2, 3], [
        (2, 0, 102.0, 0.99, False, None), (2, 1, 560.0, 0.80, False, None), (3, 0, 103.0, 0.97, False, None),
    ], crops=True)


def test_finalising_links_across_chunks_and_keeps_interpolated_faces_only_where_tracks_join(tmp_path):
    from raydetect.core.tracking import TrackingOptions
    from raydetect.offline.finalise import finalise_video

    output = JobOutput(str(tmp_path))
    _stage_two_chunks(output)
    result = finalise_video(output, "k", "v.mp4", "REAL", TrackingOptions(), crops=True)
    faces = pd.read_parquet(tmp_path / "faces" / "k.parquet")
    assert (result.faces, result.interpolated, result.tracks, result.cuts) == (6, 1, 3, [])
    assert faces[["frame_index", "face_index", "track_id", "interpolated"]].values.tolist() == [
        [0, 0, 0, False], [0, 1, 1, False], [1, 0, 0, True], [2, 0, 0, False], [2, 1, 2, False], [3, 0, 0, False]]
    tracks = pd.read_parquet(tmp_path / "tracks" / "k.parquet").set_index("track_id")
    assert tracks.loc[0, ["first_frame", "last_frame", "faces", "interpolated_faces"]].tolist() == [0, 3, 4, 1]
    assert tracks.loc[0, "best_crop"] == b"0-0" and tracks.loc[2, "best_frame"] == 2
    assert tracks.loc[0, "score_min"] == pytest.approx(0.97) and tracks.loc[0, "box_side_median"] == 40.0

    # --min-track-faces 2 drops the two one-face tracks; ids stay those of the linker.
    again = finalise_video(output, "k", "v.mp4", "REAL", TrackingOptions(min_track_faces=2), crops=True)
    assert (again.faces, again.tracks) == (4, 1)
    assert set(pd.read_parquet(tmp_path / "faces" / "k.parquet")["track_id"]) == {0}
    assert not (tmp_path / "clips").exists()  # no clip options, no clips table


def test_finalising_writes_each_tracks_clips_with_its_interpolated_faces(tmp_path):
    from raydetect.core.clips import ClipOptions
    from raydetect.core.tracking import TrackingOptions
    from raydetect.offline.finalise import finalise_video
    from raydetect.offline.output import CLIP_SCHEMA

    output = JobOutput(str(tmp_path))
    _stage_two_chunks(output)

    def clips_of(options):
        result = finalise_video(output, "k", "v.mp4", "REAL", TrackingOptions(), crops=True, clips=options)
        table = pq.read_table(tmp_path / "clips" / "k.parquet")
        assert table.schema == CLIP_SCHEMA and result.clips == table.num_rows
        return [(r["track_id"], r["clip_index"], r["frame_indices"]) for r in table.to_pylist()]

    # Track 0 holds frames 0-3, frame 1 interpolated: it counts as a face of the track.
    assert clips_of(ClipOptions(frames=2)) == [(0, 0, [0, 1]), (0, 1, [2, 3])]
    assert clips_of(ClipOptions(frames=3, spacing="even")) == [(0, 0, [0, 2, 3])]
    assert clips_of(ClipOptions(frames=2, fps=12.5)) == [(0, 0, [0, 2])]  # 25 fps: every second face
    assert clips_of(ClipOptions(frames=1)) == [(0, 0, [0]), (0, 1, [1]), (0, 2, [2]), (0, 3, [3]), (1, 0, [0]),
                                               (2, 0, [2])]
    assert clips_of(ClipOptions(frames=5)) == []  # no track is long enough: an empty table, still written


def test_cli_tracking_options_reach_the_job_once_and_decide_the_results(tmp_path):
    from raydetect.core.tracking import TrackingOptions
    from raydetect.offline.job import result_options

    spec = _parse("videos/", "-o", "out", "--track-max-gap", "0.8", "--min-track-faces", "7", "--detect-every", "3",
                  "--max-side", "640", "--threads-per-actor", "2")
    assert spec.tracking == TrackingOptions(max_gap_s=0.8, min_track_faces=7) and spec.shards.detect_every == 3
    # Each option is given in one place; the job derives the copies its stages need.
    assert spec.detection.max_side == 640 and spec.shards.max_side is None
    assert spec.resources.torch_threads == 2 and spec.detection.torch_threads is None
    default = _parse("videos/", "-o", "out")
    assert default.tracking == TrackingOptions() and default.shards.detect_every == 1

    output = JobOutput(str(tmp_path))
    output.check_options(result_options(default), overwrite=False)
    with pytest.raises(OutputError, match=r"other options \(detect_every, max_side, tracking\)"):
        output.check_options(result_options(spec), overwrite=False)
    speed_only = _parse("videos/", "-o", "out", "--threads-per-actor", "1", "--shard-frames", "50")
    output.check_options(result_options(speed_only), overwrite=False)  # placement does not change results


@pytest.mark.parametrize("argv, message", [
    (["--detect-every", "0"], "--detect-every: must be at least 1, got 0"),
    (["--track-max-gap", "-0.5"], "--track-max-gap: must be zero or more, got -0.5"),
    (["--min-track-faces", "0"], "--min-track-faces: must be at least 1, got 0"),
])
def test_cli_refuses_bad_tracking_options_before_any_work(argv, message, capsys, tmp_path):
    from raydetect.commands.detect import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "v.mp4"), "-o", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_clip_options_reach_the_job_and_decide_the_results(tmp_path):
    from raydetect.core.clips import ClipOptions
    from raydetect.offline.job import result_options

    assert _parse("videos/", "-o", "out").clips is None
    spec = _parse("videos/", "-o", "out", "--clip-frames", "7", "--clip-fps", "15")
    assert spec.clips == ClipOptions(frames=7, fps=15.0)  # the spacing is ClipOptions' default
    even = _parse("videos/", "-o", "out", "--clip-frames", "7", "--clip-spacing", "even")
    assert even.clips == ClipOptions(frames=7, spacing="even")

    output = JobOutput(str(tmp_path))
    output.check_options(result_options(_parse("videos/", "-o", "out")), overwrite=False)
    with pytest.raises(OutputError, match=r"other options \(clips\)"):
        output.check_options(result_options(spec), overwrite=False)
    other = JobOutput(str(tmp_path / "clipped"))
    other.check_options(result_options(spec), overwrite=False)
    with pytest.raises(OutputError, match=r"other options \(clips\)"):
        other.check_options(result_options(even), overwrite=False)


@pytest.mark.parametrize("argv, message", [
    (["--clip-fps", "15"], "--clip-fps needs --clip-frames"),
    (["--clip-fps", "15", "--clip-spacing", "even"], "--clip-fps, --clip-spacing need --clip-frames"),
    (["--clip-frames", "0"], "clip frames must be a whole number >= 1, got 0"),
    (["--clip-frames", "-3"], "clip frames must be a whole number >= 1, got -3"),
    (["--clip-frames", "4", "--clip-fps", "0"], "clip fps must be a positive number, got 0.0"),
    (["--clip-frames", "4", "--clip-fps", "-1"], "clip fps must be a positive number, got -1.0"),
])
def test_cli_refuses_bad_clip_options_before_any_work(argv, message, capsys, tmp_path):
    from raydetect.commands.detect import main

    assert main([str(tmp_path / "v.mp4"), "-o", str(tmp_path / "out"), *argv]) == 2
    assert f"raydetect detect: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--clip-frames", "2.5"], "expected a whole number, got '2.5'"),
    (["--clip-frames", "4", "--clip-fps", "nan"], "expected a finite number"),
    (["--clip-frames", "4", "--clip-spacing", "random"], "invalid choice: 'random'"),
])
def test_cli_refuses_malformed_clip_options(argv, message, capsys, tmp_path):
    from raydetect.commands.detect import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "v.mp4"), "-o", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
