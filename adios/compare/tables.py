"""The grid's tables and plots: results.md, results.csv, cells.csv, results.png, and the
learning curves (:mod:`adios.compare.curves`): curves.csv and curves.png."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from adios.compare.curves import (
    CURVE_FIELDS,
    budget_table,
    collect_curves,
    curve_plot,
    references,
    write_csv,
)
from adios.compare.grid import EVALUATION_FILES, Cell, Grid, cells
from adios.evaluation.figures import save
from adios.runlog import read_metrics, trained_so_far

METRICS = (  # key, column title, format: "%" (percent, 1 decimal) or decimals
    ("knn", "kNN test (k, T chosen on val)", "%"),
    ("knn_balanced", "kNN balanced", "%"),
    ("knn_k20", "kNN test (k=20, T=0.1)", "%"),
    ("linear", "linear test (fast probe)", "%"),
    ("linear_balanced", "linear balanced", "%"),
    ("majority", "majority class", "%"),
    ("fg_ari", "mask fg-ARI", 3),
    ("mbo", "mask mBO", 3),
    ("epochs", "epochs", 0),
    ("train_min", "training-step min", 1),
    ("images_per_s", "img/s (train step)", 0),
)
BAR_KEYS = ("knn", "knn_k20", "linear", "fg_ari", "mbo", "bg_gap")
# learned masks against their references (summary.json): the untrained masker, random blobs,
# and how much the masks change from image to image (0: the same pattern for every image)
MASK_METRICS = (
    ("fg_ari", "fg-ARI", 3),
    ("fg_ari_untrained", "fg-ARI untrained", 3),
    ("fg_ari_random", "fg-ARI random blobs", 3),
    ("mbo", "mBO", 3),
    ("mbo_untrained", "mBO untrained", 3),
    ("mbo_random", "mBO random blobs", 3),
    ("variation", "image variation (argmax)", 3),
    ("variation_untrained", "image variation untrained", 3),
)
# token modes on the scenes (summary.json): the share of the hidden patches' area on objects,
# for the masker's sampled draws, its deterministic top-k, and uniformly random patches
TOKEN_METRICS = (
    ("token_hidden", "hidden on objects (draws)", "%"),
    ("token_hidden_topk", "hidden on objects (top-k)", "%"),
    ("token_hidden_random", "hidden on objects (random patches)", "%"),
)
# the backgrounds test (eval_robustness.json): fast linear probe top-1 per variant, the gaps
ROBUSTNESS_METRICS = (
    ("bg_original", "original", "%"),
    ("bg_only_fg", "only-fg", "%"),
    ("bg_mixed_same", "mixed-same", "%"),
    ("bg_mixed_rand", "mixed-rand", "%"),
    ("bg_gap", "gap (same - rand)", "%"),
    ("bg_gap_knn", "kNN gap", "%"),
)

# results.md's tables after the main one, each shown when a row has its key: (key, introduction,
# columns, whether only the rows with the key are listed)
SECTIONS = (
    ("variation",
     "Learned masks on the test scenes (summary.json) against the same masker untrained and "
     "random blobs; image variation: mean over masks and pixels of the std over images of the "
     "argmax masks (0: one pattern for every image):",
     MASK_METRICS, True),
    ("token_hidden",
     "Where the hidden patches go on the test scenes (summary.json): the share of the hidden "
     "patches' area that lies on objects, against uniformly random patches at the same keep "
     "ratio:",
     TOKEN_METRICS, True),
    ("bg_gap",
     "Backgrounds test (adios eval robustness; fast linear probe test top-1 per variant, gap = "
     "mixed-same - mixed-rand):",
     ROBUSTNESS_METRICS, False),
)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def cell_results(run_dir: Path) -> dict[str, Any]:
    """One cell's numbers (None where missing)."""
    summary = _read_json(run_dir / "summary.json") or {}
    knn = _read_json(run_dir / "eval_knn.json")
    linear = _read_json(run_dir / "eval_linear_fast.json")
    backgrounds = _read_json(run_dir / EVALUATION_FILES["robustness"])
    rates, train_s = [], None
    if rows := read_metrics(run_dir):
        rates = [r["images_per_s"] for r in rows if "images_per_s" in r]
        train_s = trained_so_far(rows)[1]
    return {
        "knn": knn["test"]["selected"]["top1"] if knn else None,
        "knn_k": knn["selected"]["k"] if knn else None,
        "knn_balanced": knn["test"]["selected"].get("balanced_accuracy") if knn else None,
        "knn_k20": knn["test"]["k20_t0.1"]["top1"] if knn else None,
        "linear": linear["test"]["top1"] if linear else None,
        "linear_balanced": linear["test"].get("balanced_accuracy") if linear else None,
        "majority": knn["test"]["selected"].get("majority_rate") if knn else None,
        "fg_ari": summary.get("mask_fg_ari"),
        "mbo": summary.get("mask_mbo"),
        "fg_ari_random": summary.get("mask_fg_ari_random"),
        "mbo_random": summary.get("mask_mbo_random"),
        "fg_ari_untrained": summary.get("mask_fg_ari_untrained"),
        "mbo_untrained": summary.get("mask_mbo_untrained"),
        "variation": summary.get("mask_image_variation_argmax"),
        "variation_untrained": summary.get("mask_image_variation_argmax_untrained"),
        "token_hidden": summary.get("token_hidden_on_objects"),
        # a top-k needs a learned masker (runs before it was dropped for equal scores carry one)
        "token_hidden_topk": summary.get("token_hidden_on_objects_topk")
        if (run_dir / "masker.safetensors").is_file() else None,
        "token_hidden_random": summary.get("token_hidden_on_objects_random"),
        "knn_random_init": summary.get("knn_acc_random_init"),
        "chance": 1 / knn["dataset"]["num_classes"] if knn and knn.get("dataset", {}).get(
            "num_classes") else None,
        "epochs": summary.get("epochs"),
        "train_min": train_s / 60 if train_s else None,
        "images_per_s": statistics.median(rates) if rates else None,
        "failed": (run_dir / "error.json").is_file(),
        **_robustness_results(backgrounds),
    }


