import math

import pytest
import torch
from torch import nn

from adios.optim import (
    LARS,
    apply_epoch_schedule,
    apply_schedule,
    build_optimizer,
    cosine_momentum,
    epoch_warmup_cosine,
    param_groups,
    set_lr,
    warmup_cosine,
)


def lars_direction(w: list[float], g: list[float], lr: float, wd: float, eta: float, clip: bool):
    """The LARS update direction for one parameter, in plain Python."""
    w_norm = math.sqrt(sum(x * x for x in w))
    g_norm = math.sqrt(sum(x * x for x in g))
    ratio = eta * w_norm / (g_norm + wd * w_norm)
    if clip:
        ratio = min(ratio / lr, 1.0)
    return [(gi + wd * wi) * ratio for wi, gi in zip(w, g, strict=True)]


def test_lars_two_steps_match_hand_computation() -> None:
    lr, wd, eta, momentum = 0.5, 0.1, 0.02, 0.9
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    bias = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    optimizer = LARS(
        [
            {"params": [weight]},
            # Weight decay set on purpose: the exclusion must switch it off as well as the ratio.
            {"params": [bias], "lars_exclude": True},
        ],
        lr=lr,
        momentum=momentum,
        weight_decay=wd,
        eta=eta,
    )
    grad_w, grad_b = [0.6, 0.8], [0.5, 0.25]

    # Step 1: ratio = 0.02 * 5 / (1 + 0.1 * 5) = 1/15; direction = (g + 0.1 w) / 15 = [0.06, 0.08].
    w1 = [3.0 - lr * 0.06, 4.0 - lr * 0.08]
    weight.grad = torch.tensor([grad_w], dtype=torch.float64)
    bias.grad = torch.tensor(grad_b, dtype=torch.float64)
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.tensor([w1], dtype=torch.float64))
    b1 = [1.0 - lr * 0.5, -2.0 - lr * 0.25]
    torch.testing.assert_close(bias.detach(), torch.tensor(b1, dtype=torch.float64))

    # Step 2: heavy-ball momentum on the scaled directions; plain momentum SGD for the bias.
    d1 = [0.06, 0.08]
    d2 = lars_direction(w1, grad_w, lr, wd, eta, clip=False)
    buf = [momentum * a + b for a, b in zip(d1, d2, strict=True)]
    w2 = [w - lr * v for w, v in zip(w1, buf, strict=True)]
    b2 = [b - lr * (momentum * g + g) for b, g in zip(b1, grad_b, strict=True)]
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.tensor([w2], dtype=torch.float64))
    torch.testing.assert_close(bias.detach(), torch.tensor(b2, dtype=torch.float64))


@pytest.mark.parametrize("lr", [0.5, 0.01])
def test_lars_clip_caps_the_effective_rate_at_lr(lr: float) -> None:
    w, g = [3.0, 4.0], [0.6, 0.8]
    weight = nn.Parameter(torch.tensor(w, dtype=torch.float64).reshape(1, 2))
    weight.grad = torch.tensor(g, dtype=torch.float64).reshape(1, 2)
    LARS([weight], lr=lr, weight_decay=0.1, eta=0.02, clip=True).step()
    direction = lars_direction(w, g, lr, 0.1, 0.02, clip=True)
    expected = [wi - lr * di for wi, di in zip(w, direction, strict=True)]
    torch.testing.assert_close(
        weight.detach().flatten(), torch.tensor(expected, dtype=torch.float64)
    )
    if lr == 0.01:  # ratio / lr = 6.7 is clipped to 1: a plain SGD + weight decay step
        torch.testing.assert_close(
            weight.detach().flatten(),
            torch.tensor([3.0 - 0.01 * (0.6 + 0.3), 4.0 - 0.01 * (0.8 + 0.4)], dtype=torch.float64),
        )


