"""``adios compare GRID.yaml``: masking schemes compared under one protocol, as one command.

A grid file names dataset presets, masking schemes, objectives and seeds, a budget shared by
every cell, and overrides; every combination is a *cell*, trained as a normal run directory
``OUTPUT/<preset>/<objective>-<scheme>-seed<seed>`` and then evaluated with the protocol of
``adios eval`` (kNN with k and T chosen on val, the fast linear probe with its weight decay
chosen on val; test scored once)::

    description: what the grid is for
    output: runs/compare/NAME          # default: runs/compare/<grid file name>
    presets: [shapes-simclr-adios]     # or preset: NAME
    schemes: [none, mae, beit, rectangles, oracle, adios-s, adios]
    objectives: [simclr]
    seeds: [0, 1, 2]
    budget: {epochs: 20}               # or {minutes: 5}: training time per cell
    overrides: {train.threads: 2}      # every cell (a mapping, or a list of KEY=VALUE)
    scheme_overrides: {adios: {optim.mask_lr: 0.1}}   # per scheme (and objective_overrides)

A budget in minutes is turned into epochs once per (preset, objective, scheme), from the
measured speed of a few training steps (augmentation + step, the training loop's own
functions), and kept in ``OUTPUT/calibration.json``: cheap schemes get more epochs, so the
cells compare at equal compute and the learning-rate schedule of each cell still runs to its
end.

Interrupting is safe: a cell with summary.json and both evaluations is not run again, a cell
with a checkpoint resumes from it (exactly, see :mod:`adios.train`), a cell with summary.json
but no evaluation is only evaluated. After every cell the table is rewritten from whatever has
finished: ``results.md`` and ``results.csv`` (mean +- std over seeds), ``cells.csv`` (every
cell) and ``results.png`` (bars with std error bars).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shlex
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from matplotlib.figure import Figure

from adios.checkpoint import RunDirError, write_json
from adios.config import Config, ConfigError, load_config, preset_names, to_dict
from adios.data.datasets import load_dataset, to_device, training_batches
from adios.evaluation.curves import (
    CURVE_FIELDS,
    CurveCell,
    budget_table,
    collect_curves,
    curve_plot,
    references,
    write_csv,
)
from adios.evaluation.figures import save
from adios.masking.schemes import SCHEMES, fixed_scheme, views_with_objects
from adios.objectives import OBJECTIVES
from adios.runlog import read_metrics

GRID_KEYS = (
    "description",
    "output",
    "preset",
    "presets",
    "schemes",
    "objectives",
    "seeds",
    "budget",
    "overrides",
    "scheme_overrides",
    "objective_overrides",
    "curve_every",
    "evaluations",
)
# set by the grid itself for every cell
CELL_KEYS = ("preset", "masking.mode", "objective.name", "seed", "train.epochs", "run_dir")
# settings that do not change a cell's result: a rerun may change them
FREE_KEYS = (
    "run_dir",
    "train.device",
    "train.threads",
    "train.progress",
    "data.workers",
    "train.eval_batch_size",
)
# what a grid's ``evaluations`` may name, and the file each writes in the cell's run directory
EVALUATION_FILES = {
    "knn": "eval_knn.json",
    "linear": "eval_linear_fast.json",
    "robustness": "eval_robustness.json",
}
DEFAULT_EVALUATIONS = ("knn", "linear")
CALIBRATION = "calibration.json"


@dataclass
class Grid:
    output: Path
    presets: list[str]
    schemes: list[str]
    objectives: list[str]
    seeds: list[int]
    epochs: int | None = None
    minutes: float | None = None
    overrides: list[str] = field(default_factory=list)
    scheme_overrides: dict[str, list[str]] = field(default_factory=dict)
    objective_overrides: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""
    source: str = ""  # the grid file
    curve_every: int | None = None  # learning curves: train.knn_every of every cell
    evaluations: list[str] = field(default_factory=lambda: list(DEFAULT_EVALUATIONS))


@dataclass(frozen=True)
class Cell:
    preset: str
    objective: str
    scheme: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.objective}-{self.scheme}-seed{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.preset} / {self.objective} / {self.scheme} / seed {self.seed}"

    def run_dir(self, grid: Grid) -> Path:
        return grid.output / self.preset / self.name


# ----------------------------------------------------------------------------- the grid file


def _override_list(value: Any, where: str) -> list[str]:
    """A mapping {key: value} or a list of KEY=VALUE strings, as KEY=VALUE strings."""
    if value is None:
        return []
    if isinstance(value, dict):
        items = [f"{key}={json.dumps(v)}" for key, v in value.items()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise ConfigError(f"{where}: expected a mapping of keys or a list of KEY=VALUE")
    for item in items:
        key = item.partition("=")[0]
        if key in CELL_KEYS:
            raise ConfigError(
                f"{where}: {key} is set by the grid (presets, schemes, objectives, seeds, budget)"
            )
    return items


def _names(data: dict, key: str, allowed: Sequence[str]) -> list:
    values = data.get(key)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{key}: expected a non-empty list")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ConfigError(f"{key}: unknown {unknown}; allowed: {', '.join(map(str, allowed))}")
    return values


def parse_grid(data: Any, source: str = "", output: Path | None = None) -> Grid:
    """Validate a grid document (see the module docstring)."""
    if not isinstance(data, dict):
        raise ConfigError("grid: expected a mapping of keys")
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"grid: unknown keys {unknown}; allowed: {', '.join(GRID_KEYS)}")
    if ("preset" in data) == ("presets" in data):
        raise ConfigError("grid: give either preset: NAME or presets: [NAMES]")
    presets = data["presets"] if "presets" in data else [data["preset"]]
    presets = _names({"presets": presets}, "presets", preset_names())
    seeds = data.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise ConfigError("seeds: expected a non-empty list of integers >= 0")
    budget = data.get("budget")
    if not isinstance(budget, dict) or len(budget) != 1 or not set(budget) <= {"epochs", "minutes"}:
        raise ConfigError("budget: expected {epochs: N} or {minutes: M}")
    epochs, minutes = budget.get("epochs"), budget.get("minutes")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ConfigError("budget.epochs: expected an integer >= 1")
    if minutes is not None and (not isinstance(minutes, int | float) or minutes <= 0):
        raise ConfigError("budget.minutes: expected a positive number")
    per = {}
    for key, allowed in (("scheme_overrides", SCHEMES), ("objective_overrides", OBJECTIVES)):
        mapping = data.get(key) or {}
        if not isinstance(mapping, dict) or not set(mapping) <= set(allowed):
            raise ConfigError(f"{key}: expected a mapping from {', '.join(allowed)} to overrides")
        per[key] = {name: _override_list(v, f"{key}.{name}") for name, v in mapping.items()}
    name = Path(source).stem if source else "grid"
    curve_every = data.get("curve_every")
    if curve_every is not None and (
        not isinstance(curve_every, int) or isinstance(curve_every, bool) or curve_every < 1
    ):
        raise ConfigError("curve_every: expected an integer >= 1 (epochs between curve points)")
    evaluations = data.get("evaluations", list(DEFAULT_EVALUATIONS))
    evaluations = _names({"evaluations": evaluations}, "evaluations", list(EVALUATION_FILES))
    overrides = _override_list(data.get("overrides"), "overrides")
    if curve_every is not None and any(o.startswith("train.knn_every=") for o in overrides):
        raise ConfigError("overrides: train.knn_every is set by curve_every")
    return Grid(
        output=Path(output or data.get("output") or Path("runs") / "compare" / name),
        presets=presets,
        schemes=_names(data, "schemes", SCHEMES),
        objectives=_names(data, "objectives", list(OBJECTIVES)),
        seeds=seeds,
        epochs=epochs,
        minutes=None if minutes is None else float(minutes),
        overrides=overrides,
        scheme_overrides=per["scheme_overrides"],
        objective_overrides=per["objective_overrides"],
        description=str(data.get("description", "")),
        source=source,
        curve_every=curve_every,
        evaluations=evaluations,
    )


def load_grid(path: Path, output: Path | None = None) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid: no such file {path}")
    return parse_grid(yaml.safe_load(path.read_text()), str(path), output)


def cells(grid: Grid) -> list[Cell]:
    """Every combination, seeds innermost: an interrupted grid has whole groups first."""
    return [
        Cell(p, o, s, seed)
        for p in grid.presets
        for o in grid.objectives
        for s in grid.schemes
        for seed in grid.seeds
    ]


def cell_config(grid: Grid, cell: Cell, epochs: int, extra: Sequence[str] = ()) -> Config:
    return load_config(
        [
            f"preset={cell.preset}",
            *grid.overrides,
            *grid.objective_overrides.get(cell.objective, []),
            *grid.scheme_overrides.get(cell.scheme, []),
            *([f"train.knn_every={grid.curve_every}"] if grid.curve_every else []),
            f"objective.name={cell.objective}",
            f"masking.mode={cell.scheme}",
            f"seed={cell.seed}",
            f"train.epochs={epochs}",
            f"run_dir={cell.run_dir(grid)}",
            *_override_list(list(extra), "command line"),
        ]
    )


# ----------------------------------------------------------------------------- budget


def epochs_for_minutes(minutes: float, seconds_per_epoch: float) -> int:
    """Whole epochs that fit in the budget; at least one."""
    return max(1, math.floor(minutes * 60 / seconds_per_epoch))


def seconds_per_epoch(cfg: Config, steps: int = 4, warmup: int = 1) -> dict[str, float]:
    """Time ``steps`` iterations of the training loop's body (views, then train_step) after
    ``warmup`` untimed ones, and scale to an epoch. Monitoring and pictures are not counted."""
    from adios.data.augment import TwoViewAugment
    from adios.perf import synchronize
    from adios.train import (
        build_models,
        build_optimizers,
        epoch_generator,
        pick_device,
        train_step,
    )

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    dataset = load_dataset(cfg.data, bank_size=cfg.train.knn_bank)
    train_split = to_device(dataset.train, device)
    oracle = getattr(fixed_scheme(cfg.masking, cfg.data.image_size), "needs_objects", False)
    batches = training_batches(
        dataset, train_split, cfg.optim.batch_size, cfg.data.workers, instances=oracle
    )
    augment = TwoViewAugment(
        cfg.augment.view_a, cfg.augment.view_b, cfg.data.image_size, dataset.mean, dataset.std
    )
    torch.manual_seed(cfg.seed)
    labelled = train_split.labels is not None
    models = build_models(cfg, dataset.num_classes if labelled else None, device)
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    models.objective.train()
    generator = epoch_generator(cfg.seed, 0)
    stream = iter(batches.epoch(generator))
    elapsed = 0.0
    for i in range(warmup + steps):
        start = time.perf_counter()
        try:
            images, labels, *instances = next(stream)
        except StopIteration:
            stream = iter(batches.epoch(generator))
            images, labels, *instances = next(stream)
        if oracle:
            a, b, objects = views_with_objects(augment, images, instances[0], generator)
        else:
            (a, b), objects = augment(images, generator), None
        train_step(cfg, models, encoder_opt, masker_opt, a, b, labels, generator, objects)
        synchronize(device)
        if i >= warmup:
            elapsed += time.perf_counter() - start
    step_s = elapsed / steps
    return {
        "seconds_per_step": step_s,
        "steps_per_epoch": len(batches),
        "seconds_per_epoch": step_s * len(batches),
    }


def budget_epochs(grid: Grid, cell: Cell, extra: Sequence[str], say: Callable[[str], None]) -> int:
    """The cell's epochs: the grid's, or the measured fit to its minutes (cached on disk)."""
    if grid.epochs is not None:
        return grid.epochs
    path = grid.output / CALIBRATION
    table = json.loads(path.read_text()) if path.is_file() else {}
    key = f"{cell.preset}/{cell.objective}/{cell.scheme}"
    if key not in table:
        say(f"measuring the speed of {key} for the {grid.minutes:g}-minute budget")
        speed = seconds_per_epoch(cell_config(grid, cell, 1, extra))
        table[key] = {
            **speed,
            "minutes": grid.minutes,
            "epochs": epochs_for_minutes(grid.minutes, speed["seconds_per_epoch"]),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(table, path)
    return table[key]["epochs"]


# ----------------------------------------------------------------------------- running


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config without the keys that do not change results."""
    out = json.loads(json.dumps(cfg))
    for key in FREE_KEYS:
        node, *path = key.split(".")
        if path:
            out.get(node, {}).pop(path[0], None)
        else:
            out.pop(node, None)
    return out


