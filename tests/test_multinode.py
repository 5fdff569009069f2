"""Distributed behaviour on a real multi-node Ray cluster, all on 127.0.0.1 (tests/multinode_scenario.py).

Three raylets (a head with no CPUs, a CPU node, a node advertising one GPU) run two `raydetect detect`
jobs on the vendored clips:
- with ``--gpus-per-actor 1`` every detector actor runs on the GPU node, every decode task on the CPU node,
  nothing on the head;
- when the GPU node is killed mid-job and a fresh one joins, the job still succeeds and writes every row
  exactly once: the same faces and per-video rows as the undisturbed job.

The scenario needs its own cluster, so it runs in a child process (the test session shares one local Ray
instance); the test ends that process's Ray processes, and only those, whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ray_processes import end_processes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SCENARIO = Path(__file__).resolve().parent / "multinode_scenario.py"
SCENARIO_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def scenario(data_dir):
    """Run the scenario once; returns (report, workdir)."""
    # A short path: Ray's Unix sockets live under WORKDIR/ray and socket paths are limited to 107 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="rdm-", dir="/tmp"))
    videos = [str(data_dir / "hamilton_45f_640x360.avi"), str(data_dir / "street_crowd_24f_640x360.mp4")]
    env = dict(os.environ, PYTHONPATH=str(REPO))  # workers of every node import raydetect from here
    process = subprocess.Popen(
        [sys.executable, str(SCENARIO), str(workdir), *videos],
        cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        output, _ = process.communicate(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        output = "scenario timed out"
    finally:
        survivors = end_processes(process.pid, str(workdir / "ray"), grace_s=3.0)
    report_path = workdir / "report.json"
    if process.returncode != 0 or not report_path.is_file():
        pytest.fail(f"multi-node scenario failed ({process.returncode}):\n{output[-6000:]}")
    yield json.loads(report_path.read_text()), workdir
    assert not survivors, f"Ray processes of the scenario survived: {survivors}"
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)


def read_rows(folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(folder).to_pylist()


def test_placement_job_succeeds(scenario):
    report, workdir = scenario
    assert report["placement_exit_status"] == 0
    videos = read_rows(workdir / "placement" / "videos")
    assert len(videos) == 2 and all(row["status"] == "ok" for row in videos), videos


def test_detector_actors_run_only_where_gpus_are_advertised(scenario):
    report, _ = scenario
    actors = report["placement"]["detector_actors"]
    assert actors, "the state API reported no detector actor"
    assert {actor["node"] for actor in actors} == {"gpu"}, actors
    assert all(actor["resources"].get("GPU") == 1 for actor in actors), actors


def test_decoding_runs_as_cpu_tasks_on_the_cpu_node(scenario):
    report, _ = scenario
    tasks = report["placement"]["decode_tasks"]
    assert tasks, "the state API reported no decode task"
    assert {task["node"] for task in tasks} == {"cpu"}, tasks
    assert all(task["resources"].get("CPU", 0) > 0 and not task["resources"].get("GPU") for task in tasks)


def test_killing_the_gpu_node_mid_job_loses_and_duplicates_nothing(scenario):
    report, workdir = scenario
    assert report["job_alive_when_node_killed"], "the job ended before the node was killed: nothing was tested"
    assert report["node_loss_finished"] and report["node_loss_exception"] is None, report
    assert report["node_loss_exit_status"] == 0
    # The job was really cut in the middle: some chunks were staged before, and videos finished after.
    assert report["chunks_staged_when_node_killed"] > 0
    assert report["face_files_when_node_killed"] < report["face_files_at_end"]
    # The killed node hosted the job's detector actor, and the work was finished on the new node: by
    # the same actor restarted there (Ray keeps its id) or by a new one.
    assert {a["node"] for a in report["node_loss_actors_before_kill"] if a["state"] == "ALIVE"} == {"lost_gpu"}, (
        report["node_loss_actors_before_kill"]
    )
    after = report["node_loss_actors"]
    restarted = [a for a in after if a["node"] == "gpu" and a["num_restarts"] >= 1]
    replaced = [a for a in after if a["node"] == "gpu"] and [a for a in after if a["node"] == "lost_gpu"]
    assert restarted or replaced, after

    def face_key(row):
        return (row["video"], row["frame_index"], row["face_index"])

    expected = {face_key(row): row for row in read_rows(workdir / "placement" / "faces")}
    got = read_rows(workdir / "node_loss" / "faces")
    keys = [face_key(row) for row in got]
    assert len(keys) == len(set(keys)), "a face row was written twice"
    assert set(keys) == set(expected), "face rows differ from the undisturbed job"
    for row in got:
        want = expected[face_key(row)]
        assert [row[c] for c in ("x1", "y1", "x2", "y2")] == pytest.approx(
            [want[c] for c in ("x1", "y1", "x2", "y2")], abs=1e-3
        )

    def video_summary(rows):
        return sorted((r["video"], r["status"], r["frames_detected"], r["faces"]) for r in rows)

    videos = read_rows(workdir / "node_loss" / "videos")
    assert video_summary(videos) == video_summary(read_rows(workdir / "placement" / "videos"))
