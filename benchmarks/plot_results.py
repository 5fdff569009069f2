"""PNG plots of the benchmarks' JSON results, for docs/benchmarks.md.

Each benchmark writes its figures with ``--output FILE.json``; this script draws them:

    .venv/bin/python benchmarks/plot_results.py KIND RESULT.json [RESULT.json ...] --output docs/img/NAME.png

KIND              JSON from                                    drawn
detector-speed    benchmarks/detector_speed.py                 ms per frame, reference against raydetect, speed-up
faces-per-frame   benchmarks/faces_per_frame.py                ms per image against faces and R-Net candidates
pipeline-overhead benchmarks/pipeline_overhead.py (1 per --every)  frames/s, plain loop against the Ray Data job
pipeline-memory   benchmarks/pipeline_memory.py                peak memory on 1x and Nx the input
pipeline-batching benchmarks/pipeline_batching.py              frames per pass, candidates and peak RSS per budget
serve-latency     benchmarks/serve_latency.py (1 per setting)  throughput and p50 / p99 latency over concurrency

Only the drawing lives here; the figures are the benchmarks' own (medians, ranges, ratios as they computed
them). The ``*_series`` functions pick what each plot shows out of the JSON, so it can be checked without
drawing.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from raydetect.tuning.plots import _pyplot  # noqa: E402  (matplotlib with the Agg backend, or a clear error)

PEER_COLOR, OURS_COLORS = "tab:gray", ("tab:blue", "tab:cyan", "tab:purple")
BUDGET_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


class ResultError(ValueError):
    """A JSON file that is not the result this plot needs."""


def _require(data: dict, keys: tuple[str, ...], kind: str) -> None:
    if not isinstance(data, dict):
        raise ResultError(f"a {kind} result is a JSON object, got {type(data).__name__}")
    missing = [key for key in keys if key not in data]
    if missing:
        raise ResultError(f"not a {kind} result: missing {', '.join(repr(k) for k in missing)}")


def _plain_log_axis(axis) -> None:
    """Label a log-scale axis with plain numbers at 1, 2, 5, 10, 20, ... instead of powers of ten; on an axis
    spanning less than a decade, the minor ticks (3, 4, 6, ...) get labels too."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    def plain(value, _):
        return f"{value:,.0f}" if value >= 1 else f"{value:g}"

    def minor(value, position):
        low, high = sorted(axis.get_view_interval())
        return plain(value, position) if low > 0 and high / low < 10 else ""

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(plain))
    axis.set_minor_formatter(FuncFormatter(minor))


def _faces_axis(axes, most: int) -> None:
    """x axis for counts from 0: linear up to 1, logarithmic above, ticks 0, 1, 2, 5, 10, ... up to ``most``."""
    axes.set_xscale("symlog", linthresh=1, linscale=0.5)
    ticks = [t for t in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if t <= max(most, 1) * 1.5]
    axes.set_xticks(ticks, [str(t) for t in ticks])
    axes.set_xlim(-0.4, max(most, 1) * 1.5)


def _save(figure, plt, path: str | Path) -> None:
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# --- detector speed -------------------------------------------------------------------------------------------

def detector_speed_series(data: dict) -> list[dict]:
    """Per workload: bar labels, ms per frame (reference first) and the median speed-up (range) of each of ours."""
    _require(data, ("results",), "detector-speed")
    series = []
    ours_name = "raydetect\ncompiled" if data.get("compiled") else "raydetect"
    for name, summary in data["results"].items():
        ours = sorted(summary["ours"].items(), key=lambda item: int(item[0]))
        series.append({
            "workload": name, "frames": summary.get("frames"),
            "faces_per_frame": summary.get("peer_faces_per_frame"),
            "labels": ["reference"] + [f"{ours_name}\n{b} / call" for b, _ in ours],
            "ms": [summary["peer_ms_per_frame"]] + [o["ms_per_frame"] for _, o in ours],
            "speedups": [(o["speedup_median"], *o["speedup_range"]) for _, o in ours],
        })
    return series


