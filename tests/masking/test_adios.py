"""The ADIOS game: the penalty, both players' steps, ADIOS-s, and fast vs reference schedules."""

import copy
import math

import pytest
import torch
from smooth import relu_to_silu

from adios.config import load_config
from adios.masking.adios import (
    frozen,
    masked_copies,
    one_mask_per_sample,
    penalty_term,
    reverse_gradient,
    siamese_loss,
    sparsity_penalty,
)
from adios.train import build_models, build_optimizers, train_step

# float round-off, bf16 or channels_last kernels: .ci/run runs these again under AVX2 kernels
pytestmark = pytest.mark.isa

TINY = [
    "preset=shapes-paper",  # a base that does not move when the default preset is tuned
    "model.width=4", "masker.fbase=8", "masker.n_masks=3", "objective.proj_hidden=32",
    "objective.proj_out=16", "optim.batch_size=8", "train.device=cpu",
]


def tiny(*overrides: str, objective: str = "simclr"):
    extra = [] if objective == "simclr" else ["objective.pred_hidden=32"]
    cfg = load_config([*TINY, f"objective.name={objective}", *extra, *overrides])
    torch.manual_seed(0)
    models = build_models(cfg, num_classes=3, device=torch.device("cpu"))
    return cfg, models


def batch(n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 3, 32, 32, generator=g)
    b = a + 0.3 * torch.randn(n, 3, 32, 32, generator=g)
    return a, b, torch.randint(0, 3, (n,), generator=g)


# ----------------------------------------------------------------------------- penalty


def test_penalty_equals_inverse_sine_inside():
    s = torch.linspace(0.02, 0.98, 97, dtype=torch.float64)
    assert torch.allclose(sparsity_penalty(s), 1 / torch.sin(math.pi * s))


@pytest.mark.parametrize("edge", [0.0, 1.0])
def test_penalty_is_finite_at_the_edges_and_pushes_back_inside(edge):
    s = torch.tensor([edge], dtype=torch.float64, requires_grad=True)
    value = sparsity_penalty(s)
    value.backward()
    assert torch.isfinite(value).all() and torch.isfinite(s.grad).all()
    # gradient descent on the penalty moves an empty mask up and a full mask down
    assert (s.grad.item() < 0) if edge == 0.0 else (s.grad.item() > 0)
    assert value.item() > 1 / math.sin(math.pi * 0.01) - 1e-6  # at least the value at the clamp


def test_penalty_term_is_minimal_for_equal_masks():
    equal = torch.full((2, 4, 8, 8), 0.25)
    skewed = torch.cat([torch.full((2, 1, 8, 8), 0.7), torch.full((2, 3, 8, 8), 0.1)], dim=1)
    assert penalty_term(equal).item() == pytest.approx(4 / math.sin(math.pi / 4))
    assert penalty_term(skewed) > penalty_term(equal)


# ----------------------------------------------------------------------------- masking


def test_masked_copies_are_mask_major():
    x = torch.randn(2, 3, 4, 4)
    masks = torch.softmax(torch.randn(2, 3, 4, 4), dim=1)
    copies = masked_copies(x, masks)
    for n in range(3):
        for i in range(2):
            assert torch.allclose(copies[n * 2 + i], x[i] * (1 - masks[i, n]))


def test_one_mask_per_sample_uses_each_samples_index():
    x = torch.randn(5, 3, 4, 4)
    masks = torch.softmax(torch.randn(5, 3, 4, 4), dim=1)
    index = torch.tensor([2, 0, 1, 1, 0])
    out = one_mask_per_sample(x, masks, index)
    for i in range(5):
        assert torch.allclose(out[i], x[i] * (1 - masks[i, index[i]]))


# ----------------------------------------------------------------------------- the two players


def _ssl_loss(cfg, models, a, b, masks, index):
    with torch.no_grad(), frozen(models.objective):
        loss, _ = siamese_loss(models.objective, a, b, masks, cfg.masking.mode, index_b=index)
    return loss.item()


