"""Pictures of evaluation results: confusion matrices, mask-size distributions, training curves.

Each function draws onto a matplotlib Axes (so the report can compose panels) and has a twin
that saves a standalone PNG. The Agg canvas of ``matplotlib.figure.Figure`` is used directly:
no pyplot state, no display needed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from adios.viz import mask_colours, savefig_atomic

SOURCE_COLOURS = {"trained": "#1f77b4", "untrained": "#ff7f0e", "random_blobs": "#7f7f7f"}
_MAX_ANNOTATED_CLASSES = 20
_MAX_LABELLED_CLASSES = 40


def save(figure: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save a PNG atomically (adios.viz.savefig_atomic): no half-written picture after a kill,
    nothing written through a symbolic link."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savefig_atomic(figure, path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def draw_confusion(
    ax: Axes, confusion: Sequence[Sequence[int]], class_names: Sequence[str], title: str = ""
) -> None:
    """Row-normalised confusion matrix (true class down, predicted across); counts annotated."""
    counts = np.asarray(confusion, dtype=np.int64)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if n <= _MAX_LABELLED_CLASSES:
        ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
    if n <= _MAX_ANNOTATED_CLASSES:
        for (i, j), value in np.ndenumerate(counts):
            if value:
                ax.text(
                    j,
                    i,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rows[i, j] > 0.55 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)


def confusion_figure(
    confusion: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    side = min(12.0, 2.5 + 0.45 * len(class_names))
    figure = Figure(figsize=(side, side))
    draw_confusion(figure.add_subplot(), confusion, class_names, title)
    return save(figure, path)


def draw_size_histograms(ax: Axes, histograms: dict[str, Sequence[int]], title: str = "") -> None:
    """Step histograms over [0, 1] of per-image mask sizes, one line per mask source."""
    for name, counts in histograms.items():
        counts = np.asarray(counts, dtype=np.float64)
        edges = np.linspace(0, 1, len(counts) + 1)
        ax.stairs(
            counts / max(counts.sum(), 1),
            edges,
            label=name.replace("_", " "),
            color=SOURCE_COLOURS.get(name),
            linewidth=1.8,
        )
    ax.set_xlabel("fraction of the image one mask covers")
    ax.set_ylabel("share of (image, mask) pairs")
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)


def size_histogram_figure(
    histograms: dict[str, Sequence[int]], path: str | Path, title: str = ""
) -> Path:
    figure = Figure(figsize=(5.5, 3.4))
    draw_size_histograms(figure.add_subplot(), histograms, title)
    return save(figure, path)


# ----------------------------------------------------------------------------- training curves


def _series(rows: list[dict[str, Any]], key: str, x_key: str = "epoch_float") -> tuple:
    points = [(r[x_key], r[key]) for r in rows if isinstance(r.get(key), int | float)]
    points = [(x, y) for x, y in points if math.isfinite(y)]
    return tuple(np.asarray(v) for v in zip(*points, strict=True)) if points else ((), ())


def with_epoch_float(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``epoch_float`` = step / steps per epoch, so step rows and epoch rows share an axis."""
    steps_per_epoch = max(
        (r["step"] / r["epoch"] for r in rows if r.get("epoch") and "elapsed_s" in r), default=None
    )
    out = []
    for row in rows:
        row = dict(row)
        if steps_per_epoch and "step" in row:
            row["epoch_float"] = row["step"] / steps_per_epoch
        else:
            row["epoch_float"] = row.get("epoch", 0)
        out.append(row)
    return out


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < 2 * window:
        return y
    kernel = np.ones(window) / window
    padded = np.concatenate(
        [np.full(window // 2, y[0]), y, np.full(window - window // 2 - 1, y[-1])]
    )
    return np.convolve(padded, kernel, mode="valid")


def curve_panels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The panels a run's metrics support: title, and (label, key) lines to draw."""
    keys = {k for r in rows for k in r}
    candidates = [
        ("SSL loss", [("encoder loss", "loss"), ("masker's loss", "adv_loss")]),
        ("kNN top-1 (val, training monitor)", [("kNN", "knn_acc"), ("online probe", "probe_acc")]),
        ("mask confidence (val): mean max-mask weight", [("confidence", "mask_confidence")]),
        ("mask sizes", [("mask_sizes", "mask_sizes")]),
        ("sparsity penalty", [("penalty", "penalty")]),
        ("learning rate", [("encoder lr", "lr")]),
        ("throughput (img/s)", [("images/s", "images_per_s")]),
    ]
    return [
        {"title": t, "lines": [(label, k) for label, k in lines if k in keys]}
        for t, lines in candidates
        if any(k in keys for _, k in lines)
    ]


def draw_curves(ax: Axes, rows: list[dict[str, Any]], panel: dict[str, Any]) -> None:
    for label, key in panel["lines"]:
        if key == "mask_sizes":
            points = [(r["epoch_float"], r[key]) for r in rows if isinstance(r.get(key), list)]
            if not points:
                continue
            x = np.asarray([p[0] for p in points])
            sizes = np.asarray([p[1] for p in points])
            colours = mask_colours(sizes.shape[1]).numpy()
            for n in range(sizes.shape[1]):
                ax.plot(
                    x,
                    _smooth(sizes[:, n], 5),
                    color=colours[n],
                    label=f"mask {n + 1}",
                    linewidth=1.5,
                )
            ax.set_ylim(0, max(0.6, float(sizes.max()) * 1.05))
            continue
        x, y = _series(rows, key)
        if not len(x):
            continue
        if key == "mask_confidence":
            _confidence_references(ax, rows, y)
        marker = "o" if len(x) <= 30 else None
        smoothed = _smooth(y, 5) if len(x) > 30 else y
        ax.plot(x, smoothed, label=label, marker=marker, markersize=3, linewidth=1.5)
    ax.set_title(panel["title"], fontsize=10)
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if len(ax.get_lines()) > 1:
        ax.legend(fontsize=7, frameon=False)


def _confidence_references(ax: Axes, rows: list[dict[str, Any]], y: np.ndarray) -> None:
    """Uniform masks score 1/N and hard ones 1: the two lines bracket what the curve means."""
    n_masks = next((len(r["mask_sizes"]) for r in rows if isinstance(r.get("mask_sizes"), list)),
                   None)
    if n_masks:
        ax.axhline(1 / n_masks, color="#7f7f7f", linestyle="--", linewidth=1,
                   label=f"uniform (1/{n_masks})")
    ax.axhline(1.0, color="#7f7f7f", linestyle=":", linewidth=1, label="hard masks")
    low = min([float(y.min())] + ([1 / n_masks] if n_masks else []))
    ax.set_ylim(max(0.0, low - 0.05), 1.02)


def curves_figure(rows: list[dict[str, Any]], columns: int = 3) -> Figure | None:
    """All :func:`curve_panels` of a run's metrics rows; None when there is nothing to draw."""
    rows = with_epoch_float(rows)
    panels = curve_panels(rows)
    if not panels:
        return None
    n_rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * n_rows), layout="constrained")
    for i, panel in enumerate(panels):
        draw_curves(figure.add_subplot(n_rows, columns, i + 1), rows, panel)
    return figure


