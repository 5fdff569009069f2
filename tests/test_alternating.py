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


def test_the_shared_options_take_inputs_only_when_given_and_refuse_no_rounds(capsys):
    import argparse

    import pytest

    alternating = load_benchmark("alternating")
    plain = argparse.ArgumentParser()
    alternating.add_arguments(plain, rounds=7, per="step")
    assert vars(alternating.parse_arguments(plain, [])) == {"rounds": 7, "output": None}
    with_media = argparse.ArgumentParser()
    alternating.add_arguments(with_media, rounds=3, per="call", inputs=["a.jpg"])
    args = alternating.parse_arguments(with_media, ["--inputs", "b.jpg", "c.mp4", "--threads", "1"])
    assert (args.rounds, args.inputs, args.threads) == (3, ["b.jpg", "c.mp4"], 1)
    with pytest.raises(SystemExit):
        alternating.parse_arguments(with_media, ["--rounds", "0"])
    assert "--rounds must be at least 1, got 0" in capsys.readouterr().err