def cell_state(run_dir: Path, evaluations: Sequence[str] = DEFAULT_EVALUATIONS) -> str:
    """done | failed | evaluate (trained, not evaluated) | resume | start (nothing usable)."""
    if (run_dir / "error.json").is_file():
        return "failed"
    if (run_dir / "summary.json").is_file():
        done = all((run_dir / EVALUATION_FILES[name]).is_file() for name in evaluations)
        return "done" if done else "evaluate"
    if (run_dir / "checkpoint.pt").is_file():
        return "resume"
    return "start"


def evaluate_cell(run_dir: Path, evaluations: Sequence[str] = DEFAULT_EVALUATIONS) -> None:
    """The evaluations of ``adios eval`` the grid names that the cell lacks (eval_*.json):
    kNN, the fast linear probe, the backgrounds test."""
    from adios.evaluation.commands import load_setup, run_knn, run_linear_fast, run_robustness

    todo = [name for name in evaluations if not (run_dir / EVALUATION_FILES[name]).is_file()]
    commands = {
        "knn": ("knn", run_knn),
        "linear": ("linear --fast", run_linear_fast),
        "robustness": ("robustness", run_robustness),
    }
    setup = None
    for name in todo:
        words, run = commands[name]
        setup = setup or load_setup([str(run_dir)])
        setup.command = f"adios eval {words} {run_dir}"
        run(setup)


