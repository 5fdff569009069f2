"""`ray job submit --working-dir . -- python jobs/detect_videos.py ...` against a real `ray start --head`.

The head is what a cluster's head runs: `ray start --head` with the dashboard and job API, token
authentication on (as in every config under cluster/), everything bound to 127.0.0.1 on ports picked free
(never Ray's defaults, which another Ray instance on this machine may hold), its files in its own
``--temp-dir``. It is started with ``start_new_session`` so that every process it spawns shares one session
id; the fixture ends exactly those processes (never `ray stop`, which would end every Ray instance on the
machine, other people's included).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ray_processes import end_processes, free_port, listening_addresses, session_processes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
JOB_TIMEOUT_S = 240


@dataclass
class LocalHead:
    """A `ray start --head` on 127.0.0.1 with its own temp dir, ports and token."""

    temp_dir: str
    token: str
    dashboard_port: int
    gcs_port: int
    session_id: int = 0
    env: dict = field(default_factory=dict)

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def client_env(self, token: str | None = "own") -> dict:
        """Environment of a CLI client: with this head's token, another token, or none."""
        env = {k: v for k, v in self.env.items() if k != "RAY_AUTH_TOKEN"}
        if token is not None:
            env["RAY_AUTH_TOKEN"] = self.token if token == "own" else token
        return env

    def processes(self) -> list[int]:
        return session_processes(self.session_id, self.temp_dir)

    def stop(self) -> list[int]:
        """End every process this head started; returns the PIDs that survived (none, normally)."""
        # Some of Ray's daemons take their time over SIGTERM; a throwaway head needs no clean exit.
        survivors = end_processes(self.session_id, self.temp_dir, grace_s=3.0)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return survivors


def start_local_head() -> LocalHead:
    # A short path: Ray's Unix sockets live under it and socket paths are limited to 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rdj-", dir="/tmp")
    token = secrets.token_hex(32)
    env = dict(
        os.environ,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # every listener on 127.0.0.1
        RAY_AUTH_MODE="token",  # as on a real cluster: the job API demands the token
        RAY_AUTH_TOKEN=token,  # given by variable, so no ~/.ray/auth_token is written or read
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TMPDIR=temp_dir,  # whatever Ray writes without being told where stays in the temp dir too
        # The entrypoint's `python` is this interpreter, as on a node whose image has the project's Python.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    ports = {
        name: free_port()
        for name in (
            "port", "dashboard-port", "node-manager-port", "object-manager-port", "ray-client-server-port",
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
            "metrics-export-port",
        )
    }
    command = [
        RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--temp-dir", temp_dir,
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
        "--num-cpus", "4",  # more logical CPUs than cores: the driver's tasks and the actor never starve
        "--disable-usage-stats",
        *[f"--{name}={port}" for name, port in ports.items()],
    ]
    process = subprocess.Popen(
        command, env=env, cwd=temp_dir, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    head = LocalHead(temp_dir, token, ports["dashboard-port"], ports["port"], process.pid, env)
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        head.stop()
        raise
    if process.returncode != 0:
        head.stop()
        pytest.fail(f"`ray start --head` failed ({process.returncode}):\n{output[-3000:]}")
    return head


@pytest.fixture(scope="module")
def local_head():
    head = start_local_head()
    try:
        yield head
    finally:
        survivors = head.stop()
    assert not survivors, f"processes of the test head survived: {survivors}"


def http_status(url: str, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_head_listens_on_loopback_only(local_head):
    addresses = listening_addresses(local_head.processes())
    assert any(addr.endswith(f":{local_head.dashboard_port}") for addr in addresses), addresses
    public = [a for a in addresses if not a.rsplit(":", 1)[0] in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert not public, f"the head listens on non-loopback addresses: {public}"


def test_job_api_refuses_requests_without_the_token(local_head):
    url = f"{local_head.dashboard_url}/api/jobs/"
    assert http_status(url) == 401
    assert http_status(url, {"Authorization": f"Bearer {secrets.token_hex(32)}"}) in (401, 403)
    assert http_status(url, {"Authorization": f"Bearer {local_head.token}"}) == 200
    refused = subprocess.run(
        [RAY, "job", "list", "--address", local_head.dashboard_url],
        env=local_head.client_env(token=secrets.token_hex(32)), capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode != 0


def test_job_submit_runs_detect_videos_and_writes_every_result(local_head, data_dir, tmp_path):
    import pyarrow.parquet as pq

    videos = {str(data_dir / "hamilton_45f_640x360.avi"): 45, str(data_dir / "street_crowd_24f_640x360.mp4"): 24}
    output = tmp_path / "out"
    every = 15
    command = [
        RAY, "job", "submit", "--address", local_head.dashboard_url, "--working-dir", ".", "--",
        "python", "jobs/detect_videos.py", *videos, "--output", str(output),
        "--every", str(every), "--max-side", "320",  # a few small frames: the job, not the detector, is under test
    ]
    result = subprocess.run(
        command, cwd=REPO, env=local_head.client_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S
    )
    log = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, log
    assert "inputs: 2 (2 ok, 0 failed" in result.stdout, log  # the job's summary, streamed back
    # The job API agrees (asked with the token, as any client must).
    submission_id = re.search(r"Job '(raysubmit_\w+)' succeeded", log).group(1)
    request = urllib.request.Request(
        f"{local_head.dashboard_url}/api/jobs/{submission_id}",
        headers={"Authorization": f"Bearer {local_head.token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        job = json.load(response)
    assert job["status"] == "SUCCEEDED" and job["entrypoint"].startswith("python jobs/detect_videos.py"), job

    per_video = pq.read_table(output / "videos").to_pylist()
    assert sorted(row["video"] for row in per_video) == sorted(videos)
    assert all(row["status"] == "ok" and row["error"] is None for row in per_video), per_video
    sampled = {video: set(range(0, count, every)) for video, count in videos.items()}
    assert {row["video"]: row["frames_detected"] for row in per_video} == {v: len(s) for v, s in sampled.items()}

    faces = pq.read_table(output / "faces").to_pylist()
    assert faces, "no face found in any sampled frame"
    assert len(faces) == sum(row["faces"] for row in per_video)
    for row in faces:
        assert row["frame_index"] in sampled[row["video"]], row
        # Detected on a 320-pixel copy, reported in pixels of the 640x360 original.
        assert (row["width"], row["height"]) == (640, 360)
        assert 0 <= row["x1"] < row["x2"] <= 640 and 0 <= row["y1"] < row["y2"] <= 360, row
    keys = [(r["video"], r["frame_index"], r["face_index"]) for r in faces]
    assert len(keys) == len(set(keys)), "duplicate face rows"


def test_descendants_finds_grandchildren_and_nothing_else():
    """The session fixture ends what a timed-out Ray start left by this list: it must reach the
    processes the raylet's parents spawned, and no process outside the tree."""
    from ray_processes import descendants

    sleeper = "import time; time.sleep(60)"
    script = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleeper!r}]); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while len(descendants(child.pid)) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        found = descendants(os.getpid())
        grandchildren = descendants(child.pid)
        assert child.pid in found and len(grandchildren) == 1 and grandchildren <= found
        assert os.getppid() not in found and os.getpid() not in found
    finally:
        for pid in descendants(child.pid) | {child.pid}:
            os.kill(pid, 9)
        child.wait(timeout=30)
