"""BatchMerger: one run at a time, queued batches merged within the budget, failures contained."""

from __future__ import annotations

import asyncio
import threading

import pytest

from raydetect.online.batch_merger import BatchMerger


class GatedRun:
    """A run function that records its calls and blocks until released (a busy detector)."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.started = threading.Event()
        self.fail_on = fail_on

    def __call__(self, requests: list[str]) -> list[str]:
        self.calls.append(list(requests))
        self.started.set()
        assert self.gate.wait(10), "test never released the run"
        if self.fail_on in requests:
            raise ValueError(f"cannot process {self.fail_on}")
        return [request.upper() for request in requests]


async def start_busy(merger: BatchMerger, run: GatedRun, first: list[str]) -> asyncio.Task:
    """Submit ``first`` and return once its run is blocked in the worker thread."""
    task = asyncio.ensure_future(merger.submit(first))
    await asyncio.to_thread(run.started.wait, 10)
    return task


def test_batches_queued_behind_a_busy_run_are_merged():
    async def scenario():
        run = GatedRun()
        merger = BatchMerger(run, cost=lambda r: 1, budget=lambda: 100)
        first = await start_busy(merger, run, ["a"])
        queued = [asyncio.ensure_future(merger.submit(batch)) for batch in (["b", "c"], ["d"], ["e", "f"])]
        await asyncio.sleep(0.05)  # all three are waiting behind the busy run
        run.gate.set()
        return await first, await asyncio.gather(*queued), run.calls, merger.runs

    first, queued, calls, runs = asyncio.run(scenario())
    assert first == ["A"] and queued == [["B", "C"], ["D"], ["E", "F"]]
    assert calls == [["a"], ["b", "c", "d", "e", "f"]] and runs == 2


def test_merging_stops_at_the_budget_and_an_oversize_batch_still_runs():
    async def scenario():
        run = GatedRun()
        costs = {"big": 10, "x": 2, "y": 2, "z": 2}
        merger = BatchMerger(run, cost=costs.__getitem__, budget=lambda: 5)
        first = await start_busy(merger, run, ["big"])  # over the budget alone: runs anyway
        queued = [asyncio.ensure_future(merger.submit([name])) for name in ("x", "y", "z")]
        await asyncio.sleep(0.05)
        run.gate.set()
        await asyncio.gather(first, *queued)
        return run.calls

    assert asyncio.run(scenario()) == [["big"], ["x", "y"], ["z"]]


def test_a_failed_run_fails_only_its_batches():
    async def scenario():
        run = GatedRun(fail_on="bad")
        merger = BatchMerger(run, cost=lambda r: 1, budget=lambda: 2)
        first = await start_busy(merger, run, ["bad"])
        later = asyncio.ensure_future(merger.submit(["ok"]))
        await asyncio.sleep(0.05)
        run.gate.set()
        with pytest.raises(ValueError, match="cannot process bad"):
            await first
        return await later

    assert asyncio.run(scenario()) == ["OK"]


def test_cancelled_waiter_leaves_nothing_behind():
    async def scenario():
        run = GatedRun()
        merger = BatchMerger(run, cost=lambda r: 1, budget=lambda: 10)
        first = await start_busy(merger, run, ["a"])
        doomed = asyncio.ensure_future(merger.submit(["gone"]))
        await asyncio.sleep(0.05)
        doomed.cancel()
        await asyncio.sleep(0)
        run.gate.set()
        await first
        return await merger.submit(["b"]), run.calls

    result, calls = asyncio.run(scenario())
    assert result == ["B"] and ["gone"] not in calls and calls[-1] == ["b"]
