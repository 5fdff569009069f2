"""benchmarks/plot_results.py: what each plot takes from a benchmark's JSON, and the PNGs it writes.

The inputs are small results written here in the benchmarks' own formats (made with their own summary
functions where they have one); no benchmark runs and no timing is checked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmark_modules import load_benchmark

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def plots():
    return load_benchmark("plot_results")


def _json_round_trip(data):
    """As the plots read it: through a JSON file (integer keys become strings)."""
    return json.loads(json.dumps(data))


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 5_000  # axes, bars and text, not an empty canvas


# --- results in each benchmark's format -------------------------------------------------------------------------

def detector_speed_result() -> dict:
    speed = load_benchmark("detector_speed")
    stats = {"rnet_candidates": 500, "onet_candidates": 40, "faces": 6}

    def group(peer_s, ours):
        return {"frames": 2, "busy_before": None,
                "peer": {"seconds": peer_s, "cpu_seconds": peer_s, "stats": [stats, stats]},
                "ours": {b: {"seconds": s, "cpu_seconds": s, "stats": [stats]} for b, s in ours.items()}}

    street = [group(0.4, {1: 0.2, 4: 0.25}), group(0.6, {1: 0.2, 4: 0.2})]
    crowd = [group(10.0, {1: 4.0})]
    return _json_round_trip({
        "command": "detector_speed.py",
        "results": {"street720": dict(speed.summarize(street, [1, 4], None), frames=4),
                    "crowd17": dict(speed.summarize(crowd, [1], None), frames=2)},
    })


def faces_per_frame_result() -> dict:
    faces = load_benchmark("faces_per_frame")

    def record(name, count, rnet, peer_s, ours_s):
        stats = {"pnet_pixels": 10_000, "rnet_candidates": rnet, "onet_candidates": rnet // 4, "faces": count}
        return {"image": name, "width": 640, "height": 480, "peer_seconds": peer_s, "ours_seconds": ours_s,
                "peer_stats": stats, "ours_stats": stats}

    records = [record("crowd.jpg", 300, 8000, [8.0, 9.0, 7.0], [3.0, 4.0, 3.5]),
               record("empty.jpg", 0, 0, [0.05, 0.06, 0.04], [0.05, 0.05, 0.04]),
               record("one.jpg", 1, 100, [0.1, 0.12, 0.11], [0.05, 0.06, 0.05])]
    rows = faces.summarize(records)
    return _json_round_trip({"min_face_size": 20, "rows": rows, "fit": faces.candidate_cost_fit(rows),
                             "records": records})


def pipeline_overhead_result(every: int, baseline: list[float], pipeline: list[float]) -> dict:
    runs = [{"baseline_fps": b, "pipeline_fps": p, "frames": 1445 // every, "faces": 10,
             "baseline_seconds": 1.0, "pipeline_seconds": 1.0} for b, p in zip(baseline, pipeline)]
    return {"every": every, "runs": runs, "baseline_fps_median": sorted(baseline)[len(baseline) // 2],
            "pipeline_fps_median": sorted(pipeline)[len(pipeline) // 2]}


def pipeline_memory_result() -> dict:
    return {"runs": [
        {"copies": 8, "frames": 3040, "faces": 1584, "seconds": 91.8, "peak_pss_mib": 3000, "peak_rss_mib": 1800},
        {"copies": 1, "frames": 380, "faces": 198, "seconds": 18.3, "peak_pss_mib": 2500, "peak_rss_mib": 1500},
    ]}


def pipeline_batching_result() -> dict:
    def chunks(passes_per_chunk):
        kinds = ["eeeeeeee", "cccccccc", "cccceeee"]
        return [{"kinds": k, "faces": 100 * k.count("c"), "seconds": 1.0, "passes": p, "rnet": 1000 * len(p),
                 "onet": 100 * len(p)} for k, p in zip(kinds, passes_per_chunk)]

    return {"results": {
        "adaptive (default budget)": {"chunks": chunks([[8], [8], [2, 2, 2, 2]]), "peak_rss_mib": 1466, "faces": 1},
        "adaptive (roomy budget)": {"chunks": chunks([[8], [8], [8]]), "peak_rss_mib": 1581, "faces": 1},
        "tight budget": {"chunks": chunks([[1] * 8] * 3), "peak_rss_mib": 672, "faces": 1},
    }}


def serve_latency_result(budget: int | None) -> dict:
    serve = load_benchmark("serve_latency")
    args = argparse.Namespace(concurrency=[1, 8], requests=4, image="tests/data/obama-240p.jpg",
                              max_batch_pixels=budget, batch_wait_ms=0.0)
    rounds = []
    for round_index, scale in enumerate((1.0, 1.5)):
        for concurrency in args.concurrency:
            for app, batches in (("batched", 2), ("single", 4)):
                rounds.append({"round": round_index, "app": app, "concurrency": concurrency,
                               "latencies_s": [0.05 * scale * concurrency] * 4, "wall_s": scale, "failures": 0,
                               "batches": batches})
    return _json_round_trip({"summary": serve.summarise(rounds, args), "args": vars(args)})


# --- what each plot shows ---------------------------------------------------------------------------------------

def test_detector_speed_bars_reference_first_then_each_batch_size(plots, tmp_path):
    data = detector_speed_result()
    series = {s["workload"]: s for s in plots.detector_speed_series(data)}
    street = series["street720"]
    assert street["labels"] == ["reference", "raydetect\n1 / call", "raydetect\n4 / call"]
    # per-frame medians over the two groups: peer (0.2, 0.3) s, ours batch 1 (0.1, 0.1), batch 4 (0.125, 0.1)
    assert street["ms"] == pytest.approx([250.0, 100.0, 112.5])
    assert street["speedups"][0] == pytest.approx((2.5, 2.0, 3.0))
    assert series["crowd17"]["speedups"] == [pytest.approx((2.5, 2.5, 2.5))]
    plots.plot_detector_speed(data, tmp_path / "speed.png")
    _assert_png(tmp_path / "speed.png")


def test_faces_per_frame_sorted_by_faces_with_medians(plots, tmp_path):
    data = faces_per_frame_result()
    series = plots.faces_per_frame_series(data)
    assert series["faces"] == [0, 1, 300]
    assert series["image"] == ["empty.jpg", "one.jpg", "crowd.jpg"]
    assert series["peer_ms"] == pytest.approx([50.0, 110.0, 8000.0])
    assert series["ours_ms"] == pytest.approx([50.0, 50.0, 3500.0])
    assert series["speedup"] == pytest.approx([1.0, 2.2, 8000 / 3500])
    plots.plot_faces_per_frame(data, tmp_path / "faces.png")
    _assert_png(tmp_path / "faces.png")


def test_faces_per_frame_candidate_cost_is_none_without_candidates():
    rows = {r["image"]: r for r in faces_per_frame_result()["rows"]}
    assert rows["empty.jpg"]["ours_ms_per_rnet_candidate"] is None
    assert rows["one.jpg"]["ours_ms_per_rnet_candidate"] == pytest.approx(0.5)


def test_faces_per_frame_fit_of_time_against_candidates():
    fit = load_benchmark("faces_per_frame").candidate_cost_fit
    rows = [{"rnet_candidates": x, "peer_ms": 60 + 0.7 * x, "ours_ms": 80 + 0.2 * x} for x in (0, 100, 1000, 8000)]
    line = fit(rows)
    assert line["peer"] == {"ms_per_1000_rnet": pytest.approx(700.0), "intercept_ms": pytest.approx(60.0)}
    assert line["ours"] == {"ms_per_1000_rnet": pytest.approx(200.0), "intercept_ms": pytest.approx(80.0)}
    assert fit(rows[:1] * 3) == {}  # one candidate count: no line


def test_faces_per_frame_plots_without_a_fit(plots, tmp_path):
    data = faces_per_frame_result()
    del data["fit"]
    plots.plot_faces_per_frame(data, tmp_path / "faces.png")
    _assert_png(tmp_path / "faces.png")


def test_pipeline_overhead_one_group_per_sampling_in_order(plots, tmp_path):
    results = [pipeline_overhead_result(10, [18.0, 17.0, 19.0], [11.0, 12.0, 10.0]),
               pipeline_overhead_result(1, [15.0, 14.0, 16.0], [13.0, 12.0, 14.0])]
    series = plots.pipeline_overhead_series(results)
    assert [s["every"] for s in series] == [1, 10]
    assert [s["frames"] for s in series] == [1445, 144]
    assert series[0]["ratio"] == pytest.approx(13.0 / 15.0)
    assert series[1]["pipeline"] == [11.0, 12.0, 10.0]
    plots.plot_pipeline_overhead(results, tmp_path / "overhead.png")
    _assert_png(tmp_path / "overhead.png")


def test_pipeline_memory_ratio_of_largest_to_smallest_input(plots, tmp_path):
    series = plots.pipeline_memory_series(pipeline_memory_result())
    assert series["copies"] == [1, 8]
    assert series["pss_ratio"] == pytest.approx(1.2)
    assert series["rss_ratio"] == pytest.approx(1.2)
    plots.plot_pipeline_memory(pipeline_memory_result(), tmp_path / "memory.png")
    _assert_png(tmp_path / "memory.png")


def test_pipeline_memory_needs_two_runs(plots):
    with pytest.raises(plots.ResultError, match="1x and the Nx run"):
        plots.pipeline_memory_series({"runs": pipeline_memory_result()["runs"][:1]})


def test_pipeline_batching_passes_per_chunk_and_budget(plots, tmp_path):
    series = plots.pipeline_batching_series(pipeline_batching_result())
    assert series["chunks"] == ["8 empty", "8 crowd", "4 crowd\n4 empty"]
    assert series["faces"] == [0, 800, 400]
    assert series["budgets"]["adaptive (default budget)"]["passes"][2] == [2, 2, 2, 2]
    assert series["budgets"]["tight budget"]["rnet"] == [8000, 8000, 8000]
    assert series["budgets"]["tight budget"]["peak_rss_mib"] == 672
    # budgets sharing a first word keep distinct labels under their peak-RSS bars, on short lines
    labels = [budget["label"] for budget in series["budgets"].values()]
    assert labels == ["adaptive\ndefault\nbudget", "adaptive\nroomy\nbudget", "tight\nbudget"]
    plots.plot_pipeline_batching(pipeline_batching_result(), tmp_path / "batching.png")
    _assert_png(tmp_path / "batching.png")


def test_serve_latency_one_row_per_setting(plots, tmp_path):
    data = serve_latency_result(8_000_000)
    series = plots.serve_latency_series(data)
    assert series["setting"] == "obama-240p.jpg, budget 8,000,000 px, wait 0 ms"
    assert series["concurrency"] == [1, 8]
    # 4 requests per round in 1.0 s and 1.5 s: median of 4 and 2.67 req/s
    assert series["batched"]["throughput_rps"] == pytest.approx([10 / 3, 10 / 3])
    assert series["batched"]["requests_per_batch"] == [2.0, 2.0]
    assert series["single"]["requests_per_batch"] == [1.0, 1.0]
    default = plots.serve_latency_series(serve_latency_result(None))
    assert default["setting"] == "obama-240p.jpg, budget default, wait 0 ms"
    plots.plot_serve_latency([data, serve_latency_result(None)], tmp_path / "serve.png")
    _assert_png(tmp_path / "serve.png")


# --- command line -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, make", [
    ("detector-speed", lambda: [detector_speed_result()]),
    ("faces-per-frame", lambda: [faces_per_frame_result()]),
    ("pipeline-overhead", lambda: [pipeline_overhead_result(1, [15.0], [13.0]),
                                   pipeline_overhead_result(2, [13.0], [10.0])]),
    ("pipeline-memory", lambda: [pipeline_memory_result()]),
    ("pipeline-batching", lambda: [pipeline_batching_result()]),
    ("serve-latency", lambda: [serve_latency_result(None)]),
])
def test_command_line_writes_the_png(plots, tmp_path, kind, make):
    inputs = []
    for index, data in enumerate(make()):
        inputs.append(tmp_path / f"result{index}.json")
        inputs[-1].write_text(json.dumps(data))
    output = tmp_path / f"{kind}.png"
    assert plots.main([kind, *map(str, inputs), "--output", str(output)]) == 0
    _assert_png(output)


def _error_of(plots, capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        plots.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_command_line_names_the_file_of_another_benchmark(plots, tmp_path, capsys):
    wrong = tmp_path / "memory.json"
    wrong.write_text(json.dumps(pipeline_memory_result()))
    error = _error_of(plots, capsys, ["serve-latency", str(wrong), "--output", str(tmp_path / "x.png")])
    assert "memory.json" in error and "not a serve-latency result" in error and "'summary'" in error
    assert not (tmp_path / "x.png").exists()


def test_command_line_rejects_bad_files(plots, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    out = str(tmp_path / "x.png")
    assert "broken.json is not JSON" in _error_of(plots, capsys, ["detector-speed", str(broken), "--output", out])
    missing = str(tmp_path / "absent.json")
    assert "cannot read" in _error_of(plots, capsys, ["detector-speed", missing, "--output", out])
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert "JSON object" in _error_of(plots, capsys, ["pipeline-memory", str(listed), "--output", out])
    good = tmp_path / "speed.json"
    good.write_text(json.dumps(detector_speed_result()))
    assert "plots one result file, got 2" in _error_of(
        plots, capsys, ["detector-speed", str(good), str(good), "--output", out])
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps({"rows": [{"faces": 1}]}))
    assert "missing field" in _error_of(plots, capsys, ["faces-per-frame", str(truncated), "--output", out])
