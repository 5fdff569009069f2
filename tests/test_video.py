"""Opening, probing, exact frame-range decoding and sampling of real video files."""

from __future__ import annotations

import hashlib

import cv2
import fsspec
import numpy as np
import pytest

from raydetect.offline.video import (
    FrameRange,
    Sampling,
    VideoError,
    evenly_spaced,
    fit_max_side,
    open_video,
    probe,
)

CROWD = "street_crowd_24f_640x360.mp4"  # MPEG-4 in MP4, 25 fps, 24 frames
HAMILTON = "hamilton_45f_640x360.avi"  # Xvid in AVI, 29.97 fps, 45 frames


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def _reference_frames(path) -> list[str]:
    """Every frame decoded in order by plain OpenCV, converted to RGB: the ground truth."""
    capture = cv2.VideoCapture(str(path))
    digests = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        digests.append(_digest(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    capture.release()
    return digests


def _all(location, start=0, stop=None, sampling=Sampling(), required_end=0):
    info = probe(str(location))
    frames = FrameRange(str(location), start, stop, sampling.selector(info), info.fps, required_end)
    return frames, list(frames)


@pytest.mark.parametrize("name,count,fps", [(CROWD, 24, 25.0), (HAMILTON, 45, 29.97)])
def test_probe_reads_the_container(data_dir, name, count, fps):
    info = probe(str(data_dir / name))
    assert (info.frame_count, info.width, info.height) == (count, 640, 360)
    assert info.fps == pytest.approx(fps, rel=1e-3)


@pytest.mark.parametrize("name", [CROWD, HAMILTON])
def test_any_range_decodes_exactly_the_reference_frames(data_dir, name):
    path = data_dir / name
    reference = _reference_frames(path)
    for start, stop in [(0, None), (0, 5), (1, 2), (7, 19), (11, 12), (len(reference) - 3, None), (13, 10_000)]:
        frames, got = _all(path, start, stop)
        expected = reference[start:stop]
        assert [f.index for f in got] == list(range(start, start + len(expected)))
        assert [_digest(f.image) for f in got] == expected, (start, stop)
        assert frames.frames_read == len(expected)


@pytest.mark.parametrize("name", [CROWD, HAMILTON])
def test_split_ranges_equal_one_range(data_dir, name):
    path = data_dir / name
    whole = [(f.index, f.timestamp_s, _digest(f.image)) for f in _all(path)[1]]
    pieces = []
    for start in range(0, len(whole), 7):
        stop = start + 7 if start + 7 < len(whole) else None
        pieces += [(f.index, f.timestamp_s, _digest(f.image)) for f in _all(path, start, stop)[1]]
    assert pieces == whole


def test_timestamps_are_index_over_fps(data_dir):
    _, frames = _all(data_dir / HAMILTON, 10, 13)
    assert [f.timestamp_s for f in frames] == [i / 29.97 for i in (10, 11, 12)]
    assert frames[0].image.shape == (360, 640, 3) and frames[0].image.dtype == np.uint8


def test_frames_are_rgb(tmp_path):
    path = tmp_path / "red.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for _ in range(3):
        writer.write(np.full((32, 32, 3), (0, 0, 255), np.uint8))  # pure red in OpenCV's BGR
    writer.release()
    _, frames = _all(path)
    red, green, blue = frames[0].image[16, 16].astype(int)
    assert red > 200 and green < 40 and blue < 40


def test_every_nth_frame(data_dir):
    _, frames = _all(data_dir / HAMILTON, sampling=Sampling(every=10))
    assert [f.index for f in frames] == [0, 10, 20, 30, 40]


def test_every_nth_frame_is_the_same_across_shards(data_dir):
    path = data_dir / HAMILTON
    selected = [f.index for start in (0, 7, 14, 21, 28, 35, 42) for f in
                _all(path, start, start + 7 if start < 42 else None, Sampling(every=4))[1]]
    assert selected == list(range(0, 45, 4))


def test_target_fps_picks_the_first_frame_of_each_interval(data_dir):
    _, frames = _all(data_dir / HAMILTON, sampling=Sampling(fps=10))
    indices = [f.index for f in frames]
    # 29.97 fps to 10 fps: one frame per 1/10 s interval, about every third frame.
    assert indices[:4] == [0, 3, 6, 9]
    assert len(indices) == len({int(i * 10 / 29.97) for i in range(45)})
    gaps = np.diff([f.timestamp_s for f in frames])
    assert gaps.min() >= 0.09 and gaps.max() <= 0.11


def test_target_fps_at_or_above_the_video_rate_keeps_every_frame(data_dir):
    _, frames = _all(data_dir / CROWD, sampling=Sampling(fps=60))
    assert len(frames) == 24


def test_k_evenly_spaced_frames_span_the_video(data_dir):
    frames, got = _all(data_dir / HAMILTON, sampling=Sampling(count=5))
    assert [f.index for f in got] == [4, 13, 22, 31, 40]
    assert frames.frames_read == 41  # decoding stops after the last sampled frame


def test_evenly_spaced_edge_cases():
    assert evenly_spaced(10, 1) == [5]
    assert evenly_spaced(10, 10) == list(range(10))
    assert evenly_spaced(3, 8) == [0, 1, 2]
    picked = evenly_spaced(300, 32)
    assert len(set(picked)) == 32 and picked == sorted(picked) and picked[0] > 0 and picked[-1] < 299


def test_sampling_rejects_bad_options():
    for kwargs in ({"every": 0}, {"fps": 0.0}, {"fps": float("nan")}, {"count": 0}, {"every": 2, "count": 3}):
        with pytest.raises(ValueError):
            Sampling(**kwargs)


def test_file_urls_with_escaped_characters(data_dir, tmp_path):
    path = tmp_path / "a clip #1.avi"
    path.write_bytes((data_dir / HAMILTON).read_bytes())
    assert probe(path.as_uri()).frame_count == 45  # as_uri() writes "a%20clip%20%231.avi"


def test_opening_through_fsspec_memory_and_file_urls(data_dir):
    path = data_dir / CROWD
    with fsspec.open("memory://videos/crowd.mp4", "wb") as out:
        out.write(path.read_bytes())
    reference = _reference_frames(path)[5:9]
    for location in ("memory://videos/crowd.mp4", path.resolve().as_uri()):
        _, frames = _all(location, 5, 9)
        assert [_digest(f.image) for f in frames] == reference, location
    fsspec.filesystem("memory").rm("/videos", recursive=True)


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "no such file"),
        (b"", "empty file"),
        (b"just some text, not a video\n" * 10, "not a readable video"),
        (bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)), "not a readable video"),
    ],
    ids=["missing", "empty", "text", "random-bytes"],
)
def test_bad_files_raise_a_clear_video_error(tmp_path, content, message):
    path = tmp_path / "input.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError, match=message) as caught:
        probe(str(path))
    assert str(path) in str(caught.value)


