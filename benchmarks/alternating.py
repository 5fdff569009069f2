"""Timing two ways of doing the same work side by side: their order swapped every round, so that drift
in the machine's speed falls on both alike."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_ms(times: list[float]) -> float:
    """The median of ``times`` (seconds) in ms, to the microsecond."""
    return round(statistics.median(times) * 1000, 3)


def alternate(rounds: int, first: Callable[[], object], second: Callable[[], object]) -> tuple[float, float]:
    """Median ms of ``first`` and of ``second`` over ``rounds`` rounds, first-then-second in even rounds and
    second-then-first in odd ones. Callers warm both up before."""
    times: tuple[list[float], list[float]] = ([], [])
    sides = (first, second)
    for round_index in range(rounds):
        for side in ((0, 1) if round_index % 2 == 0 else (1, 0)):
            started = time.perf_counter()
            sides[side]()
            times[side].append(time.perf_counter() - started)
    return median_ms(times[0]), median_ms(times[1])
