"""Learning curves of a compare grid: kNN accuracy against epochs, images seen and wall-clock.

Protocol (docs/curves.md). The curve is the training loop's own kNN monitor on the
**validation** split: every ``train.knn_every`` epochs (a grid's ``curve_every``), before the
first epoch and after the last, the encoder's features of the validation images are classified
by a weighted kNN vote (``train.knn_k``, ``train.knn_temperature``: k=20, T=0.1 unless set)
over the first ``train.knn_bank`` training images. Nothing is chosen on these points, so they
may be looked at as often as wanted; the **test** split is scored once, at the end, by the
protocol of ``adios eval`` (k and T chosen on val). A curve therefore costs no evaluation beyond
what training already does, and a scheme's curve and its final test number are two different
measurements (val at fixed k, test at selected k).

The x axes come from the same metrics rows: ``epoch``, ``images_seen`` (training images drawn,
each giving two views) and ``train_s`` (seconds inside the training steps, summed over
epochs; the monitor, pictures, checkpoints and start-up are not counted). The training loop
keeps ``images_seen`` and ``train_s`` in its checkpoint and drops metrics rows written after
the checkpoint it resumes from, so a resumed cell's curve continues with neither gaps nor
duplicates; :func:`curve_problems` checks that.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from adios.compare.grid import Cell
from adios.evaluation.figures import save
from adios.runlog import read_metrics

CURVE = "curve.csv"  # one cell's curve, in its run directory
CURVE_FIELDS = ("epoch", "step", "images_seen", "train_s", "knn_val")
# x axes of the picture, by metrics key; units by :func:`axis_unit`
AXES = ("epoch", "images_seen", "train_s")
# fixed budgets of the tables: these fractions of the images the preset's longest curve saw
IMAGE_FRACTIONS = (0.25, 0.5, 1.0)


def evaluation_points(epochs: int, every: int) -> list[int]:
    """The epochs at which the monitor runs: 0 (untrained), every ``every``-th, and the last."""
    from adios.train import _due  # the training loop's own rule

    return [0, *(e for e in range(1, epochs + 1) if _due(every, e, epochs))]


def read_curve(run_dir: Path) -> list[dict[str, Any]]:
    """The monitor's rows of a run's metrics.jsonl, in the order written (empty: no metrics)."""
    return [
        {
            "epoch": r["epoch"],
            "step": r["step"],
            "images_seen": r.get("images_seen"),
            "train_s": r.get("train_s"),
            "knn_val": r["knn_acc"],
        }
        for r in read_metrics(run_dir)
        if "knn_acc" in r
    ]


def curve_problems(
    rows: Sequence[dict[str, Any]], epochs: int, every: int, done: int | None = None
) -> list[str]:
    """What is wrong with the curve of a run of ``epochs`` epochs after ``done`` of them (all by
    default): missing, repeated or out-of-order points, or x values that do not increase.
    Empty when it is whole."""
    problems = []
    got = [r["epoch"] for r in rows]
    done = epochs if done is None else done
    expected = [e for e in evaluation_points(epochs, every) if e <= done]
    if got != expected:
        problems.append(f"evaluation points {got}, expected {expected}")
    for key in ("images_seen", "train_s"):
        values = [r[key] for r in rows]
        if any(v is None for v in values):
            problems.append(f"{key} missing (a run from before it was logged)")
        elif any(b <= a for a, b in zip(values, values[1:], strict=False)):
            problems.append(f"{key} does not increase: {values}")
    return problems


def write_curve(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    return write_csv(path, [{k: r[k] for k in CURVE_FIELDS} for r in rows], CURVE_FIELDS)


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> Path:
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


# ----------------------------------------------------------------------------- grid level


def collect_curves(cells: Sequence[tuple[Cell, Path]]) -> list[dict[str, Any]]:
    """Every cell's curve (written to its run directory as curve.csv), as rows of curves.csv."""
    rows = []
    for cell, run_dir in cells:
        curve = read_curve(run_dir)
        if not curve:
            continue
        write_curve(curve, run_dir / CURVE)
        labels = {"preset": cell.preset, "objective": cell.objective, "scheme": cell.scheme}
        rows += [{**labels, "seed": cell.seed, **r} for r in curve]
    return rows


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def mean_curves(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict]]:
    """Per (preset, objective, scheme): at each epoch, the mean (and std over >= 2 seeds) of
    accuracy and of every x axis, over the seeds that reached that epoch."""
    groups: dict[tuple[str, str, str], dict[int, list[dict]]] = {}
    for r in rows:
        key = (r["preset"], r["objective"], r["scheme"])
        groups.setdefault(key, {}).setdefault(r["epoch"], []).append(r)
    out = {}
    for key, by_epoch in groups.items():
        points = []
        for epoch in sorted(by_epoch):
            part = by_epoch[epoch]
            point: dict[str, Any] = {"epoch": epoch, "seeds": len(part)}
            for name in ("knn_val", "images_seen", "train_s"):
                values = [r[name] for r in part if r[name] is not None]
                if values:
                    point[name], point[f"{name}_std"] = _mean_std(values)
                else:
                    point[name] = point[f"{name}_std"] = None
            points.append(point)
        out[key] = points
    return out