def plot_detector_speed(data: dict, path: str | Path) -> None:
    """One panel per workload: ms per frame of the reference and of ours per batch size, speed-up above ours."""
    plt = _pyplot()
    series = detector_speed_series(data)
    figure, panels = plt.subplots(1, len(series), figsize=(4.2 * len(series), 4.2), dpi=120, squeeze=False)
    for axes, s in zip(panels[0], series):
        colors = [PEER_COLOR] + list(OURS_COLORS[: len(s["ms"]) - 1])
        bars = axes.bar(range(len(s["ms"])), s["ms"], color=colors)
        for index, bar in enumerate(bars):
            text = f"{s['ms'][index]:,.0f} ms"
            if index:
                median, low, high = s["speedups"][index - 1]
                text += f"\n{median:.2f}x ({low:.2f}-{high:.2f})"
            axes.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                          fontsize=8)
        axes.set_xticks(range(len(s["ms"])), s["labels"], fontsize=8)
        axes.set_ylim(0, max(s["ms"]) * 1.2)
        frames = "" if s["frames"] is None else f", {s['frames']} frame" + ("" if s["frames"] == 1 else "s")
        faces = f", {s['faces_per_frame']:g} faces / frame" if s["faces_per_frame"] is not None else ""
        axes.set(ylabel="ms per frame (median over groups)", title=f"{s['workload']}{frames}{faces}")
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle("detector speed: reference MTCNN against raydetect (speed-up: median, range)", fontsize=10)
    _save(figure, plt, path)


# --- faces per frame ------------------------------------------------------------------------------------------

def faces_per_frame_series(data: dict) -> dict:
    """Columns of the per-image rows: faces, R-Net candidates, ms of each side, speed-up."""
    _require(data, ("rows",), "faces-per-frame")
    rows = sorted(data["rows"], key=lambda r: (r["faces"], r["rnet_candidates"]))
    if not rows:
        raise ResultError("faces-per-frame result has no rows")
    return {key: [r[key] for r in rows]
            for key in ("faces", "rnet_candidates", "peer_ms", "ours_ms", "speedup", "image")}


def plot_faces_per_frame(data: dict, path: str | Path) -> None:
    """ms per image against faces and against R-Net candidates (log axes), and the speed-up against faces."""
    plt = _pyplot()
    s = faces_per_frame_series(data)
    figure, (by_faces, by_candidates, ratio) = plt.subplots(1, 3, figsize=(14, 4.3), dpi=120)
    for axes, x in ((by_faces, s["faces"]), (by_candidates, s["rnet_candidates"])):
        axes.plot(x, s["peer_ms"], "s", color=PEER_COLOR, label="reference MTCNN")
        axes.plot(x, s["ours_ms"], "o", color=OURS_COLORS[0], label="raydetect")
        axes.set_yscale("log")
        _plain_log_axis(axes.yaxis)
        axes.set_ylabel("ms per image (median over rounds)")
        axes.grid(alpha=0.3, which="both")
        axes.legend(loc="upper left", fontsize=8)
    _faces_axis(by_faces, max(s["faces"]))
    by_faces.set(xlabel="faces in the image", title="time against faces")
    for side, color in (("peer", PEER_COLOR), ("ours", OURS_COLORS[0])):
        line = data.get("fit", {}).get(side)
        if line:  # the benchmark's least-squares line, drawn over the measured range (a curve on log axes)
            low, high = min(s["rnet_candidates"]), max(s["rnet_candidates"])
            xs = [low * (high / low) ** (i / 40) for i in range(41)] if low > 0 else [high * i / 40 for i in range(41)]
            by_candidates.plot(xs, [line["intercept_ms"] + line["ms_per_1000_rnet"] * x / 1000 for x in xs], "--",
                               color=color, linewidth=1,
                               label=f"fit: {line['ms_per_1000_rnet']:,.0f} ms per 1,000 candidates")
    by_candidates.legend(loc="upper left", fontsize=8)
    by_candidates.set_xscale("log")
    _plain_log_axis(by_candidates.xaxis)
    by_candidates.set(xlabel="R-Net candidates in the image", title="time against R-Net candidates")
    ratio.plot(s["faces"], s["speedup"], "o", color=OURS_COLORS[0])
    ratio.axhline(1.0, color=PEER_COLOR, linewidth=1)
    _faces_axis(ratio, max(s["faces"]))
    ratio.set_ylim(0, max(s["speedup"]) * 1.15)
    ratio.set(xlabel="faces in the image", ylabel="reference ms / raydetect ms", title="speed-up")
    ratio.grid(alpha=0.3, which="both")
    min_face = data.get("min_face_size")
    figure.suptitle(f"one image per call{f', min_face_size {min_face}' if min_face else ''}, "
                    f"{len(s['faces'])} images", fontsize=10)
    _save(figure, plt, path)


# --- pipeline overhead ----------------------------------------------------------------------------------------

