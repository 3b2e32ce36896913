"""``adios bench step`` times the training loop's own step (schedules, both players, EMA): every
configuration it times really trains, for every objective and every fixed scheme too."""

import json

import pytest
import torch

from adios import bench_step
from adios.cli import main
from adios.engine import Trainer, train_step
from adios.optim import apply_schedule

TINY = [
    "preset=shapes-paper",  # a base that does not move when the default preset is tuned
    "model.width=4",
    "masker.fbase=8",
    "objective.proj_hidden=16",
    "objective.proj_out=8",
    "optim.batch_size=8",
    "train.device=cpu",
    "train.threads=1",
]
FIXED = ("mae", "beit", "rectangles", "oracle")


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def recorded(monkeypatch):
    """Every trainer bench step builds, with the initial state and the inputs of each step."""
    built: list[dict] = []
    original_build, original_step = bench_step.build_trainer, Trainer.step

    def build(cfg, *args, **kwargs):
        trainer = original_build(cfg, *args, **kwargs)
        built.append({"trainer": trainer, "steps": [], "start": _state(trainer),
                      "rebuild": lambda: original_build(cfg, *args, **kwargs)})
        return trainer

    def step(self, a, b, labels, draws, index, objects=None):
        entry = next(e for e in built if e["trainer"] is self)
        entry["steps"].append((a, b, labels, draws.initial_seed(), index, objects))
        return original_step(self, a, b, labels, draws, index, objects)

    monkeypatch.setattr(bench_step, "build_trainer", build)
    monkeypatch.setattr(Trainer, "step", step)
    return built


def _state(trainer) -> dict[str, torch.Tensor]:
    models = trainer.models
    state = {f"objective.{k}": v.clone() for k, v in models.objective.state_dict().items()}
    if models.masker is not None:
        state.update({f"masker.{k}": v.clone() for k, v in models.masker.state_dict().items()})
    return state


def _loop_body(trainer: Trainer, a, b, labels, seed, step, objects) -> None:
    """What the training loop did per step before adios.engine existed, spelled out: the
    learning-rate schedules, the game, then BYOL's EMA update."""
    cfg = trainer.cfg
    apply_schedule(trainer.encoder_opt, step, trainer.total_steps, trainer.warmup_steps,
                   cfg.optim.final_lr_fraction)
    if trainer.masker_opt is not None:
        apply_schedule(trainer.masker_opt, step, trainer.total_steps, trainer.mask_warmup_steps,
                       cfg.optim.final_lr_fraction)
    train_step(cfg, trainer.models, trainer.encoder_opt, trainer.masker_opt, a, b, labels,
               torch.Generator().manual_seed(seed), objects, scaler=trainer.scaler)
    trainer.models.objective.after_encoder_step(step, trainer.total_steps)


