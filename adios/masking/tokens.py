"""Token masking: the encoder (a ViT) sees only a subset of patch tokens, chosen at random or by
a learned adversary (``masking.mode`` = ``token-random`` / ``token-adios``).

The game is ADIOS's with a discrete move. Per image the token masker
(:class:`~adios.models.token_masker.TokenMasker`) scores the L patches; the visible set is ``K =
round(keep_ratio * L)`` patches drawn without replacement by Gumbel top-k, i.e. an ordered
Plackett-Luce sample. ``token-random`` is the same path with all scores equal (uniform subsets).
The encoder minimises the objective on the visible tokens; the masker maximises it.

Gradient estimator (the masker's): the score function (REINFORCE) of the ordered draw,

    grad E[r] = E[(r_i - b_i) * grad log P(o_i1, ..., o_iK)],

with ``r_i`` the loss of image ``i`` and the leave-one-out baseline ``b_i`` = the mean loss of
the *other* images of the batch. The loss depends on the set only, and the ordered draw is the
random variable actually sampled, so its log-probability (a product of softmaxes over the
patches not yet drawn) is exact and cheap; ``b_i`` does not depend on image ``i``'s draw, so it
lowers the variance without bias. Bias stated: for MAE the reward of image ``i`` depends on its
own draw only and the estimator is unbiased (tests/masking/test_tokens.py checks it against the
exact gradient on a toy problem). For SimCLR, image ``i``'s draw also changes the other images'
losses (it is their negative); crediting each draw with its own image's loss drops those
cross-terms (each about 1/B of the whole). A straight-through estimator (hard top-k forward,
softmax backward) was rejected: on the same toy problem its expectation is not the gradient,
not even in direction (the test shows it).

Regulariser: adversarial scores tend to collapse onto the same patches for every image (an
image-independent pattern that always hurts, like the stripes a free pixel masker finds). The
masker pays ``token_diversity * KL(mean_i softmax(s_i) || uniform)``: the batch-mean selection
distribution must stay spread over the grid, while each image may still concentrate its own.

The step (:func:`adios.engine.token_train_step`) draws the visible tokens, steps the encoder,
then the masker. Schedules: ``fast`` (default) alternates like :mod:`adios.masking.adios`: the
masker's rewards are the losses of the same draws recomputed by the updated, frozen encoder (one
forward pass, no backward); ``single-pass`` rewards it with the encoder step's own losses (no
extra pass, the two players moving on the same numbers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adios.objectives.losses import nt_xent
from adios.objectives.mae import MAE, hidden_patches
from adios.perf import float64, upload

TOKEN_MODES = ("token-random", "token-adios")
TOKEN_OBJECTIVES = ("simclr", "mae")
UNIFORM_EPS = 1e-12


def keep_count(num_patches: int, keep_ratio: float) -> int:
    """Visible tokens per image: ``round(keep_ratio * L)``, at least one and one hidden."""
    return min(num_patches - 1, max(1, round(keep_ratio * num_patches)))


def gumbel_top_k(scores: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """(B, L) scores -> (B, k) patch indices, an ordered Plackett-Luce sample without
    replacement (top-k of scores + Gumbel noise). The noise comes from the CPU ``generator``,
    so a seed draws the same sets on every device; in float64, on the CPU for MPS scores."""
    uniform = torch.rand(scores.shape, generator=generator, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(uniform.clamp(UNIFORM_EPS, 1 - 1e-7)))
    perturbed = float64(scores.detach())
    perturbed = perturbed + upload(gumbel, perturbed.device)
    return upload(perturbed.topk(k, dim=1).indices, scores.device)


def plackett_luce_log_prob(scores: Tensor, order: Tensor) -> Tensor:
    """log P(order) (B,) under sequential sampling without replacement from softmax(scores):
    sum over draws j of ``s[o_j] - logsumexp(s over patches not among o_1..o_{j-1})``.
    Half-precision scores are computed in float32 (float64 stays float64)."""
    scores = scores if scores.dtype == torch.float64 else scores.float()
    batch, k = order.shape
    drawn = torch.zeros(batch, k, scores.shape[1], dtype=torch.bool, device=scores.device)
    before = F.one_hot(order, scores.shape[1]).bool().cumsum(1) > 0  # drawn at or before j
    drawn[:, 1:] = before[:, :-1]
    remaining = scores.unsqueeze(1).masked_fill(drawn, float("-inf")).logsumexp(-1)
    return (scores.gather(1, order) - remaining).sum(1)


def leave_one_out_advantage(rewards: Tensor) -> Tensor:
    """``r_i - mean_{j != i} r_j``: each image's baseline is independent of its own draw."""
    batch = rewards.shape[0]
    if batch < 2:
        raise ValueError("the leave-one-out baseline needs at least two images per batch")
    return rewards - (rewards.sum() - rewards) / (batch - 1)