@pytest.mark.parametrize(
    ("clip", "lr", "expected"),
    [
        # w = [3, 4], g = [0.6, 0.8], wd = 0.1, eta = 0.02: ||w|| = 5, ||g|| = 1,
        # r = 0.02 * 5 / (1 + 0.1 * 5) = 1/15, g + wd * w = [0.9, 1.2].
        (False, 0.5, [3.0 - 0.5 / 15 * 0.9, 4.0 - 0.5 / 15 * 1.2]),  # scale: lr * r * (g + wd w)
        (True, 0.5, [3.0 - 0.9 / 15, 4.0 - 1.2 / 15]),  # clip, r < lr: r * (g + wd w)
        (True, 0.01, [3.0 - 0.009, 4.0 - 0.012]),  # clip, lr < r: lr * (g + wd w)
        (False, 0.01, [3.0 - 0.01 / 15 * 0.9, 4.0 - 0.01 / 15 * 1.2]),
    ],
)
def test_lars_first_step_by_hand(clip: bool, lr: float, expected: list[float]) -> None:
    """One step from zero momentum: clip mode is min(r, lr) * (g + wd w), scale mode lr * r * ..."""
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    weight.grad = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    LARS([weight], lr=lr, weight_decay=0.1, eta=0.02, clip=clip).step()
    torch.testing.assert_close(weight.detach(), torch.tensor([expected], dtype=torch.float64))


def test_build_optimizer_passes_clip_mode() -> None:
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    groups = [{"params": [weight], "weight_decay": 0.1, "lars_exclude": False}]
    optimizer = build_optimizer("lars", groups, lr=0.5, weight_decay=0.1, clip_lars=True)
    weight.grad = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    optimizer.step()
    torch.testing.assert_close(
        weight.detach(), torch.tensor([[3.0 - 0.06, 4.0 - 0.08]], dtype=torch.float64)
    )


def test_lars_skips_scaling_for_zero_weights_and_missing_grads() -> None:
    zero = nn.Parameter(torch.zeros(2, 2))
    untouched = nn.Parameter(torch.ones(2, 2))
    zero.grad = torch.full((2, 2), 0.5)
    LARS([zero, untouched], lr=0.1, weight_decay=0.1).step()
    torch.testing.assert_close(zero.detach(), torch.full((2, 2), -0.05))
    torch.testing.assert_close(untouched.detach(), torch.ones(2, 2))


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2)
    )


def test_param_groups_split_biases_and_norm_weights() -> None:
    model = make_model()
    conv, bn, _, linear = model
    groups = param_groups(model, weight_decay=1e-4, lr=0.3)
    decayed, excluded = groups
    assert {id(p) for p in decayed["params"]} == {id(conv.weight), id(linear.weight)}
    assert {id(p) for p in excluded["params"]} == {id(bn.weight), id(bn.bias), id(linear.bias)}
    assert (decayed["weight_decay"], decayed["lars_exclude"]) == (1e-4, False)
    assert (excluded["weight_decay"], excluded["lars_exclude"]) == (0.0, True)
    assert all(g["lr"] == g["base_lr"] == 0.3 for g in groups)


def test_param_groups_accepts_named_params_and_skips_frozen_and_shared() -> None:
    model = make_model()
    model[0].weight.requires_grad_(False)
    groups = param_groups(
        [model, *model.named_parameters()], weight_decay=0.1, exclude_bias_and_norm=False
    )
    assert len(groups) == 1 and "lr" not in groups[0]
    assert len(groups[0]["params"]) == 4  # bn weight/bias, linear weight/bias; each once


