"""PNG plots of evaluations and sweeps (matplotlib, the optional ``plots`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

SUBSET_COLORS = {"easy": "tab:green", "medium": "tab:orange", "hard": "tab:red", "all": "tab:blue"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'raydetect[plots]'") from None
    return plt


def plot_precision_recall(report, path: str | Path, title: str = "") -> None:
    """Precision-recall curve of each subset of an ``EvaluationReport``, AP in the legend."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    for name, result in report.subsets.items():
        if result.num_faces:
            axes.plot(result.recall_curve, result.precision_curve, color=SUBSET_COLORS.get(name),
                      label=f"{name}: AP {result.ap:.3f}")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
             title=title or f"precision-recall, IoU {report.iou_threshold:g}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_sweep(rows: Sequence[dict], path: str | Path, title: str = "") -> None:
    """Precision against cost for a sweep: a row of panels per measured input kind.

    ``rows``: dicts from ``raydetect.commands.sweep`` with ``label``; for annotated images
    ``ap`` (subset -> AP), ``image_ms`` and ``image_gmacs``; for videos
    ``video_faces_per_frame``, ``video_ms`` and ``video_gmacs``. Left: measured milliseconds
    per frame; right: multiply-adds per frame, which do not depend on the machine or its load.
    Points are joined in sweep order and labelled with their setting.
    """
    plt = _pyplot()
    kinds = [kind for kind, key in (("image", "ap"), ("video", "video_ms")) if any(key in row for row in rows)]
    if not kinds:
        raise ValueError("nothing to plot: the sweep measured neither images nor videos")
    figure, grid = plt.subplots(len(kinds), 2, figsize=(11, 4.2 * len(kinds)), dpi=120, squeeze=False)
    for axes_row, kind in zip(grid, kinds):
        for axes, cost in zip(axes_row, ("ms", "gmacs")):
            xs = [row[f"{kind}_{cost}"] for row in rows]
            if kind == "image":
                for subset in rows[0]["ap"]:
                    axes.plot(xs, [row["ap"][subset] for row in rows], "o-", color=SUBSET_COLORS.get(subset),
                              label=f"AP {subset}")
                tops = [max(row["ap"].values()) for row in rows]
                axes.set(ylabel="average precision", ylim=(0, 1), title="annotated images")
            else:
                tops = [row["video_faces_per_frame"] for row in rows]
                axes.plot(xs, tops, "o-", color="tab:purple", label="faces found per frame")
                axes.set(ylabel="faces found per frame", ylim=(0, max(tops) * 1.25 or 1), title="video frames")
            for row, x, y in zip(rows, xs, tops):
                axes.annotate(row["label"], (x, y), textcoords="offset points", xytext=(3, 5), fontsize=8)
            axes.set_xscale("log")
            _plain_log_ticks(axes)
            axes.set_xlabel("milliseconds per frame (measured)" if cost == "ms" else "GMAC per frame (all stages)")
            axes.grid(alpha=0.3, which="both")
            axes.legend(loc="upper left", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _plain_log_ticks(axes) -> None:
    """Log-scale x axis labelled with plain numbers (1, 2, 5, 10, ...) instead of 2x10^0."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