def run_cell(grid: Grid, cell: Cell, extra: Sequence[str], say: Callable[[str], None]) -> str:
    """Train (or resume) and evaluate one cell; returns what was done."""
    from adios.train import train

    run_dir = cell.run_dir(grid)
    state = cell_state(run_dir, grid.evaluations)
    if state in ("done", "failed"):
        return state
    cfg = cell_config(grid, cell, budget_epochs(grid, cell, extra, say), extra)
    saved_path = run_dir / "config.yaml"
    if state in ("resume", "evaluate") and saved_path.is_file():
        saved = yaml.safe_load(saved_path.read_text())
        if _comparable(saved) != _comparable(to_dict(cfg)):
            raise RunDirError(
                f"{run_dir} was made with another configuration than the grid now "
                "gives; delete it, or give the grid another output folder"
            )
    if state != "evaluate":
        try:
            train(cfg, resume=state == "resume", overwrite=state == "start")
        except FloatingPointError as err:
            write_json({"error": str(err)}, run_dir / "error.json")
            say(f"  failed: {err}")
            return "failed"
    evaluate_cell(run_dir, grid.evaluations)
    return {"start": "trained", "resume": "resumed", "evaluate": "evaluated"}[state]


def run_grid(
    grid: Grid, extra: Sequence[str] = (), say: Callable[[str], None] = print, command: str = ""
) -> dict[Cell, str]:
    """Run every unfinished cell, rewriting the table after each; returns what each cell did."""
    all_cells = cells(grid)
    for cell in all_cells:  # every cell's configuration is valid before anything runs
        cell_config(grid, cell, grid.epochs or 1, extra)
    grid.output.mkdir(parents=True, exist_ok=True)
    _record(grid, extra, command)
    todo = [
        c
        for c in all_cells
        if cell_state(c.run_dir(grid), grid.evaluations) not in ("done", "failed")
    ]
    say(
        f"{len(all_cells)} cells in {grid.output}: {len(all_cells) - len(todo)} finished, "
        f"{len(todo)} to run"
    )
    statuses = {
        c: cell_state(c.run_dir(grid), grid.evaluations) for c in all_cells if c not in todo
    }
    durations: list[float] = []
    for i, cell in enumerate(todo):
        left = len(todo) - i
        if durations:
            eta = f", ETA {_duration(statistics.mean(durations) * left)}"
        elif grid.minutes is not None:
            eta = f", ETA about {_duration(grid.minutes * 60 * 1.2 * left)}"
        else:
            eta = ""
        say(
            f"[{len(all_cells) - left + 1}/{len(all_cells)}] {cell.label} "
            f"({left - 1} more after this{eta})"
        )
        started = time.time()
        statuses[cell] = run_cell(grid, cell, extra, say)
        durations.append(time.time() - started)
        say(f"  {statuses[cell]} in {_duration(durations[-1])}: {_headline(cell.run_dir(grid))}")
        write_tables(grid)
    paths = write_tables(grid)
    say("tables: " + ", ".join(str(p) for p in paths))
    return statuses


