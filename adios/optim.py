"""Optimisers and schedules: LARS, parameter groups, warm-up + cosine learning rate, EMA momentum.

The training loop keeps each group's peak learning rate in ``group["base_lr"]`` (set by
:func:`param_groups` / :func:`build_optimizer`) and calls :func:`apply_schedule` once per step, so
groups with different peak rates (encoder, masker, probe) follow the same schedule shape. A group
with ``fixed_lr=True`` keeps its ``base_lr`` (SimSiam's predictor in the reference).
"""

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

ParamSource = nn.Module | Iterable[nn.Module | tuple[str, nn.Parameter]]


class LARS(Optimizer):
    """SGD with momentum whose per-parameter step is scaled by a layer-wise trust ratio.

    For a parameter ``w`` with gradient ``g`` the update direction is
    ``(g + wd * w) * eta * ||w|| / (||g|| + wd * ||w||)`` (with ``clip``: the ratio becomes
    ``min(ratio / lr, 1)``, so the effective rate never exceeds ``lr``), then heavy-ball momentum
    ``buf = momentum * buf + update`` and ``w -= lr * buf``. The ratio and weight decay apply only
    when both norms are positive: a zero weight or gradient has no scale to adapt to. Groups with
    ``lars_exclude=True`` (biases, norm parameters) get plain momentum SGD without weight decay,
    since rescaling them by their own small norms destabilises training.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        clip: bool = False,
        lars_exclude: bool = False,
    ):
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(
                f"invalid LARS setting: lr={lr}, momentum={momentum}, "
                f"weight_decay={weight_decay}, eta={eta}"
            )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            eta=eta,
            clip=clip,
            lars_exclude=lars_exclude,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if not group["lars_exclude"]:
                    update = self._scaled_update(param, update, group)
                buf = self.state[param].get("momentum_buffer")
                if buf is None:
                    buf = self.state[param]["momentum_buffer"] = update.clone()
                else:
                    buf.mul_(group["momentum"]).add_(update)
                param.add_(buf, alpha=-group["lr"])
        return loss

    @staticmethod
    def _scaled_update(param: Tensor, grad: Tensor, group: dict) -> Tensor:
        weight_decay, lr = group["weight_decay"], group["lr"]
        param_norm = torch.linalg.vector_norm(param)
        grad_norm = torch.linalg.vector_norm(grad)
        ratio = group["eta"] * param_norm / (grad_norm + weight_decay * param_norm)
        if group["clip"]:
            ratio = torch.clamp(ratio / lr, max=1.0)
        adaptable = (param_norm > 0) & (grad_norm > 0)
        # torch.where instead of a Python branch keeps the step free of device synchronisation.
        return torch.where(adaptable, (grad + weight_decay * param) * ratio, grad)


def param_groups(
    modules_or_named_params: ParamSource,
    weight_decay: float,
    lr: float | None = None,
    exclude_bias_and_norm: bool = True,
) -> list[dict]:
    """Split trainable parameters into a decayed LARS group and a group of biases and norm weights.

    Accepts a module, or an iterable of modules and/or ``(name, parameter)`` pairs. Every 1-D (or
    scalar) parameter - biases, BatchNorm/GroupNorm/LayerNorm affine weights - goes to the second
    group with ``weight_decay=0`` and ``lars_exclude=True``. Frozen parameters (e.g. a BYOL target
    network) and repeats of a shared parameter are skipped, so a whole objective can be passed.
    With ``lr`` given, each group also gets ``lr`` and ``base_lr``. Empty groups are dropped.
    """
    sources = modules_or_named_params
    if isinstance(sources, nn.Module):
        sources = [sources]
    seen: set[int] = set()
    decayed: list[Tensor] = []
    excluded: list[Tensor] = []
    for source in sources:
        named = source.named_parameters() if isinstance(source, nn.Module) else [source]
        for _, param in named:
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            is_bias_or_norm = exclude_bias_and_norm and param.ndim <= 1
            (excluded if is_bias_or_norm else decayed).append(param)

    groups = [
        {"params": decayed, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": excluded, "weight_decay": 0.0, "lars_exclude": True},
    ]
    if lr is not None:
        for group in groups:
            group["lr"] = group["base_lr"] = lr
    return [group for group in groups if group["params"]]


def build_optimizer(
    name: Literal["lars", "sgd", "adamw"],
    groups: Iterable[dict],
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    eta: float = 0.02,
    betas: tuple[float, float] = (0.9, 0.999),
    clip_lars: bool = False,
) -> Optimizer:
    """Build an optimiser over ``groups`` (see :func:`param_groups`); ``lr``/``weight_decay`` fill
    groups that lack them. Every group gets ``base_lr`` (its own ``lr`` if it has one) for
    :func:`apply_schedule`. ``sgd``/``adamw`` ignore ``lars_exclude`` but keep each group's
    weight decay, so biases and norm weights stay undecayed."""
    groups = [{**group} for group in groups]
    for group in groups:
        group.setdefault("base_lr", group.get("lr", lr))
    if name == "lars":
        return LARS(
            groups, lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip=clip_lars
        )
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected 'lars', 'sgd' or 'adamw'")


def warmup_cosine(
    step: int,
    total_steps: int,
    warmup_steps: int,
    base: float,
    final: float = 0.0,
    warmup_start: float = 0.0,
) -> float:
    """Learning rate at ``step``: linear from ``warmup_start * base`` (step 0) to ``base`` (step
    ``warmup_steps``), then half a cosine down to ``final`` at ``total_steps`` (held after)."""
    if step < warmup_steps:
        start = warmup_start * base
        return start + (base - start) * step / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = min((step - warmup_steps) / decay_steps, 1.0) if decay_steps > 0 else 1.0
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_warmup_cosine(
    epoch: int,
    epochs: int,
    warmup_epochs: int,
    base: float,
    final: float = 0.0,
    warmup_start: float = 0.0,
) -> float:
    """Learning rate during ``epoch`` under a schedule stepped once per epoch, the reference's
    (pl_bolts ``LinearWarmupCosineAnnealingLR``): linear from ``warmup_start`` (absolute) at epoch
    0 to ``base`` at epoch ``warmup_epochs - 1``, then half a cosine from ``base`` at epoch
    ``warmup_epochs`` towards ``final`` at epoch ``epochs``. Like the reference it does not clamp:
    an epoch past ``epochs`` (the encoder's shorter horizon) continues the cosine."""
    if epoch < warmup_epochs:
        return warmup_start + epoch * (base - warmup_start) / max(1, warmup_epochs - 1)
    span = max(1, epochs - warmup_epochs)
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / span))


