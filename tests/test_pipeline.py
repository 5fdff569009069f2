"""The offline job end to end on the session's local Ray instance, on real video files.

Every run uses the same detection options, so each can be compared with one unsharded reference
run: sharding, a killed actor, a killed finalising step and S3 storage must not change a single
face, track or clip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from raydetect.core.clips import ClipOptions, track_clips
from raydetect.core.crops import CropOptions
from raydetect.offline.chunk_detection import DetectionOptions
from raydetect.offline.job import JobSpec, Resources, run_job
from raydetect.offline.shards import ShardOptions
from raydetect.offline.video import Sampling

CROWD = "street_crowd_24f_640x360.mp4"
HAMILTON = "hamilton_45f_640x360.avi"
DETECTION = DetectionOptions(min_face_size=30, max_side=320)
SAMPLING = Sampling(every=3)  # crowd: 8 frames, hamilton: 15 frames
# One CPU per actor: the session's Ray has 4 logical CPUs on 2 cores, so decoding tasks still find room beside it.
RESOURCES = Resources(actors=1, cpus_per_actor=1, torch_threads=1)
FACE_ORDER = ["video", "frame_index", "face_index"]
CLIPS = ClipOptions(frames=2)  # short: the vendored clips' tracks hold a few sampled faces


def _spec(sources, output, shard_frames=1000, chunk_bytes=128 << 20, resources=RESOURCES, detection=DETECTION,
          sampling=SAMPLING, detect_every=1, clips=CLIPS, **kwargs):
    return JobSpec(
        sources=[str(s) for s in sources], output=str(output), detection=detection,
        shards=ShardOptions(shard_frames=shard_frames, sampling=sampling, chunk_bytes=chunk_bytes,
                            detect_every=detect_every),
        resources=resources, clips=clips, **kwargs,
    )


def _faces(dest, storage_options=None) -> pd.DataFrame:
    fs, path = fsspec.core.url_to_fs(f"{dest}/faces", **(storage_options or {}))
    table = pq.read_table(path, filesystem=fs)
    return table.to_pandas().sort_values(FACE_ORDER).reset_index(drop=True)


def _clips(dest) -> pd.DataFrame:
    table = pq.read_table(dest / "clips").to_pandas()
    return table.sort_values(["video", "track_id", "clip_index"]).reset_index(drop=True)


def _tracks(dest, storage_options=None) -> pd.DataFrame:
    fs, path = fsspec.core.url_to_fs(f"{dest}/tracks", **(storage_options or {}))
    return pq.read_table(path, filesystem=fs).to_pandas().sort_values(["video", "track_id"]).reset_index(drop=True)


def _videos(dest, storage_options=None) -> pd.DataFrame:
    fs, path = fsspec.core.url_to_fs(f"{dest}/videos", **(storage_options or {}))
    return pq.read_table(path, filesystem=fs).to_pandas().sort_values("video").reset_index(drop=True)



@pytest.fixture(scope="module")
def reference(ray_session, data_dir, tmp_path_factory):
    """One shard per video, one chunk per shard: the run every other run must reproduce."""
    dest = tmp_path_factory.mktemp("reference")
    summary = run_job(_spec([data_dir / CROWD, data_dir / HAMILTON], dest))
    assert summary.exit_status == 0, summary.text()
    return dest, summary


def test_reference_run_outputs(reference, data_dir):
    dest, summary = reference
    assert (summary.ok, summary.failed, summary.frames_detected) == (2, 0, 8 + 15)
    faces, videos = _faces(dest), _videos(dest)
    assert summary.faces == len(faces) > 10
    assert list(videos["status"]) == ["ok", "ok"] and videos["error"].isna().all()
    assert list(videos["frames_decoded"]) == [45, 24] and list(videos["frames_detected"]) == [15, 8]
    assert videos.set_index("video")["faces"].to_dict() == faces.groupby("video").size().to_dict()
    assert set(faces["frame_index"]) <= set(range(0, 45, 3))
    np.testing.assert_allclose(faces["timestamp_s"], faces["frame_index"] / faces["video"].map(
        {str(data_dir / CROWD): 25.0, str(data_dir / HAMILTON): 29.97}))
    # Boxes are in pixels of the 640 x 360 originals although detection ran at 320 x 180.
    assert faces["x2"].max() > 320
    assert ((faces["x1"] + faces["x2"]) / 2).between(0, 640).all()
    assert ((faces["y1"] + faces["y2"]) / 2).between(0, 360).all()
    assert not any(name.startswith(".") for name in os.listdir(dest / "faces"))
    # Tracks: every face has one, ids count from 0 in each video, DEST/tracks agrees with the faces.
    tracks = _tracks(dest)
    assert faces["track_id"].notna().all() and not faces["interpolated"].any()
    for video, group in faces.groupby("video"):
        assert sorted(group["track_id"].unique()) == list(range(group["track_id"].nunique()))
    counted = faces.groupby(["video", "track_id"]).size().reset_index(name="faces")
    pd.testing.assert_frame_equal(tracks[["video", "track_id", "faces"]], counted, check_dtype=False)
    assert (tracks["first_frame"] <= tracks["last_frame"]).all() and (tracks["score_min"] <= tracks["score_mean"]).all()
    assert videos.set_index("video")["tracks"].to_dict() == tracks.groupby("video").size().to_dict()
    assert 21 in list(videos.set_index("video").loc[str(data_dir / HAMILTON), "cuts"])  # its cut at 20, sampled 21
    assert len(tracks) < len(faces) / 2  # people are followed, not one track per face
    # Clips: the rule over each track's faces; the videos rows count them.
    clips, expected = _clips(dest), []
    for (video, track), group in faces.groupby(["video", "track_id"]):
        found = track_clips(group["frame_index"].to_numpy(), group["timestamp_s"].to_numpy(), CLIPS)
        expected += [(video, track, i, c.tolist()) for i, c in enumerate(found)]
    assert [(r.video, r.track_id, r.clip_index, list(r.frame_indices)) for r in clips.itertuples()] == expected
    assert len(clips) > 2 and videos["clips"].sum() == len(clips) == summary.clips
    # One faces file and one tracks file per video; nothing staged is left.
    assert len(os.listdir(dest / "faces")) == len(os.listdir(dest / "tracks")) == 2
    assert not (dest / "_staging").exists()


def test_sharded_run_equals_unsharded_run(reference, data_dir, tmp_path):
    """Shards of 4 frames, one frame per chunk, two actors: the same frames, timestamps and faces.
    Decode tasks ask for as many CPUs as the actors here, the plan Ray Data would fuse if allowed."""
    dest = tmp_path / "sharded"
    spec = _spec([data_dir / CROWD, data_dir / HAMILTON], dest, shard_frames=4, chunk_bytes=1,
                 resources=Resources(actors=2, cpus_per_actor=1, decode_cpus=1, torch_threads=1))
    summary = run_job(spec)
    assert summary.exit_status == 0, summary.text()
    pd.testing.assert_frame_equal(_faces(dest), _faces(reference[0]))
    pd.testing.assert_frame_equal(_tracks(dest), _tracks(reference[0]))
    pd.testing.assert_frame_equal(_clips(dest), _clips(reference[0]))
    videos, expected = _videos(dest), _videos(reference[0])
    assert list(videos["shards"]) == [12, 6]
    columns = ["video", "status", "frames_decoded", "frames_detected", "faces", "frame_count", "width", "height",
               "tracks", "cuts", "clips"]
    pd.testing.assert_frame_equal(videos[columns], expected[columns])


def test_detect_every_k_sharded_equals_unsharded_with_crops_from_the_real_frames(ray_session, data_dir, tmp_path):
    """--detect-every 3 on every frame of the clip, with crops: shards of 10 frames and the smallest
    chunks on two actors give the faces, crops and tracks of the whole video staged as one chunk and
    finalised in this process."""
    from dataclasses import replace

    from raydetect.offline.chunk_detection import ChunkDetector
    from raydetect.offline.finalise import finalise_video
    from raydetect.offline.output import JobOutput, video_key
    from raydetect.offline.shards import decode_chunks, plan_shards

    detection = replace(DETECTION, crops=True, crop=CropOptions(width=48, height=48))
    spec = _spec([data_dir / HAMILTON], tmp_path / "sharded", 10, 1,
                 Resources(actors=2, cpus_per_actor=1, decode_cpus=1, torch_threads=1),
                 detection=detection, sampling=Sampling(), detect_every=3)
    summary = run_job(spec)
    assert summary.exit_status == 0 and summary.frames_detected == 15, summary.text()

    whole = replace(spec.shards, shard_frames=1000, chunk_bytes=1 << 30, max_side=320, keep_full_frames=True)
    video = str(data_dir / HAMILTON)
    item = {"video": video, "label": "", "key": video_key(video)}
    (shard,) = plan_shards(item, whole)
    (chunk,) = decode_chunks(shard, whole)
    ChunkDetector(replace(detection, torch_threads=1), str(tmp_path / "whole")).process(chunk)
    finalise_video(JobOutput(str(tmp_path / "whole")), item["key"], video, None, spec.tracking, crops=True)
    faces = _faces(tmp_path / "whole")
    pd.testing.assert_frame_equal(_faces(tmp_path / "sharded"), faces)
    pd.testing.assert_frame_equal(_tracks(tmp_path / "sharded"), _tracks(tmp_path / "whole"))
    detected = faces[~faces["interpolated"]]
    assert set(detected["frame_index"]) <= set(range(0, 45, 3))
    filled = faces[faces["interpolated"]]
    assert len(filled) > 10 and not (set(filled["frame_index"]) & set(range(0, 45, 3)))
    assert filled["crop"].map(len).min() > 500 and filled["crop"].nunique() == len(filled)  # JPEGs of their own
    assert not faces.duplicated(["frame_index", "face_index"]).any()
    # No interpolated face spans the cut at frame 20: its track's detected faces are on one side.
    for _, group in faces.groupby("track_id"):
        assert group["frame_index"].max() < 20 or group["frame_index"].min() >= 20


def _detector_actors() -> list[dict]:
    """Live detector actors of this session's Ray, read from the GCS. (The state API of
    ``ray.util.state`` needs the dashboard, which the test session does not start.)"""
    from ray._private import state

    return [a for a in state.actors().values() if "DetectActor" in a["ActorClassName"] and a["State"] == "ALIVE"]


def test_killed_detector_actor_is_replaced_and_its_chunks_redone_once(reference, data_dir, tmp_path):
    """SIGKILL the detector actor's process mid-job: Ray restarts it, the job completes, no face twice."""
    from ray._private import state

    dest = tmp_path / "killed"
    spec = _spec([data_dir / HAMILTON, data_dir / CROWD], dest, shard_frames=6, chunk_bytes=1)
    outcome = {}
    job = threading.Thread(target=lambda: outcome.update(summary=run_job(spec)))
    job.start()
    victim, deadline = None, time.monotonic() + 120
    while victim is None and job.is_alive() and time.monotonic() < deadline:
        staged = dest / "_staging"
        written = [n for d in staged.glob("*") for n in os.listdir(d) if n.endswith("-frames.parquet")] \
            if staged.exists() else []
        actors = _detector_actors()
        if written and actors:
            victim = actors[0]
            files_at_kill = len(written)
            os.kill(victim["Pid"], signal.SIGKILL)
        time.sleep(0.05)
    job.join(timeout=300)
    assert victim is not None, "the job ended before a detector actor could be killed"
    assert files_at_kill < 23, "the actor was killed after all its work was done"
    summary = outcome["summary"]
    assert summary.exit_status == 0, summary.text()
    faces = _faces(dest)
    assert not faces.duplicated(FACE_ORDER).any()
    pd.testing.assert_frame_equal(faces, _faces(reference[0]))
    pd.testing.assert_frame_equal(_tracks(dest), _tracks(reference[0]))
    assert summary.frames_detected == 23
    assert state.actors()[victim["ActorID"]]["NumRestarts"] >= 1


