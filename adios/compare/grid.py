"""The grid file (see :mod:`adios.compare`): its format, its cells and each cell's config."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adios.config import Config, ConfigError, load_config, preset_names, read_yaml
from adios.masking.schemes import SCHEMES
from adios.masking.tokens import TOKEN_MODES
from adios.objectives import OBJECTIVES

# what a grid's ``schemes`` may name: the pixel schemes and the token-dropping modes
GRID_SCHEMES = (*SCHEMES, *TOKEN_MODES)
# and ``objectives``: the siamese ones and MAE reconstruction (token modes only)
GRID_OBJECTIVES = (*OBJECTIVES, "mae")
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
# what a grid's ``evaluations`` may name, and the file each writes in the cell's run directory
EVALUATION_FILES = {
    "knn": "eval_knn.json",
    "linear": "eval_linear_fast.json",
    "robustness": "eval_robustness.json",
}
DEFAULT_EVALUATIONS = ("knn", "linear")
# set by the grid itself for every cell
CELL_KEYS = ("preset", "masking.mode", "objective.name", "seed", "train.epochs", "run_dir")


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
    for key, allowed in (
        ("scheme_overrides", GRID_SCHEMES),
        ("objective_overrides", GRID_OBJECTIVES),
    ):
        mapping = data.get(key) or {}
        if not isinstance(mapping, dict) or not set(mapping) <= set(allowed):
            raise ConfigError(f"{key}: expected a mapping from {', '.join(allowed)} to overrides")
        per[key] = {name: _override_list(v, f"{key}.{name}") for name, v in mapping.items()}
    schemes = _names(data, "schemes", GRID_SCHEMES)
    objectives = _names(data, "objectives", GRID_OBJECTIVES)
    pixel = [s for s in schemes if s not in TOKEN_MODES]
    if "mae" in objectives and pixel:
        raise ConfigError(
            f"objectives: mae reconstructs dropped tokens and needs token schemes "
            f"({', '.join(TOKEN_MODES)}); not {pixel}: put them in a grid of their own"
        )
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
        schemes=schemes,
        objectives=objectives,
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
    return parse_grid(read_yaml(path, "grid file"), str(path), output)


def cells(grid: Grid, seeds: Sequence[int] | None = None) -> list[Cell]:
    """Every combination (of ``seeds`` only, if given), seeds innermost: an interrupted grid
    has whole groups first."""
    return [
        Cell(p, o, s, seed)
        for p in grid.presets
        for o in grid.objectives
        for s in grid.schemes
        for seed in grid.seeds
        if seeds is None or seed in seeds
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
