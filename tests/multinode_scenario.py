"""Two detect jobs on a three-node Ray cluster on 127.0.0.1; writes a JSON report for tests/test_multinode.py.

Run by the test in its own process (the test session's shared ``ray.init`` cannot join another cluster):

    python tests/multinode_scenario.py WORKDIR VIDEO [VIDEO ...]

The cluster mirrors cluster/aws.yaml on one machine, with ``ray.cluster_utils.Cluster``:
- head: {"CPU": 0}, schedules no work (it runs the driver, the GCS and the dashboard);
- cpu node: 2 CPUs, no GPU;
- gpu node: 1 CPU and 1 GPU. On a machine without one, ``num_gpus=1`` is only a resource Ray
  schedules by, so the detector is told ``--device cpu``; placement is what is under test.

Job 1 (``placement``): ``--gpus-per-actor 1``. Afterwards the state API says on which node every
detector actor and every decode task ran.

Job 2 (``node_loss``): the same job into another folder. Once its first chunk is staged, the
gpu node, with the detector actor on it, is killed without warning (a crash, or a spot instance
reclaimed) and a fresh gpu node joins, as the autoscaler would start one. Ray restarts the actor there
and Ray Data resends the lost work. The job must still finish with every row exactly once; the test
compares its output with job 1's.

Everything the script starts lives in WORKDIR/ray (its temp dir) and ends with the script.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

# Before ray is imported: every listener on 127.0.0.1; no token on this throwaway local cluster.
# RAY_TMPDIR keeps every file Ray writes in WORKDIR, the "current cluster" address file included: left in
# /tmp/ray, it would make any other process's plain ray.init() on this machine join this cluster.
if len(sys.argv) > 1:
    os.environ["RAY_TMPDIR"] = str(Path(sys.argv[1]).resolve())
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.state import list_actors, list_tasks  # noqa: E402

from raydetect.offline import job as pipeline  # noqa: E402
from raydetect.commands.detect import main as detect_main  # noqa: E402

# Ray Data names its workers after the callables: "MapWorker(MapBatches(DetectActor))", "FlatMap(_DecodeStage)".
DETECTOR_CLASS = pipeline.DetectActor.__name__
DECODE_STAGE = pipeline._DecodeStage.__name__
NODE_LOSS_DEADLINE_S = 120.0


def job_arguments(videos: list[str], output: Path, address: str) -> list[str]:
    return [
        *videos, "--output", str(output), "--address", address,
        "--gpus-per-actor", "1", "--device", "cpu",
        # Small work, many pieces: 9 shards of 8 frames, a third of the frames, downscaled to 320 px.
        "--every", "3", "--max-side", "320", "--shard-frames", "8", "--chunk-mib", "1", "--quiet",
    ]


def node_roles(nodes: dict) -> dict:
    return {node.node_id: role for role, node in nodes.items()}


def placements(roles: dict) -> dict:
    """Where every detector actor and decode task of the cluster ran, by node role."""
    actors = [
        {"actor_id": a.actor_id, "class_name": a.class_name, "node": roles.get(a.node_id, a.node_id),
         "state": a.state, "resources": a.required_resources, "num_restarts": int(a.num_restarts or 0)}
        for a in list_actors(detail=True, limit=10_000, raise_on_missing_output=False)
        if DETECTOR_CLASS in (a.class_name or "")
    ]
    tasks = [
        {"name": t.name, "node": roles.get(t.node_id, t.node_id), "state": t.state,
         "resources": t.required_resources}
        for t in list_tasks(detail=True, limit=10_000, raise_on_missing_output=False)
        if DECODE_STAGE in (t.name or "") and t.node_id
    ]
    return {"detector_actors": actors, "decode_tasks": tasks}


def finished_face_files(output: Path) -> int:
    """Videos finalised so far: each has one faces file."""
    faces = output / "faces"
    return len([p for p in faces.glob("*.parquet") if not p.name.startswith(".")]) if faces.is_dir() else 0


def staged_chunks(output: Path) -> int:
    """Chunks detected so far and not yet finalised into their video's files."""
    return len([p for p in (output / "_staging").glob("*/*-frames.parquet") if not p.name.startswith(".")])


