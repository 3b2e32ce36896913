"""The ADIOS game: the encoder matches masked views to unmasked ones; the masker hides what matters.

Both players' losses are built by :func:`siamese_loss`; the training loop only decides which
parameters each one moves. Two schedules compute the same numbers:

* ``reference``: the straightforward one, one encoder pass per mask, the unmasked view
  recomputed for every mask (as the paper's code does);
* ``fast``: the unmasked view encoded once, the N masked copies encoded in one batched pass whose
  batch norms keep per-copy statistics (``batch_groups``), so parameter updates are identical;
  the running statistics are recorded and replayed in the reference's order, so they are too.

A third, ``single-pass`` (see :func:`adios.engine.single_pass_step`), is a different game: both
players step on one forward and one backward, the masker's gradient arriving through
:func:`reverse_gradient` on the masks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any, Literal

import torch
from torch import Tensor, nn

from adios.models.norm import batch_groups, frozen_bn_stats, recorded_stats
from adios.objectives.base import SiameseObjective

Mode = Literal["adios", "adios-s", "none"]
Schedule = Literal["fast", "reference"]
Encoder = Callable[[Tensor], dict[str, Tensor]]

PENALTY_EPS = 0.01


def sparsity_penalty(sizes: Tensor, eps: float = PENALTY_EPS) -> Tensor:
    """``1 / sin(pi * s)``, continued along its tangent outside ``[eps, 1 - eps]``.

    The paper's penalty is infinite when a mask empties or fills the image. The tangent
    continuation keeps the value finite and the gradient pointing back inside, so a collapsed
    mask is pushed back instead of producing NaN (the reference code's ``+1e-10`` trap).
    """
    inside = sizes.clamp(eps, 1.0 - eps)
    sin, cos = torch.sin(math.pi * inside), torch.cos(math.pi * inside)
    slope = -math.pi * cos / sin**2
    return 1.0 / sin + slope.detach() * (sizes - inside)


def mask_sizes(masks: Tensor) -> Tensor:
    """Fraction of each image covered by each mask: (B, N, H, W) -> (B, N)."""
    return masks.mean(dim=(2, 3))


def mask_confidence(masks: Tensor) -> float:
    """Mean over pixels of the largest mask weight: 1/N for uniform masks, 1 for hard ones.

    Mask sizes sit near 1/N from the first step, so they say little; this moves as the masker
    commits each pixel to one mask.
    """
    return float(masks.amax(dim=1).mean())


def penalty_term(masks: Tensor) -> Tensor:
    """Sum over masks of the batch-mean penalty, the quantity the masker pays for.

    Computed in float32 even under bf16/fp16 autocast: near an empty mask the penalty is steep,
    and a 3-digit mask size would make it jump.
    """
    return sparsity_penalty(mask_sizes(masks.float())).mean(dim=0).sum()


def size_entropy_term(*masks: Tensor) -> Tensor:
    """``sum_batch sum_n softmax(s)_n * log softmax(s)_n``, ``s`` an image's mask sizes.

    The reference's ``alpha_entropy`` term: the masker's objective adds ``alpha_entropy`` times
    this (minus the entropy of the softmaxed sizes, summed over the batch, not averaged), so
    maximising it makes mask sizes less equal. Several mask tensors (SimSiam's two views) are
    joined along the mask axis first, as the reference joins them. Float32 under autocast.
    """
    sizes = torch.cat([mask_sizes(m.to(torch.promote_types(m.dtype, torch.float32)))
                       for m in masks], dim=1)
    return (sizes.softmax(dim=1) * sizes.log_softmax(dim=1)).sum()


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return -grad


def reverse_gradient(x: Tensor | None) -> Tensor | None:
    """Identity forward, negated gradient backward: behind it the masker ascends the loss that
    the encoder descends, so one backward pass serves both players (descent-ascent)."""
    return None if x is None else _ReverseGradient.apply(x)


def masked_copies(x: Tensor, masks: Tensor) -> Tensor:
    """``x * (1 - m_n)`` for every mask, stacked mask-major: (N * B, C, H, W)."""
    n_masks = masks.shape[1]
    keep = 1.0 - masks.transpose(0, 1).unsqueeze(2)  # (N, B, 1, H, W)
    return (x.unsqueeze(0) * keep).reshape(n_masks * x.shape[0], *x.shape[1:])


def one_mask_per_sample(x: Tensor, masks: Tensor, index: Tensor) -> Tensor:
    """ADIOS-s: sample i is occluded by its own mask ``index[i]``; any batch size works."""
    chosen = masks[torch.arange(x.shape[0], device=x.device), index]
    return x * (1.0 - chosen.unsqueeze(1))


def _rows(out: dict[str, Tensor], start: int, size: int) -> dict[str, Tensor]:
    return {key: value[start : start + size] for key, value in out.items()}


def _encode(
    objective: SiameseObjective, encode: Encoder, views: Tensor, groups: int
) -> dict[str, Tensor]:
    if groups == 1:
        return encode(views)
    with batch_groups(objective, groups):
        return encode(views)


def _occluded(
    x: Tensor, masks: Tensor | None, mode: Mode, index: Tensor | None
) -> tuple[Tensor, int]:
    if masks is None or mode == "none":
        return x, 1
    if mode == "adios-s":
        return one_mask_per_sample(x, masks, index), 1
    return masked_copies(x, masks), masks.shape[1]


def siamese_loss(
    objective: SiameseObjective,
    a: Tensor,
    b: Tensor,
    masks_b: Tensor | None,
    mode: Mode,
    *,
    masks_a: Tensor | None = None,
    index_b: Tensor | None = None,
    index_a: Tensor | None = None,
    schedule: Schedule = "fast",
    encode: Encoder | None = None,
    masked_stats: bool = True,
    occluded: tuple[bool, bool] = (False, False),
) -> tuple[Tensor, dict[str, Tensor]]:
    """Objective summed over masks, and the encoder outputs of the unmasked view ``a`` (for the
    probe).

    ``masks_b`` occludes view ``b``. Full ADIOS sums the pair loss over the N masked copies;
    ADIOS-s and ``none`` have a single term. Objectives that mask both views (SimSiam) take
    ``masks_a`` for view ``a`` and score each mask with their ``masked_loss`` of both views,
    unmasked and masked. ``encode`` replaces ``objective.forward_views`` for the encoder passes
    (a DistributedDataParallel wrapper of it, so that gradients are averaged).

    Batch-norm running statistics: every pass updates them in the order of the reference
    schedule (the ``fast`` schedule records its batched statistics and replays them in that
    order, :func:`adios.models.norm.recorded_stats`), or with ``masked_stats=False`` only the
    unmasked passes do (``train.bn_stats=unmasked``: what evaluation sees). ``occluded``: views
    a, b that come in already occluded (fixed schemes, mode ``none``) count as masked there.
    """
    encode = objective.forward_views if encode is None else encode
    masked = masks_b is not None and mode != "none"
    quiet = nullcontext if masked_stats else lambda: frozen_bn_stats(objective)
    if schedule == "reference" and mode == "adios":
        return _reference_loss(objective, encode, a, b, masks_b, masks_a, quiet)
    batch = a.shape[0]
    copies = masks_b.shape[1] if masked and mode == "adios" else 1
    with recorded_stats(objective) if copies > 1 else nullcontext() as recorder:
        views_b, groups = _occluded(b, masks_b, mode, index_b)
        if masked and masks_a is not None and objective.masks_both_views:
            views_a, _ = _occluded(a, masks_a, mode, index_a)
            out_a, out_b = encode(a), encode(b)
            with quiet():
                out_am = _encode(objective, encode, views_a, groups)
                out_bm = _encode(objective, encode, views_b, groups)
            loss = a.new_zeros(())
            for n in range(groups):
                rows = (_rows(out, n * batch, batch) for out in (out_am, out_bm))
                loss = loss + objective.masked_loss(out_a, out_b, *rows)
        else:
            with quiet() if occluded[0] else nullcontext():
                out_a = encode(a)
            with quiet() if masked or occluded[1] else nullcontext():
                out_b = _encode(objective, encode, views_b, groups)
            loss = a.new_zeros(())
            for n in range(groups):
                loss = loss + objective.pair_loss(out_a, _rows(out_b, n * batch, batch))
    if recorder is not None:
        recorder.replay(copies)
    return loss, out_a


def _reference_loss(
    objective: SiameseObjective,
    encode: Encoder,
    a: Tensor,
    b: Tensor,
    masks_b: Tensor,
    masks_a: Tensor | None,
    quiet: Callable[[], AbstractContextManager],
) -> tuple[Tensor, dict[str, Tensor]]:
    """One pass per mask, the unmasked views recomputed each time: the plain schedule."""
    loss = a.new_zeros(())
    first_a = None
    both = masks_a is not None and objective.masks_both_views
    for n in range(masks_b.shape[1]):
        out_a = encode(a)
        if both:
            out_b = encode(b)
            with quiet():
                out_am = encode(a * (1.0 - masks_a[:, n : n + 1]))
                out_bm = encode(b * (1.0 - masks_b[:, n : n + 1]))
            loss = loss + objective.masked_loss(out_a, out_b, out_am, out_bm)
        else:
            with quiet():
                out_bm = encode(b * (1.0 - masks_b[:, n : n + 1]))
            loss = loss + objective.pair_loss(out_a, out_bm)
        first_a = out_a if first_a is None else first_a
    return loss, first_a


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """The masker's turn: no gradient into, and no statistic update of, the given modules."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    with ExitStack() as stack:
        for module in modules:
            stack.enter_context(frozen_bn_stats(module))
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)