def value_at(points: Sequence[dict], x_key: str, budget: float) -> dict | None:
    """The last mean point at or before ``budget`` on ``x_key`` (None before the first)."""
    before = [p for p in points if p[x_key] is not None and p[x_key] <= budget]
    return before[-1] if before else None


def image_budget_title(images: int) -> str:
    """0.25M images, or 4,096 images below 0.1M."""
    return f"{images / 1e6:g}M images" if images >= 100_000 else f"{images:,} images"


def budget_table(
    rows: Sequence[dict[str, Any]],
    image_budgets: Sequence[int] | None = None,
    finished: Collection[tuple[str, str, str]] | None = None,
) -> list[str]:
    """Markdown tables (one per preset) of val kNN at fixed images seen and at equal wall-clock.

    The images budgets are ``image_budgets``, or a quarter, a half and all of the images the
    preset's longest curve has seen (0.25M / 0.5M / 1M for a 1M-image grid, 4,096 / 8,192 /
    16,384 for a 16,384-image one), so that a small grid's table is not empty. Equal
    wall-clock is the training time of the scheme that finished first (the cheapest at equal
    epochs), among the (preset, objective, scheme) curves in ``finished`` (all, if None: a
    curve still growing would set the budget at wherever it has got to); each cell shows the
    last evaluation point at or before the budget, and in the wall-clock column the epoch of
    that point.
    """
    curves = mean_curves(rows)
    lines: list[str] = []
    for preset in dict.fromkeys(k[0] for k in curves):
        part = {k: v for k, v in curves.items() if k[0] == preset}
        finals = [v[-1]["train_s"] for k, v in part.items()
                  if v[-1]["train_s"] is not None and (finished is None or k in finished)]
        equal_s = min(finals) if finals else None
        longest = max((v[-1]["images_seen"] or 0 for v in part.values()), default=0)
        image_points = image_budgets or (
            [round(f * longest) for f in IMAGE_FRACTIONS] if longest else [])
        budgets = [("images_seen", b, image_budget_title(b)) for b in image_points]
        if equal_s:
            budgets.append(("train_s", equal_s, f"{equal_s / 60:.0f} min (equal wall-clock)"))
        header = ["scheme", "objective", *(title for _, _, title in budgets), "epochs done"]
        lines += [
            f"### {preset}: val kNN (training monitor) at fixed budgets",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for (_, objective, scheme), points in part.items():
            cells = []
            for x_key, budget, _ in budgets:
                point = value_at(points, x_key, budget)
                reached = points[-1][x_key] is not None and points[-1][x_key] >= budget
                if point is None or not reached:
                    cells.append("–")
                    continue
                std = point["knn_val_std"]
                text = f"{100 * point['knn_val']:.1f}"
                text = f"{text} ± {100 * std:.1f}" if std is not None else text
                if x_key == "train_s":  # a costly scheme may be at epoch 0: its untrained encoder
                    text += f" (epoch {point['epoch']})"
                cells.append(text)
            cells.append(str(points[-1]["epoch"]))
            lines.append("| " + " | ".join([scheme, objective, *cells]) + " |")
        lines.append("")
    return lines


@dataclass(frozen=True)
class References:
    """Horizontal lines of the picture, per preset (None: not known)."""

    untrained: float | None = None  # val kNN of the untrained encoders (epoch 0), mean
    majority: float | None = None  # val majority-class rate (most frequent training class)
    chance: float | None = None  # 1 / number of classes


def references(
    rows: Sequence[dict[str, Any]], cells: Sequence[tuple[Cell, Path]], num_classes: dict[str, int]
) -> dict[str, References]:
    """The reference lines of every preset, from the cells' epoch-0 rows."""
    out = {}
    for preset in dict.fromkeys(cell.preset for cell, _ in cells):
        untrained = [r["knn_val"] for r in rows if r["preset"] == preset and r["epoch"] == 0]
        majority = []
        for _, run_dir in (pair for pair in cells if pair[0].preset == preset):
            first = next((r for r in read_metrics(run_dir) if r.get("epoch") == 0), {})
            if "val_majority_rate" in first:
                majority.append(first["val_majority_rate"])
        classes = num_classes.get(preset)
        out[preset] = References(
            untrained=statistics.mean(untrained) if untrained else None,
            majority=statistics.mean(majority) if majority else None,
            chance=1 / classes if classes else None,
        )
    return out


def axis_unit(x_key: str, largest: float) -> tuple[str, float]:
    """The axis title and scale for the largest value plotted: millions of images from 0.1M,
    thousands below (a 16k-image grid read 0.0000 / 0.0025 ... in millions); hours of
    training from 2 h, minutes below."""
    if x_key == "images_seen":
        if largest >= 100_000:
            return "training images seen (millions)", 1e-6
        return "training images seen (thousands)", 1e-3
    if x_key == "train_s":
        if largest >= 7200:
            return "training wall-clock (hours, steps only)", 1 / 3600
        return "training wall-clock (minutes, steps only)", 1 / 60
    return "epochs", 1.0


def curve_plot(rows: Sequence[dict[str, Any]], refs: dict[str, References], path: Path) -> Path:
    """One row of panels per preset: val kNN against each of :data:`AXES`, a line per
    (objective, scheme) with a band of +- one std where at least two seeds reached a point."""
    curves = mean_curves(rows)
    presets = list(dict.fromkeys(k[0] for k in curves)) or ["(no curves yet)"]
    figure = Figure(figsize=(4.2 * len(AXES), 3.3 * len(presets)), layout="constrained")
    axes = figure.subplots(len(presets), len(AXES), squeeze=False)
    objectives = {k[1] for k in curves}
    for row_axes, preset in zip(axes, presets, strict=True):
        ref = refs.get(preset, References())
        for ax, x_key in zip(row_axes, AXES, strict=True):
            largest = max((q[x_key] or 0 for (p, _, _), points in curves.items()
                           if p == preset for q in points), default=0)
            title, scale = axis_unit(x_key, largest)
            for (p, objective, scheme), points in curves.items():
                if p != preset:
                    continue
                shown = [q for q in points if q[x_key] is not None]
                x = [scale * q[x_key] for q in shown]
                y = [100 * q["knn_val"] for q in shown]
                label = scheme if len(objectives) == 1 else f"{objective} {scheme}"
                (line,) = ax.plot(x, y, marker=".", markersize=3, label=label)
                band = [
                    (xi, yi, q["knn_val_std"])
                    for xi, yi, q in zip(x, y, shown, strict=True)
                    if q["knn_val_std"] is not None and q["seeds"] >= 2
                ]
                if band:
                    ax.fill_between(
                        [b[0] for b in band],
                        [b[1] - 100 * b[2] for b in band],
                        [b[1] + 100 * b[2] for b in band],
                        color=line.get_color(),
                        alpha=0.2,
                        linewidth=0,
                    )
            for value, style, name in (
                (ref.untrained, "--", "untrained"),
                (ref.majority, ":", "majority class"),
                (ref.chance, "-.", "chance"),
            ):
                if value is not None and math.isfinite(value):
                    ax.axhline(100 * value, color="grey", linestyle=style, linewidth=1, label=name)
            ax.set_xlabel(title, fontsize=9)
            ax.set_ylabel("val kNN top-1 % (monitor)", fontsize=9)
            ax.set_title(preset, fontsize=9)
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=7)
    return save(figure, path)