def _robustness_results(result: dict[str, Any] | None) -> dict[str, Any]:
    linear = (result or {}).get("linear", {})
    out = {
        f"bg_{name}": linear[name]["top1"] if name in linear else None
        for name in ("original", "only_fg", "mixed_same", "mixed_rand")
    }
    out["bg_gap"] = linear.get("background_gap")
    out["bg_gap_knn"] = (result or {}).get("knn", {}).get("background_gap")
    return out


def _stats(values: list[float | None]) -> tuple[float | None, float | None, int]:
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return None, None, 0
    std = statistics.stdev(present) if len(present) > 1 else None
    return statistics.mean(present), std, len(present)


def collect(grid: Grid) -> list[dict[str, Any]]:
    """One row per (preset, objective, scheme): mean and std over the seeds that finished."""
    rows = []
    for preset in grid.presets:
        for objective in grid.objectives:
            for scheme in grid.schemes:
                group = [Cell(preset, objective, scheme, s) for s in grid.seeds]
                results = [cell_results(c.run_dir(grid)) for c in group]
                finished = [
                    c.seed for c, r in zip(group, results, strict=True) if r["knn"] is not None
                ]
                row: dict[str, Any] = {
                    "preset": preset,
                    "objective": objective,
                    "scheme": scheme,
                    "seeds": finished,
                    "failed": sum(r["failed"] for r in results),
                }
                done = [r for r in results if r["knn"] is not None]
                keys = [m[0] for m in METRICS + ROBUSTNESS_METRICS + MASK_METRICS + TOKEN_METRICS]
                for key in dict.fromkeys([*keys, "knn_random_init", "chance"]):
                    row[f"{key}_mean"], row[f"{key}_std"], _ = _stats([r[key] for r in done])
                rows.append(row)
    return rows