def test_a_still_image_is_not_a_video(tmp_path):
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(VideoError, match="still image"):
        probe(str(path))


def test_a_directory_is_not_a_video(tmp_path):
    with pytest.raises(VideoError, match="directory"):
        probe(str(tmp_path))


def test_missing_remote_file_is_a_video_error():
    with pytest.raises(VideoError, match="no such file"):
        probe("memory://nowhere/none.mp4")


def test_truncated_video_raises_when_the_stream_ends_early(data_dir, tmp_path):
    # AVI keeps its index at the end: cut short, it still opens and decodes the frames it has.
    data = (data_dir / HAMILTON).read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: len(data) // 2])
    info = probe(str(path))
    frames = FrameRange(str(path), 0, None, Sampling().selector(info), info.fps, required_end=info.frame_count)
    with pytest.raises(VideoError, match="truncated"):
        for _ in frames:
            pass
    assert 0 < frames.frames_read < info.frame_count


def test_a_range_without_requirement_just_ends(data_dir):
    frames, got = _all(data_dir / CROWD, 20, 40)
    assert [f.index for f in got] == [20, 21, 22, 23] and frames.frames_read == 4


def test_bad_range_is_rejected(data_dir):
    with pytest.raises(ValueError):
        FrameRange(str(data_dir / CROWD), 5, 2, Sampling().selector(probe(str(data_dir / CROWD))), 25.0)


def test_open_video_releases_the_capture(data_dir):
    with open_video(str(data_dir / CROWD)) as capture:
        assert capture.isOpened()
    assert not capture.isOpened()


def test_fit_max_side_downscales_and_maps_back():
    image = np.zeros((1080, 1920, 3), np.uint8)
    small, fx, fy = fit_max_side(image, 640)
    assert small.shape == (360, 640, 3)
    assert (fx, fy) == (3.0, 3.0)
    odd, fx, fy = fit_max_side(np.zeros((101, 333, 3), np.uint8), 100)
    assert odd.shape == (30, 100, 3) and fx == pytest.approx(3.33) and fy == pytest.approx(101 / 30)
    same, fx, fy = fit_max_side(image, 4000)
    assert same is image and (fx, fy) == (1.0, 1.0)
    assert fit_max_side(image, None)[0] is image
