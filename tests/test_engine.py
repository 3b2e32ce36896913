"""The reference recipe's options as the training step plays them (adios.engine): optimiser
groups, schedules, ADIOS-s draws, the entropy term, the probe on both views, the batch-norm
statistics policy, SimSiam's loss terms, and every paper preset's recipe stepping."""

import copy
import itertools
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

import adios.engine as engine
from adios.config import load_config
from adios.engine import build_models, build_optimizers, build_trainer, train_step
from adios.masking.adios import size_entropy_term
from adios.optim import epoch_warmup_cosine
from adios.reference import SCRIPT_ARGS

# float round-off, bf16 or channels_last kernels: .ci/run runs these again under AVX2 kernels
pytestmark = pytest.mark.isa

TINY = [
    "preset=shapes-paper", "model.width=4", "masker.fbase=8", "masker.n_masks=3",
    "objective.proj_hidden=32", "objective.proj_out=16", "optim.batch_size=8",
    "train.device=cpu",
]


def tiny(*overrides: str, objective: str = "simclr", classes: int | None = 3):
    extra = [] if objective == "simclr" else ["objective.pred_hidden=32"]
    cfg = load_config([*TINY, f"objective.name={objective}", *extra, *overrides])
    torch.manual_seed(0)
    return cfg, build_models(cfg, num_classes=classes, device=torch.device("cpu"))


def batch(n: int = 8, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 3, 32, 32, generator=g, dtype=dtype)
    b = a + 0.3 * torch.randn(n, 3, 32, 32, generator=g, dtype=dtype)
    return a, b, torch.randint(0, 3, (n,), generator=g)


def test_optimiser_groups_follow_the_recipe_options():
    cfg, models = tiny("optim.lars_clip=true", "optim.weight_decay=0.001",
                       "optim.mask_weight_decay=null", "optim.probe_lars=true",
                       "optim.fixed_predictor_lr=true", objective="simsiam")
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    assert all(g["clip"] for opt in (encoder_opt, masker_opt) for g in opt.param_groups)
    # the masker's decayed group takes the encoder's weight decay
    assert {g["weight_decay"] for g in masker_opt.param_groups} == {0.001, 0.0}
    probe_weight = models.probe.weight
    probe_group = next(g for g in encoder_opt.param_groups
                       if any(p is probe_weight for p in g["params"]))
    assert not probe_group["lars_exclude"] and probe_group["weight_decay"] == 0.0
    assert probe_group["lr"] == cfg.optim.probe_lr
    fixed = [p for g in encoder_opt.param_groups if g.get("fixed_lr") for p in g["params"]]
    assert {id(p) for p in fixed} == {id(p) for p in models.objective.predictor.parameters()}
    # every trainable parameter is in exactly one group
    listed = [id(p) for g in encoder_opt.param_groups for p in g["params"]]
    expected = [p for m in (models.objective, models.probe) for p in m.parameters()
                if p.requires_grad]
    assert sorted(listed) == sorted(id(p) for p in expected)


def test_epoch_schedule_with_the_maskers_longer_horizon():
    cfg, models = tiny("optim.schedule_every=epoch", "optim.warmup_epochs=2",
                       "optim.warmup_start_lr=0.003", "optim.train_mask_epochs=2",
                       "train.epochs=6", "optim.lr=0.5", "optim.mask_lr=0.05")
    trainer = build_trainer(cfg, 3, torch.device("cpu"), steps_per_epoch=4)
    for step in range(24):
        trainer.schedule(step)
        epoch = step // 4
        assert trainer.encoder_opt.param_groups[0]["lr"] == pytest.approx(
            epoch_warmup_cosine(epoch, 4, 2, 0.5, warmup_start=0.003))
        assert trainer.masker_opt.param_groups[0]["lr"] == pytest.approx(
            epoch_warmup_cosine(epoch, 6, 2, 0.05, warmup_start=0.003))
    trainer.schedule(4)  # epoch 1 ends the warm-up at the peak
    assert trainer.encoder_opt.param_groups[0]["lr"] == pytest.approx(0.5)


