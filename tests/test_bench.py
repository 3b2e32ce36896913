"""``adios bench data`` and the compare calibration time the training loop itself: from the same
state and batches they leave exactly the parameters ``adios train`` leaves, for every masking
mode and objective."""

import json

import pytest
import torch

from adios import bench, compare
from adios.cli import main
from adios.config import load_config
from adios.engine import Setup
from adios.train import CHECKPOINT, train

TINY = [
    "preset=shapes-paper",  # a base that does not move when the default preset is tuned
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "model.width=4",
    "masker.fbase=8",
    "masker.n_masks=2",
    "objective.proj_hidden=16",
    "objective.proj_out=8",
    "optim.batch_size=8",  # two steps per epoch
    "optim.warmup_epochs=1",
    "train.epochs=1",
    "train.device=cpu",
    "train.threads=1",
    "train.progress=false",
]
LEARNED = ("adios", "adios-s")


def recorded_setup(monkeypatch, module) -> list[Setup]:
    """The Setup that ``module`` builds, kept for inspection after it ran."""
    made: list[Setup] = []
    original = module.setup

    def keep(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(module, "setup", keep)
    return made


def initial(cfg) -> dict[str, torch.Tensor]:
    """Every parameter and buffer before training (the same seed builds the same models)."""
    from adios.engine import build_trainer

    models = build_trainer(cfg, 8, torch.device("cpu"), 2).models
    state = {f"objective.{k}": v.clone() for k, v in models.objective.state_dict().items()}
    if models.masker is not None:
        state.update({f"masker.{k}": v.clone() for k, v in models.masker.state_dict().items()})
    return state


def state_of(s: Setup) -> dict[str, torch.Tensor]:
    state = {f"objective.{k}": v for k, v in s.models.objective.state_dict().items()}
    if s.models.masker is not None:
        state.update({f"masker.{k}": v for k, v in s.models.masker.state_dict().items()})
    return state


def trained_state(tmp_path, overrides) -> dict[str, torch.Tensor]:
    run_dir = train(load_config([*TINY, *overrides, f"run_dir={tmp_path / 'run'}"]))
    checkpoint = torch.load(run_dir / CHECKPOINT, weights_only=True)
    state = {f"objective.{k}": v for k, v in checkpoint["objective"].items()}
    state.update({f"masker.{k}": v for k, v in (checkpoint.get("masker") or {}).items()})
    return state


@pytest.mark.parametrize(
    "overrides",
    [
        ["objective.name=byol", "masking.mode=adios"],  # EMA target and masker step
        ["objective.name=simclr", "masking.mode=oracle"],  # object layers from the batches
    ],
)
def test_bench_and_calibration_leave_the_parameters_an_epoch_of_training_leaves(
    tmp_path, monkeypatch, overrides
):
    expected = trained_state(tmp_path, overrides)
    cfg = load_config([*TINY, *overrides])
    start = initial(cfg)
    benched = recorded_setup(monkeypatch, bench)
    bench.bench_data(cfg, batches=1, steps=2, warmup=0)  # one epoch = two iterations
    calibrated = recorded_setup(monkeypatch, compare.calibrate)
    assert compare.seconds_per_epoch(cfg, steps=2, warmup=0)["steps_per_epoch"] == 2
    for s in (benched[0], calibrated[0]):
        state = state_of(s)
        assert state.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(state[key], value), key
    moved = [k for k in expected if not torch.equal(expected[k], start[k])]
    assert any(k.startswith("objective.backbone.") for k in moved)
    if "objective.name=byol" in overrides:  # the EMA update ran: the target moved too
        assert any(k.startswith("objective.target_backbone.") for k in moved)
        assert any(k.startswith("masker.") for k in moved)


@pytest.mark.parametrize(
    "mode, objective",
    [(m, "simclr") for m in ("none", "mae", "beit", "rectangles", "oracle", "adios-s", "adios")]
    + [(m, o) for o in ("byol", "simsiam") for m in ("oracle", "adios")],
)
def test_bench_data_trains_every_masking_mode_and_objective(monkeypatch, capsys, mode, objective):
    overrides = [*TINY, f"masking.mode={mode}", f"objective.name={objective}"]
    start = initial(load_config(overrides))
    made = recorded_setup(monkeypatch, bench)
    args = ["--batches", "2", "--steps", "1", "--warmup", "1"]
    assert main(["bench", "data", "--json", *args, *overrides]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["masking"], result["objective"]) == (mode, objective)
    assert result["augment_images_per_s"] > 0 and result["train_images_per_s"] > 0
    state = state_of(made[0])
    changed = [k for k in state if not torch.equal(state[k], start[k])]
    assert any(k.startswith("objective.backbone.") for k in changed)  # the encoder stepped
    assert any(k.startswith("masker.") for k in changed) == (mode in LEARNED)
    if objective == "byol":  # the EMA update ran
        assert any(k.startswith("objective.target_backbone.") for k in changed)
