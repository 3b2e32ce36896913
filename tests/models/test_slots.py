"""The slot-attention masker: a partition, permutation-equivariant in its slots, and a player of
the ADIOS game under every schedule and bf16, trained and evaluated through the usual paths."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from adios.cli import main
from adios.config import ConfigError, load_config, to_dict
from adios.engine import build_models, build_optimizers, train_step
from adios.masking.adios import frozen, siamese_loss
from adios.models.masker import OcclusionModel, build_masker
from adios.models.slots import SlotMasker

# float round-off, bf16 or channels_last kernels: .ci/run runs these again under AVX2 kernels
pytestmark = pytest.mark.isa

TINY = [
    "preset=shapes-paper",  # a base that does not move when the default preset is tuned
    "masker.kind=slots", "model.width=4", "masker.fbase=8", "masker.n_masks=3",
    "masker.slot_dim=16", "objective.proj_hidden=32", "objective.proj_out=16",
    "optim.batch_size=8", "train.device=cpu",
]


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def small(size: int = 32, **kwargs) -> SlotMasker:
    torch.manual_seed(0)
    return SlotMasker(size, kwargs.pop("n_masks", 4), fbase=8, slot_dim=16, **kwargs)


# ----------------------------------------------------------------------------- the module


@pytest.mark.parametrize("size", [32, 64, 96])
@pytest.mark.parametrize("stride", [1, 2])
def test_masks_partition_every_pixel(size, stride):
    masks = small(size, stride=stride)(images(size=size))
    assert masks.shape == (2, 4, size, size) and masks.dtype == torch.float32
    assert torch.all(masks > 0)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, size, size))


def test_permuting_the_initial_slots_permutes_the_masks():
    """Nothing but the initial vectors tells one slot from another: the same slots in another
    order give the same masks in that order (and per image, with (B, N, D) slots)."""
    model = small(n_masks=5)
    x = images(3)
    masks = model(x)
    perm = torch.tensor([3, 0, 4, 2, 1])
    torch.testing.assert_close(model(x, slots=model.slots[perm]), masks[:, perm])
    per_image = [torch.randperm(5, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    slots = torch.stack([model.slots[p] for p in per_image])
    expected = torch.stack([masks[i, p] for i, p in enumerate(per_image)])
    torch.testing.assert_close(model(x, slots=slots), expected)
    # the permuted parameter is the same model: a state dict with permuted slots
    twin = copy.deepcopy(model)
    twin.slots.data = model.slots.data[perm]
    torch.testing.assert_close(twin(x), masks[:, perm])
    # and the masks are not trivially equivariant: slots differ, masks differ
    assert (masks[:, perm] - masks).abs().max() > 1e-3


def reference_masks(model: SlotMasker, x: torch.Tensor) -> torch.Tensor:
    """Slot attention written out image by image and slot by slot, from the module's layers:
    softmax over slots per pixel, a weighted mean per slot, GRU + residual MLP, final logits."""
    out = []
    for image in x:
        f = model.encoder(image[None])[0].flatten(1).T  # (P, C)
        inputs = model.norm_inputs(model.features(f + model.position(model.grid)))
        k, v = model.to_k(inputs), model.to_v(inputs)
        slots = model.slots.clone()
        for _ in range(model.iters):
            q = model.to_q(model.norm_slots(slots))
            logits = torch.stack([k @ q[n] for n in range(model.n_masks)]) / model.slot_dim**0.5
            attn = torch.exp(logits) / torch.exp(logits).sum(dim=0, keepdim=True)
            new = []
            for n in range(model.n_masks):
                w = attn[n] + 1e-8
                update = (w[:, None] * v).sum(0) / w.sum()
                h = model.gru(update[None], slots[n][None])[0]
                new.append(h + model.update(model.norm_update(h)))
            slots = torch.stack(new)
        q = model.to_q(model.norm_slots(slots))
        logits = (q @ k.T) / model.slot_dim**0.5
        side = model.feature_size
        logits = F.interpolate(logits.view(1, -1, side, side), size=x.shape[-2:],
                               mode="bilinear", align_corners=False)[0]
        out.append(torch.softmax(logits, dim=0))
    return torch.stack(out)


@pytest.mark.parametrize("stride", [1, 2])
def test_masks_match_slot_attention_written_out(stride):
    model = small(iters=2, stride=stride)
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_masks(model, x), atol=1e-5, rtol=1e-4)


def test_strided_features_are_upsampled_logits():
    model = small(stride=4)
    x = images(1)
    assert model.feature_size == 8 and model.grid.shape == (64, 4)
    coarse = model.logits(x)
    assert coarse.shape == (1, 4, 32, 32)
    # bilinear upsampling of an 8 x 8 map: every 4 x 4 block is smooth, not piecewise constant
    assert (coarse[..., 1:, :] - coarse[..., :-1, :]).abs().amax() < coarse.abs().amax()


def test_gradients_reach_every_parameter_including_the_last_update():
    """The masks are the final slots' attention, so the last GRU/MLP update is trained too."""
    model = small(iters=1)
    masks = model(images(3))
    (masks * torch.randn_like(masks)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_bf16_autocast_gives_float32_masks_close_to_float32():
    model, x = small(), images(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.sum(dim=1), torch.ones(2, 32, 32))
    assert (low - model(x)).abs().max() < 0.05


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stride": 3}, "power of 2"),
        ({"stride": 32}, "power of 2"),
        ({"iters": 0}, "iters"),
        ({"n_masks": 1}, "n_masks"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SlotMasker(32, **{"n_masks": 3, **kwargs})


def test_wrong_input_or_slots_shape_raises():
    model = small()
    with pytest.raises(ValueError, match="expected input"):
        model(images(1, size=64))
    with pytest.raises(ValueError, match="slots must be"):
        model(images(1), slots=torch.randn(3, 16))


# ----------------------------------------------------------------------------- configuration


def test_config_builds_each_kind_and_checks_slot_options():
    assert isinstance(build_masker(load_config(TINY[:1])), OcclusionModel)
    model = build_masker(load_config([*TINY, "masker.slot_iters=2", "masker.slot_stride=4"]))
    assert isinstance(model, SlotMasker)
    assert (model.n_masks, model.slot_dim, model.iters, model.stride) == (3, 16, 2, 4)
    for bad, key in (("masker.slot_stride=3", "slot_stride"),
                     ("masker.blur_sigma=1.0", "blur_sigma"),
                     ("masker.num_blocks=3", "num_blocks"),
                     ("masker.slot_iters=0", "slot_iters"),
                     ("masking.mode=token-adios model.backbone=vit_tiny", "masker.kind")):
        with pytest.raises(ConfigError, match=key):
            load_config([*TINY, *bad.split()])


def test_slots_preset_is_the_scenes_preset_with_the_slot_masker():
    slots = to_dict(load_config(["preset=shapes-simclr-adios-slots"]))
    default = to_dict(load_config(["preset=shapes-simclr-adios", "masker.kind=slots"]))
    for cfg in (slots, default):
        cfg.pop("preset"), cfg.pop("description")
    assert slots == default


# ----------------------------------------------------------------------------- the game


def tiny(*overrides: str):
    cfg = load_config([*TINY, *overrides])
    torch.manual_seed(0)
    models = build_models(cfg, num_classes=3, device=torch.device("cpu"))
    models.objective.train()
    return cfg, models, *build_optimizers(cfg, models)


def batch(n: int = 8, seed: int = 0):
    a = images(n, seed=seed)
    b = a + 0.3 * images(n, seed=seed + 100)
    return a, b, torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(seed))


def ssl_loss(models, mode, a, b, masks, index=None) -> float:
    with torch.no_grad(), frozen(models.objective):
        loss, _ = siamese_loss(models.objective, a, b, masks, mode, index_b=index)
    return loss.item()


@pytest.mark.parametrize("mode", ["adios", "adios-s"])
def test_masker_step_raises_the_encoders_loss_on_a_fixed_batch(mode):
    """train_step's masker move alone: after the step, the step's (new) encoder has a higher
    loss under the new masks than under the masks from before the masker's move."""
    cfg, models, encoder_opt, masker_opt = tiny(f"masking.mode={mode}",
                                                "masking.alpha_sparsity=0.0")
    a, b, y = batch()
    # ADIOS-s: the masker ascends the loss of the masks drawn by the step's first draw
    drawn = torch.randint(3, (8,), generator=torch.Generator().manual_seed(0))
    index = drawn if mode == "adios-s" else None
    with torch.no_grad():
        old = models.masker(b)
    train_step(cfg, models, encoder_opt, masker_opt, a, b, y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        new = models.masker(b)
    assert ssl_loss(models, mode, a, b, new, index) > ssl_loss(models, mode, a, b, old, index)


@pytest.mark.parametrize("mode", ["adios", "adios-s"])
@pytest.mark.parametrize("schedule", ["reference", "fast", "single-pass"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trains_under_every_schedule_and_precision(mode, schedule, precision):
    cfg, models, encoder_opt, masker_opt = tiny(f"masking.mode={mode}",
                                                f"masking.schedule={schedule}",
                                                f"train.precision={precision}")
    start = [p.detach().clone() for p in [*models.objective.parameters(),
                                          *models.masker.parameters()]]
    n_encoder = len(list(models.objective.parameters()))
    for step in range(2):
        a, b, y = batch(seed=step)
        stats = train_step(cfg, models, encoder_opt, masker_opt, a, b, y,
                           torch.Generator().manual_seed(step))
        assert all(math.isfinite(v) for v in stats.values() if isinstance(v, float)), stats
        assert sum(stats["mask_sizes"]) == pytest.approx(1.0, abs=1e-4)
    end = [*models.objective.parameters(), *models.masker.parameters()]
    moved = [(p - q).abs().max().item() for p, q in zip(end, start, strict=True)]
    assert max(moved[:n_encoder]) > 1e-4 and max(moved[n_encoder:]) > 1e-4
    assert all(torch.isfinite(p).all() for p in end)


def test_fast_schedule_equals_reference_for_the_slot_masker():
    """The schedules are the same computation for this masker too (float64, tight)."""
    results = []
    for schedule in ("reference", "fast"):
        cfg, models, _, _ = tiny(f"masking.schedule={schedule}")
        for module in (models.objective, models.masker, models.probe):
            module.double()
        encoder_opt, masker_opt = build_optimizers(cfg, models)
        for step in range(2):
            a, b, y = batch(seed=step)
            train_step(cfg, models, encoder_opt, masker_opt, a.double(), b.double(), y,
                       torch.Generator().manual_seed(step))
        results.append(dict(models.masker.named_parameters()))
    reference, fast = results
    for name, p in fast.items():
        assert torch.allclose(p, reference[name], atol=1e-10, rtol=0), name


def test_cli_run_and_mask_evaluation_work_unchanged(tmp_path, capsys):
    run_dir = tmp_path / "r"
    args = ["data.num_train=32", "data.num_val=16", "data.num_test=16", "optim.batch_size=16",
            "optim.warmup_epochs=1", "train.knn_bank=32", "train.progress=false",
            "train.threads=1", "train.epochs=1"]
    assert main(["train", f"run_dir={run_dir}", *TINY, *args]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    for suffix in ("", "_untrained", "_random"):
        assert 0 <= summary[f"mask_mbo{suffix}"] <= 1
        assert 0 <= summary[f"mask_image_variation_argmax{suffix}"] <= 0.5
    assert (run_dir / "masks.png").is_file() and (run_dir / "masks" / "epoch_001.png").is_file()
    assert main(["eval", "masks", str(run_dir)]) == 0
    result = json.loads((run_dir / "eval_masks.json").read_text())
    assert result["sources"]["trained"]["mbo"] == pytest.approx(summary["mask_mbo"])
    assert result["sources"]["untrained"]["mbo"] == pytest.approx(summary["mask_mbo_untrained"])
    for key in ("image_variation", "image_variation_argmax"):
        assert result["sources"]["trained"][key] == pytest.approx(summary[f"mask_{key}"])


def test_bench_step_times_both_maskers_round_robin(capsys):
    args = ["--json", "--masks", "2", "--repeats", "1", "--maskers", "unet,slots"]
    assert main(["bench", "step", *args, *TINY]) == 0
    rows = json.loads(capsys.readouterr().out)
    learned = [("adios-s", 2)] * 3 + [("adios", 2)] * 3
    expected = [("none", "-", 0)] + [(m, kind, n) for kind in ("unet", "slots")
                                     for m, n in learned]
    assert [(r["masking"], r["masker"], r["n_masks"]) for r in rows] == expected
    for row in rows[1:]:  # speed-ups compare rows of the same masker only
        reference = next(r for r in rows if r["schedule"] == "reference"
                         and (r["masking"], r["masker"]) == (row["masking"], row["masker"]))
        ratio = row["images_per_s"] / reference["images_per_s"]
        assert row["speedup_vs_reference"] == pytest.approx(ratio)
    assert main(["bench", "step", "--maskers", "transformer", *TINY]) == 2
    assert "--maskers" in capsys.readouterr().err