def score_function_surrogate(log_prob: Tensor, rewards: Tensor) -> Tensor:
    """A scalar whose gradient is the score-function estimate of grad E[mean_i r_i]."""
    return (leave_one_out_advantage(rewards.detach().float()) * log_prob).mean()


def diversity_penalty(scores: Tensor) -> Tensor:
    """KL(batch-mean softmax(scores) || uniform): 0 when the batch as a whole favours no patch,
    log L when every image puts all its weight on the same one."""
    mean = scores.float().softmax(dim=1).mean(dim=0)
    return (mean * (mean * mean.numel()).clamp_min(UNIFORM_EPS).log()).sum()


def masker_objective(scores: Tensor, keep: Tensor, rewards: Tensor,
                     diversity: float) -> tuple[Tensor, Tensor]:
    """What the masker minimises: minus the score-function surrogate of its draws' rewards,
    plus ``diversity`` times :func:`diversity_penalty`; and the penalty."""
    penalty = diversity_penalty(scores)
    surrogate = score_function_surrogate(plackett_luce_log_prob(scores, keep), rewards)
    return -surrogate + diversity * penalty, penalty


def token_losses(objective: nn.Module, a: Tensor, b: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image losses (B,) with view ``b`` reduced to its ``keep`` tokens, and the features a
    probe reads. SimCLR: ``a`` whole, the pair loss of image i is the mean of its two anchors'
    NT-Xent terms. MAE: one view, ``b``, reconstructed from its visible tokens."""
    if isinstance(objective, MAE):
        return objective.per_image_loss(b, keep)
    out_a = objective.forward_views(a)
    out_b = objective.forward_views(b, keep)
    loss = objective.loss
    anchors = nt_xent(out_a["z"], out_b["z"], loss.temperature, loss.gather, loss.rank,
                      reduction="none")
    batch = a.shape[0]
    return 0.5 * (anchors[:batch] + anchors[batch:]), out_a["h"]


# ----------------------------------------------------------------------------- evaluation


def hidden_pixels(keep: Tensor, grid: int, image_size: int) -> Tensor:
    """(B, K) visible patch indices -> float (B, 1, H, W), 1 on the hidden patches' pixels."""
    cells = hidden_patches(keep, grid * grid).float().view(-1, 1, grid, grid)
    return F.interpolate(cells, size=(image_size, image_size), mode="nearest")


def patch_object_cover(instances: Tensor, grid: int) -> Tensor:
    """Fraction of each patch's pixels on an object, (B, H, W) instance maps -> (B, L)."""
    on_object = (instances > 0).float().unsqueeze(1)
    return F.adaptive_avg_pool2d(on_object, grid).flatten(1)


def hidden_on_objects(cover: Tensor, keep: Tensor) -> Tensor:
    """Per image, the share of the hidden patches' area that lies on objects (B,)."""
    hidden = hidden_patches(keep.to(cover.device), cover.shape[1]).to(cover.dtype)
    return (cover * hidden).sum(1) / hidden.sum(1)


def draw_visible(scores: Tensor, keep_ratio: float, seed: int) -> Tensor:
    """Evaluation draws: ``keep_ratio`` of the patches by Gumbel top-k from a seeded generator,
    the distribution the encoder trains on."""
    k = keep_count(scores.shape[1], keep_ratio)
    return gumbel_top_k(scores, k, torch.Generator().manual_seed(seed))


def hidden_on_objects_report(scores: Tensor, instances: Tensor, keep_ratio: float,
                             seed: int) -> dict[str, float]:
    """Where the hidden patches go on scenes with instance maps (B, H, W): the share of the
    hidden patches' area on objects for the masker's sampled draws (what the encoder trains on)
    and for its top-k (its favourite tokens kept), against uniform random draws, whose
    expected share is the mean object cover of all patches. Equal scores (token-random) have
    no top-k: ``topk`` would break the ties by position and report a fixed corner of the grid."""
    grid = math.isqrt(scores.shape[1])
    cover = patch_object_cover(instances.to(scores.device), grid)
    k = keep_count(scores.shape[1], keep_ratio)
    report = {
        "token_hidden_on_objects": hidden_on_objects(
            cover, draw_visible(scores, keep_ratio, seed)).mean().item(),
        "token_hidden_on_objects_random": cover.mean().item(),
    }
    if bool((scores.amax(1) > scores.amin(1)).any()):
        report["token_hidden_on_objects_topk"] = hidden_on_objects(
            cover, scores.topk(k, dim=1).indices).mean().item()
    if not all(math.isfinite(v) for v in report.values()):
        raise FloatingPointError(f"token mask report is not finite: {report}")
    return report
