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


def test_job_stages_time_the_jobs_own_steps_and_their_shares(data_dir):
    stages = load_benchmark("gpu_check").job_stages(data_dir / "street_crowd_24f_640x360.mp4", 4, "cpu")
    assert stages["frames"] == 4 and stages["faces"] > 0
    assert set(stages["shares"]) == {"probe", "decode", "detect", "crop", "stage_write", "other", "finalise"}
    assert all(seconds >= 0 for seconds in stages["seconds"].values()) and stages["seconds"]["decode"] > 0
    assert abs(sum(stages["shares"].values()) - 1) < 1e-9
    assert stages["frames_per_second"] > 0


def test_the_report_prints_the_job_steps_when_there_are_some(capsys):
    gpu_check = load_benchmark("gpu_check")
    agreement = {"images": 1, "peer_strong": 1, "recall_vs_peer_pct": 100.0, "confirmed_by_peer_pct": 100.0,
                 "landmark_median_pct": 0.0, "landmark_p95_pct": 0.0, "passes": True}
    stages = {"frames": 32, "seconds": {"decode": 1.0, "detect": 3.0}, "shares": {"decode": 0.25, "detect": 0.75},
              "frames_per_second": 8.0}
    report = {"device": "cuda", "gpu": "a GPU", "torch": "2", "default_precision": "float16", "quick": False,
              "agreement_default": agreement, "agreement_float32": agreement, "packed_against_per_level": agreement,
              "frames_per_second": [], "crowd_against_one_face": {}, "peak_memory": {}, "compile": [],
              "detect_job": {"exit_status": 0, "stages": stages}}
    gpu_check.print_report(report)
    out = capsys.readouterr().out
    assert "| decode | 1.00 | 25% |" in out and "| all, 8.0 frames/s | 4.00 | |" in out


def test_a_stuck_job_command_ends_at_its_timeout_with_what_it_printed():
    import sys
    import time

    gpu_check = load_benchmark("gpu_check")
    command = [sys.executable, "-c", "import sys, time; print('started', flush=True); time.sleep(60)"]
    started = time.perf_counter()
    result = gpu_check.run_command(command, timeout_s=2)
    assert time.perf_counter() - started < 30
    assert result["exit_status"] is None and 2 <= result["wall_s"] < 30
    assert "started" in result["log_tail"] and "timed out after 2 s" in result["log_tail"]
    finished = gpu_check.run_command([sys.executable, "-c", "import sys; sys.exit(3)"], timeout_s=30)
    assert finished["exit_status"] == 3