def run_in_thread(arguments: list[str]) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def target():
        try:
            outcome["exit_status"] = detect_main(arguments)
        except BaseException as exc:  # report, never hang the scenario
            outcome["exception"] = repr(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def main(workdir: Path, videos: list[str]) -> dict:
    report: dict = {}
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(
            num_cpus=0,
            node_ip_address="127.0.0.1",
            include_dashboard=True,  # the state API (where actors and tasks ran) is served by it
            dashboard_host="127.0.0.1",
            temp_dir=str(workdir / "ray"),
            _system_config={
                # Notice a killed node within about 2 s rather than the default 30 s or so.
                "health_check_initial_delay_ms": 0,
                "health_check_period_ms": 500,
                "health_check_timeout_ms": 500,
                "health_check_failure_threshold": 3,
            },
        ),
    )
    try:
        small_store = 200 * 1024 * 1024
        nodes = {
            "head": cluster.head_node,
            "cpu": cluster.add_node(num_cpus=2, object_store_memory=small_store),
            "gpu": cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=small_store),
        }
        cluster.wait_for_nodes()
        report["nodes"] = {role: node.node_id for role, node in nodes.items()}

        # --- job 1: placement
        placement_out = workdir / "placement"
        started = time.perf_counter()
        report["placement_exit_status"] = detect_main(job_arguments(videos, placement_out, cluster.address))
        report["placement_seconds"] = time.perf_counter() - started
        time.sleep(2.0)  # task events reach the GCS once a second
        report["placement"] = placements(node_roles(nodes))

        # --- job 2: the gpu node dies mid-job
        loss_out = workdir / "node_loss"
        job1_actors = {a["actor_id"] for a in report["placement"]["detector_actors"]}
        lost = nodes.pop("gpu")
        nodes["lost_gpu"] = lost  # named for what is about to happen to it
        thread, outcome = run_in_thread(job_arguments(videos, loss_out, cluster.address))
        deadline = time.monotonic() + NODE_LOSS_DEADLINE_S

        def job2_actors():
            return [a for a in placements(node_roles(nodes))["detector_actors"] if a["actor_id"] not in job1_actors]

        # Where job 2's detector actor lives, asked before the kill is due (the state API takes a moment).
        while not any(a["state"] == "ALIVE" for a in job2_actors()) and thread.is_alive():
            assert time.monotonic() < deadline, "job 2's detector actor never started"
            time.sleep(0.2)
        report["node_loss_actors_before_kill"] = job2_actors()
        # Kill as soon as the first chunk is staged: most of the job is still to do.
        while staged_chunks(loss_out) == 0 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        report["chunks_staged_when_node_killed"] = staged_chunks(loss_out)
        report["face_files_when_node_killed"] = finished_face_files(loss_out)
        report["job_alive_when_node_killed"] = thread.is_alive()
        cluster.remove_node(lost, allow_graceful=False)
        killed_at = time.perf_counter()
        nodes["gpu"] = cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=small_store)
        thread.join(NODE_LOSS_DEADLINE_S)
        killed_to_end = time.perf_counter() - killed_at
        report["node_loss_finished"] = not thread.is_alive()
        report["node_loss_exit_status"] = outcome.get("exit_status")
        report["node_loss_exception"] = outcome.get("exception")
        report["face_files_at_end"] = finished_face_files(loss_out)
        time.sleep(2.0)
        after = placements(node_roles(nodes))
        report["node_loss_actors"] = [a for a in after["detector_actors"] if a["actor_id"] not in job1_actors]
        report["seconds_from_kill_to_end"] = killed_to_end
        report["nodes"].update({role: node.node_id for role, node in nodes.items()})
    finally:
        ray.shutdown()
        cluster.shutdown()
    return report


if __name__ == "__main__":
    workdir = Path(sys.argv[1])
    result = main(workdir, sys.argv[2:])
    (workdir / "report.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (dict, list))}))
