"""``raydetect sweep`` and ``raydetect eval`` on real photos with hand-made annotations and a real video."""

from __future__ import annotations

import json
import sys

import pytest

from raydetect.cli import main
from raydetect.commands.sweep import sweep_settings
from raydetect.tuning.image_folders import read_image
from raydetect.tuning.pyramid_plan import crop_network_macs, plan_pyramid

PHOTOS = "dlib_faces"  # three photos, 12 faces, dlib-style square boxes: matched at IoU 0.3
VIDEO = "hamilton_45f_640x360.avi"


def _sweep(data_dir, tmp_path, *extra):
    output = tmp_path / "sweep.json"
    argv = ["sweep", str(data_dir / PHOTOS), "--iou", "0.3", "--videos", str(data_dir / VIDEO),
            "--video-frames", "2", "--every", "20", "--min-face-sizes", "40,80", "--json", str(output), *extra]
    assert main(argv) == 0
    return json.loads(output.read_text())["settings"]


def test_local_sweep_reports_precision_and_cost(data_dir, tmp_path, capsys):
    plot = tmp_path / "sweep.png"
    rows = _sweep(data_dir, tmp_path, "--plot", str(plot))
    out = capsys.readouterr().out
    assert "annotated images (3)" in out and "video frames (2)" in out and "M=40" in out
    assert [row["label"] for row in rows] == ["M=40", "M=80"]
    assert all(row["precision"] == "auto" for row in rows)
    for row in rows:
        assert 0 <= row["ap"]["all"] <= 1 and 0 <= row["recall"]["all"] <= 1
        assert row["image_ms"] > 0 and row["video_ms"] > 0
        assert row["video_stats"]["rnet_candidates"] >= row["video_stats"]["onet_candidates"]
    # A larger minimum face size shrinks P-Net's work by about (40 / 80)^2; the detector's count
    # must agree with the plan computed before running.
    sizes = [read_image(p).shape[:2] for p in sorted((data_dir / PHOTOS).glob("*.jpg"))]
    for row in rows:
        planned = sum(plan_pyramid(h, w, row["min_face_size"]).pixels for h, w in sizes) / len(sizes)
        assert row["image_stats"]["pnet_pixels"] == pytest.approx(planned)
        assert row["video_stats"]["pnet_pixels"] == plan_pyramid(360, 640, row["min_face_size"]).pixels
    assert rows[1]["image_stats"]["pnet_pixels"] < 0.35 * rows[0]["image_stats"]["pnet_pixels"]
    # Multiply-adds: P-Net's from the plan plus the per-crop cost of each counted candidate.
    for row in rows:
        stats = row["video_stats"]
        expected = (plan_pyramid(360, 640, row["min_face_size"]).macs + stats["rnet_candidates"] * 1_530_768
                    + stats["onet_candidates"] * crop_network_macs("onet")) / 1e9
        assert row["video_gmacs"] == pytest.approx(expected)
    assert rows[1]["image_gmacs"] < rows[0]["image_gmacs"]
    # The photos' faces are 37-76 px: M=80 must miss some that M=40 finds.
    assert rows[1]["recall"]["all"] < rows[0]["recall"]["all"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_on_ray_matches_local(data_dir, tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    local = _sweep(data_dir, tmp_path)
    remote = _sweep(data_dir, tmp_path, "--address", address, "--task-cpus", "0.5")
    for a, b in zip(local, remote):
        assert a["label"] == b["label"]
        assert a["ap"] == pytest.approx(b["ap"]) and a["video_faces_per_frame"] == b["video_faces_per_frame"]
        assert a["image_stats"] == pytest.approx(b["image_stats"])


def test_sweep_settings_grid():
    settings = sweep_settings([10, 20], [0.709, 0.8], [(0.6, 0.7, 0.7)])
    assert [s["label"] for s in settings] == ["M=10 f=0.709", "M=10 f=0.8", "M=20 f=0.709", "M=20 f=0.8"]
    assert settings[0]["thresholds"] == (0.6, 0.7, 0.7)
    labels = [s["label"] for s in sweep_settings([20], [0.709], [(0.6, 0.7, 0.7), (0.5, 0.6, 0.9)])]
    assert labels == ["M=20 t=0.6,0.7,0.7", "M=20 t=0.5,0.6,0.9"]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give annotated IMAGES, --videos, or both"),
        (["--videos", "v.mp4", "--min-face-sizes", "0.5"], "minimum face sizes must be >= 1"),
        (["--videos", "v.mp4", "--scale-factors", "1.2"], "scale factors must be in (0, 1)"),
        (["--videos", "v.mp4", "--repeats", "0"], "--repeats must be >= 1"),
        (["--videos", "missing.mp4"], "missing.mp4"),
    ],
)
def test_sweep_bad_input(capsys, argv, message):
    assert main(["sweep", *argv]) == 2
    assert message in capsys.readouterr().err