@pytest.mark.parametrize("mode", ["adios", "adios-s"])
def test_encoder_step_lowers_and_masker_step_raises_the_loss(mode):
    cfg, models = tiny(f"masking.mode={mode}", "optim.name=sgd", "optim.lr=0.05",
                       "optim.mask_lr=0.5", "masking.alpha_sparsity=0.0")
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    a, b, y = batch()
    models.objective.train()
    with torch.no_grad():
        masks = models.masker(b)
    # ADIOS-s draws a mask per sample: the step's first draw from its generator
    drawn = torch.randint(3, (8,), generator=torch.Generator().manual_seed(0))
    before = _ssl_loss(cfg, models, a, b, masks, drawn)
    snapshot = copy.deepcopy(models.masker.state_dict())
    train_step(cfg, models, encoder_opt, None, a, b, y, torch.Generator().manual_seed(0))
    after_encoder = _ssl_loss(cfg, models, a, b, masks, drawn)
    assert after_encoder < before  # the encoder minimises
    models.masker.load_state_dict(snapshot)  # masker untouched by the encoder step anyway
    frozen_encoder = copy.deepcopy(models.objective.state_dict())
    losses = []
    for _ in range(2):
        with torch.no_grad():
            masks = models.masker(b)
        losses.append(_ssl_loss(cfg, models, a, b, masks, torch.zeros(8, dtype=torch.long)))
        _masker_only_step(cfg, models, masker_opt, a, b)
    assert losses[1] > losses[0]  # the masker maximises
    for key, value in models.objective.state_dict().items():
        assert torch.equal(value, frozen_encoder[key]), key


def _masker_only_step(cfg, models, masker_opt, a, b):
    masks = models.masker(b)
    with frozen(models.objective):
        adv, _ = siamese_loss(models.objective, a, b, masks, cfg.masking.mode,
                              index_b=torch.zeros(b.shape[0], dtype=torch.long))
    masker_opt.zero_grad()
    (-(adv - cfg.masking.alpha_sparsity * penalty_term(masks))).backward()
    masker_opt.step()


@pytest.mark.parametrize("objective", ["simclr", "byol", "simsiam"])
def test_masker_step_leaves_every_encoder_parameter_and_statistic_untouched(objective):
    cfg, models = tiny(objective=objective)
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    a, b, _ = batch()
    models.objective.train()
    before_objective = copy.deepcopy(models.objective.state_dict())
    before_masker = copy.deepcopy(models.masker.state_dict())
    _masker_only_step(cfg, models, masker_opt, a, b)
    after = models.objective.state_dict()
    for key, value in before_objective.items():  # weights AND batch-norm buffers
        assert torch.equal(value, after[key]), key
    assert any(not torch.equal(v, models.masker.state_dict()[k]) for k, v in before_masker.items())
    assert all(p.requires_grad for p in models.objective.backbone.parameters())


def test_full_train_step_changes_encoder_buffers_only_in_encoder_step():
    """Running statistics move exactly as in the encoder step alone (masker step frozen)."""
    cfg, models = tiny()
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    a, b, y = batch()
    models.objective.train()
    twin = copy.deepcopy(models)
    twin_opts = build_optimizers(cfg, twin)
    twin_opts[0].load_state_dict(encoder_opt.state_dict())
    train_step(cfg, models, encoder_opt, masker_opt, a, b, y, torch.Generator().manual_seed(0))
    train_step(cfg, twin, twin_opts[0], None, a, b, y, torch.Generator().manual_seed(0))
    for key, value in twin.objective.state_dict().items():
        assert torch.equal(value, models.objective.state_dict()[key]), key


def _occlude_by_loop(x, masks, index):
    """Sample i times (1 - its mask index[i]), one sample at a time."""
    return torch.stack([x[i] * (1 - masks[i, int(index[i])]) for i in range(x.shape[0])])