def _cell_text(mean: float | None, std: float | None, style: str | int) -> str:
    if mean is None:
        return "–"
    scale, digits = (100, 1) if style == "%" else (1, style)
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], metrics: Sequence[tuple] = METRICS) -> str:
    header = ["scheme", "objective", "seeds"] + [title for _, title, _ in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        seeds = ",".join(map(str, row["seeds"])) or "–"
        if row["failed"]:
            seeds += f" ({row['failed']} failed)"
        values = [
            _cell_text(row[f"{key}_mean"], row[f"{key}_std"], style) for key, _, style in metrics
        ]
        lines.append("| " + " | ".join([row["scheme"], row["objective"], seeds, *values]) + " |")
    return "\n".join(lines)


def _references(rows: list[dict[str, Any]]) -> list[str]:
    """Chance-level references from the runs' summaries, for reading the table."""
    notes = []
    blobs = [r for r in rows if r["mbo_random_mean"] is not None]
    if blobs:
        fg = statistics.mean(r["fg_ari_random_mean"] for r in blobs)
        mbo = statistics.mean(r["mbo_random_mean"] for r in blobs)
        notes.append(f"random blob masks (same number of masks): fg-ARI {fg:.3f}, mBO {mbo:.3f}")
    inits = [r["knn_random_init_mean"] for r in rows if r["knn_random_init_mean"] is not None]
    if inits:
        notes.append(
            f"untrained encoder, kNN k=20 on the training bank (summary.json): "
            f"{statistics.mean(inits):.1%}"
        )
    return notes


def write_tables(grid: Grid) -> list[Path]:
    """results.md, results.csv, cells.csv and results.png in the grid's output folder."""
    rows = collect(grid)
    grid.output.mkdir(parents=True, exist_ok=True)
    info = _read_json(grid.output / "grid.json") or {}
    budget = f"{grid.epochs} epochs" if grid.epochs else f"{grid.minutes:g} minutes of training"
    lines = [
        f"# {grid.description or 'masking schemes compared'}",
        "",
        f"Command: `{info.get('command') or 'adios compare ' + grid.source}`  ",
        f"Budget per cell: {budget}; seeds {grid.seeds}; machine: "
        f"{_machine_text(info.get('machine') or machine())}.",
        "",
        "Test-split numbers: kNN with k and T chosen on the validation split, and the "
        "conventional k=20; fast linear probe (weight decay chosen on val); mask metrics "
        "on the test scenes for learned masks. Mean ± std over the seeds listed.",
        "",
    ]
    for preset in grid.presets:
        part = [r for r in rows if r["preset"] == preset]
        lines += [f"## {preset}", "", markdown_table(part), ""]
        lines += [f"- {note}" for note in _references(part)] + [""]
        for present, intro, metrics, only_present in SECTIONS:
            shown = [r for r in part if r[f"{present}_mean"] is not None]
            if shown:
                lines += [intro, "", markdown_table(shown if only_present else part, metrics), ""]
    curve_rows = write_curves(grid)
    if curve_rows:
        lines += [
            "## Learning curves",
            "",
            "Validation kNN of the training monitor (docs/curves.md), mean ± std over seeds, "
            "at the last evaluation point at or before each budget: curves.csv, curves.png.",
            "",
            *budget_table(curve_rows, finished=_finished_schemes(grid)),
        ]
    paths = [
        grid.output / "results.md",
        grid.output / "results.csv",
        grid.output / "cells.csv",
        grid.output / "results.png",
    ]
    if curve_rows:
        paths += [grid.output / "curves.csv", grid.output / "curves.png"]
    paths[0].write_text("\n".join(lines))
    _write_csv(paths[1], [{**r, "seeds": " ".join(map(str, r["seeds"]))} for r in rows])
    _write_csv(
        paths[2],
        [
            {
                "preset": c.preset,
                "objective": c.objective,
                "scheme": c.scheme,
                "seed": c.seed,
                "run_dir": str(c.run_dir(grid)),
                **cell_results(c.run_dir(grid)),
            }
            for c in cells(grid)
        ],
    )
    bar_plot(rows, paths[3])
    return paths


def _finished_schemes(grid: Grid) -> set[tuple[str, str, str]]:
    """(preset, objective, scheme) whose every cell has trained (summary.json)."""
    groups: dict[tuple[str, str, str], list[bool]] = {}
    for c in cells(grid):
        done = (c.run_dir(grid) / "summary.json").is_file()
        groups.setdefault((c.preset, c.objective, c.scheme), []).append(done)
    return {key for key, done in groups.items() if all(done)}


def write_curves(grid: Grid) -> list[dict[str, Any]]:
    """Every cell's curve.csv, the grid's curves.csv and curves.png; returns the rows."""
    pairs = [(c, c.run_dir(grid)) for c in cells(grid)]
    rows = collect_curves(pairs)
    if not rows:
        return rows
    classes = {}
    for cell, run_dir in pairs:
        knn = _read_json(run_dir / EVALUATION_FILES["knn"])
        if knn and "num_classes" in knn.get("dataset", {}):
            classes[cell.preset] = knn["dataset"]["num_classes"]
    fields = ["preset", "objective", "scheme", "seed", *CURVE_FIELDS]
    write_csv(grid.output / "curves.csv", rows, fields)
    curve_plot(rows, references(rows, pairs, classes), grid.output / "curves.png")
    return rows


def _machine_text(info: dict[str, Any]) -> str:
    device = info.get("cuda_device") or f"CPU, {info.get('cpus')} cores"
    return f"{device}, torch {info.get('torch')}, {info.get('platform')}"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    write_csv(path, rows, list(rows[0]) if rows else [])


ACCURACY_KEYS = ("knn", "knn_k20", "linear")


def _mean_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.mean(values) if values else None


def bar_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """results.png: :func:`bar_figure` saved."""
    return save(bar_figure(rows), path)


def bar_figure(rows: list[dict[str, Any]]) -> Figure:
    """One panel per (preset, metric): a bar per scheme (a colour per objective) labelled with
    its epochs; std over seeds only where a cell has two or more; the y axis zoomed to the bars
    and the references: the untrained encoder (kNN) or random blob masks (mask metrics) dashed,
    the test split's majority-class rate dotted, chance (1 / classes) dash-dot (the styles of
    the curves picture). Mask panels leave out the schemes without learned masks; with the
    backgrounds test, a panel of its gap (mixed-same - mixed-rand) against zero."""
    keys = [
        (k, t, p)
        for k, t, p in METRICS + ROBUSTNESS_METRICS
        if k in BAR_KEYS and any(r.get(f"{k}_mean") is not None for r in rows)
    ] or list(METRICS[:1])
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    objectives = list(dict.fromkeys(r["objective"] for r in rows))
    figure = Figure(figsize=(3.6 * len(keys), 3.3 * len(presets)), layout="constrained")
    axes = figure.subplots(len(presets), len(keys), squeeze=False)
    width = 0.8 / len(objectives)
    for row_axes, preset in zip(axes, presets, strict=True):
        in_preset = [r for r in rows if r["preset"] == preset]
        for ax, (key, title, style) in zip(row_axes, keys, strict=True):
            scale = 100 if style == "%" else 1
            schemes = list(dict.fromkeys(r["scheme"] for r in in_preset
                                         if key in ACCURACY_KEYS or r[f"{key}_mean"] is not None))
            drawn: list[float] = []
            for j, objective in enumerate(objectives):
                part = {r["scheme"]: r for r in in_preset if r["objective"] == objective}
                cells = [part.get(s) for s in schemes]
                means = [math.nan if c is None or c[f"{key}_mean"] is None
                         else scale * c[f"{key}_mean"] for c in cells]
                stds = [scale * c[f"{key}_std"] if c is not None and len(c["seeds"]) >= 2
                        and c[f"{key}_std"] is not None else math.nan for c in cells]
                x = [i + (j - (len(objectives) - 1) / 2) * width for i in range(len(schemes))]
                bars = ax.bar(x, means, width, zorder=2,
                              label=objective if len(objectives) > 1 else None)
                spread = [(xi, m, s) for xi, m, s in zip(x, means, stds, strict=True)
                          if not math.isnan(s)]
                if spread:
                    sx, sm, ss = zip(*spread, strict=True)
                    ax.errorbar(sx, sm, yerr=ss, fmt="none", ecolor="black", elinewidth=1,
                                capsize=2, zorder=3)
                epochs = ["" if c is None or c.get("epochs_mean") is None
                          else f"{c['epochs_mean']:.0f} ep" for c in cells]
                ax.bar_label(bars, epochs, label_type="center", fontsize=6, color="white",
                             rotation=90)
                drawn += [m + (0 if math.isnan(s) else s) for m, s in zip(means, stds,
                                                                          strict=True)]
                drawn += [m - (0 if math.isnan(s) else s) for m, s in zip(means, stds,
                                                                          strict=True)]
            references = []
            if key in ("knn", "knn_k20"):
                references.append(("untrained encoder (kNN k=20)", "--",
                                   _mean_of(in_preset, "knn_random_init_mean")))
            if key in ACCURACY_KEYS:  # read against the majority class, not chance alone
                references.append(("majority class", ":", _mean_of(in_preset, "majority_mean")))
                references.append(("chance", "-.", _mean_of(in_preset, "chance_mean")))
            if key in ("fg_ari", "mbo"):
                references.append(("random blob masks", "--",
                                   _mean_of(in_preset, f"{key}_random_mean")))
            if key == "bg_gap":
                references.append(("no reliance on the background", "-", 0.0))
            for label, line, value in references:
                if value is not None:
                    ax.axhline(scale * value, color="#444444", linestyle=line, linewidth=1,
                               label=label, zorder=1)
                    drawn.append(scale * value)
            finite = [v for v in drawn if math.isfinite(v)]
            if finite:
                low, high = min(finite), max(finite)
                pad = 0.15 * (high - low) or 0.05 * abs(high) or 1.0
                ax.set_ylim(low - pad, high + pad)
            ax.set_xticks(range(len(schemes)), schemes, rotation=45, ha="right", fontsize=8)
            ax.set_title(f"{preset}\n{title}" if len(presets) > 1 else title, fontsize=9)
            ax.set_ylabel("%" if style == "%" else "")
            ax.grid(axis="y", alpha=0.3, zorder=0)
            ax.tick_params(axis="y", labelsize=8)
            if references or len(objectives) > 1:
                ax.legend(fontsize=6, frameon=True, framealpha=0.8, loc="lower left")
    figure.text(0.0, 0.0, "bars: mean over seeds; error bars: std where >= 2 seeds; "
                "ep: epochs each cell trained", fontsize=7, color="#555555")
    return figure


def machine() -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info