# ----------------------------------------------------------------------------- step benchmarks

_STEP_ROW = re.compile(
    r"^(none|adios-s|adios)\s+(\d+|-)\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+x\s+\S+\s+\S+\s+(\d+|-)$"
)


def parse_step_tables(text: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """The ``adios bench step`` tables pasted into a document: (setting, rows) per table, the
    setting being the precision and layout of its header line (e.g. "bf16, channels_last")."""
    tables = []
    for block in re.findall(r"```\n(preset .*?)```", text, flags=re.S):
        header = block.splitlines()[0]
        setting = re.search(r"batch \d+, (.*?);", header)
        rows = []
        for line in block.splitlines():
            match = _STEP_ROW.match(line.strip())
            if match:
                masking, n, schedule, rate, seconds, peak = match.groups()
                rows.append({"masking": masking, "n_masks": None if n == "-" else int(n),
                             "schedule": None if schedule == "-" else schedule,
                             "images_per_s": float(rate), "seconds_per_step": float(seconds),
                             "peak_mem_mb": None if peak == "-" else float(peak)})
        if rows and setting:
            tables.append((setting.group(1), rows))
    return tables


def _step_label(row: dict[str, Any]) -> str:
    if row["masking"] == "none":
        return "plain SimCLR"
    name = "ADIOS-s" if row["masking"] == "adios-s" else f"ADIOS N={row['n_masks']}"
    return f"{name}, {row['schedule']}"


def step_chart(tables: list[tuple[str, list[dict[str, Any]]]], path: str | Path,
               title: str = "") -> Path:
    """Images/s and peak memory per training-step configuration, one bar colour per setting."""
    labels = list(dict.fromkeys(_step_label(r) for _, rows in tables for r in rows))
    figure = Figure(figsize=(12, 0.42 * len(labels) * max(1, len(tables)) / 2 + 1.6),
                    layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    height = 0.8 / len(tables)
    for j, (setting, rows) in enumerate(tables):
        by_label = {_step_label(r): r for r in rows}
        y = [i + (j - (len(tables) - 1) / 2) * height for i in range(len(labels))]
        for ax, key in zip(axes, ("images_per_s", "peak_mem_mb"), strict=True):
            values = [by_label[k][key] if k in by_label and by_label[k][key] is not None
                      else math.nan for k in labels]
            bars = ax.barh(y, values, height, label=setting)
            ax.bar_label(bars, fmt="%.0f" if key == "peak_mem_mb" else "%.1f", fontsize=6,
                         padding=2)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("images/s (higher is faster)")
    axes[1].set_xlabel("peak memory of the step, MB")
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=8, frameon=False, loc="lower right")
    if title:
        figure.suptitle(title, fontsize=10)
    return save(figure, path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adios.evaluation.figures bench DOC.md OUT.png``: chart the step tables of a
    document (BENCHMARKS.md) from the numbers printed in it."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[0] != "bench":
        print("usage: python -m adios.evaluation.figures bench DOC.md OUT.png", file=sys.stderr)
        return 2
    tables = parse_step_tables(Path(args[1]).read_text())
    if not tables:
        print(f"{args[1]}: no `adios bench step` tables found", file=sys.stderr)
        return 1
    title = f"adios bench step, as printed in {Path(args[1]).name}"
    print(step_chart(tables, args[2], title=title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