@pytest.mark.parametrize("size", [7, 5, 3])
def test_adios_s_occludes_each_sample_of_an_odd_batch_by_its_drawn_mask(size):
    """ADIOS-s on batches that N=3 masks do not divide: the encoder sees each sample of view b
    times (1 - its own drawn mask), both losses equal the pair loss on views occluded one sample
    at a time, and one plain SGD step moves the masker by -lr times the gradient of
    -(loss - alpha * penalty) computed from those views."""
    mask_lr = 0.5
    cfg, models = tiny("masking.mode=adios-s", "optim.name=sgd", "optim.momentum=0",
                       "optim.weight_decay=0", f"optim.mask_lr={mask_lr}",
                       "masking.alpha_sparsity=0.5")
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    a, b, y = batch(size)
    models.objective.train()
    index = torch.randint(3, (size,), generator=torch.Generator().manual_seed(0))  # first draw
    twin = copy.deepcopy(models)
    masks = twin.masker(b)
    occluded = _occlude_by_loop(b, masks.detach(), index)
    with torch.no_grad():
        expected_loss = twin.objective.pair_loss(twin.objective.forward_views(a),
                                                 twin.objective.forward_views(occluded))
    seen = []
    hook = models.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    stats = train_step(cfg, models, encoder_opt, masker_opt, a, b, y,
                       torch.Generator().manual_seed(0))
    hook.remove()
    assert torch.equal(seen[0], a) and torch.equal(seen[1], occluded)
    assert stats["loss"] == pytest.approx(expected_loss.item(), rel=1e-6)
    # the masker's move, against the encoder as the encoder step left it (frozen)
    with frozen(models.objective):
        encoded = models.objective.forward_views(_occlude_by_loop(b, masks, index))
        adv = models.objective.pair_loss(models.objective.forward_views(a), encoded)
    # the penalty: per mask, the batch mean of 1 / sin(pi * size) of each sample's mask size
    penalty = sum(sparsity_penalty(masks[:, n].mean(dim=(1, 2))).mean() for n in range(3))
    grads = torch.autograd.grad(-(adv - 0.5 * penalty), list(twin.masker.parameters()))
    assert stats["adv_loss"] == pytest.approx(adv.item(), rel=1e-6)
    assert stats["penalty"] == pytest.approx(penalty.item(), rel=1e-6)
    assert stats["mask_sizes"] == pytest.approx(masks.mean(dim=(0, 2, 3)).tolist())
    moved = 0.0
    for p, p0, g in zip(models.masker.parameters(), twin.masker.parameters(), grads, strict=True):
        torch.testing.assert_close(p - p0, -mask_lr * g, rtol=1e-4, atol=1e-7)
        moved = max(moved, (p - p0).abs().max().item())
    assert moved > 1e-3


@pytest.mark.parametrize("bn_stats", ["mixed", "unmasked"])
@pytest.mark.parametrize("objective", ["simclr", "byol", "simsiam"])
@pytest.mark.parametrize("mode", ["adios", "adios-s"])
def test_fast_schedule_equals_reference_after_three_steps(objective, mode, bn_stats):
    """Same parameter updates and running statistics, to float64 round-off, under both
    batch-norm policies: the fast path is the same computation.

    (The float32 version is the next test: with ReLU networks float32 needs a smooth stand-in.)
    """
    results = []
    for schedule in ("reference", "fast"):
        cfg, models = tiny(f"masking.mode={mode}", f"masking.schedule={schedule}",
                           f"train.bn_stats={bn_stats}", objective=objective)
        models.objective.double()
        models.masker.double()
        models.probe.double()
        encoder_opt, masker_opt = build_optimizers(cfg, models)
        models.objective.train()
        for step in range(3):
            a, b, y = batch(seed=step)
            train_step(cfg, models, encoder_opt, masker_opt, a.double(), b.double(), y,
                       torch.Generator().manual_seed(step))
            models.objective.after_encoder_step(step, 10)
        results.append(models)
    reference, fast = results
    for part in ("objective", "masker"):
        ref_params = dict(getattr(reference, part).named_parameters())
        for name, p in getattr(fast, part).named_parameters():
            assert torch.allclose(p, ref_params[name], atol=1e-10, rtol=0), f"{part}.{name}"
    # batch-norm running statistics (and batch counts) too: the fast schedule replays its
    # batched statistics in the reference's order
    ref_buffers = dict(reference.objective.named_buffers())
    buffers = list(fast.objective.named_buffers())
    assert any("running_mean" in name for name, _ in buffers)
    for name, buffer in buffers:
        assert torch.allclose(buffer.double(), ref_buffers[name].double(), atol=1e-10, rtol=0), name


