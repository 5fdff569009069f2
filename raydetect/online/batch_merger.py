"""One detector run at a time, merging the batches that queued while it was busy.

Serve's ``@serve.batch`` closes a batch ``batch_wait_timeout_s`` after its first request and
hands it over at once, whether or not the previous batch has finished: under load it forms
a stream of small batches that then wait their turn. :class:`BatchMerger` sits behind it: it
runs one batch at a time in a worker thread and, when the thread frees up, takes every batch
that has queued meanwhile (up to the pixel budget) into a single run. At low load nothing
waits and nothing changes; under load each run is as large as the budget allows.

No Ray here; any ``run(requests) -> results`` and any cost per request.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

Request = TypeVar("Request")


@dataclass(eq=False)  # identity: requests hold arrays
class _Queued(Generic[Request]):
    requests: list
    cost: int
    future: asyncio.Future = field(repr=False)


class BatchMerger(Generic[Request]):
    """Serialises ``run`` and merges queued batches into one call.

    Args:
        run: blocking function, one result per request, in order (runs in a worker thread).
        cost: a request's share of the budget.
        budget: the current budget of one run (read at each run, so it can change at runtime).
            A single queued batch always runs, even over the budget.
    """

    def __init__(self, run: Callable[[list], list], cost: Callable[[Request], int], budget: Callable[[], int]):
        self._run = run
        self._cost = cost
        self._budget = budget
        self._queue: collections.deque[_Queued] = collections.deque()
        self._lock = asyncio.Lock()
        self.runs = 0

    async def submit(self, requests: Sequence[Request]) -> list:
        """Results for ``requests`` (in order), computed in a run shared with other queued batches."""
        mine = _Queued(list(requests), sum(self._cost(r) for r in requests), asyncio.get_running_loop().create_future())
        self._queue.append(mine)
        try:
            async with self._lock:
                while not mine.future.done():  # someone else's run may already have taken it
                    await self._run_next()
        finally:
            if not mine.future.done() and mine in self._queue:  # cancelled while waiting
                self._queue.remove(mine)
        return mine.future.result()

    async def _run_next(self) -> None:
        taken = [self._queue.popleft()]
        budget = self._budget()
        total = taken[0].cost
        while self._queue and total + self._queue[0].cost <= budget:
            total += self._queue[0].cost
            taken.append(self._queue.popleft())
        requests = [request for queued in taken for request in queued.requests]
        # The thread cannot be stopped; if this task is cancelled, wait for it anyway so that two
        # runs never overlap, hand out what it computed, then let the cancellation through.
        work = asyncio.ensure_future(asyncio.to_thread(self._run, requests))
        cancelled = False
        while True:
            try:
                results = await asyncio.shield(work)
                break
            except asyncio.CancelledError:
                if work.done():
                    raise
                cancelled = True
            except BaseException as exc:
                for queued in taken:
                    if not queued.future.done():
                        queued.future.set_exception(exc)
                return
        self.runs += 1
        start = 0
        for queued in taken:
            end = start + len(queued.requests)
            if not queued.future.done():
                queued.future.set_result(results[start:end])
            start = end
        if cancelled:
            raise asyncio.CancelledError