def test_sweep_bad_lists_are_usage_errors(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--videos", "v.mp4", "--min-face-sizes", "ten"])
    assert "comma-separated numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--videos", "v.mp4", "--thresholds", "0.6,0.7"])
    assert "three numbers" in capsys.readouterr().err


# --------------------------------------------------------------------------- raydetect eval


def test_eval_command_and_saved_detections(data_dir, tmp_path, capsys):
    results, saved = tmp_path / "eval.json", tmp_path / "detections.json"
    argv = ["eval", str(data_dir / PHOTOS), "--iou", "0.3", "--min-face-size", "30", "--json", str(results),
            "--save-detections", str(saved), "--plot", str(tmp_path / "pr.png")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 images, IoU 0.3" in out and "ms per image" in out
    summary = json.loads(results.read_text())
    assert summary["subsets"]["all"]["faces"] == 12
    assert summary["detector"]["precision"] == "auto"
    assert summary["timing"]["precision"] in ("bfloat16", "float32")  # "auto" on a CPU
    ap = summary["subsets"]["all"]["ap"]
    assert ap > 0.5  # the photos' faces are all larger than 30 px
    # The saved detections evaluate to the same figures without running the detector.
    again = tmp_path / "again.json"
    assert main(["eval", str(data_dir / PHOTOS), "--iou", "0.3", "--detections", str(saved), "--json", str(again)]) == 0
    assert json.loads(again.read_text())["subsets"]["all"]["ap"] == pytest.approx(ap)
    assert (tmp_path / "pr.png").stat().st_size > 1000


def test_eval_single_files_match_their_annotations(data_dir, tmp_path, capsys):
    detections = tmp_path / "d.json"
    detections.write_text(json.dumps({"images": {"2008_001009.jpg": [[0, 0, 10, 10, 0.9]]}}))
    argv = ["eval", str(data_dir / PHOTOS / "2008_001009.jpg"), "-a", str(data_dir / PHOTOS / "annotations.json"),
            "--detections", str(detections)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 images" in out and "0.000" in out  # one false positive, two missed faces


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--annotations", "nope.json"], "annotation file not found"),
        (["--detections", "nope.json"], "detections file not found"),
        (["--subsets", "hard"], "unknown subset"),
        (["--iou", "0"], "iou must be in (0, 1]"),
    ],
)
def test_eval_bad_input(data_dir, capsys, extra, message):
    assert main(["eval", str(data_dir / PHOTOS), *extra]) == 2
    assert message in capsys.readouterr().err


def test_eval_needs_annotations_for_every_image(data_dir, tmp_path, capsys):
    assert main(["eval", str(data_dir / VIDEO), "-a", str(data_dir / PHOTOS / "annotations.json")]) == 2
    assert "no annotation for this image" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "--annotations FILE is required" in capsys.readouterr().err


def test_eval_without_matplotlib_still_reports(data_dir, tmp_path, capsys, monkeypatch):
    detections = tmp_path / "d.json"
    detections.write_text(json.dumps({"images": {"2008_001009.jpg": [[0, 0, 10, 10, 0.9]]}}))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plots extra were not installed
    argv = ["eval", str(data_dir / PHOTOS / "2008_001009.jpg"), "-a", str(data_dir / PHOTOS / "annotations.json"),
            "--detections", str(detections), "--plot", str(tmp_path / "pr.png")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "1 images" in captured.out and "pip install 'raydetect[plots]'" in captured.err