@pytest.mark.parametrize("mode", ["adios", "adios-s"])
def test_fast_schedule_equals_reference_after_three_steps_in_float32(mode):
    """Float32, tolerance 1e-5, while every run moves its parameters by more than 1e-2.

    The two schedules sum in different orders, so their float32 parameters differ by ~1e-7 after
    one step. With ReLU that does not stay small: a 1e-7 change flips the few units whose input
    is that close to zero, and each flip changes a layer's gradient by ~1/sqrt(units) (~1e-3 of
    it here, measured in float64 too), so after three steps the schedules differ by up to 1e-3
    for reasons that have nothing to do with the schedule. With SiLU the gradient is a smooth
    function of the parameters and round-off stays round-off (measured: below 1e-6 over 12
    seeds). A schedule error (pooled batch-norm statistics, a stale encoder in the masker step)
    changes the updates by a large fraction of the 1e-2 they move.
    """
    tolerance = 1e-5
    results, moved = [], []
    for schedule in ("reference", "fast"):
        cfg, models = tiny(f"masking.mode={mode}", f"masking.schedule={schedule}",
                           "optim.name=sgd", "optim.lr=0.01", "optim.mask_lr=0.01")
        relu_to_silu(models.objective, models.masker)
        encoder_opt, masker_opt = build_optimizers(cfg, models)
        models.objective.train()
        start = [p.detach().clone() for p in _players(models)]
        for step in range(3):
            a, b, y = batch(seed=step)
            train_step(cfg, models, encoder_opt, masker_opt, a, b, y,
                       torch.Generator().manual_seed(step))
        moved.append(max((p - q).abs().max().item()
                         for p, q in zip(_players(models), start, strict=True)))
        results.append(list(_players(models)) + [b.float() for b in models.objective.buffers()])
    assert min(moved) > 1e3 * tolerance
    for ref, fast in zip(*results, strict=True):  # parameters, then BN running statistics
        assert torch.allclose(fast, ref, atol=tolerance, rtol=0)


def _players(models):
    return [*models.objective.parameters(), *models.masker.parameters()]


def _count_encoder_passes(models, batch_size):
    """Encoder forwards and backwards, in units of one batch of images (N copies count N)."""
    counts = {"forward": 0, "backward": 0}

    def add(kind, images):
        counts[kind] += images / batch_size

    def on_forward(module, inputs, output):
        add("forward", inputs[0].shape[0])
        if output.requires_grad:
            output.register_hook(lambda grad: add("backward", grad.shape[0]))

    return counts, models.backbone.register_forward_hook(on_forward)


@pytest.mark.parametrize(
    "mode, schedule, forwards, backwards",
    [
        ("adios", "reference", 16, 12),  # 2N + 2N forwards; 2N + N backwards (issue: +2 probe)
        ("adios", "fast", 10, 9),  # (1 + N) twice; 1 + N, then N through the frozen encoder
        ("adios", "single-pass", 5, 5),
        ("adios-s", "fast", 4, 3),
        ("adios-s", "single-pass", 2, 2),
        ("none", "fast", 2, 2),
    ],
)
def test_encoder_passes_per_step(mode, schedule, forwards, backwards):
    """N=4: the counts of the issue; the online probe reuses view a's features (no extra pass)."""
    cfg, models = tiny(f"masking.mode={mode}", f"masking.schedule={schedule}", "masker.n_masks=4")
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    models.objective.train()
    a, b, y = batch()
    counts, handle = _count_encoder_passes(models, batch_size=8)
    stats = train_step(cfg, models, encoder_opt, masker_opt, a, b, y,
                       torch.Generator().manual_seed(0))
    handle.remove()
    assert counts == {"forward": forwards, "backward": backwards}
    assert "probe_acc" in stats


def test_reverse_gradient_is_identity_forward_and_negates_backward():
    x = torch.randn(5, requires_grad=True)
    y = reverse_gradient(x)
    assert torch.equal(y, x)
    (y * torch.arange(5.0)).sum().backward()
    assert torch.equal(x.grad, -torch.arange(5.0))
    assert reverse_gradient(None) is None