@pytest.mark.parametrize("independent", [False, True])
def test_adios_s_masker_step_draws_its_own_index(monkeypatch, independent):
    cfg, models = tiny("masking.mode=adios-s", f"masking.independent_draws={independent}")
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    seen = []
    real = engine.siamese_loss

    def spy(*args, **kwargs):
        seen.append(kwargs["index_b"].clone())
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "siamese_loss", spy)
    a, b, y = batch()
    train_step(cfg, models, encoder_opt, masker_opt, a, b, y, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    first = torch.randint(3, (8,), generator=g)
    torch.randint(3, (8,), generator=g)  # view a's draw
    second = torch.randint(3, (8,), generator=g)
    assert torch.equal(seen[0], first)
    assert torch.equal(seen[1], second if independent else first)


@pytest.mark.parametrize("shared", [False, True])
def test_adios_s_simsiam_views_share_the_mask_index_when_asked(monkeypatch, shared):
    """masking.shared_view_index: one index per image for both views (simsiam_adios_s.py)."""
    cfg, models = tiny("masking.mode=adios-s", "masking.independent_draws=true",
                       f"masking.shared_view_index={shared}", objective="simsiam")
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    seen = []
    real = engine.siamese_loss

    def spy(*args, **kwargs):
        seen.append((kwargs["index_a"].clone(), kwargs["index_b"].clone()))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "siamese_loss", spy)
    a, b, y = batch()
    train_step(cfg, models, encoder_opt, masker_opt, a, b, y, torch.Generator().manual_seed(0))
    assert len(seen) == 2  # the encoder's step and the masker's, each with its own draw
    for index_a, index_b in seen:
        assert torch.equal(index_a, index_b) == shared
    assert not torch.equal(seen[0][1], seen[1][1])


def test_fixed_predictor_lr_holds_from_its_epoch():
    """optim.fixed_predictor_lr_from_epoch=1: the predictor trains epoch 0 at warmup_start_lr
    (the reference's scheduler sets every group before the fixed rate takes over), then its
    base lr, while the other groups warm up."""
    cfg, _ = tiny("optim.fixed_predictor_lr=true", "optim.fixed_predictor_lr_from_epoch=1",
                  "optim.schedule_every=epoch", "optim.warmup_epochs=3",
                  "optim.warmup_start_lr=0.003", "optim.lr=0.5", "train.epochs=6",
                  objective="simsiam")
    trainer = build_trainer(cfg, 3, torch.device("cpu"), steps_per_epoch=2)
    for step, predictor_lr, other_lr in ((0, 0.003, 0.003), (1, 0.003, 0.003),
                                         (2, 0.5, epoch_warmup_cosine(1, 6, 3, 0.5, 0.0, 0.003)),
                                         (11, 0.5, epoch_warmup_cosine(5, 6, 3, 0.5, 0.0, 0.003))):
        trainer.schedule(step)
        groups = trainer.encoder_opt.param_groups
        fixed = [g["lr"] for g in groups if g.get("fixed_lr")]
        assert fixed and fixed == pytest.approx([predictor_lr] * len(fixed))
        assert groups[0]["lr"] == pytest.approx(other_lr) and not groups[0].get("fixed_lr")


def test_entropy_term_moves_the_masker_by_its_gradient():
    """Plain SGD, float64: the masker's step with alpha_entropy differs from the step without
    by mask_lr * alpha * dE/dphi, E computed here from the masks before the step."""
    alpha, mask_lr = 0.7, 0.3
    results = []
    for weight in (0.0, alpha):
        cfg, models = tiny("optim.name=sgd", "optim.momentum=0", "optim.weight_decay=0",
                           f"optim.mask_lr={mask_lr}", f"masking.alpha_entropy={weight}")
        for module in (models.objective, models.masker, models.probe):
            module.double()
        encoder_opt, masker_opt = build_optimizers(cfg, models)
        a, b, y = batch(dtype=torch.float64)
        twin = copy.deepcopy(models.masker)
        stats = train_step(cfg, models, encoder_opt, masker_opt, a, b, y,
                           torch.Generator().manual_seed(0))
        results.append((models.masker, twin, stats))
    (plain, twin, _), (with_entropy, _, stats) = results
    value = size_entropy_term(twin(b))
    assert stats["entropy_term"] == pytest.approx(alpha * value.item())
    grads = torch.autograd.grad(value, list(twin.parameters()))
    for p, q, g in zip(with_entropy.parameters(), plain.parameters(), grads, strict=True):
        torch.testing.assert_close(p - q, mask_lr * alpha * g, rtol=1e-6, atol=1e-10)


def test_probe_on_both_views_is_the_mean_of_two_cross_entropies():
    cfg, models = tiny("train.probe_views=both", "masking.mode=none")
    encoder_opt, _ = build_optimizers(cfg, models)
    a, b, y = batch()
    twin = copy.deepcopy(models)  # train mode: batch statistics, as in the step
    with torch.no_grad():
        expected = 0.5 * sum(F.cross_entropy(twin.probe(twin.backbone(v)), y) for v in (a, b))
    stats = train_step(cfg, models, encoder_opt, None, a, b, y, torch.Generator().manual_seed(0))
    assert stats["probe_loss"] == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("schedule", ["fast", "reference", "single-pass"])