def pipeline_overhead_series(runs: list[dict]) -> list[dict]:
    """Per result (one sampling each, ordered by --every): frames/s per run and the ratio of the medians."""
    series = []
    for data in runs:
        _require(data, ("every", "runs", "baseline_fps_median", "pipeline_fps_median"), "pipeline-overhead")
        series.append({
            "every": data["every"], "frames": data["runs"][0]["frames"] if data["runs"] else 0,
            "baseline": [r["baseline_fps"] for r in data["runs"]],
            "pipeline": [r["pipeline_fps"] for r in data["runs"]],
            "baseline_median": data["baseline_fps_median"], "pipeline_median": data["pipeline_fps_median"],
            "ratio": data["pipeline_fps_median"] / data["baseline_fps_median"],
        })
    return sorted(series, key=lambda s: s["every"])


def plot_pipeline_overhead(runs: list[dict], path: str | Path) -> None:
    """Median frames/s of the plain loop and of the job per sampling, each run as a dot, ratio above."""
    plt = _pyplot()
    series = pipeline_overhead_series(runs)
    figure, axes = plt.subplots(figsize=(2.2 + 2.2 * len(series), 4.2), dpi=120)
    width = 0.38
    for index, s in enumerate(series):
        for offset, key, color in ((-width / 2, "baseline", PEER_COLOR), (width / 2, "pipeline", OURS_COLORS[0])):
            axes.bar(index + offset, s[f"{key}_median"], width, color=color,
                     label=("plain loop (detect only)" if key == "baseline" else "Ray Data job (end to end)")
                     if index == 0 else None)
            axes.plot([index + offset] * len(s[key]), s[key], "k.", markersize=5,
                      label="single runs" if index == 0 and key == "pipeline" else None)
        axes.annotate(f"{s['ratio']:.2f}", (index + width / 2, max(s["pipeline"] + [s["pipeline_median"]])),
                      textcoords="offset points", xytext=(0, 4), ha="center", fontsize=9, weight="bold")
    axes.set_xticks(range(len(series)),
                    [f"every {s['every']}" + ("st" if s["every"] == 1 else "th") + f" frame\n{s['frames']:,} frames"
                     for s in series])
    top = max(max(s["baseline"] + s["pipeline"]) for s in series)
    axes.set_ylim(0, top * 1.25)
    axes.set(ylabel="frames per second (bars: median)",
             title="pipeline against a plain loop (bold: ratio of medians)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    _save(figure, plt, path)


# --- pipeline memory ------------------------------------------------------------------------------------------

def pipeline_memory_series(data: dict) -> dict:
    """Input sizes (copies), frames, seconds, peak PSS and largest RSS per run; Nx / 1x ratios."""
    _require(data, ("runs",), "pipeline-memory")
    runs = sorted(data["runs"], key=lambda r: r["copies"])
    if len(runs) < 2:
        raise ResultError("pipeline-memory result needs the 1x and the Nx run")
    small, large = runs[0], runs[-1]
    return {
        "copies": [r["copies"] for r in runs], "frames": [r["frames"] for r in runs],
        "seconds": [r["seconds"] for r in runs],
        "pss": [r["peak_pss_mib"] for r in runs], "rss": [r["peak_rss_mib"] for r in runs],
        "pss_ratio": large["peak_pss_mib"] / small["peak_pss_mib"],
        "rss_ratio": large["peak_rss_mib"] / small["peak_rss_mib"],
    }


def plot_pipeline_memory(data: dict, path: str | Path) -> None:
    """Peak PSS of all processes and largest single RSS, 1x against Nx the input, Nx / 1x above."""
    plt = _pyplot()
    s = pipeline_memory_series(data)
    figure, axes = plt.subplots(figsize=(6, 4.2), dpi=120)
    width = 0.8 / len(s["copies"])
    colors = [OURS_COLORS[0], "tab:orange", "tab:green"]
    for index, copies in enumerate(s["copies"]):
        xs = [group + (index - (len(s["copies"]) - 1) / 2) * width for group in (0, 1)]
        axes.bar(xs, [s["pss"][index], s["rss"][index]], width, color=colors[index % len(colors)],
                 label=f"{copies}x input: {s['frames'][index]:,} frames in {s['seconds'][index]:g} s")
    for group, (key, ratio) in enumerate((("pss", s["pss_ratio"]), ("rss", s["rss_ratio"]))):
        axes.annotate(f"{s['copies'][-1]}x / 1x = {ratio:.2f}", (group, max(s[key])), textcoords="offset points",
                      xytext=(0, 4), ha="center", fontsize=9, weight="bold")
    axes.set_xticks([0, 1], ["peak PSS, all processes", "largest single RSS"])
    axes.set_ylim(0, max(s["pss"] + s["rss"]) * 1.3)
    axes.set(ylabel="MiB", title="streaming: peak memory against input size")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)
    _save(figure, plt, path)


