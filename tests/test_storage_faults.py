"""The detect job on failing storage, for real: videos served over HTTP by a fault-injecting server on
127.0.0.1 (503s, connections cut mid-body, an outage, a stalled object, an object that kills its reader).

The job must finish, every good video must equal a clean local run face for face, every bad object
must get an error row that says what happened, and no worker may crash except the ones killed on purpose.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from faulty_http import FaultyServer
from raydetect.offline.chunk_detection import DetectionOptions
from raydetect.offline.job import JobSpec, Resources, run_job
from raydetect.offline.retrying_io import RetryPolicy
from raydetect.offline.shards import ShardOptions
from raydetect.offline.video import Sampling

CROWD = "street_crowd_24f_640x360.mp4"
HAMILTON = "hamilton_45f_640x360.avi"
FACE_ORDER = ["video", "frame_index", "face_index"]
# Enough retries that a good video survives faults on 15% + 15% of the requests (an attempt fails with
# odds of about 0.28, all seven of a read with about 1e-4); a short timeout for the stalled object.
RETRY = RetryPolicy(retries=6, base_delay_s=0.02, max_delay_s=0.2, timeout_s=1.0)
JOB_TIMEOUT_S = 240
WORKER_RETRIES = 1  # each death costs a worker's start: fewer than the job's default keep the test short


def _spec(sources, output, **kwargs) -> JobSpec:
    return JobSpec(
        sources=[str(s) for s in sources], output=str(output), detection=DetectionOptions(min_face_size=30, max_side=320),
        shards=ShardOptions(shard_frames=16, sampling=Sampling(every=3), chunk_bytes=1 << 20, retry=RETRY),
        resources=Resources(actors=1, cpus_per_actor=1, torch_threads=1), **kwargs,
    )


def _run(spec: JobSpec):
    """run_job in a thread, so a hang fails the test instead of holding the session."""
    outcome = {}
    job = threading.Thread(target=lambda: outcome.update(summary=run_job(spec)), daemon=True)
    job.start()
    job.join(JOB_TIMEOUT_S)
    assert not job.is_alive(), f"the job did not finish within {JOB_TIMEOUT_S} s"
    return outcome["summary"]


def _table(folder) -> pd.DataFrame:
    return pq.read_table(str(folder)).to_pandas()


def _segfaults_since(started: float) -> list[str]:
    """Worker log files of this Ray session written since ``started`` that report a segmentation fault."""
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    hits = []
    for path in logs.glob("*worker*"):
        if path.stat().st_mtime >= started and b"Segmentation fault" in path.read_bytes():
            hits.append(path.name)
    return hits


def test_the_job_survives_failing_storage_and_reports_each_bad_object(ray_session, data_dir, tmp_path):
    from ray._private import state

    started = time.time()
    earlier = set(state.actors())  # actors of other tests in this session (some killed on purpose)
    clean = _run(_spec([data_dir / CROWD, data_dir / HAMILTON], tmp_path / "clean"))
    assert clean.exit_status == 0, clean.text()

    clip = (data_dir / CROWD).read_bytes()
    objects = {name: (data_dir / name).read_bytes() for name in (CROWD, HAMILTON)}
    objects.update({"down.mp4": clip, "stuck.mp4": clip, "poison.mp4": clip})
    with FaultyServer(objects, fail_fraction=0.15, reset_fraction=0.15, reset_first=True, broken={"down.mp4"},
                      stalled={"stuck.mp4"}, poisoned={"poison.mp4"}, seed=7) as server:
        # The poisoned object first: its planning task dies before the others' first reads, which the
        # server cuts (reset_first), so their retries show in the rows of the pass that reports them.
        names = ["poison.mp4", CROWD, HAMILTON, "down.mp4", "stuck.mp4", "gone.mp4"]
        summary = _run(_spec([server.url(n) for n in names], tmp_path / "faulty", worker_retries=WORKER_RETRIES))
    assert summary.exit_status == 3, summary.text()
    assert (summary.ok, summary.failed) == (2, 4), summary.text()

    videos = _table(tmp_path / "faulty" / "videos").set_index("video")
    errors = videos["error"].to_dict()
    assert errors[server.url("down.mp4")] == f"{server.url('down.mp4')}: HTTP 503 after {RETRY.attempts} attempts"
    assert "timed out" in errors[server.url("stuck.mp4")]
    assert errors[server.url("gone.mp4")] == f"{server.url('gone.mp4')}: no such file (HTTP 404)"
    assert f"failed {WORKER_RETRIES + 1} times" in errors[server.url("poison.mp4")]
    # Bounded: tried in its planning task (with the other inputs, which that loses), then alone; then given up.
    assert len(server.killed) == 2 * (WORKER_RETRIES + 1)
    assert server.total("503") > 0 and server.total("reset") > 0
    good = videos.loc[[server.url(CROWD), server.url(HAMILTON)]]
    assert (good["status"] == "ok").all() and good["io_retries"].sum() > 0

    faces = _table(tmp_path / "faulty" / "faces")
    faces["video"] = faces["video"].map(lambda url: str(data_dir / url.rsplit("/", 1)[1]))
    expected = _table(tmp_path / "clean" / "faces")
    pd.testing.assert_frame_equal(faces.sort_values(FACE_ORDER).reset_index(drop=True),
                                  expected.sort_values(FACE_ORDER).reset_index(drop=True))
    # No crash but the ones caused on purpose: no detector actor restarted, no segmentation fault logged.
    detectors = [a for key, a in state.actors().items()
                 if key not in earlier and "DetectActor" in a["ActorClassName"]]
    assert detectors
    assert all(a["NumRestarts"] == 0 for a in detectors)
    assert _segfaults_since(started) == []


def test_dry_run_reports_an_input_whose_probe_kills_its_worker(ray_session, data_dir, tmp_path):
    """The dry run probes on the cluster too: an object that kills its reader at every attempt is
    an input that cannot be probed, and the others are still counted."""
    from raydetect.offline.job import dry_run

    clip = (data_dir / CROWD).read_bytes()
    with FaultyServer({CROWD: clip, "poison.mp4": clip}, poisoned={"poison.mp4"}) as server:
        spec = _spec([server.url("poison.mp4"), server.url(CROWD)], tmp_path / "never-written",
                     worker_retries=WORKER_RETRIES)
        outcome = {}
        worker = threading.Thread(target=lambda: outcome.update(result=dry_run(spec, calibrate=False)), daemon=True)
        worker.start()
        worker.join(JOB_TIMEOUT_S)
        assert not worker.is_alive(), f"the dry run did not finish within {JOB_TIMEOUT_S} s"
    result = outcome["result"]
    assert (result.videos, result.probed, result.frames) == (2, 1, 24)
    [(video, error)] = result.failed
    assert video == server.url("poison.mp4") and f"failed {WORKER_RETRIES + 1} times" in error
    # Tried with the other input, then alone: each attempt killed, then given up.
    assert len(server.killed) == 2 * (WORKER_RETRIES + 1)
    assert not (tmp_path / "never-written").exists()


def test_a_dfdc_fake_whose_probe_kills_its_worker_ends_as_an_error_row(ray_session, data_dir, tmp_path):
    """With --reuse-original-boxes the fakes are probed in a pass of their own: an object that kills its
    reader there costs that fake alone (an error row), not the job."""
    import json

    clip = (data_dir / CROWD).read_bytes()
    metadata = {"real.mp4": {"label": "REAL"}, "fake.mp4": {"label": "FAKE", "original": "real.mp4"},
                "poison.mp4": {"label": "FAKE", "original": "real.mp4"}}
    objects = {"real.mp4": clip, "fake.mp4": clip, "poison.mp4": clip,
               "metadata.json": json.dumps(metadata).encode()}
    with FaultyServer(objects, poisoned={"poison.mp4"}) as server:
        summary = _run(_spec([server.url("metadata.json")], tmp_path / "out", worker_retries=WORKER_RETRIES,
                             reuse_original_boxes=True))
    assert summary.exit_status == 3 and (summary.ok, summary.failed) == (2, 1), summary.text()
    videos = _table(tmp_path / "out" / "videos").set_index("video")
    assert f"failed {WORKER_RETRIES + 1} times" in videos.loc[server.url("poison.mp4"), "error"]
    assert videos.loc[server.url("fake.mp4"), "boxes_from"] == server.url("real.mp4")
    # Tried with the other fake, then alone: each attempt killed, then given up.
    assert len(server.killed) == 2 * (WORKER_RETRIES + 1)
    faces = _table(tmp_path / "out" / "faces")
    assert set(faces["video"]) == {server.url("real.mp4"), server.url("fake.mp4")}