def set_lr(optimizer: Optimizer, lr_per_group: float | Sequence[float]) -> None:
    """Set every group's learning rate, to one value or to one value per group."""
    if isinstance(lr_per_group, int | float):
        lr_per_group = [lr_per_group] * len(optimizer.param_groups)
    if len(lr_per_group) != len(optimizer.param_groups):
        raise ValueError(
            f"{len(lr_per_group)} learning rates for {len(optimizer.param_groups)} param groups"
        )
    for group, lr in zip(optimizer.param_groups, lr_per_group, strict=True):
        group["lr"] = lr


def apply_schedule(
    optimizer: Optimizer,
    step: int,
    total_steps: int,
    warmup_steps: int,
    final_fraction: float = 0.0,
    warmup_start: float = 0.0,
    warmup_start_lr: float | None = None,
) -> list[float]:
    """Set each group's lr from its ``base_lr`` by :func:`warmup_cosine` (final lr =
    ``final_fraction * base_lr``); returns the rates set, for logging. The warm-up starts at
    ``warmup_start * base_lr``, or at ``warmup_start_lr`` (absolute, the same for every group)."""
    lrs = []
    for group in optimizer.param_groups:
        base = group["base_lr"]
        start = warmup_start if warmup_start_lr is None else warmup_start_lr / base
        lrs.append(base if group.get("fixed_lr") else
                   warmup_cosine(step, total_steps, warmup_steps, base,
                                 final=final_fraction * base, warmup_start=start))
    set_lr(optimizer, lrs)
    return lrs


def apply_epoch_schedule(
    optimizer: Optimizer,
    epoch: int,
    epochs: int,
    warmup_epochs: int,
    final_fraction: float = 0.0,
    warmup_start_lr: float = 0.0,
) -> list[float]:
    """:func:`epoch_warmup_cosine` for every group from its ``base_lr``; returns the rates. A
    ``fixed_lr`` group holds its ``base_lr`` from epoch ``fixed_from_epoch`` (default 0) on."""
    lrs = [
        group["base_lr"] if group.get("fixed_lr") and epoch >= group.get("fixed_from_epoch", 0)
        else
        epoch_warmup_cosine(epoch, epochs, warmup_epochs, group["base_lr"],
                            final=final_fraction * group["base_lr"], warmup_start=warmup_start_lr)
        for group in optimizer.param_groups
    ]
    set_lr(optimizer, lrs)
    return lrs


def cosine_momentum(step: int, total_steps: int, base: float = 0.99, final: float = 1.0) -> float:
    """EMA momentum of a target network: ``base`` at step 0 rising to ``final`` at ``total_steps``
    along a half cosine (BYOL's ``1 - (1 - base)(cos(pi k / K) + 1) / 2`` when ``final=1``)."""
    progress = min(step / total_steps, 1.0) if total_steps > 0 else 1.0
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
