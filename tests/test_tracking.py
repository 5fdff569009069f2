"""The face linker on small generated sequences (boxes along known paths, no detector) and shot
cuts on real video frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from raydetect.core.results import Detections
from raydetect.core.tracking import (
    FaceTracker,
    TrackingError,
    TrackingOptions,
    find_cuts,
    frame_signature,
    interpolate_tracks,
    link_tracks,
    long_track_faces,
    track_frames,
)

FPS = 30.0


def _sequence(paths: dict[int, list[tuple[int, float, float, float]]], frames: int, fps: float = FPS):
    """Faces from ground-truth paths: {person: [(frame, cx, cy, side), ...]} -> link_tracks inputs
    plus each face's person."""
    rows = [(frame, cx, cy, side, person) for person, path in paths.items() for frame, cx, cy, side in path]
    rows.sort(key=lambda r: (r[0], r[4]))
    face_frames = np.array([r[0] for r in rows], np.int64)
    centre = np.array([[r[1], r[2]] for r in rows], np.float32).reshape(-1, 2)
    half = np.array([r[3] / 2 for r in rows], np.float32)[:, None]
    boxes = np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)
    frame_indices = np.arange(frames, dtype=np.int64)
    return {
        "frame_indices": frame_indices,
        "timestamps_s": frame_indices / fps,
        "cuts": np.zeros(frames, bool),
        "face_frames": face_frames,
        "boxes": boxes,
        "scores": np.full(len(rows), 0.99, np.float32),
    }, np.array([r[4] for r in rows])


def _line(frames, start, end, side=60.0, side_end=None):
    side_end = side if side_end is None else side_end
    frames = list(frames)
    first, last = frames[0], frames[-1]
    out = []
    for frame in frames:
        w = (frame - first) / max(last - first, 1)  # along the path in time, hidden frames included
        centre = np.asarray(start) + (np.asarray(end) - np.asarray(start)) * w
        out.append((frame, centre[0], centre[1], side + (side_end - side) * w))
    return out


def _groups(ids, persons):
    """One set of persons per track and one set of tracks per person."""
    by_track = {t: set(persons[ids == t]) for t in np.unique(ids)}
    by_person = {p: set(ids[persons == p]) for p in np.unique(persons)}
    return by_track, by_person


def test_crossing_faces_keep_their_ids():
    # Two faces of the same size cross head-on at 8 px/frame: boxes overlap fully at the crossing.
    frames = range(40)
    seq, persons = _sequence({0: _line(frames, (100, 200), (420, 200)), 1: _line(frames, (420, 200), (100, 200))}, 40)
    ids = link_tracks(**seq)
    by_track, by_person = _groups(ids, persons)
    assert all(len(p) == 1 for p in by_track.values()), by_track
    assert all(len(t) == 1 for t in by_person.values()), by_person


def test_gap_within_max_gap_resumes_and_longer_gap_ends_the_track():
    # Hidden for frames 10-19 (0.33 s at 30 fps): resumes with the default 0.5 s.
    seen = [f for f in range(40) if not 10 <= f < 20]
    seq, persons = _sequence({0: _line(seen, (100, 100), (200, 100))}, 40)
    assert len(np.unique(link_tracks(**seq))) == 1
    assert len(np.unique(link_tracks(**seq, options=TrackingOptions(max_gap_s=0.2)))) == 2


def test_hidden_walker_is_found_where_it_should_have_got_to():
    # 8 px/frame, hidden for frames 15-24 (0.33 s): it reappears 80 px on, more than its 60 px box,
    # where only the predicted motion looks for it; a face left standing at the hiding place
    # (entering at frame 25) must not take the walker's track.
    seen = [f for f in range(40) if not 15 <= f < 25]
    walker, stander = _line(seen, (100, 200), (100 + 8 * 39, 200)), _line(range(25, 40), (212, 200), (212, 200))
    seq, persons = _sequence({0: walker, 1: stander}, 40)
    ids = link_tracks(**seq)
    by_track, by_person = _groups(ids, persons)
    assert by_person[0] == {ids[persons == 0][0]} and len(by_person[1]) == 1
    assert all(len(p) == 1 for p in by_track.values())


def test_cut_ends_every_track_even_when_the_box_stays():
    seq, _ = _sequence({0: _line(range(30), (100, 100), (100, 100))}, 30)
    seq["cuts"][12] = True
    ids = link_tracks(**seq)
    assert set(ids[seq["face_frames"] < 12]) == {0}
    assert set(ids[seq["face_frames"] >= 12]) == {1}


def test_cut_on_a_frame_without_faces_still_ends_tracks():
    seen = [f for f in range(30) if f != 12]
    seq, _ = _sequence({0: _line(seen, (100, 100), (100, 100))}, 30)
    seq["cuts"][12] = True
    assert len(np.unique(link_tracks(**seq))) == 2


