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
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
JOB_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def session_processes(session_id: int, marker: str) -> list[int]:
    """PIDs of processes in ``session_id`` or whose command line names ``marker`` (the temp dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            in_session = os.getsid(pid) == session_id
        except (OSError, ProcessLookupError):
            continue  # ended meanwhile, or not ours to look at
        if in_session or marker in cmdline:
            found.append(pid)
    return found


def listening_addresses(pids: list[int]) -> list[str]:
    """Local addresses of the TCP sockets in LISTEN state that these processes hold ("ip:port")."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addresses = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc stores each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words)
            addresses.append(f"{ip}:{int(hex_port, 16)}")
    return addresses


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

    def stop(self) -> None:
        """SIGTERM every process this head started, then SIGKILL what is left after a grace period."""
        for sig, grace_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace_s
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.processes():
                break
        shutil.rmtree(self.temp_dir, ignore_errors=True)


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
        head.stop()
    assert not head.processes(), "processes of the test head survived"


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

    videos = [data_dir / "hamilton_45f_640x360.avi", data_dir / "street_crowd_24f_640x360.mp4"]
    output = tmp_path / "out"
    every = 8
    command = [
        RAY, "job", "submit", "--address", local_head.dashboard_url, "--working-dir", ".", "--",
        "python", "jobs/detect_videos.py", *map(str, videos), "--output", str(output), "--every", str(every),
    ]
    result = subprocess.run(
        command, cwd=REPO, env=local_head.client_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S
    )
    log = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, log
    assert "SUCCEEDED" in result.stdout + result.stderr, log

    per_video = pq.read_table(output / "videos").to_pylist()
    assert sorted(row["video"] for row in per_video) == sorted(map(str, videos))
    assert all(row["status"] == "ok" and row["error"] is None for row in per_video), per_video
    frames = {row["video"]: row["frames_detected"] for row in per_video}
    assert frames == {str(videos[0]): len(range(0, 45, every)), str(videos[1]): len(range(0, 24, every))}

    faces = pq.read_table(output / "faces").to_pylist()
    assert len(faces) == sum(row["faces"] for row in per_video)
    assert {row["frame_index"] % every for row in faces} <= {0}
    # The one face of the Hamilton clip is found in every sampled frame, exactly once each.
    hamilton = sorted(row["frame_index"] for row in faces if row["video"] == str(videos[0]))
    assert hamilton == list(range(0, 45, every))
    keys = [(r["video"], r["frame_index"], r["x1"], r["y1"], r["x2"], r["y2"]) for r in faces]
    assert len(keys) == len(set(keys)), "duplicate face rows"
