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
    """Precision against cost for a sweep: one panel per measured input kind.

    ``rows``: dicts from ``raydetect.commands.sweep`` with ``label``, and for annotated images
    ``image_ms`` and ``ap`` (subset -> AP), for videos ``video_ms`` and ``video_faces_per_frame``.
    Points are joined in the order of the sweep and labelled with their setting.
    """
    plt = _pyplot()
    panels = []
    if any("ap" in row for row in rows):
        panels.append("images")
    if any("video_ms" in row for row in rows):
        panels.append("videos")
    if not panels:
        raise ValueError("nothing to plot: the sweep measured neither images nor videos")
    figure, axes_list = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.6), dpi=120, squeeze=False)
    for axes, panel in zip(axes_list[0], panels):
        if panel == "images":
            subsets = [s for s in rows[0]["ap"]]
            for subset in subsets:
                xs = [row["image_ms"] for row in rows]
                ys = [row["ap"][subset] for row in rows]
                axes.plot(xs, ys, "o-", color=SUBSET_COLORS.get(subset), label=f"AP {subset}")
            for row in rows:
                axes.annotate(row["label"], (row["image_ms"], max(row["ap"].values())),
                              textcoords="offset points", xytext=(4, 6), fontsize=8)
            axes.set(xlabel="milliseconds per image", ylabel="average precision (IoU 0.5)", ylim=(0, 1),
                     title="annotated images")
        else:
            xs = [row["video_ms"] for row in rows]
            ys = [row["video_faces_per_frame"] for row in rows]
            axes.plot(xs, ys, "o-", color="tab:purple", label="faces per frame")
            for row, x, y in zip(rows, xs, ys):
                axes.annotate(row["label"], (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
            axes.set(xlabel="milliseconds per frame", ylabel="faces found per frame", ylim=(0, None),
                     title="videos")
        axes.set_xscale("log")
        axes.grid(alpha=0.3, which="both")
        axes.legend(loc="lower right")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
