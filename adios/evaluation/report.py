"""One-file reports of a run: a self-contained HTML page and a PNG of its key panels.

The HTML embeds every picture as base64, so it can be mailed or archived alone. It shows the
training curves (metrics.jsonl), the mask pictures, the run's summary.json and a table for
every ``eval_*.json`` in the run directory. ``report.png`` draws the key panels (curves, masks,
headline numbers) with matplotlib, for a person or a chat window that shows pictures, not HTML.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.image
import yaml
from matplotlib.figure import Figure

from adios.checkpoint import read_json, write_text
from adios.config import read_yaml
from adios.data.datasets import SCENE_COUNTS
from adios.errors import RunDirError
from adios.evaluation.figures import (
    curve_panels,
    curves_figure,
    draw_curves,
    draw_size_histograms,
    save,
    with_epoch_float,
)
from adios.rundir import refuse_links
from adios.runlog import read_metrics


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    key: bool = True  # shown in the PNG as well as the HTML


@dataclass
class RunRecord:
    """Everything a report reads from a run directory."""

    run_dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # file stem -> content

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        run_dir = Path(run_dir)
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            raise RunDirError(f"{run_dir} is not a run directory: it holds no config.yaml")
        summary_path = run_dir / "summary.json"
        summary = read_json(summary_path) if summary_path.is_file() else {}
        if not isinstance(summary, dict):
            raise RunDirError(f"{summary_path}: not an adios summary (expected a JSON object); "
                              f"restore it or delete it")
        metrics = read_metrics(run_dir)
        evals = {p.stem: read_json(p) for p in sorted(run_dir.glob("eval_*.json"))}
        return cls(
            run_dir=run_dir,
            config=read_yaml(config_path, "config.yaml"),
            # null: a number that was not finite (strict JSON), shown as not measured
            summary={key: value for key, value in summary.items() if value is not None},
            metrics=metrics,
            evals=evals,
        )

    def evals_of(self, kind: str) -> dict[str, dict[str, Any]]:
        """eval files of one kind, e.g. "knn": eval_knn.json and eval_knn_<dataset>.json."""
        return {
            stem: e
            for stem, e in self.evals.items()
            if e.get("eval") == kind
            or (kind == "transfer" and str(e.get("eval", "")).startswith("transfer"))
        }


# ----------------------------------------------------------------------------- formatting


def _pct(value: Any) -> str:
    return "–" if not isinstance(value, int | float) else f"{100 * value:.1f}"


def _num(value: Any, digits: int = 3) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}"


def _dataset_label(entry: dict[str, Any]) -> str:
    data = entry.get("dataset", {})
    return str(data.get("name", "?"))


def _split_counts(data: dict[str, Any]) -> str:
    """train/val/test sizes as the run resolved them (null means a default, never "None")."""
    counts = [data.get(f"num_{split}") for split in ("train", "val", "test")]
    if data.get("name", "shapes") == "shapes":
        counts = [default if n is None else n for n, default in zip(counts, SCENE_COUNTS,
                                                                    strict=True)]
        return "/".join(f"{n:,}" for n in counts) + " scenes"
    words = [f"{counts[0]:,}" if counts[0] is not None else "all",
             f"{counts[1]:,}" if counts[1] is not None else "10 % of train",
             f"{counts[2]:,}" if counts[2] is not None else "all"]
    return "/".join(words) + " images"


def held_out_images(record: RunRecord) -> str:
    """What the run's test images are, for a caption: the built-in scenes, or other images."""
    name = str((record.config.get("data") or {}).get("name", "shapes"))
    return "test scenes" if name == "shapes" else (
        "test images of the image folder" if name == "folder" else f"{name} test images")


def run_title(record: RunRecord) -> str:
    """What the run is, from its configuration (a directory name says nothing reliable)."""
    cfg = record.config
    masking, objective = cfg.get("masking", {}), cfg.get("objective", {})
    mode = masking.get("mode", "?")
    method = {"adios": "ADIOS", "adios-s": "ADIOS-s", "none": "no masking"}.get(mode, mode)
    if mode in ("adios", "adios-s"):
        method += f" (N={cfg.get('masker', {}).get('n_masks')})"
    name = objective.get("name", "?")
    name = {"simclr": "SimCLR", "byol": "BYOL", "simsiam": "SimSiam"}.get(name, name)
    return (f"{name} + {method} on {cfg.get('data', {}).get('name', '?')}, "
            f"seed {cfg.get('seed', '?')} (preset {cfg.get('preset', '?')})")


