"""benchmarks/alternating.py: the two sides swap order every round, and each gets its own medians."""

import time

from benchmark_modules import load_benchmark


def test_sides_swap_order_every_round_and_are_timed_apart():
    alternating = load_benchmark("alternating")
    calls = []

    def first():
        calls.append("first")

    def second():
        calls.append("second")
        time.sleep(0.002)

    first_ms, second_ms = alternating.alternate(3, first, second)
    assert calls == ["first", "second", "second", "first", "first", "second"]
    assert second_ms >= 2.0 > first_ms


def test_median_ms_rounds_to_the_microsecond():
    assert load_benchmark("alternating").median_ms([0.0010004, 0.003, 0.0020006]) == 2.001