def test_unmasked_policy_tracks_only_the_unmasked_view(schedule):
    """train.bn_stats=unmasked: after a step the running statistics are those of view a
    encoded N times (once per mask, the reference's count) and of nothing masked."""
    cfg, models = tiny("train.bn_stats=unmasked", f"masking.schedule={schedule}")
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    a, b, y = batch()
    twin = copy.deepcopy(models.objective)
    with torch.no_grad():
        for _ in range(cfg.masker.n_masks):
            twin.forward_views(a)
    train_step(cfg, models, encoder_opt, masker_opt, a, b, y, torch.Generator().manual_seed(0))
    trained = dict(models.objective.named_buffers())
    for name, buffer in twin.named_buffers():
        torch.testing.assert_close(trained[name], buffer, msg=name)


def test_bn_policy_changes_buffers_not_parameters():
    """Training normalises with batch statistics: the policy moves only the running ones."""
    runs = []
    for policy in ("mixed", "unmasked"):
        cfg, models = tiny(f"train.bn_stats={policy}")
        encoder_opt, masker_opt = build_optimizers(cfg, models)
        for step in range(2):
            a, b, y = batch(seed=step)
            train_step(cfg, models, encoder_opt, masker_opt, a, b, y,
                       torch.Generator().manual_seed(step))
        runs.append(models.objective)
    mixed, unmasked = runs
    for (name, p), q in zip(mixed.named_parameters(), unmasked.parameters(), strict=True):
        assert torch.equal(p, q), name
    means = [(m, u) for (n, m), u in zip(mixed.named_buffers(), unmasked.buffers(), strict=True)
             if "running_mean" in n]
    assert all(not torch.equal(m, u) for m, u in means)


def test_simsiam_step_loss_is_the_flagged_terms_summed_over_masks():
    cfg, models = tiny("masking.use_symmetry_mask=false", "masking.use_both_mask=false",
                       objective="simsiam")
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    a, b, y = batch()
    twin = copy.deepcopy(models)
    stats = train_step(cfg, models, encoder_opt, masker_opt, a, b, y,
                       torch.Generator().manual_seed(0))
    cos = F.cosine_similarity
    with torch.no_grad():
        masks_b, masks_a = twin.masker(b), twin.masker(a)
        total = 0.0
        for n in range(3):  # the reference's loop: four passes per mask, then the terms' mean
            va, vb = twin.objective.forward_views(a), twin.objective.forward_views(b)
            vam = twin.objective.forward_views(a * (1 - masks_a[:, n : n + 1]))
            vbm = twin.objective.forward_views(b * (1 - masks_b[:, n : n + 1]))
            terms = [(vam, vb), (vbm, va), (va, vb), (vb, va)]  # masked p first; no-mask pair
            total += sum(-cos(p["p"], z["z"]).mean() for p, z in terms) / len(terms)
    assert stats["loss"] == pytest.approx(float(total), rel=1e-5)


@pytest.mark.parametrize("preset", sorted(SCRIPT_ARGS))
def test_every_paper_recipe_steps(preset):
    """The preset's recipe (LARS clip, per-epoch schedule, probe on both views, entropy,
    SimSiam terms, ADIOS-s draws), shrunk to the built-in scenes, trains two finite steps."""
    base = load_config([f"preset={preset}"])
    small = ["data.name=shapes", "data.split=train", "data.image_size=32", "data.load_size=null",
             "data.num_train=16", "data.num_val=8", "data.num_test=8", "masker.fbase=8",
             "objective.proj_hidden=32", "objective.proj_out=16", "optim.batch_size=8",
             "train.device=cpu", "train.epochs=2"]
    if base.model.backbone == "resnet18":
        small += ["model.width=4", "model.stem=cifar"]
    if base.masker.num_blocks is not None:
        small.append("masker.num_blocks=3")
    if base.objective.pred_hidden is not None:
        small.append("objective.pred_hidden=32")
    cfg = load_config([f"preset={preset}", *small])
    trainer = build_trainer(cfg, 3, torch.device("cpu"), steps_per_epoch=2)
    trainer.models.objective.train()
    for step in range(2):
        a, b, y = batch(seed=step)
        stats = trainer.step(a, b, y, torch.Generator().manual_seed(step), step)
        assert all(math.isfinite(v) for v in stats.values() if isinstance(v, float))
    assert trainer.encoder_opt.param_groups[0]["clip"]
    assert trainer.encoder_opt.param_groups[0]["lr"] == pytest.approx(0.003)  # epoch 0