def run_description(record: RunRecord) -> list[tuple[str, str]]:
    cfg = record.config
    data, model = cfg.get("data", {}), cfg.get("model", {})
    masking, objective = cfg.get("masking", {}), cfg.get("objective", {})
    optim = cfg.get("optim", {})
    method = f"{objective.get('name', '?')} + masking={masking.get('mode', '?')}"
    if masking.get("mode") in ("adios", "adios-s"):
        method += (f" (N={cfg.get('masker', {}).get('n_masks')}, "
                   f"alpha={masking.get('alpha_sparsity')})")
    backbone = str(model.get("backbone", "?"))
    if backbone == "resnet18":
        backbone += f" width {model.get('width', '?')}"
    rows = [
        ("method", method),
        ("backbone", backbone),
        ("data", f"{data.get('name', '?')} {data.get('image_size', '?')} px, "
                 f"{_split_counts(data)} train/val/test (data seed {data.get('seed', 0)})"),
        ("schedule", f"{cfg.get('train', {}).get('epochs', '?')} epochs, batch "
                     f"{optim.get('batch_size', '?')}, {optim.get('name', '?')} lr "
                     f"{optim.get('lr', '?')}"),
    ]
    train_s, wall_s = (record.summary.get(key) for key in ("train_s", "wall_s"))
    if _number(train_s):  # over every resume; wall_s is the last session's alone
        rows.append(("training time", f"{train_s / 60:.1f} min of steps"))
    elif _number(wall_s):
        rows.append(("training time", f"{wall_s / 60:.1f} min"))
    return rows


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- tables


def summary_table(record: RunRecord) -> Table | None:
    s = record.summary
    rows = []
    if "knn_acc" in s:
        rows.append(
            [
                "kNN top-1 % (training's k, T)",
                _pct(s["knn_acc"]),
                _pct(s.get("knn_acc_random_init")),
                "–",
            ]
        )
    for key, label in (("mask_fg_ari", "mask foreground ARI"), ("mask_mbo", "mask mBO")):
        if key in s:
            rows.append(
                [label, _num(s[key]), _num(s.get(f"{key}_untrained")), _num(s.get(f"{key}_random"))]
            )
    # an unlabelled run: what shows whether it learned, beside its masks
    if "feature_spread" in s:
        rows.append(["feature spread", _num(s["feature_spread"]),
                     _num(s.get("feature_spread_random_init")), "–"])
    if "loss_last_epoch" in s:
        rows.append(["SSL loss, last epoch (training images)", _num(s["loss_last_epoch"]), "–",
                     "–"])
    if not rows:
        return None
    note = "Quick numbers from training; the tables below follow the full protocol."
    if isinstance(s.get("labels"), str):
        note = f"Labels: {s['labels']}. {note}"
    return Table(
        "Summary written at the end of training (test split)",
        ["measure", "trained", "at initialisation", "random blobs"],
        rows,
        note=note,
        key=not any(key in s for key in ("knn_acc", "mask_fg_ari")),
    )


def knn_tables(record: RunRecord) -> list[Table]:
    tables = []
    for stem, e in record.evals_of("knn").items():
        rows = []
        for name, t in e["test"].items():
            label = "selected on val" if name == "selected" else "conventional"
            rows.append(
                [label, str(t["k"]), _num(t["temperature"]), _pct(t["top1"]), _pct(t.get("top5"))]
            )
        sel = e["selected"]
        tables.append(
            Table(
                f"kNN on {_dataset_label(e)} ({stem}.json)",
                ["setting", "k", "T", "test top-1 %", "test top-5 %"],
                rows,
                note=f"k and T chosen on val (val top-1 {_pct(sel['val_top1'])} %) with train "
                f"as the bank; test scored once with train+val ({e.get('n_bank')} images) as "
                "the bank.",
            )
        )
    return tables


def linear_tables(record: RunRecord) -> list[Table]:
    tables = []
    for stem, e in record.evals_of("linear_fast").items():
        test, sel = e["test"], e["selected"]
        tables.append(
            Table(
                f"Linear probe, fast (L-BFGS) on {_dataset_label(e)} ({stem}.json)",
                ["weight decay", "val top-1 %", "test top-1 %", "test top-5 %", "balanced %"],
                [
                    [
                        _num(sel["weight_decay"]),
                        _pct(sel["val_top1"]),
                        _pct(test["top1"]),
                        _pct(test.get("top5")),
                        _pct(test["balanced_accuracy"]),
                    ]
                ],
                note="Weight decay chosen on val (fit on train), refit on train+val, test scored "
                f"once; equivalent scikit-learn C = {_num(sel.get('sklearn_C'))}.",
            )
        )
    for stem, e in record.evals_of("linear").items():
        test, recipe = e["test"], e["recipe"]
        tables.append(
            Table(
                f"Linear probe, standard recipe on {_dataset_label(e)} ({stem}.json)",
                ["epochs", "test top-1 %", "test top-5 %", "balanced %"],
                [
                    [
                        str(recipe["epochs"]),
                        _pct(test["top1"]),
                        _pct(test.get("top5")),
                        _pct(test["balanced_accuracy"]),
                    ]
                ],
                note="SGD lr 0.1 momentum 0.9, lr /10 at 60 % and 80 %, crop+flip augmentation; "
                "fitted on train+val, test scored once.",
            )
        )
    return tables


