"""The per-track clip rule (raydetect.core.clips): rate, runs, contiguous and even spacing."""

from __future__ import annotations

import numpy as np
import pytest

from raydetect.core.clips import ClipError, ClipOptions, track_clips


def _track(frames, fps=30.0):
    frames = np.asarray(frames, np.int64)
    return frames, frames / fps


def test_contiguous_clips_are_consecutive_and_do_not_overlap():
    clips = track_clips(*_track(range(20)), ClipOptions(frames=7))
    assert [c.tolist() for c in clips] == [list(range(0, 7)), list(range(7, 14))]  # 14..19: too few for a third


def test_a_clip_rate_thins_the_track_first():
    # 29.97 fps video, 15 fps clips: every second frame.
    clips = track_clips(*_track(range(30), fps=29.97), ClipOptions(frames=7, fps=15))
    assert [c.tolist() for c in clips] == [list(range(0, 14, 2)), list(range(14, 28, 2))]
    # 25 fps video: 15 fps is not a whole divisor; the greedy rule keeps every second frame (12.5 fps).
    (clip,) = track_clips(*_track(range(14), fps=25), ClipOptions(frames=7, fps=15))
    assert clip.tolist() == list(range(0, 14, 2))


def test_clips_never_span_a_gap_in_the_track():
    frames = list(range(0, 5)) + list(range(40, 52))  # the face is lost between frames 4 and 40
    clips = track_clips(*_track(frames), ClipOptions(frames=4))
    assert [c.tolist() for c in clips] == [[0, 1, 2, 3], [40, 41, 42, 43], [44, 45, 46, 47], [48, 49, 50, 51]]


def test_a_track_sampled_below_the_clip_rate_makes_clips_at_its_own_rate():
    frames = np.arange(0, 60, 6)  # detected on every 6th frame of a 30 fps video: 5 faces per second
    clips = track_clips(*_track(frames), ClipOptions(frames=5, fps=15))
    assert [c.tolist() for c in clips] == [[0, 6, 12, 18, 24], [30, 36, 42, 48, 54]]


def test_even_spacing_takes_one_clip_over_the_whole_track():
    (clip,) = track_clips(*_track(range(100)), ClipOptions(frames=4, spacing="even"))
    assert clip.tolist() == [12, 37, 62, 87]
    (clip,) = track_clips(*_track(range(0, 200, 2)), ClipOptions(frames=4, fps=10, spacing="even"))
    # Faces on even frames, 10 fps: every 4th frame is the first 0.1 s on (50 kept), then evenly spaced.
    assert clip.tolist() == [24, 72, 124, 172]


def test_short_tracks_give_no_clip():
    assert track_clips(*_track(range(6)), ClipOptions(frames=7)) == []
    assert track_clips(*_track(range(6)), ClipOptions(frames=7, spacing="even")) == []
    assert track_clips(*_track([]), ClipOptions(frames=1)) == []
    assert [c.tolist() for c in track_clips(*_track([5]), ClipOptions(frames=1))] == [[5]]


def test_bad_options_and_tracks_are_refused():
    for bad in (dict(frames=0), dict(frames=2.5), dict(frames=3, fps=0), dict(frames=3, fps=float("nan")),
                dict(frames=3, spacing="random")):
        with pytest.raises(ClipError):
            ClipOptions(**bad)
    with pytest.raises(ClipError, match="strictly increasing"):
        track_clips(np.array([3, 2]), np.array([0.1, 0.2]), ClipOptions(frames=1))
    with pytest.raises(ClipError, match="timestamps"):
        track_clips(np.array([1, 2]), np.array([0.1]), ClipOptions(frames=1))
