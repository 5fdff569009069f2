"""Benchmark scripts refuse options out of range by name, before starting anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("flag", ["--copies", "--frames-per-video"])
def test_decode_memory_refuses_fewer_than_one(flag):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "decode_memory.py"), "video.mp4", flag, "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f"{flag} must be >= 1, got 0" in result.stderr, result.stderr