def per_class_table(record: RunRecord) -> Table | None:
    for stem, e in record.evals_of("linear_fast").items():
        per_class = e["test"]["per_class"]
        if len(per_class) > 40:
            return None
        return Table(
            f"Per-class test accuracy, fast linear probe ({stem}.json)",
            ["class", "accuracy %"],
            [[k, _pct(v)] for k, v in per_class.items()],
            key=False,
        )
    return None


def mask_tables(record: RunRecord) -> list[Table]:
    tables = []
    for stem, e in record.evals_of("masks").items():
        rows = []
        for name, q in e["sources"].items():
            sizes = " ".join(f"{s:.2f}" for s in q["mask_sizes"])
            rows.append(
                [
                    name.replace("_", " "),
                    _num(q["fg_ari"]),
                    _num(q["mbo"]),
                    _num(q["coverage"]),
                    str(q["collapsed"]),
                    _num(q["collapsed_per_image"], 2),
                    sizes,
                ]
            )
        tables.append(
            Table(
                f"Mask quality on the test scenes ({stem}.json)",
                ["masks", "fg-ARI", "mBO", "coverage", "collapsed", "collapsed/img", "mean sizes"],
                rows,
                note="fg-ARI over multi-object scenes only; mBO = mean best IoU of an object with "
                "a mask; coverage = share of an object inside its best mask; collapsed = masks "
                "under 2 % of the image on average (per image: mean count).",
            )
        )
    return tables


def robustness_tables(record: RunRecord) -> list[Table]:
    tables = []
    for stem, e in record.evals_of("robustness").items():
        names = ["original", "only_fg", "only_bg", "mixed_same", "mixed_rand"]
        rows = [
            [n.replace("_", " "), _pct(e["linear"][n]["top1"]), _pct(e["knn"][n]["top1"])]
            for n in names
        ]
        rows.append(
            [
                "gap same − rand",
                _pct(e["linear"]["background_gap"]),
                _pct(e["knn"]["background_gap"]),
            ]
        )
        tables.append(
            Table(
                f"Backgrounds test, correlation {e['correlation']:.2f} ({stem}.json)",
                ["test images", "linear top-1 %", "kNN top-1 %"],
                rows,
                note="Probes fitted on scenes whose background follows the label with the given "
                "probability; the gap between same-class and random backgrounds is the "
                "reliance on the background (lower is better).",
            )
        )
    return tables


def transfer_tables(record: RunRecord) -> list[Table]:
    tables = []
    for stem, e in record.evals_of("transfer").items():
        knn, linear = e["knn"], e["linear_fast"]
        tables.append(
            Table(
                f"Transfer: trained on {e['model'].get('trained_on')}, probed on "
                f"{_dataset_label(e)} ({stem}.json)",
                ["probe", "test top-1 %", "test top-5 %"],
                [
                    [
                        "kNN (selected)",
                        _pct(knn["test"]["selected"]["top1"]),
                        _pct(knn["test"]["selected"].get("top5")),
                    ],
                    [
                        "linear (fast)",
                        _pct(linear["test"]["top1"]),
                        _pct(linear["test"].get("top5")),
                    ],
                ],
            )
        )
    return tables


def _drop_empty_columns(table: Table) -> Table:
    """Leave out columns with no value at all (top-5 with five classes or fewer)."""
    keep = [0] + [c for c in range(1, len(table.header)) if any(r[c] != "–" for r in table.rows)]
    rows = [[row[c] for c in keep] for row in table.rows]
    return Table(table.title, [table.header[c] for c in keep], rows, table.note, table.key)


def all_tables(record: RunRecord) -> list[Table]:
    tables = [
        summary_table(record),
        *knn_tables(record),
        *linear_tables(record),
        per_class_table(record),
        *mask_tables(record),
        *robustness_tables(record),
        *transfer_tables(record),
    ]
    return [_drop_empty_columns(t) for t in tables if t is not None]


