"""Presets, dotted overrides and the messages a user gets for a bad key or value."""

import pytest

from adios.config import ConfigError, describe, load_config, load_yaml, preset_names, to_dict


def test_default_preset_and_dotted_overrides():
    cfg = load_config(["optim.lr=0.05", "data.scenes.max_objects=3",
                       "data.scenes.count_weights=null", "masking.mode=adios-s",
                       "augment.view_b.solarize_p=0.2", "data.image_size=64"])
    assert cfg.preset == "shapes-laptop"
    # the laptop default picks its precision and layout from the CPU it lands on (adios.perf)
    assert (cfg.train.precision, cfg.train.channels_last) == ("auto", "auto")
    assert cfg.optim.lr == 0.05 and isinstance(cfg.optim.lr, float)
    assert cfg.data.scenes.max_objects == 3
    assert cfg.masking.mode == "adios-s"
    assert cfg.augment.view_b.solarize_p == 0.2 and cfg.augment.view_a.solarize_p == 0.0
    assert cfg.data.scenes.image_size == 64  # the scenes follow data.image_size


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_resolves(name):
    cfg = load_config([f"preset={name}"])
    assert cfg.preset == name
    assert load_config([], base=to_dict(cfg)) == cfg  # a saved config reloads to itself


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=0.1", "optim.lrr: unknown key; allowed keys here: batch_size"),
        ("optimizer.lr=0.1", "optimizer: unknown key; allowed keys here: augment"),
        ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
        ("optim.lr=-1", "optim.lr: must be positive"),
        ("masking.mode=random", "masking.mode: got 'random'; allowed values: 'adios', 'adios-s'"),
        ("masker.n_masks=1", "masker.n_masks: must be at least 2"),
        ("masker.n_masks=2.5", "masker.n_masks: expected an integer, got 2.5"),
        ("train.progress=maybe", "train.progress: expected true or false"),
        ("augment.view_a.crop_scale=[0.5]", "augment.view_a.crop_scale: expected a list of 2"),
        ("augment.view_a.jitter_p=1.5", "augment.view_a"),
        ("data.scenes.max_objects=0", "data.scenes"),
        ("preset=nope", "preset: unknown preset 'nope'; available: "),
        ("optim.lr", "'optim.lr': an override is key=value"),
    ],
)
def test_bad_overrides_name_the_key_and_what_is_allowed(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert expected in str(err.value)


def test_scenes_image_size_conflict_is_rejected():
    with pytest.raises(ConfigError, match="set data.image_size instead"):
        load_config(["data.image_size=64", "data.scenes.image_size=48"])


def test_describe_lists_every_leaf_key():
    lines = describe()
    assert any(line.startswith("optim.lr = 0.") for line in lines)
    assert any(line.startswith("data.scenes.same_shape_prob = ") for line in lines)
    assert any("'adios' | 'adios-s' | 'none'" in line for line in lines)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["masking.mode=token-adios"], "need(s)? model.backbone=vit_tiny"),
        (["model.backbone=vit_tiny", "masking.mode=token-random", "objective.name=byol"],
         "token modes support objective.name=simclr or mae"),
        (["model.backbone=vit_tiny", "objective.name=mae", "masking.mode=adios"],
         "objective.name: mae reconstructs dropped tokens"),
        (["model.backbone=vit_tiny", "masking.mode=token-adios", "masking.schedule=reference"],
         "masking.schedule: token modes have schedules fast and single-pass"),
        (["masking.keep_ratio=1.0"], "masking.keep_ratio: must be in"),
        (["objective.decoder_dim=10", "objective.decoder_heads=4"], "objective.decoder_dim"),
    ],
)
def test_token_mode_combinations_that_cannot_work_are_rejected(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(["preset=shapes-paper", *overrides])


# ----------------------------------------------------------------------------- issue 9, failure 5


@pytest.mark.parametrize(("text", "value"), [
    ("1e-3", 0.001), ("5E-4", 0.0005), ("-2.5e+3", -2500.0), ("1.0e-3", 0.001), (".5", 0.5),
    ("3e2", 300.0), ("1_000", 1000), ("1e", "1e"), ("e3", "e3"), ("0.3", 0.3),
])
def test_yaml_reads_exponent_numbers_as_floats(text, value):
    """YAML 1.1 reads 1e-3 (no dot, no exponent sign) as a string; we read YAML 1.2 numbers."""
    got = load_yaml(text, "x")
    assert got == value and type(got) is type(value)


def test_exponent_numbers_work_in_overrides_config_files_and_grids(tmp_path):
    from adios.compare import cell_config, cells, load_grid
    from adios.rundir import MARKER, MARKER_HEADER, resume_config

    cfg = load_config(["optim.lr=1e-3", "optim.weight_decay=5e-4", "optim.mask_lr=2E-2"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.mask_lr) == (0.001, 0.0005, 0.02)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("preset: shapes-paper\noptim:\n  lr: 1e-3\n")
    (run / MARKER).write_bytes(MARKER_HEADER + b"\n")  # a run directory of adios's
    assert resume_config(run, ["optim.probe_lr=3e-2"]).optim.lr == 0.001
    grid = tmp_path / "grid.yaml"
    grid.write_text("preset: shapes-paper\nschemes: [adios]\nobjectives: [simclr]\n"
                    "budget: {epochs: 1}\noverrides: {optim.lr: 1e-3, optim.mask_lr: 4e-2}\n")
    loaded = load_grid(grid, tmp_path / "out")
    cfg = cell_config(loaded, cells(loaded)[0], 1)
    assert (cfg.optim.lr, cfg.optim.mask_lr) == (0.001, 0.04)


@pytest.mark.parametrize(("override", "expected"), [
    ("optim.lr=.inf", "optim.lr: expected a finite number, got inf"),
    ("optim.mask_lr=.nan", "optim.mask_lr: expected a finite number, got nan"),
    ("train.threads=0", "train.threads: must be at least 1, or null"),
    ("train.knn_bank=0", "train.knn_bank: must be at least 1"),
    ("train.eval_batch_size=0", "train.eval_batch_size: must be at least 1"),
    ("train.finite_every=0", "train.finite_every: must be at least 1"),
    ("train.knn_every=-1", "train.knn_every: must be >= 0"),
    ("optim.momentum=1", "optim.momentum: must be in [0, 1)"),
    ("seed=!!python/name:os.system", "seed: not plain YAML"),
])
def test_values_that_would_crash_a_run_are_rejected_up_front(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert expected in str(err.value)
