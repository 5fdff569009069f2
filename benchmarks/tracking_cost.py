"""What tracks cost the offline job: the same `raydetect detect` run with and without them, and file counts.

The baseline is a checkout of the project from before tracks (``--baseline-tree``: e.g.
``mkdir /tmp/base && git archive 4e69e78 | tar -x -C /tmp/base``); the other side is this tree.
Each side runs as its own ``python -m raydetect detect`` process with its tree first on
PYTHONPATH, alternating (baseline, tracks, baseline, ...) so both see the same machine load. The
time is the job's own (the summary's "over N s": listing to the last row written, Ray already
started), so Ray's start-up does not dilute the ratio. Also counted: the Parquet files each run
leaves in DEST/faces (and DEST/tracks).

    python benchmarks/tracking_cost.py --baseline-tree /tmp/base ../shared/data/videos/*.* \
        --repeats 2 --output tracking_cost.json -- --frames-per-video 40 --max-side 640
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run(tree: Path, videos: list[str], options: list[str], attempts: int = 3) -> dict:
    """One job; on a loaded machine a local Ray can time out while starting, which is retried."""
    for attempt in range(attempts):
        try:
            return _run(tree, videos, options)
        except RuntimeError as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise
            print(f"{tree}: Ray did not start, again", flush=True)


def _run(tree: Path, videos: list[str], options: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as dest:
        env = {**os.environ, "PYTHONPATH": str(tree), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
               "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        command = [sys.executable, "-m", "raydetect", "detect", *videos, "--output", dest, "-q", *options]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tree)
        if done.returncode != 0:
            raise RuntimeError(f"{tree}: exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}")
        seconds = float(re.search(r"over ([0-9.]+) s", done.stdout).group(1))
        faces = int(re.search(r"faces: (\d+)", done.stdout).group(1))
        files = {
            folder: len([n for n in os.listdir(Path(dest) / folder) if n.endswith(".parquet")])
            for folder in ("faces", "tracks") if (Path(dest) / folder).is_dir()
        }
    return {"seconds": seconds, "faces": faces, "files": files}


def main() -> None:
    argv = sys.argv[1:]
    options = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--baseline-tree", required=True, type=Path, help="a checkout of the code without tracks")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    sides = {"without tracks": args.baseline_tree.resolve(), "with tracks": HERE}
    results = {name: [] for name in sides}
    for repeat in range(args.repeats):
        for name, tree in sides.items():
            result = run(tree, args.videos, options)
            results[name].append(result)
            print(f"round {repeat + 1} {name}: {json.dumps(result)}", flush=True)
    medians = {name: statistics.median(r["seconds"] for r in runs) for name, runs in results.items()}
    summary = {
        "options": options,
        "median_seconds": medians,
        "throughput_ratio": medians["without tracks"] / medians["with tracks"],
        "files": {name: runs[-1]["files"] for name, runs in results.items()},
        "runs": results,
    }
    print(json.dumps(summary, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
