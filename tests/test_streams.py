"""Streams: pieces of a stage side by side on threads, each thread with its share of torch's threads."""

import contextlib
import threading

import cv2
import numpy as np
import pytest
import torch

from raydetect import FaceDetector
from raydetect.mtcnn import streams as streams_module
from raydetect.mtcnn.streams import SERIAL, Streams

WAIT_S = 10  # bounds a wait that only a broken implementation would exhaust


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _where_it_ran(item):
    return item, threading.get_ident(), torch.get_num_threads(), torch.is_inference_mode_enabled()


@pytest.fixture
def failure_recorded(monkeypatch) -> threading.Event:
    """Set once a failed item has raised the flag that stops the streams taking more items."""
    recorded = threading.Event()

    class WatchedFlag(threading.Event):
        def set(self):
            super().set()
            recorded.set()

    monkeypatch.setattr(streams_module, "_FailureFlag", WatchedFlag)
    return recorded


def test_map_keeps_item_order_and_runs_each_stream_on_its_own_thread_with_its_share(two_torch_threads):
    streams = Streams.for_cpu(2)
    assert (streams.count, streams.threads_each) == (2, 1)
    both_busy = threading.Barrier(2, timeout=WAIT_S)

    def work(item):
        if item < 2:
            both_busy.wait()  # items 0 and 1 can only finish together, so each stream takes one
        return _where_it_ran(item)

    with torch.inference_mode(), streams.running():
        assert torch.get_num_threads() == 1  # the caller's share while running
        ran = streams.map(work, list(range(7)))
    assert [item for item, *_ in ran] == list(range(7))
    threads = {ident for _, ident, _, _ in ran}
    assert len(threads) == 2 and threading.get_ident() in threads  # the caller is one of the streams
    assert all(count == 1 for _, _, count, _ in ran)
    assert all(inference for *_, inference in ran)  # the caller's inference mode carries over
    assert torch.get_num_threads() == 2


def test_items_of_uneven_cost_go_to_whichever_stream_is_free():
    short_items_done = threading.Semaphore(0)

    def work(item):
        if item == 0:  # the long item: it lasts until the other stream has done all seven short ones
            for _ in range(7):
                assert short_items_done.acquire(timeout=WAIT_S)
        else:
            short_items_done.release()
        return threading.get_ident()

    threads = Streams(2).map(work, list(range(8)))
    # While one stream works on the long item, the other takes all the short ones.
    assert threads.count(threads[0]) == 1
    assert len(set(threads)) == 2


@pytest.mark.parametrize("inside_running", [True, False])
def test_threads_started_after_a_run_get_the_callers_thread_count(two_torch_threads, inside_running):
    streams = Streams.for_cpu(2)
    with streams.running() if inside_running else contextlib.nullcontext():
        streams.map(_where_it_ran, [0, 1])
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == [2]


def test_for_cpu_never_makes_more_streams_than_threads(two_torch_threads):
    assert (Streams.for_cpu(4).count, Streams.for_cpu(4).threads_each) == (2, 1)
    assert Streams.for_cpu(1).count == 1
    torch.set_num_threads(1)
    assert Streams.for_cpu(2).count == 1
    torch.set_num_threads(5)
    assert (Streams.for_cpu(2).count, Streams.for_cpu(2).threads_each) == (2, 2)


def test_split_balances_weights_and_keeps_order_within_groups():
    level_pixels = [332_977, 167_315, 84_366, 42_196, 21_450, 10_764, 5_390]
    assert Streams(2).split(level_pixels) == [[0], [1, 2, 3, 4, 5, 6]]
    groups = Streams(3).split(level_pixels)
    assert sorted(p for group in groups for p in group) == list(range(7))
    assert all(group == sorted(group) for group in groups)
    assert SERIAL.split(level_pixels) == [list(range(7))]
    assert Streams(4).split([5, 1]) == [[0], [1]]  # no empty groups


def test_an_error_in_a_helper_reaches_the_caller():
    def fail_on_odd(item):
        if item % 2:
            raise ValueError(f"item {item}")
        return item

    with pytest.raises(ValueError, match="item 1"):
        Streams(2).map(fail_on_odd, [0, 1, 2])


def test_after_an_error_no_stream_starts_another_item(failure_recorded):
    other_started = threading.Event()
    started = []

    def work(item):
        started.append(item)
        if item == 0:
            assert other_started.wait(WAIT_S)
            raise RuntimeError("first item")
        other_started.set()
        assert failure_recorded.wait(WAIT_S)  # this stream finishes its item only after the failure

    with pytest.raises(RuntimeError, match="first item"):
        Streams(2).map(work, list(range(10)))
    assert sorted(started) == [0, 1]  # the failing item and the one running beside it, nothing after


def test_an_error_in_one_stream_waits_for_the_item_running_in_the_other(failure_recorded):
    other_started = threading.Event()
    finished = []

    def work(item):
        if item == 0:
            assert other_started.wait(WAIT_S)
            raise RuntimeError("first item")
        other_started.set()
        assert failure_recorded.wait(WAIT_S)  # still running when the other stream has failed
        finished.append(item)

    with pytest.raises(RuntimeError, match="first item"):
        Streams(2).map(work, [0, 1])
    assert finished == [1]  # nothing is left running behind the caller


def test_a_map_inside_a_map_completes():
    streams = Streams(2)

    def inner(item):
        return streams.map(lambda x: (item, x), [0, 1, 2])

    outer = []
    runner = threading.Thread(target=lambda: outer.extend(streams.map(inner, [0, 1, 2, 3])), daemon=True)
    runner.start()
    runner.join(WAIT_S)
    assert not runner.is_alive(), "a map inside a helper's item waited on the pool it occupies"
    assert outer == [[(i, x) for x in range(3)] for i in range(4)]


def test_counts_below_one_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        Streams(0)
    with pytest.raises(ValueError, match="at least 1"):
        Streams(2, threads_each=0)


def test_detector_finds_the_same_faces_in_one_or_two_streams(data_dir, two_torch_threads):
    photo = cv2.cvtColor(cv2.imread(str(data_dir / "multiface.jpg")), cv2.COLOR_BGR2RGB)
    images = [photo, photo[40:400, 100:700]]
    one = FaceDetector(device="cpu", cpu_streams=1).detect(images)
    two = FaceDetector(device="cpu", cpu_streams=2).detect(images)
    for a, b in zip(one, two):
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3, rtol=0)  # chunk sizes differ: float rounding
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3, rtol=0)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_detector_refuses_bad_stream_counts(value):
    with pytest.raises(ValueError, match="cpu_streams"):
        FaceDetector(device="cpu", cpu_streams=value)
