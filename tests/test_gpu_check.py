"""benchmarks/gpu_check.py on the CPU: the CUDA default configuration's numerics, and the report's code path.

No GPU runs here, so the CUDA defaults (float16 networks under autocast, the packed pyramid, the GPU work
budget) run on the CPU, where torch computes float16 convolutions, PReLU, pooling and softmax too: a numerical
problem of that configuration (saturating scores, NMS ties, landmark drift in half precision) fails here first.
"""

from __future__ import annotations

import json

import torch

from benchmark_modules import load_benchmark
from raydetect.core.batching import WorkBudget
from raydetect.mtcnn.cascade import ALL_LEVELS

def test_the_cuda_defaults_on_the_cpu_are_the_cuda_configuration():
    detector = load_benchmark("gpu_check").cuda_defaults_on_cpu(min_face_size=20)
    cuda_budget = WorkBudget.for_device("cuda")
    assert detector.device.type == "cpu" and detector.precision == "float16"
    assert detector.config.compute_dtype == torch.float16
    assert detector.config.pack_levels_below == ALL_LEVELS
    assert (detector.config.rnet_batch, detector.config.onet_batch) == (cuda_budget.rnet_crops, cuda_budget.onet_crops)
    assert detector.budget == cuda_budget and detector.controller.budget == cuda_budget
    assert all(net.conv_dtype is None for net in detector.nets)  # float16 comes from autocast, as on CUDA


def test_quick_report_on_the_cpu_meets_the_agreement_criteria(shared_data, tmp_path, capsys):
    output = tmp_path / "report.json"
    status = load_benchmark("gpu_check").main(["--device", "cpu", "--quick", "--data-root", str(shared_data),
                                      "--output", str(output)])
    report = json.loads(output.read_text())
    assert status == 0, capsys.readouterr().out
    for name in ("agreement_default", "agreement_float32", "packed_against_per_level"):
        assert report[name]["passes"], (name, report[name])
        assert report[name]["peer_strong"] >= 8  # confident faces of float32 on the two shared images
    assert report["default_precision"] == "float16"
    assert [row["batch"] for row in report["frames_per_second"]] == [1, 2]
    assert all(row["fps"] > 0 for row in report["frames_per_second"])
    captured = capsys.readouterr()
    assert "| agreement_default |" in captured.out
    sections = ["agreement", "frames_per_second", "crowd_against_one_face", "peak_memory", "detect_job", "compile"]
    assert [line.split()[1] for line in captured.err.splitlines() if line.startswith("[gpu_check]")] == sections


def test_progress_keeps_the_report_so_far_on_disk(tmp_path, capsys):
    output = tmp_path / "partial.json"
    on_section = load_benchmark("gpu_check").progress(output)
    on_section("agreement", {"agreement_default": {"passes": True}})
    assert json.loads(output.read_text()) == {"agreement_default": {"passes": True}}
    on_section("frames_per_second", {"agreement_default": {"passes": True}, "frames_per_second": []})
    assert "frames_per_second" in json.loads(output.read_text())
    assert capsys.readouterr().err.startswith("[gpu_check] agreement done after ")
    load_benchmark("gpu_check").progress(None)("agreement", {})  # no output file: progress lines only
