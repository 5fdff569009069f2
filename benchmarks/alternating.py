"""Timing two ways of doing the same work side by side: their order swapped every round, so that drift
in the machine's speed falls on both alike."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media_inputs  # noqa: E402


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


def add_arguments(parser: argparse.ArgumentParser, rounds: int, per: str, inputs: list[str] | None = None) -> None:
    """The options of an alternating benchmark: ``--rounds`` (default ``rounds``, alternating rounds per ``per``)
    and ``--output``; with ``inputs``, also ``--threads``, ``--data-root`` and ``--inputs`` (default ``inputs``)."""
    parser.add_argument("--rounds", type=int, default=rounds, help=f"alternating rounds per {per} (at least 1)")
    if inputs is not None:
        parser.add_argument("--threads", type=int, default=2, help="torch threads")
        parser.add_argument("--data-root", type=Path, default=media_inputs.data_root_from_env())
        parser.add_argument("--inputs", nargs="+", default=inputs, help="media specs (media_inputs.py)")
    parser.add_argument("--output", help="write the rows as JSON here")


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, refusing fewer than one round."""
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args
