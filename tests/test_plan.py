"""``raydetect plan``: pyramid arithmetic, multiply-add counts, the cost model and its cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmark_modules import load_benchmark
from raydetect import FaceDetector
from raydetect.tuning.calibration import (
    CALIBRATION_VERSION,
    Calibration,
    Sample,
    fit_cost_model,
    hardware_key,
    load_or_measure,
)
from raydetect.cli import main
from raydetect.mtcnn.nets import PNet
from raydetect.tuning.pyramid_plan import (
    crop_network_macs,
    parse_resolution,
    plan_pyramid,
    pnet_macs,
    pnet_output_size,
)
from raydetect.mtcnn.pyramid import level_size, pyramid_scales


def test_scales_for_hd_frame_by_hand():
    # 1920x1080, M = 40: m = 12/40 = 0.3; shorter side 1080 * 0.3 = 324 px at level 0.
    # Levels continue while 324 * 0.709^k >= 12: 0.709^9 = 0.0453 -> 14.7 px (kept),
    # 0.709^10 = 0.0321 -> 10.4 px (stopped): 10 levels.
    scales = pyramid_scales(1080, 1920, 40, 0.709)
    assert len(scales) == 10
    np.testing.assert_allclose(scales, 0.3 * 0.709 ** np.arange(10))
    plan = plan_pyramid(1080, 1920, 40)
    # Level 0: int(1080 * 0.3 + 1) = 325, int(1920 * 0.3 + 1) = 577.
    assert (plan.levels[0].height, plan.levels[0].width) == (325, 577)
    assert plan.pixels == sum(level.height * level.width for level in plan.levels)


def test_plan_levels_are_the_cascade_pyramid():
    for height, width, min_face, factor in [(1080, 1920, 40, 0.709), (333, 416, 10, 0.709), (360, 640, 20, 0.5),
                                            (97, 131, 12, 0.8)]:
        ours = plan_pyramid(height, width, min_face, factor)
        theirs = pyramid_scales(height, width, min_face, factor)
        assert [level.scale for level in ours.levels] == pytest.approx(theirs)
        assert [(level.height, level.width) for level in ours.levels] == [
            level_size(height, width, s) for s in theirs
        ]


def test_pnet_macs_by_hand():
    # 12x12 input: conv1 3->10 3x3 gives 10x10: 100 * 10 * 27 = 27,000; max-pool 2/2 -> 5x5;
    # conv2 10->16 3x3 gives 3x3: 9 * 16 * 90 = 12,960; conv3 16->32 3x3 gives 1x1: 32 * 144 = 4,608;
    # heads 1x1 32->2 and 32->4: 192. Total 44,760.
    assert pnet_macs(12, 12) == 44_760
    # About 1,800 multiply-adds per input pixel on a large level, whatever its exact size.
    assert 1_700 < pnet_macs(539, 960) / (539 * 960) < 1_900


def test_crop_network_macs_by_hand():
    # R-Net, 24x24: conv1 22x22*28*27 = 365,904; pool 3/2 ceil -> 11; conv2 9x9*48*252 = 979,776;
    # pool -> 4; conv3 2x2 3x3*64*192 = 110,592; dense 576*128 = 73,728; heads 128*6 = 768.
    assert crop_network_macs("rnet") == 1_530_768
    assert crop_network_macs("onet") > 8 * crop_network_macs("rnet")


@pytest.mark.parametrize("size", [(12, 12), (13, 17), (100, 57), (325, 577)])
def test_output_size_matches_the_network(size):
    face_prob, _ = PNet()(torch.zeros(1, 3, *size))
    assert pnet_output_size(*size) == tuple(face_prob.shape[1:])


def test_small_frames_and_bad_options():
    assert plan_pyramid(20, 100, 40).levels == ()
    for bad in [dict(height=0, width=10), dict(min_face_size=0), dict(min_face_size=0.5), dict(scale_factor=1.0),
                dict(scale_factor=0)]:
        kwargs = {"height": 100, "width": 100, "min_face_size": 20, "scale_factor": 0.7, **bad}
        with pytest.raises(ValueError, match="must be"):
            plan_pyramid(**kwargs)
    assert parse_resolution("1920x1080") == (1080, 1920)
    for text in ["1920", "axb", "0x10", "1920x1080x3"]:
        with pytest.raises(ValueError, match="resolution"):
            parse_resolution(text)


def test_fit_recovers_a_known_cost_model():
    rng = np.random.default_rng(1)
    samples = [Sample(f"uniform {g}", g, 0, 0, 0, 4.0 + 30 * g) for g in (0.3, 1.2, 2.7)]  # P-Net only
    for k in range(12):
        gmacs, rnet, onet = rng.uniform(0.1, 3), int(rng.integers(0, 2000)), int(rng.integers(0, 300))
        samples.append(Sample(f"s{k}", gmacs, 0, rnet, onet, 4.0 + 30 * gmacs + 0.05 * rnet + 0.4 * onet))
    np.testing.assert_allclose(fit_cost_model(samples), (4.0, 30.0, 0.05, 0.4), rtol=1e-6)


def test_pnet_terms_come_from_pnet_only_frames():
    # The candidate-heavy frame is 500 ms slower than any model predicts (another job ran):
    # the P-Net terms still come out exact, only the candidate terms absorb the noise.
    samples = [Sample("u", g, 0, 0, 0, 10 + 100 * g) for g in (0.5, 1.0, 2.0)]
    samples += [Sample("busy", 1.0, 0, 300, 40, 110 + 0.2 * 300 + 1.0 * 40 + 500),
                Sample("calm", 0.5, 0, 100, 10, 60 + 0.2 * 100 + 1.0 * 10)]
    fixed, per_gmac, per_rnet, per_onet = fit_cost_model(samples)
    assert (fixed, per_gmac) == pytest.approx((10.0, 100.0))
    assert per_rnet >= 0 and per_onet >= 0


def test_fit_keeps_small_frames_as_close_as_large_ones():
    # Candidate-free timings from a calibration run on the 2-core development machine: cost per
    # GMAC grows with the frame. Plain least squares let the 1080p frame set the fixed cost to
    # 0.6 ms and put the 640x360 frame 23% too low; fitted on relative errors, every frame is
    # within 12%.
    timings = [(0.281, 22.1), (0.649, 36.1), (1.171, 63.4), (2.671, 158.0)]
    fixed, per_gmac, _, _ = fit_cost_model([Sample("u", g, 0, 0, 0, ms) for g, ms in timings])
    errors = [abs(fixed + per_gmac * g - ms) / ms for g, ms in timings]
    assert max(errors) < 0.12 and fixed > 3


def test_fit_never_returns_negative_costs():
    # The O-Net term is pure noise pulling negative: it is dropped, the others still fit.
    samples = [Sample("a", g, 0, r, o, 2 + 10 * g + 0.1 * r - 0.01 * o)
               for g, r, o in [(1, 0, 0), (2, 100, 50), (3, 20, 400), (1.5, 300, 10), (0.5, 50, 200)]]
    fitted = fit_cost_model(samples)
    assert min(fitted) >= 0 and fitted[3] == 0.0


CALIBRATION = Calibration(
    fixed_ms=5.0, ms_per_gmac=20.0, ms_per_rnet_candidate=0.01, ms_per_onet_candidate=0.1,
    rnet_per_megapixel=1000.0, onet_per_megapixel=100.0, hardware={}, measured_at="2024-01-01T00:00:00",
)


def test_estimate_adds_up():
    plan = plan_pyramid(1080, 1920, 40)
    estimate = CALIBRATION.estimate_ms(plan)
    megapixels = plan.pixels / 1e6
    floor = 5.0 + 20.0 * plan.macs / 1e9
    assert estimate["floor_ms"] == pytest.approx(floor)
    assert estimate["ms"] == pytest.approx(floor + 0.01 * 1000 * megapixels + 0.1 * 100 * megapixels)
    assert CALIBRATION.estimate_ms(plan, 200, 10)["ms"] == pytest.approx(floor + 2 + 1)


def test_calibration_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYDETECT_CACHE_DIR", str(tmp_path))
    calls = []

    def measure(device):  # stands in for the timing run, which the detector tests cover
        calls.append(device)
        return Calibration(**{**CALIBRATION.__dict__, "hardware": hardware_key(device)})

    first, path, measured = load_or_measure("cpu", measure=measure)
    again, same_path, measured_again = load_or_measure("cpu", measure=measure)
    assert (measured, measured_again, calls) == (True, False, ["cpu"])
    assert path == same_path and path.parent == tmp_path
    assert again.ms_per_gmac == first.ms_per_gmac
    path.write_text("{broken")
    load_or_measure("cpu", measure=measure)
    assert len(calls) == 2 and json.loads(path.read_text())["version"] == CALIBRATION_VERSION


def test_plan_command_without_time(capsys):
    assert main(["plan", "--resolution", "1920x1080", "--min-face-size", "40", "--no-time"]) == 0
    out = capsys.readouterr().out
    assert "10 pyramid levels" in out and "577x325" in out and "GMAC" in out


def test_plan_command_json(capsys):
    assert main(["plan", "--resolution", "640x360", "--no-time", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pnet_macs"] == sum(level["pnet_macs"] for level in result["levels"])
    assert result["levels"][0]["width"] == int(640 * 12 / 20 + 1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--resolution", "big"], "resolution must look like"),
        (["--resolution", "640x360", "--min-face-size", "-3"], "min_face_size must be at least 1 pixel"),
        (["--resolution", "640x360", "--scale-factor", "1.5"], "scale_factor must be in"),
        (["--resolution", "640x360", "--candidates", "5"], "--candidates must be two numbers"),
    ],
)
def test_plan_command_bad_input(capsys, argv, message):
    assert main(["plan", *argv, "--no-time"]) == 2
    assert message in capsys.readouterr().err


def test_real_calibration_on_small_frames():
    from raydetect.tuning.calibration import measure_calibration

    calibration = measure_calibration("cpu", uniform_sizes=((60, 80), (120, 160)), sample_frames=2, tiles=(),
                                      repeats=1)
    assert [s.label for s in calibration.samples] == ["uniform 80x60", "uniform 160x120", "sample frame 0",
                                                     "sample frame 1"]
    assert all(s.ms > 0 for s in calibration.samples)
    # The sample video shows a face: P-Net proposes, R-Net gets candidates.
    assert calibration.rnet_per_megapixel > 0
    coefficients = (calibration.fixed_ms, calibration.ms_per_gmac, calibration.ms_per_rnet_candidate,
                    calibration.ms_per_onet_candidate)
    assert min(coefficients) >= 0 and max(coefficients) > 0
    assert calibration.estimate_ms(plan_pyramid(360, 640, 20))["ms"] > 0
    assert calibration.hardware["device"] == "cpu"


def test_stage_benchmark_counts_the_plans_work():
    """benchmarks/detector_stages.py divides each stage's time by the plan's multiply-adds."""
    stages = load_benchmark("detector_stages")
    detector = FaceDetector(device="cpu")
    image = torch.zeros((720, 1280, 3), dtype=torch.uint8)
    gmacs = stages.stage_gmacs(image, detector, {"rnet_candidates": 556, "onet_candidates": 49})
    assert gmacs["propose (P-Net stage)"] == pytest.approx(plan_pyramid(720, 1280).macs / 1e9)
    assert gmacs["refine (R-Net stage)"] == pytest.approx(556 * crop_network_macs("rnet") / 1e9)
    assert gmacs["finish (O-Net stage)"] == pytest.approx(49 * crop_network_macs("onet") / 1e9)