# ----------------------------------------------------------------------------- pictures


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def curves_png(record: RunRecord) -> bytes | None:
    figure = curves_figure(record.metrics)
    return None if figure is None else _png(figure)


def _epoch_pictures(run_dir: Path) -> list[Path]:
    """First, middle and last per-epoch mask picture: how the masks developed."""
    pictures = sorted(
        (run_dir / "masks").glob("epoch_*.png"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)
    )
    if len(pictures) <= 3:
        return pictures
    return [pictures[0], pictures[len(pictures) // 2], pictures[-1]]


def pictures(record: RunRecord) -> list[tuple[str, Path]]:
    """(caption, file) of every picture a run directory holds, in reading order."""
    run_dir = record.run_dir
    found: list[tuple[str, Path]] = []
    if (run_dir / "masks.png").is_file():
        found.append((f"Learned masks on the {held_out_images(record)} (end of training)",
                      run_dir / "masks.png"))
    for stem, e in record.evals_of("masks").items():
        for name, file in e.get("pictures", {}).items():
            found.append((f"{name.replace('_', ' ')} masks ({stem})", run_dir / file))
        if "size_histogram_png" in e:
            found.append((f"Mask size distribution ({stem})", run_dir / e["size_histogram_png"]))
    for picture in _epoch_pictures(run_dir):
        found.append((f"Masks during training: {picture.stem.replace('_', ' ')}", picture))
    for kind in ("linear_fast", "linear"):
        for stem, e in record.evals_of(kind).items():
            if "confusion_png" in e:
                found.append((f"Confusion matrix ({stem})", run_dir / e["confusion_png"]))
    for stem, e in record.evals_of("robustness").items():
        if "variants_png" in e:
            found.append((f"Backgrounds test images ({stem})", run_dir / e["variants_png"]))
    return [(caption, path) for caption, path in found if path.is_file()]


# ----------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em;
       margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th { background: #f3f5f8; } td:first-child, th:first-child { text-align: left; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
.note { color: #666; font-size: 0.85em; max-width: 60em; margin-top: -0.3em; }
figure { display: inline-block; margin: 0.6em 1.2em 0.6em 0; vertical-align: top; }
figcaption { color: #555; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.8em; font-size: 0.8em; overflow-x: auto; }
"""


def _img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return (
        f"<table><caption>{html.escape(table.title)}</caption><tr>{head}</tr>{body}</table>{note}"
    )


def render_html(record: RunRecord) -> str:
    name = run_title(record)
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>adios report: "
        f"{html.escape(name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(name)}</h1>",
        "<table>"
        + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
            for k, v in run_description(record)
        )
        + "</table>",
    ]
    curves = curves_png(record)
    parts.append("<h2>Training curves</h2>")
    parts.append(
        _img(curves, "training curves")
        if curves
        else "<p>No metrics.jsonl in this run directory.</p>"
    )
    tables = all_tables(record)
    parts.append("<h2>Evaluation</h2>")
    if not any(stem.startswith("eval_") for stem in record.evals):
        parts.append(
            "<p>No eval_*.json files yet: run <code>adios eval ...</code> or "
            "<code>adios eval report --evaluate</code>.</p>"
        )
    parts += [_table_html(t) for t in tables]
    parts.append("<h2>Pictures</h2>")
    for caption, path in pictures(record):
        parts.append(
            f"<figure>{_img(path.read_bytes(), caption)}"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    for stem, e in record.evals.items():
        if e.get("command"):
            parts.append(
                f'<p class="note">{html.escape(stem)}: <code>{html.escape(e["command"])}</code></p>'
            )
    parts.append(
        "<h2>Configuration</h2><details><summary>config.yaml</summary><pre>"
        + html.escape(yaml.safe_dump(record.config, sort_keys=False))
        + "</pre></details>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- PNG


_ROW_INCHES = 0.22  # one table row in the PNG
_TABLE_TITLE_INCHES = 0.45


def _table_inches(table: Table) -> float:
    return _TABLE_TITLE_INCHES + _ROW_INCHES * (len(table.rows) + 1)


def _draw_table(ax, table: Table) -> None:
    """A table filling ``ax``, whose height must be :func:`_table_inches` (rows then line up)."""
    ax.set_axis_off()
    ax.set_title(table.title, fontsize=10, loc="left", fontweight="bold")
    n_rows = len(table.rows) + 1
    width = min(1.0, 0.1 + 0.15 * len(table.header))
    drawn = ax.table(
        cellText=table.rows,
        colLabels=table.header,
        bbox=(0, 0, width, 1),
        cellLoc="right",
        colLoc="right",
        edges="horizontal",
    )
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8.5)
    drawn.auto_set_column_width(list(range(len(table.header))))
    for (row, column), cell in drawn.get_celld().items():
        cell.set_height(1 / n_rows)
        cell.set_edgecolor("#bbbbbb")
        if column == 0:
            cell.get_text().set_horizontalalignment("left")
            cell.PAD = 0.02
        if row == 0:
            cell.set_text_props(fontweight="bold")
            cell.set_facecolor("#eef1f5")


def _key_picture(record: RunRecord) -> tuple[str, Path] | None:
    """The learned masks, or for a run without a masker the linear probe's confusion matrix."""
    if (record.run_dir / "masks.png").is_file():
        return (f"learned masks on the {held_out_images(record)} (end of training)",
                record.run_dir / "masks.png")
    for stem, e in record.evals_of("linear_fast").items():
        if (record.run_dir / e.get("confusion_png", "")).is_file():
            return f"confusion matrix ({stem})", record.run_dir / e["confusion_png"]
    return None


def render_png(record: RunRecord, path: Path) -> Path:
    """Key panels in one picture: description, curves, learned masks, headline tables."""
    rows = with_epoch_float(record.metrics)
    panels = [p for p in curve_panels(rows) if p["title"].split()[0] in ("SSL", "kNN", "mask")][:3]
    key_tables = [t for t in all_tables(record) if t.key]
    picture = _key_picture(record)
    histograms = {}
    for e in record.evals_of("masks").values():
        histograms = {k: v["size_histogram"] for k, v in e["sources"].items()}

    table_heights = [_table_inches(t) for t in key_tables] or [0.5]
    right_height = sum(table_heights) + (2.6 if histograms else 0)
    left_height = 8.0 if picture else 0
    body = max(right_height, left_height, 2.0)
    figure = Figure(figsize=(16, 1.3 + (3.2 if panels else 0) + body), layout="constrained")
    top, middle = figure.subfigures(2, 1, height_ratios=[1.3 + (3.2 if panels else 0), body])

    top.suptitle(run_title(record), fontsize=15, fontweight="bold", x=0.01, ha="left")
    description = "   |   ".join(f"{k}: {v}" for k, v in run_description(record))
    if panels:
        text_fig, curve_fig = top.subfigures(2, 1, height_ratios=[0.5, 3.2])
        axes = curve_fig.subplots(1, 3)
        for ax, panel in zip(axes, panels, strict=False):
            draw_curves(ax, rows, panel)
        for ax in axes[len(panels) :]:
            ax.set_axis_off()
    else:
        text_fig = top
    text_fig.text(
        0.01, 0.5, description, fontsize=9, ha="left", va="center", wrap=True, color="#444"
    )

    right = middle
    if picture:
        left, right = middle.subfigures(1, 2, width_ratios=[1.0, 1.25])
        ax = left.subplots()
        ax.imshow(matplotlib.image.imread(picture[1]), interpolation="lanczos")
        ax.set_axis_off()
        ax.set_title(picture[0], fontsize=10)
    # an empty bottom row keeps the tables at their natural height next to a taller picture
    filler = [body - right_height] if body - right_height > 0.2 else []
    ratios = table_heights + ([2.6] if histograms else []) + filler
    axes = right.subplots(len(ratios), 1, gridspec_kw={"height_ratios": ratios}, squeeze=False)
    if filler:
        axes[-1, 0].set_axis_off()
        axes = axes[:-1]
    for ax, table in zip(axes[:, 0], key_tables, strict=False):
        _draw_table(ax, table)
    if not key_tables:
        axes[0, 0].set_axis_off()
        axes[0, 0].text(
            0, 0.5, "no eval_*.json yet: run `adios eval report --evaluate`", fontsize=10
        )
    if histograms:
        draw_size_histograms(axes[-1, 0], histograms, title="mask sizes per image (test)")
    return save(figure, path, dpi=100)


def write_report(
    run_dir: Path, html_path: Path | None = None, png_path: Path | None = None
) -> tuple[Path, Path]:
    """Write report.html and report.png (into the run directory unless paths are given)."""
    record = RunRecord.read(run_dir)
    html_path = Path(html_path or record.run_dir / "report.html")
    png_path = Path(png_path or html_path.with_suffix(".png"))
    for path in (html_path, png_path):
        if path.parent.resolve() == record.run_dir.resolve():
            refuse_links(record.run_dir)  # as training does: nothing written through a link
    write_text(render_html(record), html_path)  # atomically, as every file of a run
    render_png(record, png_path)
    return html_path, png_path