def test_deterministic_option_is_applied_and_two_runs_end_equal(monkeypatch):
    """train.deterministic sets torch's process-wide switches (what a GPU's exact resume needs;
    on a CPU they change nothing, so only the switches and the equal reruns are checked here)."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    backends = torch.backends
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), backends.cudnn.benchmark,
             backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32)
    cfg, _ = tiny("train.deterministic=true", "data.num_train=16", "data.num_val=8",
                  "data.num_test=8", "train.knn_bank=16")
    try:
        weights = []
        for _ in range(2):
            s = engine.setup(cfg)
            for _ in itertools.islice(engine.iterations(s), 2):
                pass
            weights.append(copy.deepcopy(s.models.objective.state_dict()))
        assert torch.are_deterministic_algorithms_enabled()
        assert not backends.cudnn.benchmark and not backends.cudnn.allow_tf32
        assert not backends.cuda.matmul.allow_tf32
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        backends.cudnn.benchmark, backends.cudnn.allow_tf32 = saved[2], saved[3]
        backends.cuda.matmul.allow_tf32 = saved[4]
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


# ----------------------------------------------------------------------------- item 4: host reads

_READS = ("item", "tolist", "__float__", "__int__", "__bool__")


def _count_host_reads(monkeypatch) -> list[str]:
    """Every .item()/.tolist()/float()/int()/bool() of a tensor that adios code makes: on a GPU
    each waits for the device (counted on CPU tensors, where they cost nothing)."""
    root = os.path.dirname(engine.__file__)
    reads: list[str] = []
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code
            if caller.co_filename.startswith(root):
                reads.append(f"{os.path.basename(caller.co_filename)}:{caller.co_name}:{_name}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return reads


def _token_models(mode: str):
    from adios.models.token_masker import TokenMasker
    from adios.models.vit import ViTBackbone
    from adios.objectives.simclr import SimCLR

    cfg = load_config(["preset=shapes-paper", "model.backbone=vit_tiny", "train.device=cpu",
                       f"masking.mode={mode}"])
    torch.manual_seed(0)
    backbone = ViTBackbone(32, 8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    masker = TokenMasker(32, 8, dim=16, heads=2) if mode == "token-adios" else None
    return cfg, engine.Models(SimCLR(backbone, proj_hidden=16, proj_out=8, temperature=0.2),
                              masker, torch.nn.Linear(16, 3))


@pytest.mark.parametrize("overrides", [
    ("masking.mode=none",), ("masking.mode=adios",), ("masking.mode=adios-s",),
    ("masking.mode=adios", "masking.schedule=single-pass"),
    ("masking.mode=adios", "masking.schedule=reference"),
    ("masking.mode=adios", "train.probe_views=both", "train.bn_stats=mixed"),
    ("masking.mode=mae",), ("masking.mode=beit",), ("masking.mode=rectangles",),
    ("masking.mode=token-random",), ("masking.mode=token-adios",),
])
def test_item4_a_step_reads_its_statistics_from_the_device_once(monkeypatch, overrides):
    """One host read per step, after both players' backward passes are queued: read_stats'
    batched .tolist() (issue 25, item 4). BEiT's seed read is of a CPU generator's draw."""
    mode = overrides[0].split("=")[1]
    if mode.startswith("token"):
        cfg, models = _token_models(mode)
    else:
        cfg, models = tiny(*overrides)
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    a, b, labels = batch()
    reads = _count_host_reads(monkeypatch)
    stats = train_step(cfg, models, encoder_opt, masker_opt, a, b, labels,
                       torch.Generator().manual_seed(0))
    host_only = ["schemes.py:__call__:__int__"] if mode == "beit" else []
    assert reads == [*host_only, "engine.py:read_stats:tolist"]
    assert all(isinstance(v, float | list) for v in stats.values()), stats
    assert math.isfinite(stats["loss"]) and stats["probe_acc"] <= 1.0


def test_item4_read_stats_keeps_names_shapes_and_values():
    stats = {"loss": torch.tensor(1.5, dtype=torch.float64), "sizes": torch.tensor([0.25, 0.5]),
             "kept": 3.0, "acc": torch.tensor(2) / torch.tensor(3)}
    assert engine.read_stats(stats) == {"loss": 1.5, "sizes": [0.25, 0.5], "kept": 3.0,
                                        "acc": (torch.tensor(2) / torch.tensor(3)).item()}


def test_item4_index_copies_to_cuda_are_queued_from_pinned_memory(monkeypatch):
    """A copy from pageable memory makes the host wait for the GPU; pinned + non_blocking
    queues it (mocked: this machine has no CUDA)."""
    from adios.perf import upload

    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory",
                        lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to",
                        lambda self, *args, **kwargs: calls.append((args, kwargs)) or self)
    upload(torch.arange(3), torch.device("cuda"))
    assert calls == ["pin", ((torch.device("cuda"),), {"non_blocking": True})]
    calls.clear()
    upload(torch.arange(3), torch.device("cpu"))
    assert calls == [((torch.device("cpu"),), {})]
