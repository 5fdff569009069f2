"""The allocator setting, observed through the page faults of repeated R-Net passes.

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone.
"""

import json
import os
import subprocess
import sys

import pytest

from raydetect import allocator

PASSES = """
import json, resource, sys
import torch
from raydetect.allocator import retain_freed_memory

applied = retain_freed_memory() if sys.argv[1] == "function" else None
if sys.argv[1] == "detector":
    from raydetect import FaceDetector
    FaceDetector(device="cpu")
from raydetect.mtcnn.weights import load_networks

torch.set_num_threads(1)
rnet = load_networks(None)[1].to(memory_format=torch.channels_last)
crops = torch.rand(512, 3, 24, 24).contiguous(memory_format=torch.channels_last)
faults = []
with torch.inference_mode():
    rnet(crops)
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rnet(crops)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
# The median pass: a single pass may still grow the heap once.
print(json.dumps({"applied": applied, "faults_per_pass": sorted(faults)[2]}))
"""

# R-Net's first layer alone writes 512 x 28 x 22 x 22 float32 (28 MB, about 6,800 pages of 4 KiB).
FRESH_PAGES_PER_PASS = 512 * 28 * 22 * 22 * 4 // 4096

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="needs glibc")


def _run(mode: str, **env_changes) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_changes)
    completed = subprocess.run([sys.executable, "-c", PASSES, mode], env=env, capture_output=True,
                               text=True, timeout=120, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_forward_passes_reuse_freed_memory_instead_of_faulting_in_fresh_pages():
    untouched = _run("none")
    tuned = _run("function")
    assert tuned["applied"] is True
    assert untouched["faults_per_pass"] > FRESH_PAGES_PER_PASS / 2, untouched  # glibc's default gives it back
    assert tuned["faults_per_pass"] < FRESH_PAGES_PER_PASS / 20, tuned


def test_a_cpu_detector_applies_it():
    assert _run("detector")["faults_per_pass"] < FRESH_PAGES_PER_PASS / 20


@pytest.mark.parametrize("env", [{"RAYDETECT_MALLOC_TUNING": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}])
def test_opting_out_leaves_glibc_defaults(env):
    opted_out = _run("function", **env)
    assert opted_out["applied"] is False
    assert opted_out["faults_per_pass"] > FRESH_PAGES_PER_PASS / 2, opted_out
