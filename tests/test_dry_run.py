"""``detect --dry-run``: inputs probed on the cluster, the work counted, the cost estimated, nothing written."""

from __future__ import annotations

import pytest

from raydetect.offline.chunk_detection import DetectionOptions
from raydetect.offline.estimate import FACE_ROW_BYTES, estimate, sampled_frames
from raydetect.offline.job import JobSpec, Resources, dry_run
from raydetect.offline.shards import ShardOptions
from raydetect.offline.video import Sampling, VideoInfo
from raydetect.tuning.calibration import Calibration
from raydetect.tuning.pyramid_plan import plan_pyramid

CROWD = "street_crowd_24f_640x360.mp4"  # 24 frames
HAMILTON = "hamilton_45f_640x360.avi"  # 45 frames


def test_dry_run_probes_counts_and_writes_nothing(ray_session, data_dir, tmp_path):
    dest = tmp_path / "never-written"
    spec = JobSpec(
        sources=[str(data_dir / CROWD), str(data_dir / HAMILTON), str(tmp_path / "missing.mp4")], output=str(dest),
        detection=DetectionOptions(min_face_size=30, max_side=320),
        shards=ShardOptions(shard_frames=16, sampling=Sampling(every=3)),
        resources=Resources(actors=1, cpus_per_actor=1, torch_threads=1),
    )
    result = dry_run(spec, calibrate=False)
    assert (result.videos, result.probed, result.skipped) == (3, 2, 0)
    assert result.failed == [(str(tmp_path / "missing.mp4"), f"{tmp_path / 'missing.mp4'}: no such file")]
    assert (result.frames, result.sampled, result.shards) == (24 + 45, 8 + 15, 2 + 3)
    assert result.sizes == {(320, 180): 23}  # --max-side 320 of 640 x 360
    assert result.output_bytes == 23 * FACE_ROW_BYTES
    assert not dest.exists()
    assert "cannot probe:" in result.text() and "could not be probed" in result.text()


def test_detector_time_follows_the_calibration():
    """The estimate is the calibration's per-frame cost times the sampled frames at each size, in
    CPU-core-hours with the calibration's threads (a calibration with chosen coefficients, no timing)."""
    calibration = Calibration(fixed_ms=2.0, ms_per_gmac=10.0, ms_per_rnet_candidate=0.1, ms_per_onet_candidate=0.5,
                              rnet_per_megapixel=100.0, onet_per_megapixel=10.0,
                              hardware={"device": "cpu", "device_name": "test CPU", "torch_threads": 4},
                              measured_at="now")
    rows = [{"video": "a.mp4", "error": "", "frame_count": 300, "fps": 30.0, "width": 1280, "height": 720},
            {"video": "a.mp4", "error": "", "frame_count": 300, "fps": 30.0, "width": 1280, "height": 720}]
    options = ShardOptions(sampling=Sampling(fps=5.0), max_side=640)
    from raydetect.offline.estimate import add_detector_time

    result = estimate(rows, 1, options, crops=True, crop_pixels=112 * 112)
    assert (result.probed, result.shards, result.sampled) == (1, 2, 50)
    add_detector_time(result, calibration, min_face_size=20, scale_factor=0.709)
    per_frame = calibration.estimate_ms(plan_pyramid(360, 640, 20, 0.709))["ms"]
    assert result.detector_ms == pytest.approx(50 * per_frame)
    assert result.device_hours == pytest.approx(50 * per_frame / 3.6e6 * 4)
    assert "CPU-core-hours" in result.text()


@pytest.mark.parametrize("sampling, expected", [
    (Sampling(), 45), (Sampling(every=4), 12), (Sampling(count=10), 10), (Sampling(count=100), 45),
    (Sampling(fps=10.0), 15),  # intervals of 1/10 s over 45 frames at 29.97 fps: floor(44 x 10 / 29.97) + 1
])
def test_sampled_frame_counts_match_the_selector(sampling, expected):
    info = VideoInfo(frame_count=45, fps=29.97, width=64, height=48)
    selector = sampling.selector(info)
    by_selector = sum(1 for i in range(45) if selector.wants(i))
    assert sampled_frames(info, ShardOptions(sampling=sampling)) == by_selector
    assert by_selector == expected
