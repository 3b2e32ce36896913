"""``adios compare``: grid files, budgets, and a grid that survives interruptions."""

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from adios import compare
from adios.checkpoint import RunDirError
from adios.cli import main
from adios.compare import Cell, cell_config, cell_state, cells, load_grid, parse_grid, run_grid
from adios.config import ConfigError, to_dict
from adios.train import train

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "data.num_train": 32,
    "data.num_val": 16,
    "data.num_test": 16,
    "model.width": 4,
    "masker.fbase": 8,
    "masker.n_masks": 2,
    "objective.proj_hidden": 16,
    "objective.proj_out": 8,
    "optim.batch_size": 16,
    "optim.warmup_epochs": 1,
    "train.knn_bank": 32,
    "train.knn_every": 0,
    "train.picture_every": 0,
    "train.progress": False,
    "train.device": "cpu",
    "train.threads": 1,
}


def grid_document(**changes):
    return {
        "preset": "shapes-simclr-adios",
        "schemes": ["none", "oracle"],
        "objectives": ["simclr"],
        "seeds": [0, 1],
        "budget": {"epochs": 2},
        "overrides": TINY,
        **changes,
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schemes": ["mae", "random"]}, "schemes: unknown ['random']"),
        ({"budget": {"steps": 3}}, "budget: expected {epochs: N} or {minutes: M}"),
        ({"overrides": {"masking.mode": "mae"}}, "masking.mode is set by the grid"),
        ({"seeds": [0, -1]}, "seeds: expected a non-empty list"),
        ({"presets": ["nope"]}, "give either preset"),
        ({"objectives": ["moco"]}, "objectives: unknown ['moco']"),
        ({"objectives": ["mae"]}, "mae reconstructs dropped tokens and needs token schemes"),
        ({"colour": 1}, "grid: unknown keys ['colour']"),
    ],
)
def test_bad_grids_are_rejected_with_the_key(changes, message):
    with pytest.raises(
        ConfigError,
        match=message.replace("[", r"\[")
        .replace("]", r"\]")
        .replace("{", r"\{")
        .replace("}", r"\}"),
    ):
        parse_grid(grid_document(**changes), "g.yaml")


def test_cells_are_the_full_product_with_the_grid_settings_last(tmp_path):
    grid = parse_grid(
        grid_document(
            objectives=["simclr", "byol"], scheme_overrides={"mae": {"masking.ratio": 0.5}}
        ),
        "g.yaml",
        tmp_path,
    )
    all_cells = cells(grid)
    assert len(all_cells) == 2 * 2 * 2 and len(set(all_cells)) == 8
    cfg = cell_config(grid, Cell("shapes-simclr-adios", "byol", "mae", 1), 2)
    assert (cfg.objective.name, cfg.masking.mode, cfg.seed, cfg.train.epochs) == (
        "byol",
        "mae",
        1,
        2,
    )
    assert cfg.masking.ratio == 0.5 and cfg.model.width == 4
    assert cfg.run_dir == str(tmp_path / "shapes-simclr-adios" / "byol-mae-seed1")


def test_minutes_budget_measures_once_and_fits_whole_epochs(tmp_path, monkeypatch):
    assert compare.epochs_for_minutes(1.0, 7.0) == 8 and compare.epochs_for_minutes(0.01, 9) == 1
    grid = parse_grid(grid_document(budget={"minutes": 0.5}), "g.yaml", tmp_path)
    speed = compare.seconds_per_epoch(cell_config(grid, cells(grid)[2], 1), steps=1, warmup=0)
    assert speed["steps_per_epoch"] == 2
    assert speed["seconds_per_epoch"] == pytest.approx(2 * speed["seconds_per_step"])
    calls = []
    monkeypatch.setattr(
        compare.calibrate,
        "seconds_per_epoch",
        lambda cfg: calls.append(cfg) or {"seconds_per_epoch": 4.0},
    )
    for cell in cells(grid):
        assert compare.budget_epochs(grid, cell, [], lambda msg: None) == 7
    assert len(calls) == 2  # once per scheme, not per seed; kept in calibration.json
    calibration = json.loads((tmp_path / "calibration.json").read_text())
    assert calibration["shapes-simclr-adios/simclr/oracle"]["epochs"] == 7


