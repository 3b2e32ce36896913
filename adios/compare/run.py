"""Running a grid: each cell trained (or resumed) as a normal run, then evaluated with the
protocol of ``adios eval``; the tables rewritten after every cell."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adios.checkpoint import RunDirError, write_json
from adios.compare.calibrate import budget_epochs
from adios.compare.grid import (
    DEFAULT_EVALUATIONS,
    EVALUATION_FILES,
    Cell,
    Grid,
    cell_config,
    cells,
)
from adios.compare.tables import cell_results, machine, write_tables
from adios.config import Config, build, read_yaml, to_dict
from adios.rundir import RunDirBusy, holder_pid
from adios.runlog import read_metrics, trained_so_far

# settings that do not change a cell's result: a rerun may change them
FREE_KEYS = (
    "run_dir",
    "train.device",
    "train.threads",
    "train.progress",
    "data.workers",
    "train.eval_batch_size",
)


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
    """done | failed | running (another process holds it) | evaluate (trained, not
    evaluated) | resume | start (nothing usable)."""
    if (run_dir / "error.json").is_file():
        return "failed"
    if holder_pid(run_dir) is not None:
        return "running"
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

    commands = {
        "knn": ("knn", run_knn),
        "linear": ("linear --fast", run_linear_fast),
        "robustness": ("robustness", run_robustness),
    }
    setup = None
    for name in evaluations:
        if (run_dir / EVALUATION_FILES[name]).is_file():
            continue
        words, run = commands[name]
        setup = setup or load_setup([str(run_dir)])
        setup.command = f"adios eval {words} {run_dir}"
        run(setup)


def run_cell(grid: Grid, cell: Cell, extra: Sequence[str], say: Callable[[str], None]) -> str:
    """Train (or resume) and evaluate one cell; returns what was done."""
    from adios.perf import pick_device, resolve_auto
    from adios.train import train

    run_dir = cell.run_dir(grid)
    state = cell_state(run_dir, grid.evaluations)
    if state in ("done", "failed", "running"):  # running: another compare (or train) has it
        return state
    cfg = cell_config(grid, cell, budget_epochs(grid, cell, extra, say), extra)
    # as train() records it in config.yaml: a cell resumed on a CPU that resolves auto otherwise
    # (bf16 against fp32) is another configuration
    cfg = resolve_auto(cfg, pick_device(cfg.train.device))
    saved_path = run_dir / "config.yaml"
    if state in ("resume", "evaluate") and saved_path.is_file():
        # through the config's defaults: a key added since the cell ran compares as its default
        saved = to_dict(build(Config, read_yaml(saved_path, "config.yaml"), "config.yaml"))
        if _comparable(saved) != _comparable(to_dict(cfg)):
            raise RunDirError(
                f"{run_dir} was made with another configuration than the grid now "
                "gives; delete it, or give the grid another output folder"
            )
    if state != "evaluate":
        try:
            train(cfg, resume=state == "resume", overwrite=state == "start")
        except RunDirBusy:  # another process took it between the check and the start
            return "running"
        except FloatingPointError as err:
            write_json({"error": str(err)}, run_dir / "error.json")
            say(f"  failed: {err}")
            return "failed"
    evaluate_cell(run_dir, grid.evaluations)
    return {"start": "trained", "resume": "resumed", "evaluate": "evaluated"}[state]


def run_grid(
    grid: Grid,
    extra: Sequence[str] = (),
    say: Callable[[str], None] = print,
    command: str = "",
    seeds: Sequence[int] | None = None,
) -> dict[Cell, str]:
    """Run every unfinished cell (of ``seeds`` only, if given: the tables still cover every
    seed), rewriting the tables after each; returns what each cell did."""
    all_cells = cells(grid, seeds)
    for cell in all_cells:  # every cell's configuration is valid before anything runs
        cell_config(grid, cell, grid.epochs or 1, extra)
    grid.output.mkdir(parents=True, exist_ok=True)
    _record(grid, extra, command)
    states = {c: cell_state(c.run_dir(grid), grid.evaluations) for c in all_cells}
    todo = [c for c in all_cells if states[c] not in ("done", "failed")]
    say(
        f"{len(all_cells)} cells in {grid.output}: {len(all_cells) - len(todo)} finished, "
        f"{len(todo)} to run"
    )
    statuses = {c: states[c] for c in all_cells if c not in todo}
    durations: list[float] = []
    for i, cell in enumerate(todo):
        left = len(todo) - i
        if grid.epochs is not None:
            eta = training_eta(grid, todo[i:])
        elif durations:
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
        if statuses[cell] == "running":
            say("  skipped: another process holds it (see --dry-run)")
            continue
        durations.append(time.time() - started)
        say(f"  {statuses[cell]} in {_duration(durations[-1])}: {_headline(cell.run_dir(grid))}")
        write_tables(grid)
    paths = write_tables(grid)
    say("tables: " + ", ".join(str(p) for p in paths))
    return statuses


def _pace(run_dir: Path) -> tuple[int, float | None]:
    """Epochs a cell has trained and its seconds of training steps per epoch (None: no epoch
    yet), from the epoch rows of its metrics.jsonl."""
    epochs, seconds = trained_so_far(read_metrics(run_dir))
    return epochs, seconds / epochs if epochs else None


def grid_progress(grid: Grid) -> dict[Cell, tuple[int, float | None]]:
    """Every cell's (epochs trained, seconds per epoch), each metrics.jsonl read once."""
    return {c: _pace(c.run_dir(grid)) for c in cells(grid)}


def training_eta(grid: Grid, todo: Sequence[Cell],
                 progress: dict[Cell, tuple[int, float | None]] | None = None) -> str:
    """The training steps the unfinished cells of an equal-epoch grid still need, each at its
    scheme's pace so far (schemes differ several-fold in cost, so one mean over cells would
    not do); evaluations are not counted. Empty while no cell of those schemes has an epoch.
    ``progress``: :func:`grid_progress`, if the caller has read it already."""
    progress = progress if progress is not None else grid_progress(grid)
    paces: dict[tuple[str, str, str], list[float]] = {}
    for c, (_, pace) in progress.items():
        if pace is not None:
            paces.setdefault((c.preset, c.objective, c.scheme), []).append(pace)
    seconds, untimed = 0.0, 0
    for c in todo:
        known = paces.get((c.preset, c.objective, c.scheme))
        if known is None:
            untimed += 1
            continue
        seconds += max(grid.epochs - progress[c][0], 0) * statistics.mean(known)
    if untimed == len(todo):
        return ""
    more = f" + {untimed} cell{'s' * (untimed > 1)} of schemes not timed yet" if untimed else ""
    return f", training ETA {_duration(seconds)}{more}"


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