# --- pipeline batching ----------------------------------------------------------------------------------------

def _chunk_label(kinds: str) -> str:
    crowd, empty = kinds.count("c"), kinds.count("e")
    return "\n".join(part for part in (f"{crowd} crowd" if crowd else "", f"{empty} empty" if empty else "") if part)


def _budget_label(name: str) -> str:
    """A budget's name on short lines for a narrow bar: "adaptive (roomy budget)" -> "adaptive\\nroomy\\nbudget",
    so budgets that share their first word stay apart."""
    head, _, inner = name.partition(" (")
    return "\n".join(textwrap.wrap(head, 9) + textwrap.wrap(inner.rstrip(")"), 9))


def pipeline_batching_series(data: dict) -> dict:
    """Chunk labels and faces; per budget its short label, the frames of each pass per chunk, the largest
    micro-batch's R-Net and O-Net candidates per chunk, and the peak RSS."""
    _require(data, ("results",), "pipeline-batching")
    budgets = list(data["results"])
    if not budgets:
        raise ResultError("pipeline-batching result has no budgets")
    first = data["results"][budgets[0]]["chunks"]
    return {
        "chunks": [_chunk_label(c["kinds"]) for c in first], "faces": [c["faces"] for c in first],
        "budgets": {name: {"label": _budget_label(name), "passes": [c["passes"] for c in r["chunks"]],
                           "rnet": [c["rnet"] for c in r["chunks"]],
                           "onet": [c["onet"] for c in r["chunks"]], "peak_rss_mib": r["peak_rss_mib"]}
                    for name, r in data["results"].items()},
    }


def plot_pipeline_batching(data: dict, path: str | Path) -> None:
    """Top: each chunk's passes per budget, stacked (one segment per pass, height = its frames).
    Bottom: R-Net candidates of the largest micro-batch per chunk, and peak RSS per budget."""
    plt = _pyplot()
    s = pipeline_batching_series(data)
    names = list(s["budgets"])
    chunks = range(len(s["chunks"]))
    figure = plt.figure(figsize=(max(8.0, 1.1 * len(s["chunks"]) + 3), 7.5), dpi=120)
    grid = figure.add_gridspec(2, 5)
    passes, candidates, memory = figure.add_subplot(grid[0, :]), figure.add_subplot(grid[1, :3]), \
        figure.add_subplot(grid[1, 3:])
    width = 0.8 / len(names)
    for b, name in enumerate(names):
        color, budget = BUDGET_COLORS[b % len(BUDGET_COLORS)], s["budgets"][name]
        offset = (b - (len(names) - 1) / 2) * width
        for chunk in chunks:
            bottom = 0
            for frames in budget["passes"][chunk]:
                passes.bar(chunk + offset, frames, width, bottom=bottom, color=color, edgecolor="white",
                           linewidth=1.2, label=name if chunk == 0 and bottom == 0 else None)
                bottom += frames
        candidates.bar([c + offset for c in chunks], budget["rnet"], width, color=color, label=name)
        memory.bar(b, budget["peak_rss_mib"], color=color)
        memory.annotate(f"{budget['peak_rss_mib']:,}", (b, budget["peak_rss_mib"]), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=8)
    labels = [f"{label}\n{faces:,} faces" for label, faces in zip(s["chunks"], s["faces"])]
    passes.set_xticks(list(chunks), labels, fontsize=8)
    passes.set(ylabel="frames per chunk", title="micro-batches per chunk (one segment per detector pass)")
    passes.legend(loc="upper left", fontsize=8, ncol=len(names))
    passes.set_ylim(0, max(sum(p) for b in s["budgets"].values() for p in b["passes"]) * 1.3)
    candidates.set_xticks(list(chunks), s["chunks"], fontsize=7)
    candidates.set_yscale("log")
    _plain_log_axis(candidates.yaxis)
    candidates.set(ylabel="R-Net candidates", title="largest micro-batch of each chunk")
    candidates.grid(axis="y", alpha=0.3, which="both")
    memory.set_xticks(range(len(names)), [s["budgets"][name]["label"] for name in names], fontsize=7)
    memory.set_ylim(0, max(b["peak_rss_mib"] for b in s["budgets"].values()) * 1.2)
    memory.set(ylabel="MiB", title="peak RSS")
    memory.grid(axis="y", alpha=0.3)
    _save(figure, plt, path)


# --- Serve latency --------------------------------------------------------------------------------------------

