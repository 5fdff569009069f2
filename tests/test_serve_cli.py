"""`raydetect serve` end to end: the command in a subprocess with its own local Ray instance, real
HTTP on 127.0.0.1, a clean stop on SIGINT. Only the process group this test started is ever killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from http_helpers import free_port

TOKEN = "cli-test-token-41d0"
REPO = Path(__file__).resolve().parent.parent


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses (hex, as in /proc/net/tcp*) with a listening socket on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc to check the listening address")
def test_raydetect_serve_command(data_dir):
    port = free_port()
    env = {**os.environ, "RAYDETECT_API_TOKEN": TOKEN, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)  # a local instance of its own
    process = subprocess.Popen(
        [sys.executable, "-m", "raydetect", "serve", "--port", str(port), "--cpus-per-replica", "0.5"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: the test can end it and its children only
    )
    output: list[str] = []
    ready = threading.Event()

    def read_output() -> None:
        for line in process.stdout:
            output.append(line)
            if "raydetect serve: ready at" in line:
                ready.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        assert ready.wait(180), "no ready line within 180 s:\n" + "".join(output[-40:])
        url = f"http://127.0.0.1:{port}"
        assert listening_addresses(port) == {"0100007F"}, "Serve must listen on 127.0.0.1 only"
        assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
        image = (data_dir / "obama-240p.jpg").read_bytes()
        response = requests.post(f"{url}/detect", data=image, timeout=60,
                                 headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        assert len(response.json()["faces"]) == 1
        response = requests.post(f"{url}/detect", data=image, headers={"Content-Type": "image/jpeg"}, timeout=60)
        assert response.status_code == 401  # the token from the command's environment is enforced

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0, "".join(output[-40:])
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        reader.join(timeout=10)