def test_leaving_and_entering_faces_get_new_tracks():
    # Person 0 walks out on the right by frame 20; person 1 enters on the left at frame 22 and
    # walks to where person 0 was: never the same track.
    seq, persons = _sequence(
        {0: _line(range(0, 20), (300, 150), (620, 150)), 1: _line(range(22, 45), (20, 150), (400, 150))}, 45
    )
    ids = link_tracks(**seq)
    by_track, by_person = _groups(ids, persons)
    assert all(len(p) == 1 for p in by_track.values())
    assert all(len(t) == 1 for t in by_person.values())


def test_zoom_keeps_the_track():
    seq, _ = _sequence({0: _line(range(30), (300, 200), (300, 200), side=40, side_end=160)}, 30)
    assert len(np.unique(link_tracks(**seq))) == 1


def test_sparse_sampling_beyond_max_gap_links_nothing():
    # One sample a second: each face is a track of its own with the default 0.5 s gap.
    seq, _ = _sequence({0: _line(range(0, 300, 30), (100, 100), (110, 100))}, 300)
    seq["frame_indices"] = np.arange(0, 300, 30, dtype=np.int64)
    seq["timestamps_s"] = seq["frame_indices"] / FPS
    seq["cuts"] = np.zeros(10, bool)
    ids = link_tracks(**seq)
    assert ids.tolist() == list(range(10))
    assert len(np.unique(link_tracks(**seq, options=TrackingOptions(max_gap_s=1.5)))) == 1


def test_doubtful_detection_beside_a_face_cannot_take_its_track():
    # A face at 0.99 and, from frame 10, a 0.71 blob overlapping it more closely to the predicted
    # box: the confident face keeps the track (ByteTrack's first stage).
    seq, persons = _sequence(
        {0: _line(range(20), (200, 200), (240, 200)), 1: _line(range(10, 20), (222, 200), (242, 200))}, 20
    )
    seq["scores"][persons == 1] = 0.71
    ids = link_tracks(**seq)
    assert len(set(ids[persons == 0])) == 1


def test_ids_numbered_by_first_face_and_independent_of_input_order():
    seq, _ = _sequence(
        {
            0: _line(range(5, 20), (400, 100), (420, 100)),
            1: _line(range(5, 20), (100, 100), (120, 100)),
            2: _line(range(0, 20), (250, 300), (250, 300)),
        },
        20,
    )
    ids = link_tracks(**seq)
    first = {int(t): (seq["face_frames"][ids == t].min(), seq["boxes"][ids == t][0, 0]) for t in np.unique(ids)}
    assert sorted(first, key=lambda t: first[t]) == sorted(first)
    shuffled = np.random.default_rng(0).permutation(len(ids))
    again = link_tracks(**{k: (v[shuffled] if k in ("face_frames", "boxes", "scores") else v) for k, v in seq.items()})
    assert np.array_equal(again, ids[shuffled])


def test_streaming_tracker_gives_the_same_ids_as_link_tracks():
    frames = range(60)
    seen_1 = [f for f in frames if not 25 <= f < 33]
    seq, persons = _sequence(
        {
            0: _line(frames, (100, 200), (500, 210)),
            1: _line(seen_1, (500, 200), (100, 190), side=70),
            2: _line(range(10, 50), (300, 60), (310, 300), side=40, side_end=90),
        },
        60,
    )
    seq["cuts"][40] = True
    expected = link_tracks(**seq)
    tracker = FaceTracker()
    got = np.empty_like(expected)
    for f, t, cut in zip(seq["frame_indices"], seq["timestamps_s"], seq["cuts"]):
        here = np.flatnonzero(seq["face_frames"] == f)[::-1]  # a different order than link_tracks saw
        faces = Detections(seq["boxes"][here], seq["scores"][here], np.zeros((len(here), 5, 2), np.float32))
        got[here] = tracker.update(faces, int(f), float(t), cut=bool(cut))
    assert np.array_equal(got, expected)


def test_interpolation_fills_frames_between_detections_but_not_across_cuts_or_long_gaps():
    frame_indices = np.arange(13, dtype=np.int64)
    timestamps = frame_indices / FPS
    cuts = np.zeros(13, bool)
    cuts[9] = True
    face_frames = np.array([0, 3, 6, 12], np.int64)  # every 3rd frame; a cut at 9 ends the track
    boxes = np.array([[0, 0, 10, 10], [30, 0, 40, 10], [60, 0, 70, 10], [0, 0, 10, 10]], np.float32)
    landmarks = np.repeat(boxes[:, None, :2], 5, axis=1)
    scores = np.array([0.9, 0.8, 0.95, 0.9], np.float32)
    track_ids = np.array([0, 0, 0, 1])
    got = interpolate_tracks(frame_indices, timestamps, cuts, face_frames, track_ids, boxes, landmarks, scores=scores)
    assert got.frame_index.tolist() == [1, 2, 4, 5]
    assert got.track_id.tolist() == [0, 0, 0, 0]
    np.testing.assert_allclose(got.boxes[:, 0], [10, 20, 40, 50], atol=1e-4)
    np.testing.assert_allclose(got.landmarks[:, 0, 0], [10, 20, 40, 50], atol=1e-4)
    np.testing.assert_allclose(got.score, [0.8, 0.8, 0.8, 0.8])
    short = interpolate_tracks(
        frame_indices, timestamps, cuts, face_frames, track_ids, boxes, landmarks, TrackingOptions(max_gap_s=0.05)
    )
    assert len(short) == 0