def test_build_optimizer_keeps_undecayed_groups_and_base_lr() -> None:
    model = make_model()
    groups = param_groups(model, weight_decay=1e-4)
    for name, cls in [("lars", LARS), ("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)]:
        optimizer = build_optimizer(name, groups, lr=0.2, weight_decay=1e-4)
        assert isinstance(optimizer, cls)
        assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0]
        assert [g["base_lr"] for g in optimizer.param_groups] == [0.2, 0.2]
        model(torch.randn(2, 3, 3, 3)).sum().backward()
        optimizer.step()
    assert "base_lr" not in groups[0]  # the caller's dicts are left alone
    with pytest.raises(ValueError, match="rmsprop"):
        build_optimizer("rmsprop", groups, lr=0.1, weight_decay=0.0)


def test_warmup_cosine_values() -> None:
    kwargs = {"total_steps": 110, "warmup_steps": 10, "base": 2.0, "final": 0.2}
    assert warmup_cosine(0, **kwargs) == 0.0
    assert warmup_cosine(0, **kwargs, warmup_start=0.1) == pytest.approx(0.2)
    assert warmup_cosine(5, **kwargs) == pytest.approx(1.0)
    assert warmup_cosine(10, **kwargs) == pytest.approx(2.0)
    assert warmup_cosine(60, **kwargs) == pytest.approx(1.1)  # halfway down the cosine
    assert warmup_cosine(110, **kwargs) == pytest.approx(0.2)
    assert warmup_cosine(500, **kwargs) == pytest.approx(0.2)
    assert warmup_cosine(0, total_steps=5, warmup_steps=0, base=1.0) == pytest.approx(1.0)


def test_epoch_warmup_cosine_follows_the_reference_scheduler() -> None:
    """pl_bolts' closed form: warm-up over warmup_epochs - 1 intervals, cosine after, no clamp."""
    kwargs = {"epochs": 10, "warmup_epochs": 3, "base": 1.0, "final": 0.0, "warmup_start": 0.1}
    assert [epoch_warmup_cosine(e, **kwargs) for e in range(3)] == pytest.approx([0.1, 0.55, 1.0])
    assert epoch_warmup_cosine(3, **kwargs) == pytest.approx(1.0)
    assert epoch_warmup_cosine(6.5, **kwargs) == pytest.approx(0.5)  # halfway down
    assert epoch_warmup_cosine(10, **kwargs) == pytest.approx(0.0, abs=1e-12)
    # past the horizon the cosine rises again, as the reference's does (encoder horizon
    # epochs - train_mask_epoch): one epoch past is cos(pi * 8/7)
    assert epoch_warmup_cosine(11, **kwargs) == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 7)))


def test_apply_schedule_absolute_warmup_start_is_shared_by_groups() -> None:
    model = make_model()
    optimizer = build_optimizer(
        "lars", param_groups(model, weight_decay=0.0), lr=1.0, weight_decay=0.0
    )
    optimizer.param_groups[1]["base_lr"] = 0.1
    assert apply_schedule(optimizer, 0, 20, 4, warmup_start_lr=0.003) == pytest.approx(
        [0.003, 0.003]
    )
    assert apply_schedule(optimizer, 2, 20, 4, warmup_start_lr=0.003) == pytest.approx(
        [0.5015, 0.0515]
    )
    assert apply_epoch_schedule(optimizer, 1, 10, 3, warmup_start_lr=0.003) == pytest.approx(
        [0.5015, 0.0515]
    )
    optimizer.param_groups[1]["fixed_lr"] = True  # e.g. SimSiam's predictor: never scheduled
    assert apply_schedule(optimizer, 0, 20, 4, warmup_start_lr=0.003) == pytest.approx([0.003, 0.1])
    cosine = 0.5 * (1 + math.cos(math.pi * 6 / 7))
    assert apply_epoch_schedule(optimizer, 9, 10, 3) == pytest.approx([cosine, 0.1])


def test_apply_schedule_scales_each_group_by_its_base_lr() -> None:
    model = make_model()
    optimizer = build_optimizer(
        "lars", param_groups(model, weight_decay=0.0), lr=1.0, weight_decay=0.0
    )
    optimizer.param_groups[1]["base_lr"] = 0.1
    assert apply_schedule(optimizer, 4, 20, 4) == pytest.approx([1.0, 0.1])
    assert apply_schedule(optimizer, 20, 20, 4, final_fraction=0.5) == pytest.approx([0.5, 0.05])
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.05])
    set_lr(optimizer, 0.3)
    assert [g["lr"] for g in optimizer.param_groups] == [0.3, 0.3]
    with pytest.raises(ValueError):
        set_lr(optimizer, [0.1])


def test_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0, 100) == pytest.approx(0.99)
    assert cosine_momentum(50, 100) == pytest.approx(0.995)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    assert cosine_momentum(25, 100, base=0.9, final=0.98) == pytest.approx(
        0.98 - 0.08 * (math.cos(math.pi / 4) + 1) / 2
    )