def test_interrupted_grid_reruns_only_unfinished_cells_and_writes_tables(tmp_path):
    grid = parse_grid(grid_document(), "g.yaml", tmp_path)
    first = run_grid(grid, say=lambda msg: None)
    assert set(first.values()) == {"trained"}
    none0, none1, oracle0, oracle1 = cells(grid)
    reference = load_file(oracle0.run_dir(grid) / "encoder.safetensors")

    # oracle seed 0 interrupted after its first epoch, none seed 1 lost its kNN evaluation,
    # oracle seed 1 never started; none seed 0 finished
    cfg = cell_config(grid, oracle0, 2)
    train(cfg, overwrite=True, stop_after_epoch=1)
    first_session_s = torch.load(oracle0.run_dir(grid) / "checkpoint.pt",
                                 weights_only=True)["train_s"]
    (none1.run_dir(grid) / "eval_knn.json").unlink()
    for path in sorted(oracle1.run_dir(grid).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    before = (none0.run_dir(grid) / "summary.json").stat().st_mtime_ns

    second = run_grid(grid, say=lambda msg: None)
    assert second == {none0: "done", none1: "evaluated", oracle0: "resumed", oracle1: "trained"}
    assert (none0.run_dir(grid) / "summary.json").stat().st_mtime_ns == before
    resumed = load_file(oracle0.run_dir(grid) / "encoder.safetensors")
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)  # exact resume
    # training time counts both sessions (wall_s is the resumed session's alone)
    summary = json.loads((oracle0.run_dir(grid) / "summary.json").read_text())
    assert summary["train_s"] > first_session_s > 0
    with (tmp_path / "cells.csv").open() as f:
        oracle0_row = next(r for r in csv.DictReader(f)
                           if (r["scheme"], r["seed"]) == ("oracle", "0"))
    assert float(oracle0_row["train_min"]) * 60 == pytest.approx(summary["train_s"])

    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["scheme"], r["seeds"]) for r in rows] == [("none", "0 1"), ("oracle", "0 1")]
    knn = [
        json.loads((c.run_dir(grid) / "eval_knn.json").read_text())["test"]["selected"]["top1"]
        for c in (oracle0, oracle1)
    ]
    assert float(rows[1]["knn_mean"]) == pytest.approx(statistics.mean(knn))
    assert float(rows[0]["chance_mean"]) == pytest.approx(1 / 5)  # five shapes
    assert float(rows[1]["knn_std"]) == pytest.approx(statistics.stdev(knn))
    markdown = (tmp_path / "results.md").read_text()
    assert (
        "| oracle | simclr | 0,1 |" in markdown and f"{100 * statistics.mean(knn):.1f}" in markdown
    )
    assert (tmp_path / "results.png").stat().st_size > 1000
    with (tmp_path / "cells.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4

    changed = parse_grid(grid_document(overrides={**TINY, "optim.lr": 0.1}), "g.yaml", tmp_path)
    (none1.run_dir(grid) / "eval_knn.json").unlink()
    with pytest.raises(RunDirError, match="another configuration"):
        run_grid(changed, say=lambda msg: None)

    # a cell of an older adios: its config.yaml lacks a key added since, whose default is what
    # that adios did; it is the same configuration, and is evaluated
    saved = none1.run_dir(grid) / "config.yaml"
    older = yaml.safe_load(saved.read_text())
    del older["data"]["drop_last"]
    saved.write_text(yaml.safe_dump(older))
    run_grid(grid, say=lambda msg: None)
    assert (none1.run_dir(grid) / "eval_knn.json").is_file()


def test_token_modes_are_grid_schemes_with_a_hidden_patch_table(tmp_path):
    """token-random and token-adios run as cells like any scheme; results.md carries the share
    of hidden patches on objects for both, from the cells' summaries."""
    tokens = {
        "data.num_train": 16,
        "data.num_val": 8,
        "data.num_test": 16,
        "optim.batch_size": 8,
        "train.knn_bank": 16,
        "train.progress": False,
        "train.device": "cpu",
        "train.threads": 1,
        "train.picture_every": 0,
        "objective.proj_hidden": 32,
        "objective.proj_out": 16,
    }
    grid = parse_grid(
        {
            "preset": "shapes-vit-simclr-token-adios",
            "schemes": ["token-random", "token-adios"],
            "objectives": ["simclr"],
            "seeds": [0],
            "budget": {"epochs": 1},
            "overrides": tokens,
        },
        "g.yaml",
        tmp_path,
    )
    random_cell, learned_cell = cells(grid)
    assert cell_config(grid, learned_cell, 1).masking.mode == "token-adios"
    assert set(run_grid(grid, say=lambda msg: None).values()) == {"trained"}
    markdown = (tmp_path / "results.md").read_text()
    table = markdown[markdown.index("hidden on objects (draws)") - 200 :].splitlines()
    for cell in (random_cell, learned_cell):
        summary = json.loads((cell.run_dir(grid) / "summary.json").read_text())
        row = next(line for line in table if line.startswith(f"| {cell.scheme} |"))
        assert f"| {100 * summary['token_hidden_on_objects']:.1f} |" in row
        topk = summary.get("token_hidden_on_objects_topk")  # only a learned masker has one
        assert (topk is None) == (cell is random_cell)
        assert row.split(" | ")[4] == ("–" if topk is None else f"{100 * topk:.1f}")


def test_seeds_option_runs_only_those_seeds_and_tables_keep_the_rest(tmp_path, capsys):
    grid = parse_grid(grid_document(seeds=[0, 1]), "g.yaml", tmp_path)
    statuses = run_grid(grid, say=lambda msg: None, seeds=[1])
    assert sorted((c.scheme, c.seed) for c in statuses) == [("none", 1), ("oracle", 1)]
    assert not any(c.run_dir(grid).exists() for c in cells(grid) if c.seed == 0)
    with (tmp_path / "results.csv").open() as f:
        assert [r["seeds"] for r in csv.DictReader(f)] == ["1", "1"]
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps(grid_document(seeds=[0, 1])))
    assert main(["compare", str(path), "--out", str(tmp_path), "--dry-run", "--seeds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("done") for line in lines)
    assert main(["compare", str(path), "--out", str(tmp_path), "--seeds", "0,7"]) == 2
    assert "[7] not among the grid's seeds [0, 1]" in capsys.readouterr().err


def test_cli_dry_run_lists_cell_states(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps(grid_document(output=str(tmp_path / "out"))))
    assert main(["compare", str(path), "--dry-run", "train.device=cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("start") for line in lines)
    assert main(["compare", str(path), "seed=3"]) == 2
    assert "seed is set by the grid" in capsys.readouterr().err


def test_cli_dry_run_shows_a_resumable_cells_epochs_and_the_training_eta(tmp_path, capsys):
    """none seed 0: one epoch of two in at 10 s per epoch, so 10 s for it and 20 s for seed 1
    (40 s had seed 0's trained epoch been counted again); the oracle cells are not timed yet."""
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps(grid_document(output=str(tmp_path / "out"))))
    grid = parse_grid(grid_document(), "g.yaml", tmp_path / "out")
    run_dir = cells(grid)[0].run_dir(grid)
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(b"")
    rows = [{"epoch": 0, "step": 0, "train_s": 0.0}, {"epoch": 1, "step": 2, "train_s": 10.0}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["compare", str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"resume    {run_dir} (epoch 1 of 2)"
    assert [line.split()[0] for line in lines[1:4]] == ["start"] * 3
    assert lines[4] == (
        "4 cells to run, training ETA 30 s + 2 cells of schemes not timed yet")


def _hold_lock(path: str, ready, release) -> None:
    from adios.rundir import RunDir

    RunDir(Path(path), resume=False).lock()
    ready.set()
    release.wait(60)


def test_a_cell_another_process_holds_is_skipped_and_run_once_it_is_free(tmp_path, capsys):
    """Two compare processes can share a grid: each skips the cells the other is running."""
    import multiprocessing
    import os
    import signal

    grid = parse_grid(grid_document(seeds=[0]), "g.yaml", tmp_path)
    free, held = cells(grid)
    held.run_dir(grid).mkdir(parents=True)
    fork = multiprocessing.get_context("fork")
    ready, release = fork.Event(), fork.Event()
    holder = fork.Process(target=_hold_lock, args=(str(held.run_dir(grid)), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        assert cell_state(held.run_dir(grid)) == "running"
        compare._dry_run(grid, [], None)
        lines = capsys.readouterr().out.splitlines()
        assert lines[1] == f"running   {held.run_dir(grid)} (epoch 0 of 2)"
        said: list[str] = []
        statuses = run_grid(grid, say=said.append)
        assert statuses == {free: "trained", held: "running"}
        assert "  skipped: another process holds it (see --dry-run)" in said
        assert not (held.run_dir(grid) / "config.yaml").exists()  # nothing written into it
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    assert run_grid(grid, say=lambda msg: None) == {free: "done", held: "trained"}


def test_curves_continue_without_gaps_or_duplicates_after_an_interrupted_cell(tmp_path):
    from adios.compare.curves import curve_problems, read_curve

    overrides = {k: v for k, v in TINY.items() if k != "train.knn_every"}
    document = grid_document(
        schemes=["none"],
        seeds=[0],
        budget={"epochs": 5},
        overrides=overrides,
        curve_every=2,
        evaluations=["knn", "linear", "robustness"],
    )
    grid = parse_grid(document, "g.yaml", tmp_path / "grid")
    (cell,) = cells(grid)
    cfg = cell_config(grid, cell, 5)
    assert cfg.train.knn_every == 2
    uninterrupted = cell_config(grid, cell, 5)
    uninterrupted.run_dir = str(tmp_path / "reference")
    reference = train(uninterrupted)

    # interrupted after epoch 3, and killed after writing epoch 4's monitor row but before its
    # checkpoint: the resumed run must drop that row and write it again, once
    train(cfg, overwrite=True, stop_after_epoch=3)
    metrics = cell.run_dir(grid) / "metrics.jsonl"
    row = {"epoch": 4, "step": 8, "images_seen": 128, "train_s": 1e6, "knn_acc": 0.0}
    metrics.write_text(metrics.read_text() + json.dumps(row) + "\n")
    assert run_grid(grid, say=lambda msg: None) == {cell: "resumed"}

    with (cell.run_dir(grid) / "curve.csv").open() as f:
        curve = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in curve] == [0, 2, 4, 5]
    assert [int(r["images_seen"]) for r in curve] == [0, 64, 128, 160]  # 32 scenes per epoch
    assert curve_problems(read_curve(cell.run_dir(grid)), 5, 2) == []
    # exact resume: the same validation accuracies as the uninterrupted run, point for point
    expected = [r["knn_val"] for r in read_curve(reference)]
    assert [float(r["knn_val"]) for r in curve] == pytest.approx(expected)
    times = [float(r["train_s"]) for r in curve]
    assert times == sorted(times) and times[-1] < 1e6

    with (tmp_path / "grid" / "curves.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 2, 4, 5]
    assert (tmp_path / "grid" / "curves.png").stat().st_size > 1000
    markdown = (tmp_path / "grid" / "results.md").read_text()
    assert "## Learning curves" in markdown and "Backgrounds test" in markdown
    backgrounds = json.loads((cell.run_dir(grid) / "eval_robustness.json").read_text())
    with (tmp_path / "grid" / "cells.csv").open() as f:
        (cell_row,) = csv.DictReader(f)
    assert float(cell_row["bg_gap"]) == pytest.approx(backgrounds["linear"]["background_gap"])
    knn = json.loads((cell.run_dir(grid) / "eval_knn.json").read_text())["test"]["selected"]
    assert float(cell_row["knn_balanced"]) == pytest.approx(knn["balanced_accuracy"])
    assert float(cell_row["majority"]) == pytest.approx(knn["majority_rate"])


@pytest.mark.parametrize("path", sorted((ROOT / "grids").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_grid_gives_valid_cell_configs(path):
    grid = load_grid(path)
    for cell in cells(grid):
        cfg = cell_config(grid, cell, grid.epochs or 1, ["data.path=/nonexistent"])
        assert (cfg.masking.mode, cfg.objective.name) == (cell.scheme, cell.objective)


def test_token_grids_change_only_the_masking_between_cells():
    """The equal-epoch token comparison: within a grid, cells differ in masking.mode alone
    (and the seed), and each names its preset's token keep ratio."""
    for name in ("tokens-scenes", "tokens-scenes-mae", "tokens-cifar10", "tokens-cifar10-mae"):
        grid = load_grid(ROOT / "grids" / f"{name}.yaml")
        configs = [cell_config(grid, c, grid.epochs, ["data.path=/d"]) for c in cells(grid)]
        assert grid.seeds == [0, 1, 2] and "token-random" in grid.schemes
        first = to_dict(configs[0])
        for cfg in configs[1:]:
            other = to_dict(cfg)
            changed = {
                f"{section}.{key}"
                for section in first
                if isinstance(first[section], dict)
                for key in first[section]
                if first[section][key] != other[section][key]
            }
            assert changed <= {"masking.mode", "run_dir"} and other["model"] == first["model"]


def test_token_grids_pinned_bn_policy_has_nothing_to_act_on():
    """The token grids pin train.bn_stats; the policy only routes the objective's batch-norm
    buffer updates, and a ViT objective has none, so no cell depends on it (runs made under the
    other policy are the same runs)."""
    from adios.engine import build_models

    for name in ("tokens-scenes", "tokens-scenes-mae", "tokens-cifar10", "tokens-cifar10-mae"):
        grid = load_grid(ROOT / "grids" / f"{name}.yaml")
        for cell in cells(grid, seeds=[0]):
            cfg = cell_config(grid, cell, 1, ["data.path=/d", "train.device=cpu"])
            models = build_models(cfg, num_classes=10, device=torch.device("cpu"))
            norms = [m for m in models.objective.modules()
                     if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
            assert norms == [] and list(models.objective.buffers()) == [], (name, cell.scheme)


def test_training_eta_takes_each_schemes_pace_and_what_a_cell_has_done(tmp_path):
    """none: 10 s per epoch; oracle: 40 s per epoch, its seed 0 one epoch of two in."""
    from adios.compare.run import training_eta

    grid = parse_grid(grid_document(), "g.yaml", tmp_path)
    none0, none1, oracle0, oracle1 = cells(grid)

    def log(cell, *rows):
        cell.run_dir(grid).mkdir(parents=True)
        lines = [json.dumps({"epoch": 0, "step": 0, "train_s": 0.0})]  # the untrained point
        lines += [json.dumps({"epoch": e, "step": 2 * e, "loss": 1.0}) for e, _ in rows]
        lines += [json.dumps({"epoch": e, "step": 2 * e, "train_s": s}) for e, s in rows]
        (cell.run_dir(grid) / "metrics.jsonl").write_text("\n".join(lines) + "\n")

    assert training_eta(grid, [none1, oracle1]) == ""  # nothing timed yet
    log(none0, (1, 10.0), (2, 20.0))
    assert training_eta(grid, [none1, oracle1]) == (
        ", training ETA 20 s + 1 cell of schemes not timed yet")
    log(oracle0, (1, 40.0))
    # none1: 2 x 10 s; oracle0: 1 epoch left x 40 s; oracle1: 2 x 40 s
    assert training_eta(grid, [none1, oracle0, oracle1]) == ", training ETA 2 min"