@pytest.mark.parametrize("objective", ["simclr", "byol", "simsiam"])
def test_every_timed_configuration_is_a_training_step(recorded, capsys, objective):
    args = ["--masks", "2", "--repeats", "1", "--schemes", ",".join(FIXED)]
    assert main(["bench", "step", "--json", *args, *TINY, f"objective.name={objective}"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = [("none", 0), *[("adios-s", 2)] * 3, *[("adios", 2)] * 3, *[(s, 0) for s in FIXED]]
    assert [(r["masking"], r["n_masks"]) for r in rows] == expected
    assert len(recorded) == len(rows)
    for row, entry in zip(rows, recorded, strict=True):
        assert entry["trainer"].cfg.masking.mode == row["masking"]
        assert entry["trainer"].cfg.objective.name == objective
        assert row["images_per_s"] > 0 and len(entry["steps"]) == 2  # warm-up + one round
        # the same steps replayed through the training loop's body from the same initial state
        replay = entry["rebuild"]()
        assert all(torch.equal(v, entry["start"][k]) for k, v in _state(replay).items())
        for inputs in entry["steps"]:
            _loop_body(replay, *inputs)
        after, timed = _state(replay), _state(entry["trainer"])
        for key, value in after.items():
            assert torch.equal(timed[key], value), (row["masking"], row["schedule"], key)
        changed = [k for k in after if not torch.equal(after[k], entry["start"][k])]
        assert any(k.startswith("objective.backbone.") for k in changed)
        assert any(k.startswith("masker.") for k in changed) == (row["masking"] in ("adios",
                                                                                   "adios-s"))
        if objective == "byol":
            assert any(k.startswith("objective.target_backbone.") for k in changed)


def test_bench_step_rejects_bad_options(capsys):
    assert main(["bench", "step", "--masks", "four", *TINY]) == 2
    assert "--masks" in capsys.readouterr().err
    assert main(["bench", "step", "--repeats", "0", *TINY]) == 2
    assert "--repeats" in capsys.readouterr().err
    assert main(["bench", "step", "--schemes", "adios", *TINY]) == 2
    assert "--schemes" in capsys.readouterr().err


VIT = ["preset=shapes-vit-simclr-token-adios", "optim.batch_size=4", "train.device=cpu",
       "train.threads=1", "objective.proj_hidden=16", "objective.proj_out=8"]


def test_bench_step_token_rows_and_their_ratios(capsys):
    args = ["bench", "step", "--json", "--repeats", "1", "--learned", "adios-s", "--schedules",
            "fast,single-pass", "--tokens", *VIT]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["masking"], r["schedule"]) for r in rows] == [
        ("none", "fast"), ("adios-s", "fast"), ("adios-s", "single-pass"),
        ("token-random", "fast"), ("token-adios", "fast"), ("token-adios", "single-pass")]
    speed = {(r["masking"], r["schedule"]): r["images_per_s"] for r in rows}
    for row in rows[3:]:
        assert row["cost_vs_token_random"] == pytest.approx(
            speed["token-random", "fast"] / row["images_per_s"])
        same = "single-pass" if row["schedule"] == "single-pass" else "fast"
        assert row["speedup_vs_adios_s"] == pytest.approx(
            row["images_per_s"] / speed["adios-s", same])
    mae = ["preset=shapes-vit-mae-token-adios", "objective.decoder_dim=16", *VIT[1:4]]
    assert main(["bench", "step", "--repeats", "1", "--schedules", "fast", *mae]) == 0
    table = capsys.readouterr().out
    assert "token-random" in table and "token-adios" in table and "ADIOS-s" in table
    assert "adios-s " not in table  # MAE has token modes only


def test_item10_one_configuration_on_the_device_at_a_time(monkeypatch, capsys):
    """Each configuration comes to the device for its own round and goes back to the host
    after it, so a step is only ever taken with no other configuration there (issue 25,
    item 10; on a CPU the moves are no-ops, so the calls are tracked)."""
    on_device: set[int] = set()
    built = []
    original_build, original_step = bench_step.build_trainer, Trainer.step

    def build(*args, **kwargs):
        trainer = original_build(*args, **kwargs)
        built.append(trainer)
        on_device.add(id(trainer))  # built on the device
        return trainer

    def step(self, *args, **kwargs):
        assert on_device == {id(self)}
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(bench_step, "build_trainer", build)
    monkeypatch.setattr(bench_step, "to_device", lambda trainer, device: on_device.add(
        id(trainer)))
    monkeypatch.setattr(bench_step, "to_host", lambda trainer: on_device.discard(id(trainer)))
    monkeypatch.setattr(Trainer, "step", step)
    assert main(["bench", "step", *TINY, "--masks", "2", "--schedules", "fast",
                 "--repeats", "2", "--warmup", "2"]) == 0
    assert len(built) == 3 and not on_device


def test_item10_moves_take_models_and_optimiser_states_but_not_adams_step_count():
    from adios.config import load_config
    from adios.engine import build_trainer

    cfg = load_config([*TINY, "masking.mode=adios", "optim.mask_name=adamw"])
    trainer = build_trainer(cfg, 3, torch.device("cpu"), steps_per_epoch=1)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 3, 32, 32, generator=g)
    trainer.step(a, a.flip(3), torch.randint(0, 3, (8,), generator=g), g, 0)
    states = [v for opt in (trainer.encoder_opt, trainer.masker_opt)
              for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    moved = set()
    original = torch.Tensor.to
    torch.Tensor.to = lambda self, *args, **kwargs: moved.add(id(self)) or original(
        self, *args, **kwargs)
    try:
        bench_step.to_host(trainer)
    finally:
        torch.Tensor.to = original
    assert any(v.dim() == 0 for v in states) and any(v.dim() > 0 for v in states)
    assert all((id(v) in moved) == (v.dim() > 0) for v in states)