def serve_latency_series(data: dict) -> dict:
    """Setting (image, budget, wait) and per concurrency: throughput (range), p50, p99, requests per run."""
    _require(data, ("summary", "args"), "serve-latency")
    rows = sorted(data["summary"], key=lambda r: r["concurrency"])
    args = data["args"]
    budget = args.get("max_batch_pixels")
    series = {
        "setting": f"{Path(args.get('image', '?')).name}, budget "
                   + (f"{budget:,} px" if budget else "default") + f", wait {args.get('batch_wait_ms', 0):g} ms",
        "concurrency": [r["concurrency"] for r in rows],
    }
    for app in ("batched", "single"):
        series[app] = {key: [r[app][key] for r in rows]
                       for key in ("throughput_rps", "throughput_range", "p50_ms", "p99_ms", "requests_per_batch")}
    return series


def plot_serve_latency(runs: list[dict], path: str | Path) -> None:
    """One row per result: throughput against concurrency (range as error bars; requests per run beside the
    batched points), and p50 / p99 latency against concurrency, batched against one request per run."""
    plt = _pyplot()
    series = [serve_latency_series(data) for data in runs]
    figure, grid = plt.subplots(len(series), 2, figsize=(11, 3.8 * len(series)), dpi=120, squeeze=False)
    styles = {"batched": (OURS_COLORS[0], "-"), "single": (PEER_COLOR, "--")}
    for (throughput, latency), s in zip(grid, series):
        for app, (color, line) in styles.items():
            values = s[app]
            low = [v - r[0] for v, r in zip(values["throughput_rps"], values["throughput_range"])]
            high = [r[1] - v for v, r in zip(values["throughput_rps"], values["throughput_range"])]
            label = "batched" if app == "batched" else "one request per run"
            throughput.errorbar(s["concurrency"], values["throughput_rps"], yerr=[low, high], fmt="o" + line,
                                color=color, capsize=3, label=label)
            latency.plot(s["concurrency"], values["p50_ms"], "o" + line, color=color, label=f"{label}: p50")
            latency.plot(s["concurrency"], values["p99_ms"], "^" + line, color=color, alpha=0.6,
                         label=f"{label}: p99")
        for x, y, per_run in zip(s["concurrency"], s["batched"]["throughput_rps"], s["batched"]["requests_per_batch"]):
            throughput.annotate(f"{per_run:.1f} / run", (x, y), textcoords="offset points", xytext=(5, -12),
                                fontsize=8, color=OURS_COLORS[0])
        for axes in (throughput, latency):
            axes.set_xscale("log", base=2)
            axes.set_xticks(s["concurrency"], [str(c) for c in s["concurrency"]])
            axes.set_xlabel("requests in flight (concurrency)")
            axes.grid(alpha=0.3, which="both")
            axes.legend(fontsize=8, loc="upper left")
        top = max(r[1] for app in styles for r in s[app]["throughput_range"])
        throughput.set_ylim(0, top * 1.25)
        throughput.set(ylabel="requests / s (median, range over rounds)", title=s["setting"])
        latency.set_yscale("log")
        _plain_log_axis(latency.yaxis)
        latency.set(ylabel="latency ms (median over rounds)", title="client latency")
    _save(figure, plt, path)


# --- command line ---------------------------------------------------------------------------------------------

# kind -> (plot function, takes a list of results)
PLOTS = {
    "detector-speed": (plot_detector_speed, False),
    "faces-per-frame": (plot_faces_per_frame, False),
    "pipeline-overhead": (plot_pipeline_overhead, True),
    "pipeline-memory": (plot_pipeline_memory, False),
    "pipeline-batching": (plot_pipeline_batching, False),
    "serve-latency": (plot_serve_latency, True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(PLOTS))
    parser.add_argument("results", nargs="+", type=Path, help="the benchmark's --output JSON file(s)")
    parser.add_argument("--output", type=Path, required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    plot, takes_list = PLOTS[args.kind]
    if not takes_list and len(args.results) > 1:
        parser.error(f"{args.kind} plots one result file, got {len(args.results)}")
    loaded = []
    for path in args.results:
        try:
            loaded.append(json.loads(path.read_text()))
        except OSError as error:
            parser.error(f"cannot read {path}: {error.strerror}")
        except json.JSONDecodeError as error:
            parser.error(f"{path} is not JSON: {error}")
    try:
        plot(loaded if takes_list else loaded[0], args.output)
    except (ResultError, KeyError, TypeError) as error:
        detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
        parser.error(f"{', '.join(map(str, args.results))}: {detail}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
