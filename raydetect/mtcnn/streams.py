"""Running a stage's independent pieces side by side on CPU threads.

On a CPU, torch splits each operation across its intra-op threads. That pays for the
large convolutions, but a detect call is mostly not made of those: Python and small
tensor operations, small pyramid levels, gathers and NMS run on one thread while the
others wait for the next parallel region, and with ``OMP_WAIT_POLICY=PASSIVE`` every
region also pays to wake them. Streams split the work the other way: the pieces of a
stage that do not depend on each other (groups of pyramid levels, chunks of crops) run
at the same time on ``count`` threads, the calling thread and helpers, each with an
equal share of the intra-op threads (the gain: docs/benchmarks.md, Stages).

Torch's intra-op thread count is per thread once a thread has run torch code, but
``torch.set_num_threads`` also stores the count that threads starting later pick up:
:meth:`Streams.map` puts the caller's back after the helpers have set theirs, and
:meth:`Streams.running` restores the caller's own count when it ends.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

import torch

Item = TypeVar("Item")
Result = TypeVar("Result")

_helper_pools: dict[int, ThreadPoolExecutor] = {}
_helper_pools_lock = threading.Lock()
_this_thread = threading.local()  # .in_helper: the thread is running a helper lane
# The flag a failed item sets and every lane checks before taking the next item (a seam for tests,
# which watch it being set).
_FailureFlag = threading.Event


class Streams:
    """``count`` streams of work, each with ``threads_each`` intra-op threads.

    Stream 0 is the calling thread; the others are helper threads shared by every
    detector of the process. One stream runs everything in the calling thread, as plain
    torch code would.
    """

    def __init__(self, count: int = 1, threads_each: int = 1) -> None:
        if count < 1 or threads_each < 1:
            raise ValueError(f"streams need a count and threads of at least 1, got {count} and {threads_each}")
        self.count = int(count)
        self.threads_each = int(threads_each)

    @classmethod
    def for_cpu(cls, requested: int) -> "Streams":
        """At most ``requested`` streams sharing the calling thread's intra-op threads.

        With T threads there are min(requested, T) streams of T // count threads each;
        a single thread means a single stream.
        """
        threads = torch.get_num_threads()
        count = max(1, min(int(requested), threads))
        return cls(count, threads // count)

    @contextlib.contextmanager
    def running(self) -> Iterator["Streams"]:
        """Give the calling thread its share of the intra-op threads for the duration."""
        if self.count == 1:
            yield self
            return
        caller_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads_each)
        try:
            yield self
        finally:
            torch.set_num_threads(caller_threads)  # also the count that later threads start with

    def split(self, weights: Sequence[float]) -> list[list[int]]:
        """Positions of ``weights`` in ``count`` groups of about equal total weight.

        Heaviest first, each to the lightest group so far; positions keep their order
        within a group. Empty groups are dropped.
        """
        groups: list[list[int]] = [[] for _ in range(self.count)]
        loads = [0.0] * self.count
        for position in sorted(range(len(weights)), key=lambda p: -weights[p]):
            lightest = loads.index(min(loads))
            groups[lightest].append(position)
            loads[lightest] += weights[position]
        return [sorted(group) for group in groups if group]

    def map(self, work: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
        """``[work(item) for item in items]``, the items shared out as the streams come free.

        Each stream takes the next untaken item when it finishes one, so items of uneven
        cost still keep every stream busy. The first exception raised by any item is
        raised here, after every stream has stopped (no work is left running behind the
        caller); once an item has failed, no stream starts another.
        """
        if self.count == 1 or len(items) < 2 or getattr(_this_thread, "in_helper", False):
            # (A helper lane mapping again would wait on the pool it occupies: it runs its items itself.)
            return [work(item) for item in items]
        results: list = [None] * len(items)
        untaken = iter(range(len(items)))
        taking = threading.Lock()
        failed = _FailureFlag()
        grad_enabled = torch.is_grad_enabled()
        inference = torch.is_inference_mode_enabled()

        def run_lane() -> None:
            while not failed.is_set():
                with taking:
                    position = next(untaken, None)
                if position is None:
                    return
                try:
                    results[position] = work(items[position])
                except BaseException:
                    failed.set()
                    raise

        def run_helper_lane() -> None:
            torch.get_num_threads()  # the thread's own first-use set-up, before its count is set
            torch.set_num_threads(self.threads_each)
            _this_thread.in_helper = True
            try:
                with torch.inference_mode(inference), torch.set_grad_enabled(grad_enabled):
                    run_lane()
            finally:
                _this_thread.in_helper = False

        pool = _helpers(self.count - 1)
        helpers = [pool.submit(run_helper_lane) for _ in range(min(self.count, len(items)) - 1)]
        try:
            run_lane()
        finally:
            for helper in helpers:
                helper.exception()  # wait, whatever happened in the caller's lane
            # The helpers' set_num_threads also stored their count for threads starting later: put back the caller's.
            torch.set_num_threads(torch.get_num_threads())
        for helper in helpers:
            helper.result()  # a helper's exception, if the caller's lane had none
        return results


SERIAL = Streams(1)


def _helpers(count: int) -> ThreadPoolExecutor:
    with _helper_pools_lock:
        pool = _helper_pools.get(count)
        if pool is None:
            pool = _helper_pools[count] = ThreadPoolExecutor(count, thread_name_prefix="raydetect-stream")
        return pool
