"""Shared fixtures: real media paths and one local Ray instance per test session.

Ray listens on 127.0.0.1 only: the variables below must be set before ``ray`` is
imported anywhere in the session, which is why they live at the top of conftest.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind every Ray listener to loopback
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local test cluster only; cluster configs keep auth on
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest

TESTS_DIR = Path(__file__).resolve().parent
DATA_DIR = TESTS_DIR / "data"
SHARED_DATA = TESTS_DIR.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Vendored, permissively licensed test media (see tests/data/README.md)."""
    return DATA_DIR


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The larger shared media folder; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared media not found at {SHARED_DATA}")
    return SHARED_DATA


# Ray waits a fixed 30 s for its raylet to register; a heavily loaded machine can take longer.
RAY_START_ATTEMPTS = 3


def start_local_ray(ray) -> None:
    """``ray.init`` of a local instance on 127.0.0.1; a start that timed out is ended (the processes
    it left, by PID) and tried again, up to RAY_START_ATTEMPTS times."""
    from ray_processes import descendants

    from raydetect.offline.job import limit_local_arenas

    limit_local_arenas()  # as `raydetect detect` does before it starts a local instance
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        before = descendants(os.getpid())
        try:
            ray.init(
                address="local",  # never join another Ray instance that happens to run on this machine
                num_cpus=4,  # more logical CPUs than cores: actors and read tasks never starve each other
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
                runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
            )
            return
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == RAY_START_ATTEMPTS:
                raise
            ray.shutdown()
            for pid in descendants(os.getpid()) - before:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray instance on 127.0.0.1, started once for the whole session."""
    import ray

    if not ray.is_initialized():
        start_local_ray(ray)
    yield ray
    # Shut down only the instance this session started; never `ray stop`.
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API: moto's server on 127.0.0.1 in a subprocess, ended by its PID at the end.

    Yields ``storage_options`` for fsspec/s3fs (endpoint and throwaway credentials); nothing is
    set in the environment, so Ray workers get the same options through the job's arguments.
    """
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    beside_python = Path(sys.executable).with_name("moto_server")  # the venv's own, not a shell shim
    command = str(beside_python) if beside_python.exists() else shutil.which("moto_server")
    process = subprocess.Popen(
        [command, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto_server did not start on {endpoint}")
            time.sleep(0.2)
    yield {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"},
    }
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