@pytest.mark.parametrize(
    "option, value",
    [
        ("max_gap_s", -0.1), ("min_track_faces", 0), ("min_track_faces", 1.5), ("max_gap_s", float("nan")),
        ("min_iou", 2.0), ("max_scale_change", 0.5), ("cut_histogram_distance", 0.0),
    ],
)
def test_bad_options_are_refused_naming_the_option(option, value):
    with pytest.raises(TrackingError, match=option):
        TrackingOptions(**{option: value})


def test_bad_inputs_are_refused():
    with pytest.raises(TrackingError, match="strictly increasing"):
        link_tracks([0, 0], [0.0, 0.1], [False, False], [], np.zeros((0, 4)), [])
    with pytest.raises(TrackingError, match="not in frame_indices"):
        link_tracks([0, 1], [0.0, 0.1], [False, False], [5], np.zeros((1, 4)), [0.9])
    tracker = FaceTracker()
    tracker.update(Detections.empty(), 3, 0.1)
    with pytest.raises(TrackingError, match="increase"):
        tracker.update(Detections.empty(), 3, 0.2)


def _read_frames(path, step=1):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames[::step]


def test_cuts_of_the_short_hamilton_clip(shared_data):
    # Hard cuts at frames 20, 82 and 211; frame 163 changes a lot inside one shot and is no cut.
    frames = _read_frames(shared_data / "videos" / "short_hamilton_clip.mp4")
    signatures = np.stack([frame_signature(f) for f in frames])
    assert np.flatnonzero(find_cuts(signatures)).tolist() == [20, 82, 211]
    # Every 3rd frame: each cut shows at the first sample after it, and motion between samples
    # (three times larger) is still no cut.
    sampled = np.arange(0, len(frames), 3)
    assert sampled[find_cuts(signatures[sampled])].tolist() == [21, 84, 213]


def test_cut_of_the_vendored_hamilton_clip(data_dir):
    frames = _read_frames(data_dir / "hamilton_45f_640x360.avi")
    signatures = np.stack([frame_signature(f) for f in frames])
    assert np.flatnonzero(find_cuts(signatures)).tolist() == [20]
    # The streaming tracker decides the same cut from the frames themselves.
    tracker = FaceTracker()
    box = Detections(
        np.array([[300, 100, 360, 170]], np.float32), np.array([0.99], np.float32), np.zeros((1, 5, 2), np.float32)
    )
    ids = [int(tracker.update(box, i, i / FPS, frame=frame)[0]) for i, frame in enumerate(frames)]
    assert ids == [0] * 20 + [1] * (len(frames) - 20)


def test_no_cut_in_a_street_crowd_clip(data_dir):
    frames = _read_frames(data_dir / "street_crowd_24f_640x360.mp4")
    assert not find_cuts(np.stack([frame_signature(f) for f in frames])).any()


def test_long_track_faces_keeps_tracks_of_min_track_faces():
    ids = np.array([0, 1, 0, 2, 0, 1])
    assert long_track_faces(ids).all()  # the default keeps every face
    assert long_track_faces(ids, TrackingOptions(min_track_faces=2)).tolist() == [True, True, True, False, True, True]
    assert long_track_faces(ids, TrackingOptions(min_track_faces=3)).tolist() == [True, False, True, False, True, False]
    assert long_track_faces(np.zeros(0, np.int64)).shape == (0,)


def test_track_frames_detects_and_links_real_frames(data_dir):
    # Three frames of the vendored clip around its cut at frame 20, 0.1 s apart: the two people of the
    # first shot keep their tracks; the face after the cut starts a new one.
    from raydetect import FaceDetector

    frames = _read_frames(data_dir / "hamilton_45f_640x360.avi")[14:21:3]  # frames 14, 17, 20
    results = track_frames(FaceDetector(device="cpu", min_face_size=40), frames, timestamps_s=np.arange(3) * 0.1)
    ids = [sorted(track_ids.tolist()) for _, track_ids in results]
    assert all(len(faces) == len(track_ids) for faces, track_ids in results)
    assert ids[0] == ids[1] == [0, 1]
    assert ids[2] and min(ids[2]) >= 2
    with pytest.raises(TrackingError, match="one value per frame"):
        track_frames(None, frames, timestamps_s=[0.0])