@pytest.mark.parametrize("mode", ["adios", "adios-s"])
def test_single_pass_moves_each_player_by_its_own_gradient(mode):
    """One step of plain SGD: the encoder descends the SSL loss with the masks fixed, the masker
    descends -(loss - alpha * penalty) with the encoder as it was before the step, both computed
    here independently of the training step (float64, so the comparison is tight)."""
    cfg, models = tiny(f"masking.mode={mode}", "masking.schedule=single-pass", "optim.name=sgd",
                       "optim.momentum=0", "optim.weight_decay=0", "optim.lr=0.05",
                       "optim.mask_lr=0.2", "masking.alpha_sparsity=0.5",
                       "train.bn_stats=mixed")  # the twin below updates them on every pass
    for module in (models.objective, models.masker, models.probe):
        module.double()
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    models.objective.train()
    a, b, y = (t.double() if t.is_floating_point() else t for t in batch())
    twin = copy.deepcopy(models)
    index = torch.randint(3, (8,), generator=torch.Generator().manual_seed(0))
    index = index if mode == "adios-s" else None

    # independent gradients at the pre-step parameters
    masks = twin.masker(b)
    with frozen(twin.objective):
        loss, _ = siamese_loss(twin.objective, a, b, masks, mode, index_b=index)
    (-(loss - 0.5 * penalty_term(masks))).backward()
    masker_grads = [p.grad.clone() for p in twin.masker.parameters()]
    loss, _ = siamese_loss(twin.objective, a, b, masks.detach(), mode, index_b=index)
    loss.backward()
    encoder_grads = [p.grad.clone() for p in twin.objective.parameters()]

    before = copy.deepcopy(models)
    train_step(cfg, models, encoder_opt, masker_opt, a, b, y, torch.Generator().manual_seed(0))
    pairs = [(models.objective, before.objective, encoder_grads, 0.05),
             (models.masker, before.masker, masker_grads, 0.2)]
    for after, start, grads, lr in pairs:
        for p, p0, g in zip(after.parameters(), start.parameters(), grads, strict=True):
            torch.testing.assert_close(p - p0, -lr * g, rtol=1e-9, atol=1e-12)
    # the running statistics are those of the twin's one unfrozen (encoder) loss
    twin_buffers = dict(twin.objective.named_buffers())
    for name, buffer in models.objective.named_buffers():
        torch.testing.assert_close(buffer, twin_buffers[name], rtol=1e-12, atol=1e-12, msg=name)


def test_single_pass_lowers_the_encoders_loss_and_raises_the_maskers():
    """On a fixed batch, each player's move alone goes its way: the new encoder with the old
    masker has a lower SSL loss, the new masker with the old encoder a higher one."""
    cfg, models = tiny("masking.schedule=single-pass", "optim.name=sgd", "optim.lr=0.05",
                       "optim.mask_lr=0.5", "masking.alpha_sparsity=0.0")
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    models.objective.train()
    a, b, y = batch()
    before = copy.deepcopy(models)
    train_step(cfg, models, encoder_opt, masker_opt, a, b, y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        old_masks, new_masks = before.masker(b), models.masker(b)
    start = _ssl_loss(cfg, before, a, b, old_masks, None)
    assert _ssl_loss(cfg, models, a, b, old_masks, None) < start  # encoder descended
    assert _ssl_loss(cfg, before, a, b, new_masks, None) > start  # masker ascended


def test_size_entropy_term_by_hand_and_its_gradient_makes_sizes_less_equal() -> None:
    from adios.masking.adios import size_entropy_term

    # Image 1: sizes (0.25, 0.75), image 2: (0.5, 0.5), as constant masks of 4 x 4 pixels.
    sizes = torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=torch.float64)
    masks = sizes[:, :, None, None].expand(2, 2, 4, 4).clone().requires_grad_(True)
    value = size_entropy_term(masks)
    # softmax(0.25, 0.75) = (1, e^0.5) / (1 + e^0.5); image 2 is uniform: 2 * 0.5 * log 0.5.
    q = 1 / (1 + math.exp(0.5))
    by_hand = q * math.log(q) + (1 - q) * math.log(1 - q) + math.log(0.5)
    assert value.item() == pytest.approx(by_hand, rel=1e-12)
    # Summed over the batch, not averaged: two copies of the batch give twice the value.
    assert size_entropy_term(torch.cat([masks, masks])).item() == pytest.approx(2 * by_hand)
    # The masker maximises + alpha_entropy * term: a small ascent step widens the size gap of
    # image 1, and the uniform image 2 is a stationary point.
    (grad,) = torch.autograd.grad(value, masks)
    step = grad.sum(dim=(2, 3))  # d term / d size, up to the 1 / pixels factor
    assert step[0, 1] > 0 > step[0, 0]
    torch.testing.assert_close(step[1], torch.zeros(2, dtype=torch.float64))
    # Two views (SimSiam): the reference softmaxes over the joined 2N sizes of an image.
    joined = size_entropy_term(masks[:1], masks[:1])
    p = torch.tensor([0.25, 0.75, 0.25, 0.75], dtype=torch.float64).softmax(0)
    assert joined.item() == pytest.approx((p * p.log()).sum().item())
