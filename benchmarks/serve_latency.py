"""Throughput and latency of POST /detect through Ray Serve, batched against one request per batch.

Starts its own local Ray instance on 127.0.0.1 and deploys the application twice, side by side:
``/batched`` with the given pixel budget and ``/single`` with a budget of 1 P-Net pixel (every
request then runs alone: the ``max_batch_size=1`` baseline). Each round sends a bounded number
of requests at each concurrency to each application, alternating them so both see the same
machine load; medians over rounds are reported.

    .venv/bin/python benchmarks/serve_latency.py [--image tests/data/obama-240p.jpg]
        [--concurrency 1 8 32] [--requests 64] [--rounds 3] [--max-batch-pixels P]
        [--batch-wait-ms 0] [--output serve_latency.json]

Prints a Markdown table (medians over rounds, throughput range over rounds, requests per batch
from the detector replica's counters) and writes every round to --output (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every Ray listener on 127.0.0.1
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parent.parent
APPS = ("batched", "single")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=REPO / "tests" / "data" / "obama-240p.jpg")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch-pixels", type=int, default=None, help="default: the service's (CPU: 1,000,000)")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0)
    parser.add_argument("--timeout-s", type=float, default=600, help="bound on one level of one round")
    parser.add_argument("--output", type=Path, default=Path("serve_latency.json"))
    return parser.parse_args(argv)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def run_level(url: str, body: bytes, concurrency: int, count: int, timeout_s: float) -> dict:
    """``count`` POSTs with ``concurrency`` in flight; latencies in seconds, wall time, failures."""
    import aiohttp

    latencies: list[float] = []
    failures = 0
    queue = list(range(count))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while queue:
            queue.pop()
            started = time.perf_counter()
            async with session.post(url, data=body, headers={"Content-Type": "image/jpeg"}) as response:
                await response.read()
                if response.status != 200:
                    failures += 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker(session) for _ in range(concurrency))), timeout_s)
        wall = time.perf_counter() - started
    return {"latencies_s": latencies, "wall_s": wall, "failures": failures}


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray
    from ray import serve

    sys.path.insert(0, str(REPO))
    from raydetect.online.application import DETECTOR_NAME, build_app
    from raydetect.online.options import ServeOptions

    body = args.image.read_bytes()
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        port = 8000 + os.getpid() % 1000
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        common = dict(batch_wait_timeout_s=args.batch_wait_ms / 1000, cpus_per_replica=0.5, ingress_cpus=0.5,
                      max_ongoing_requests=max(64, 2 * max(args.concurrency)))
        serve.run(build_app(ServeOptions(max_batch_pixels=args.max_batch_pixels, **common)),
                  name="batched", route_prefix="/batched")
        serve.run(build_app(ServeOptions(max_batch_pixels=1, **common)), name="single", route_prefix="/single")
        urls = {app: f"http://127.0.0.1:{port}/{app}/detect" for app in APPS}
        for url in urls.values():  # warm up: first requests build pools, allocate buffers
            asyncio.run(run_level(url, body, 4, 8, args.timeout_s))

        handles = {app: serve.get_deployment_handle(DETECTOR_NAME, app_name=app) for app in APPS}
        rounds = []
        for round_index in range(args.rounds):
            for concurrency in args.concurrency:
                for app in APPS if round_index % 2 == 0 else APPS[::-1]:
                    before = handles[app].stats.remote().result()
                    result = asyncio.run(run_level(urls[app], body, concurrency, args.requests, args.timeout_s))
                    after = handles[app].stats.remote().result()
                    result["batches"] = after["batches"] - before["batches"]
                    rounds.append({"round": round_index, "app": app, "concurrency": concurrency, **result})
                    print(f"round {round_index} {app:8s} c={concurrency:3d} "
                          f"{args.requests / result['wall_s']:6.2f} req/s", file=sys.stderr, flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()

    summary = summarise(rounds, args)
    args.output.write_text(json.dumps({"summary": summary, "rounds": rounds, "args": vars(args) | {
        "image": str(args.image), "output": str(args.output)}, "machine": machine()}, indent=1))
    print_table(summary)
    return 0


def summarise(rounds: list[dict], args) -> list[dict]:
    rows = []
    for concurrency in args.concurrency:
        row = {"concurrency": concurrency}
        for app in APPS:
            mine = [r for r in rounds if r["app"] == app and r["concurrency"] == concurrency]
            throughputs = [args.requests / r["wall_s"] for r in mine]
            row[app] = {
                "throughput_rps": statistics.median(throughputs),
                "throughput_range": [min(throughputs), max(throughputs)],
                "requests_per_batch": statistics.median(args.requests / r["batches"] for r in mine),
                "p50_ms": statistics.median(1000 * percentile(r["latencies_s"], 50) for r in mine),
                "p99_ms": statistics.median(1000 * percentile(r["latencies_s"], 99) for r in mine),
                "failures": sum(r["failures"] for r in mine),
            }
        row["throughput_ratio"] = row["batched"]["throughput_rps"] / row["single"]["throughput_rps"]
        rows.append(row)
    return rows


def print_table(summary: list[dict]) -> None:
    print("| concurrency | batched req/s (range) | p50 ms | p99 ms | requests / batch "
          "| single req/s (range) | p50 ms | p99 ms | throughput batched / single |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in summary:
        b, s = row["batched"], row["single"]
        print(f"| {row['concurrency']} | {b['throughput_rps']:.1f} ({b['throughput_range'][0]:.1f}-"
              f"{b['throughput_range'][1]:.1f}) | {b['p50_ms']:.0f} | {b['p99_ms']:.0f} | {b['requests_per_batch']:.1f} "
              f"| {s['throughput_rps']:.1f} ({s['throughput_range'][0]:.1f}-{s['throughput_range'][1]:.1f}) "
              f"| {s['p50_ms']:.0f} | {s['p99_ms']:.0f} | {row['throughput_ratio']:.2f} |")
    failures = sum(row[app]["failures"] for row in summary for app in APPS)
    print(f"\nnon-200 answers: {failures}")


def machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "load_average_at_end": os.getloadavg()}


if __name__ == "__main__":
    sys.exit(main())