def _finalising_workers() -> list[int]:
    """PIDs of this session's Ray workers running a finalising step (Ray titles a busy worker
    ``ray::<task>``)."""
    session = os.getsid(0)
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = open(f"/proc/{entry}/cmdline", "rb").read()
                if title.startswith(b"ray::_finalise") and os.getsid(int(entry)) == session:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_killed_finalising_step_is_run_again_and_the_video_completes_once(reference, data_dir, tmp_path):
    """SIGKILL the worker of a video's finalising step while it runs: Ray runs the step again, the
    video's faces, tracks and clips are those of the reference and its ok row is written once."""
    dest = tmp_path / "killed-finaliser"
    spec = _spec([data_dir / HAMILTON, data_dir / CROWD], dest, chunk_bytes=1)
    outcome = {}
    job = threading.Thread(target=lambda: outcome.update(summary=run_job(spec)))
    job.start()
    killed, deadline = [], time.monotonic() + 120
    while not killed and job.is_alive() and time.monotonic() < deadline:
        for pid in _finalising_workers():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.005)  # a finalising step takes far longer; leave the CPUs to the job meanwhile
    job.join(timeout=300)
    assert killed, "no finalising step was seen running"
    summary = outcome["summary"]
    assert summary.exit_status == 0, summary.text()
    pd.testing.assert_frame_equal(_faces(dest), _faces(reference[0]))
    pd.testing.assert_frame_equal(_tracks(dest), _tracks(reference[0]))
    pd.testing.assert_frame_equal(_clips(dest), _clips(reference[0]))  # rewritten whole, never twice
    assert sorted(_videos(dest)["video"]) == sorted(_videos(reference[0])["video"])  # one row each
    assert not (dest / "_staging").exists()


