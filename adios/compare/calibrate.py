"""A budget in minutes turned into epochs: the measured speed of the training loop's own
iterations (:func:`adios.engine.iterations`), kept in ``OUTPUT/calibration.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

import torch

from adios.checkpoint import write_json
from adios.compare.grid import Cell, Grid, cell_config
from adios.config import Config
from adios.engine import iterations, setup, timed

CALIBRATION = "calibration.json"


def epochs_for_minutes(minutes: float, seconds_per_epoch: float) -> int:
    """Whole epochs that fit in the budget; at least one."""
    return max(1, math.floor(minutes * 60 / seconds_per_epoch))


def seconds_per_epoch(cfg: Config, steps: int = 4, warmup: int = 1) -> dict[str, float]:
    """Time ``steps`` training iterations (views, schedules, the game step, EMA, scaler: the
    loop's own :func:`adios.engine.iteration`) after ``warmup`` untimed ones, and scale to an
    epoch. Monitoring and pictures are not counted."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    s = setup(cfg)
    s.models.objective.train()
    stream = iterations(s)

    def one_step() -> int:
        next(stream)
        return 1  # counted in steps, not images

    step_s = 1.0 / timed(one_step, steps, warmup, s.device)
    return {
        "seconds_per_step": step_s,
        "steps_per_epoch": s.trainer.steps_per_epoch,
        "seconds_per_epoch": step_s * s.trainer.steps_per_epoch,
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
