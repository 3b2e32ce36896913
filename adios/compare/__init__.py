"""``adios compare GRID.yaml``: masking schemes compared under one protocol, as one command.

A grid file names dataset presets, masking schemes, objectives and seeds, a budget shared by
every cell, and overrides; every combination is a *cell*, trained as a normal run directory
``OUTPUT/<preset>/<objective>-<scheme>-seed<seed>`` and then evaluated with the protocol of
``adios eval`` (kNN with k and T chosen on val, the fast linear probe with its weight decay
chosen on val; test scored once)::

    description: what the grid is for
    output: runs/compare/NAME          # default: runs/compare/<grid file name>
    presets: [shapes-simclr-adios]     # or preset: NAME
    schemes: [none, mae, beit, rectangles, oracle, adios-s, adios]   # or token-random, token-adios
    objectives: [simclr]               # byol, simsiam; mae with token schemes only
    seeds: [0, 1, 2]
    budget: {epochs: 20}               # or {minutes: 5}: training time per cell
    overrides: {train.threads: 2}      # every cell (a mapping, or a list of KEY=VALUE)
    scheme_overrides: {adios: {optim.mask_lr: 0.1}}   # per scheme (and objective_overrides)

A budget in minutes is turned into epochs once per (preset, objective, scheme), from the
measured speed of a few training steps (augmentation + step, the training loop's own
functions), and kept in ``OUTPUT/calibration.json``: cheap schemes get more epochs, so the
cells compare at equal compute and the learning-rate schedule of each cell still runs to its
end.

Two more keys: ``curve_every: K`` gives every cell a learning curve (the validation kNN monitor
every K epochs, :mod:`adios.compare.curves`, docs/curves.md), and ``evaluations: [knn, linear,
robustness]`` (default ``[knn, linear]``) names the ``adios eval`` runs of every cell.

Interrupting is safe: a cell with summary.json and all its evaluations is not run again, a cell
with a checkpoint resumes from it (exactly, see :mod:`adios.train`; its curve with it), a cell
with summary.json but missing evaluations gets only those. After every cell the tables are
rewritten from whatever has finished: ``results.md`` and ``results.csv`` (mean +- std over
seeds), ``cells.csv`` (every cell), ``results.png`` (bars with std error bars), and with curves
``curves.csv``, ``curves.png`` and each cell's ``curve.csv``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from adios.compare import calibrate
from adios.compare.calibrate import (
    CALIBRATION,
    budget_epochs,
    epochs_for_minutes,
    seconds_per_epoch,
)
from adios.compare.grid import (
    CELL_KEYS,
    DEFAULT_EVALUATIONS,
    EVALUATION_FILES,
    GRID_KEYS,
    Cell,
    Grid,
    cell_config,
    cells,
    load_grid,
    parse_grid,
)
from adios.compare.run import (
    FREE_KEYS,
    cell_state,
    evaluate_cell,
    grid_progress,
    run_cell,
    run_grid,
    training_eta,
)
from adios.compare.tables import (
    METRICS,
    bar_plot,
    cell_results,
    collect,
    machine,
    markdown_table,
    write_tables,
)
from adios.config import ConfigError

__all__ = [
    "CALIBRATION",
    "CELL_KEYS",
    "DEFAULT_EVALUATIONS",
    "EVALUATION_FILES",
    "FREE_KEYS",
    "GRID_KEYS",
    "METRICS",
    "Cell",
    "Grid",
    "bar_plot",
    "budget_epochs",
    "calibrate",
    "cell_config",
    "cell_results",
    "cell_state",
    "cells",
    "collect",
    "epochs_for_minutes",
    "evaluate_cell",
    "load_grid",
    "machine",
    "main",
    "markdown_table",
    "parse_grid",
    "run_cell",
    "run_grid",
    "seconds_per_epoch",
    "write_tables",
]


def main(args: Any) -> int:
    """``adios compare GRID [KEY=VALUE...] [--out DIR] [--dry-run | --table-only]``."""
    paths = [w for w in args.overrides if "=" not in w]
    if len(paths) != 1:
        raise ConfigError("compare: give exactly one grid file")
    extra = [w for w in args.overrides if "=" in w]
    grid = load_grid(Path(paths[0]), args.out)
    seeds = _seeds(args.seeds, grid) if getattr(args, "seeds", None) else None
    if args.dry_run:
        _dry_run(grid, extra, seeds)
        return 0
    if args.table_only:
        for path in write_tables(grid):
            print(path)
        return 0
    words = ["adios", "compare", paths[0], *extra]
    if args.out:
        words += ["--out", str(args.out)]
    run_grid(
        grid, extra, say=lambda msg: print(msg, flush=True), command=shlex.join(words), seeds=seeds
    )
    return 0


def _dry_run(grid: Grid, extra: list[str], seeds: list[int] | None) -> None:
    """Each cell's state (with the epochs a resumable or running cell has trained) and, for an
    equal-epoch grid, the training time the unfinished cells still need."""
    todo = []
    progress = grid_progress(grid) if grid.epochs is not None else {}
    for cell in cells(grid, seeds):
        cell_config(grid, cell, grid.epochs or 1, extra)
        run_dir = cell.run_dir(grid)
        state = cell_state(run_dir, grid.evaluations)
        done = ""
        if state in ("resume", "running") and grid.epochs is not None:
            done = f" (epoch {progress[cell][0]} of {grid.epochs})"
        print(f"{state:9s} {run_dir}{done}")
        if state not in ("done", "failed"):
            todo.append(cell)
    eta = training_eta(grid, todo, progress) if todo and grid.epochs is not None else ""
    if eta:
        print(f"{len(todo)} cell{'s' * (len(todo) > 1)} to run{eta}")


def _seeds(text: str, grid: Grid) -> list[int]:
    """``--seeds 0`` or ``1,2``: a subset of the grid's seeds."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected seeds like 0 or 1,2; got {text!r}") from None
    outside = [s for s in seeds if s not in grid.seeds]
    if not seeds or outside:
        raise ConfigError(f"--seeds: {outside or text!r} not among the grid's seeds {grid.seeds}")
    return seeds
