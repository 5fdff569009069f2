"""Crops decoded per second by ``raydetect.datasets.FaceCrops``, in this process and per DataLoader worker.

For each DEST given (the output of ``raydetect detect --crops``), the rounds alternate the modes so load
from other work on a shared machine hits all of them:
- ``in-process``: ``dataset[i]`` for every face in file order (one worker's pace, no DataLoader);
- ``loader-W``: a DataLoader with W workers, batch size 32, the grouped shuffle as sampler, one epoch
  timed from its first batch (the workers' start is not throughput); crops per second divided by W is
  the rate per worker.
Each worker runs one torch thread (``torch.set_num_threads(1)`` in the worker init). Reported: the median
over the rounds of crops per second, overall and per worker.

    .venv/bin/python benchmarks/dataset_decode.py /tmp/crops-jpeg /tmp/crops-png --workers 1,2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.data import DataLoader

from raydetect.datasets import FaceCrops


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)


def in_process(dataset: FaceCrops) -> float:
    started = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return len(dataset) / (time.perf_counter() - started)


def with_loader(dataset: FaceCrops, workers: int, seed: int) -> float:
    loader = DataLoader(dataset, batch_size=32, num_workers=workers, sampler=dataset.grouped_shuffle(seed),
                        worker_init_fn=_one_thread, persistent_workers=False)
    batches = iter(loader)
    next(batches)  # the workers' start (imports, first row groups) is not throughput
    started = time.perf_counter()
    count = sum(len(batch["image"]) for batch in batches)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dests", nargs="+")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output")
    args = parser.parse_args()
    torch.set_num_threads(1)
    workers = [int(w) for w in args.workers.split(",")]
    results = []
    for dest in args.dests:
        dataset = FaceCrops(dest)
        first = dataset[0]["image"]
        rates: dict[str, list[float]] = {"in-process": [], **{f"loader-{w}": [] for w in workers}}
        for round_number in range(args.rounds):
            rates["in-process"].append(in_process(FaceCrops(dest)))
            for w in workers:
                rates[f"loader-{w}"].append(with_loader(dataset, w, seed=round_number))
        for mode, values in rates.items():
            count = 1 if mode == "in-process" else int(mode.split("-")[1])
            rate = statistics.median(values)
            row = {"dest": dest, "faces": len(dataset), "crop": list(first.shape), "mode": mode,
                   "crops_per_s": rate, "crops_per_s_per_worker": rate / count, "rounds": values}
            results.append(row)
            print(json.dumps(row))
    if args.output:
        with open(args.output, "w") as stream:
            json.dump(results, stream, indent=2)


if __name__ == "__main__":
    main()
