"""`raydetect serve` end to end: the command in a subprocess with its own local Ray instance, real
HTTP on 127.0.0.1, a clean stop on SIGINT. Only the process group this test started is ever killed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import requests

from http_helpers import free_port, raydetect_serve

TOKEN = "cli-test-token-41d0"


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
    with raydetect_serve(port, ["--cpus-per-replica", "0.5"], {"RAYDETECT_API_TOKEN": TOKEN}) as served:
        url = served.url
        assert listening_addresses(port) == {"0100007F"}, "Serve must listen on 127.0.0.1 only"
        assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
        image = (data_dir / "obama-240p.jpg").read_bytes()
        response = requests.post(f"{url}/detect", data=image, timeout=60,
                                 headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        assert len(response.json()["faces"]) == 1
        response = requests.post(f"{url}/detect", data=image, headers={"Content-Type": "image/jpeg"}, timeout=60)
        assert response.status_code == 401  # the token from the command's environment is enforced

        served.process.send_signal(signal.SIGINT)
        assert served.process.wait(timeout=90) == 0, served.tail()