def _record(grid: Grid, extra: Sequence[str], command: str) -> None:
    """The grid as run, the command and the machine, next to the cells."""
    info = {
        "command": command,
        "grid_file": grid.source,
        "extra_overrides": list(extra),
        "machine": machine(),
    }
    grid_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(grid).items()}
    write_json({**info, "grid": grid_dict}, grid.output / "grid.json")


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


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _headline(run_dir: Path) -> str:
    row = cell_results(run_dir)
    parts = [
        f"{label} {row[key]:.1%}"
        for key, label in (("knn", "kNN"), ("knn_k20", "kNN k=20"), ("linear", "linear"))
        if row.get(key) is not None
    ]
    return ", ".join(parts) or "no results"


# ----------------------------------------------------------------------------- the table

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
    ("train_min", "train + summary min", 1),
    ("images_per_s", "img/s (train step)", 0),
)
BAR_KEYS = ("knn", "knn_k20", "linear", "fg_ari", "mbo")
# the backgrounds test (eval_robustness.json): fast linear probe top-1 per variant, the gaps
ROBUSTNESS_METRICS = (
    ("bg_original", "original", "%"),
    ("bg_only_fg", "only-fg", "%"),
    ("bg_mixed_same", "mixed-same", "%"),
    ("bg_mixed_rand", "mixed-rand", "%"),
    ("bg_gap", "gap (same - rand)", "%"),
    ("bg_gap_knn", "kNN gap", "%"),
)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def cell_results(run_dir: Path) -> dict[str, Any]:
    """One cell's numbers (None where missing)."""
    summary = _read_json(run_dir / "summary.json") or {}
    knn = _read_json(run_dir / "eval_knn.json")
    linear = _read_json(run_dir / "eval_linear_fast.json")
    backgrounds = _read_json(run_dir / "eval_robustness.json")
    rates = []
    if (run_dir / "metrics.jsonl").is_file():
        rates = [r["images_per_s"] for r in read_metrics(run_dir) if "images_per_s" in r]
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
        "knn_random_init": summary.get("knn_acc_random_init"),
        "epochs": summary.get("epochs"),
        "train_min": summary["wall_s"] / 60 if "wall_s" in summary else None,
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
                for key in [m[0] for m in METRICS + ROBUSTNESS_METRICS] + [
                    "fg_ari_random",
                    "mbo_random",
                    "knn_random_init",
                ]:
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
        if any(r["bg_gap_mean"] is not None for r in part):
            lines += [
                "Backgrounds test (adios eval robustness; fast linear probe test top-1 per "
                "variant, gap = mixed-same - mixed-rand):",
                "",
                markdown_table(part, ROBUSTNESS_METRICS),
                "",
            ]
    curve_rows = write_curves(grid)
    if curve_rows:
        lines += [
            "## Learning curves",
            "",
            "Validation kNN of the training monitor (docs/curves.md), mean ± std over seeds, "
            "at the last evaluation point at or before each budget: curves.csv, curves.png.",
            "",
            *budget_table(curve_rows),
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


def write_curves(grid: Grid) -> list[dict[str, Any]]:
    """Every cell's curve.csv, the grid's curves.csv and curves.png; returns the rows."""
    curve_cells = [
        CurveCell(c.preset, c.objective, c.scheme, c.seed, c.run_dir(grid)) for c in cells(grid)
    ]
    rows = collect_curves(curve_cells)
    if not rows:
        return rows
    classes = {}
    for c in curve_cells:
        knn = _read_json(c.run_dir / EVALUATION_FILES["knn"])
        if knn and "num_classes" in knn.get("dataset", {}):
            classes[c.preset] = knn["dataset"]["num_classes"]
    write_csv(
        grid.output / "curves.csv", rows, ["preset", "objective", "scheme", "seed", *CURVE_FIELDS]
    )
    curve_plot(rows, references(rows, curve_cells, classes), grid.output / "curves.png")
    return rows


def _machine_text(info: dict[str, Any]) -> str:
    device = info.get("cuda_device") or f"CPU, {info.get('cpus')} cores"
    return f"{device}, torch {info.get('torch')}, {info.get('platform')}"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def bar_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per (preset, metric): bars per scheme, one colour per objective, std bars."""
    keys = [
        (k, t, p)
        for k, t, p in METRICS
        if k in BAR_KEYS and any(r[f"{k}_mean"] is not None for r in rows)
    ] or list(METRICS[:1])
    presets = list(dict.fromkeys(r["preset"] for r in rows))
    objectives = list(dict.fromkeys(r["objective"] for r in rows))
    figure = Figure(figsize=(3.6 * len(keys), 3.0 * len(presets)), layout="constrained")
    axes = figure.subplots(len(presets), len(keys), squeeze=False)
    width = 0.8 / len(objectives)
    for row_axes, preset in zip(axes, presets, strict=True):
        for ax, (key, title, style) in zip(row_axes, keys, strict=True):
            scale = 100 if style == "%" else 1
            for j, objective in enumerate(objectives):
                part = [r for r in rows if r["preset"] == preset and r["objective"] == objective]
                means = [
                    math.nan if r[f"{key}_mean"] is None else scale * r[f"{key}_mean"] for r in part
                ]
                stds = [scale * (r[f"{key}_std"] or 0) for r in part]
                x = [i + (j - (len(objectives) - 1) / 2) * width for i in range(len(part))]
                ax.bar(x, means, width, yerr=stds, capsize=2, label=objective)
            schemes = [
                r["scheme"]
                for r in rows
                if r["preset"] == preset and r["objective"] == objectives[0]
            ]
            ax.set_xticks(range(len(schemes)), schemes, rotation=45, ha="right", fontsize=8)
            ax.set_title(f"{preset}\n{title}" if len(presets) > 1 else title, fontsize=9)
            ax.set_ylabel("%" if style == "%" else "")
            ax.grid(axis="y", alpha=0.3)
    if len(objectives) > 1:
        axes[0, 0].legend(fontsize=8)
    return save(figure, path)


# ----------------------------------------------------------------------------- command line


def main(args: Any) -> int:
    """``adios compare GRID [KEY=VALUE...] [--out DIR] [--dry-run | --table-only]``."""
    paths = [w for w in args.overrides if "=" not in w]
    if len(paths) != 1:
        raise ConfigError("compare: give exactly one grid file")
    extra = [w for w in args.overrides if "=" in w]
    grid = load_grid(Path(paths[0]), args.out)
    if args.dry_run:
        for cell in cells(grid):
            cell_config(grid, cell, grid.epochs or 1, extra)
            print(f"{cell_state(cell.run_dir(grid), grid.evaluations):9s} {cell.run_dir(grid)}")
        return 0
    if args.table_only:
        for path in write_tables(grid):
            print(path)
        return 0
    words = ["adios", "compare", paths[0], *extra]
    if args.out:
        words += ["--out", str(args.out)]
    run_grid(grid, extra, say=lambda msg: print(msg, flush=True), command=shlex.join(words))
    return 0