def test_bad_inputs_get_error_rows_and_every_good_input_completes(ray_session, data_dir, tmp_path, capsys):
    """Through the CLI: exit 3, one clear error row per bad input, re-runs skip what is done."""
    from raydetect.commands.detect import main

    bad = tmp_path / "bad"
    bad.mkdir()
    clip = (data_dir / HAMILTON).read_bytes()
    (bad / "truncated.avi").write_bytes(clip[: len(clip) // 2])
    (bad / "random.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 40_000, dtype=np.uint8).tobytes())
    (bad / "notes.mp4").write_text("this is a text file\n")
    (bad / "empty.mp4").write_bytes(b"")
    import cv2

    cv2.imwrite(str(bad / "photo.jpg"), np.zeros((64, 64, 3), np.uint8))
    good = str(data_dir / CROWD)
    (tmp_path / "labels.csv").write_text(f"path,label\n{good},REAL\n{bad / 'missing.mp4'},FAKE\n")
    (tmp_path / "good.csv").write_text(f"path,label\n{good},REAL\n")
    sources = [str(tmp_path / "labels.csv"), str(bad / "*.*")]
    dest = tmp_path / "out"
    argv = [*sources, "--output", str(dest), "--min-face-size", "30", "--max-side", "320", "--every", "3",
            "--actors", "1", "--cpus-per-actor", "1", "--threads-per-actor", "1", "--shard-frames", "10", "-q"]

    assert main(argv) == 3
    printed = capsys.readouterr().out
    assert "inputs: 7 (1 ok, 6 failed, 0 already done)" in printed and f"output: {dest}/faces" in printed
    videos = _videos(dest).set_index("video")
    assert videos.loc[good, "status"] == "ok" and videos.loc[good, "frames_detected"] == 8
    assert videos.loc[good, "label"] == "REAL" and videos.loc[str(bad / "missing.mp4"), "label"] == "FAKE"
    expected_errors = {
        "truncated.avi": "truncated", "random.mp4": "not a readable video", "notes.mp4": "not a readable video",
        "empty.mp4": "empty file", "photo.jpg": "still image", "missing.mp4": "no such file",
    }
    for name, message in expected_errors.items():
        row = videos.loc[str(bad / name)]
        assert row["status"] == "error" and message in row["error"] and str(bad / name) in row["error"], name
    # The truncated video had good chunks before the cut: none of its faces are left behind.
    faces = _faces(dest)
    assert set(faces["video"]) == {good} and len(faces) == videos.loc[good, "faces"]
    assert set(faces["label"]) == {"REAL"}

    # A re-run skips the finished input and retries the failed ones, adding no row twice.
    before = sorted(os.listdir(dest / "faces"))
    assert main(argv) == 3
    assert "(1 ok" not in capsys.readouterr().out
    assert len(_videos(dest)) == 7 and sorted(os.listdir(dest / "faces")) == before
    pd.testing.assert_frame_equal(_faces(dest), faces)

    # Other options into the same DEST are refused; --overwrite redoes everything.
    assert main([*argv, "--min-face-size", "40"]) == 2
    assert "other options (min_face_size); use --overwrite" in capsys.readouterr().err
    assert main([str(tmp_path / "good.csv"), *argv[len(sources):], "--overwrite"]) == 0
    assert list(_videos(dest)["video"]) == [good]
    pd.testing.assert_frame_equal(_faces(dest), faces)


def test_s3_in_and_out_on_a_real_s3_server(reference, s3_server, data_dir):
    """Videos read from and results written to s3:// through s3fs against moto's server."""
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("pipeline-bucket")
    for name in (CROWD, HAMILTON):
        fs.pipe(f"pipeline-bucket/videos/{name}", (data_dir / name).read_bytes())
    dest = "s3://pipeline-bucket/results/run-1"
    summary = run_job(_spec(["s3://pipeline-bucket/videos/"], dest, storage_options=s3_server))
    assert summary.exit_status == 0, summary.text()
    faces = _faces(dest, s3_server)
    expected = _faces(reference[0])
    expected["video"] = expected["video"].map(lambda v: "s3://pipeline-bucket/videos/" + os.path.basename(v))
    pd.testing.assert_frame_equal(faces.sort_values(FACE_ORDER).reset_index(drop=True),
                                  expected.sort_values(FACE_ORDER).reset_index(drop=True))
    assert set(_videos(dest, s3_server)["status"]) == {"ok"}
    assert not [p for p in fs.find("pipeline-bucket/results") if "/.tmp-" in p]
    # A second run finds both done without decoding anything.
    again = run_job(_spec(["s3://pipeline-bucket/videos/"], dest, storage_options=s3_server))
    assert (again.skipped, again.frames_decoded) == (2, 0)


def test_outputs_read_without_ray(reference):
    """Plain Parquet types: pandas, pyarrow and DuckDB read DEST in a process where Ray cannot be imported."""
    dest = reference[0]
    script = (
        "import sys; sys.modules['ray'] = None\n"
        "import duckdb, pandas as pd, pyarrow.parquet as pq\n"
        f"faces = pq.read_table({str(dest / 'faces')!r})\n"
        f"videos = pd.read_parquet({str(dest / 'videos')!r})\n"
        f"sql = duckdb.sql(\"select count(*), max(len(landmarks)) from '{dest}/faces/*.parquet'\").fetchall()[0]\n"
        f"joined = duckdb.sql(\"select sum(t.faces) from '{dest}/tracks/*.parquet' t\").fetchall()[0][0]\n"
        f"assert joined == len(faces), joined\n"
        f"assert pd.read_parquet({str(dest / 'tracks')!r}).track_id.dtype == 'int64'\n"
        "print(faces.schema.to_string(show_schema_metadata=False))\n"
        "print(len(faces), len(videos), pd.read_parquet(" + repr(str(dest / "faces")) + ").landmarks.iloc[0].size,"
        " *sql)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    schema = result.stdout
    for field in ("video: string", "frame_index: int64", "timestamp_s: double", "x1: float", "score: float",
                  "track_id: int64", "interpolated: bool",
                  "landmarks: list<element: float>", "width: int32", "height: int32"):
        assert field in schema, field
    assert result.stdout.strip().endswith(f"{reference[1].faces} 2 10 {reference[1].faces} 10")


def test_without_source_the_quickstart_uses_the_bundled_sample():
    from raydetect.commands.detect import QUICKSTART_OUTPUT, add_arguments, job_spec
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    spec = job_spec(parser.parse_args([]))
    assert spec.output == QUICKSTART_OUTPUT and spec.sources[0].endswith("raydetect/data/sample.mp4")
    assert os.path.getsize(spec.sources[0]) > 100_000
    with pytest.raises(ValueError, match="--output"):
        job_spec(parser.parse_args(["some.mp4"]))


class _EnvironmentProbe:
    """Stands in for the decode stage's callable: yields what its worker's environment says."""

    def __init__(self, options):
        self.options = options

    def __call__(self, row: dict):
        yield {"shard": row["shard"], "arena_max": os.environ.get("MALLOC_ARENA_MAX", "")}


def test_decode_workers_get_the_arena_limit_from_a_runtime_env_on_a_cluster(ray_session, monkeypatch):
    """A reused decode worker kept the frames each task freed in a new glibc arena. On a cluster (a driver
    without MALLOC_ARENA_MAX) the decode stage's runtime environment gives its workers the limit; the
    growth itself is measured by benchmarks/decode_memory.py --copies."""
    import ray
    from ray import cloudpickle

    from raydetect.offline import job

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not importable in Ray's workers
    monkeypatch.setattr(job, "_DecodeStage", _EnvironmentProbe)
    monkeypatch.delenv(job.ARENA_VARIABLE)  # this session's workers inherited 2: ask for another value
    monkeypatch.setattr(job, "DECODE_MALLOC_ARENAS", 3)
    dataset = job.add_decode_stage(ray.data.from_items([{"shard": n} for n in range(3)]),
                                   ShardOptions(chunk_bytes=1 << 20), decode_cpus=0.5)
    rows = sorted(dataset.take_all(), key=lambda row: row["shard"])
    assert [row["arena_max"] for row in rows] == ["3"] * 3


def test_a_local_instance_passes_the_arena_limit_on_instead(monkeypatch):
    """``raydetect detect`` sets the variable before it starts a local instance, whose workers inherit
    it; the stage then needs no runtime environment (one costs a job seconds of worker start-up)."""
    from raydetect.offline import job

    monkeypatch.delenv(job.ARENA_VARIABLE, raising=False)
    assert job.decode_runtime_env() == {"env_vars": {"MALLOC_ARENA_MAX": "2"}}
    job.limit_local_arenas()
    assert os.environ[job.ARENA_VARIABLE] == "2" and job.decode_runtime_env() is None
    monkeypatch.setenv(job.ARENA_VARIABLE, "4")  # the user's own choice stays
    job.limit_local_arenas()
    assert os.environ[job.ARENA_VARIABLE] == "4"
