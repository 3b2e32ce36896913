"""Token masking: Gumbel top-k draws, the Plackett-Luce score-function estimator (unbiased on a
toy problem with an exact answer, unlike straight-through), the diversity penalty, exact token
counts in the step, and the game's sign."""

import itertools
import math

import pytest
import torch

import adios.masking.tokens as tokens
from adios.config import load_config
from adios.engine import Models, token_train_step
from adios.masking.tokens import (
    diversity_penalty,
    gumbel_top_k,
    hidden_on_objects_report,
    keep_count,
    leave_one_out_advantage,
    plackett_luce_log_prob,
    score_function_surrogate,
    token_losses,
)
from adios.models.token_masker import TokenMasker
from adios.models.vit import ViTBackbone
from adios.objectives.mae import MAE
from adios.objectives.simclr import SimCLR

# ----------------------------------------------------------------------------- sampling


def test_keep_count():
    assert keep_count(64, 0.25) == 16 and keep_count(36, 0.25) == 9
    assert keep_count(4, 0.01) == 1 and keep_count(4, 0.99) == 3  # one kept, one hidden


def test_gumbel_top_k_draws_k_distinct_patches_reproducibly():
    scores = torch.randn(50, 12)
    keep = gumbel_top_k(scores, 5, torch.Generator().manual_seed(3))
    assert keep.shape == (50, 5)
    assert all(len(set(row)) == 5 for row in keep.tolist())
    assert torch.equal(keep, gumbel_top_k(scores, 5, torch.Generator().manual_seed(3)))
    assert not torch.equal(keep, gumbel_top_k(scores, 5, torch.Generator().manual_seed(4)))


def test_gumbel_top_k_first_draw_is_softmax_and_equal_scores_are_uniform():
    n, patches = 40_000, 6
    scores = torch.tensor([2.0, 1.0, 0.0, 0.0, -1.0, 0.5]).expand(n, -1)
    first = gumbel_top_k(scores, 3, torch.Generator().manual_seed(0))[:, 0]
    frequency = torch.bincount(first, minlength=patches).double() / n
    p = scores[0].double().softmax(0)
    assert torch.allclose(frequency, p, atol=5 * (p * (1 - p) / n).sqrt().max().item())
    # token-random: equal scores keep every patch with probability k / L
    keep = gumbel_top_k(torch.zeros(n, patches), 2, torch.Generator().manual_seed(1))
    inclusion = torch.bincount(keep.flatten(), minlength=patches).double() / n
    q = 2 / patches
    assert torch.allclose(inclusion, torch.full((patches,), q, dtype=torch.float64),
                          atol=5 * math.sqrt(q * (1 - q) / n))


# ----------------------------------------------------------------------------- the estimator

L, K = 5, 2
ORDERS = torch.tensor(list(itertools.permutations(range(L), K)))  # every ordered draw


def indicator(order: torch.Tensor) -> torch.Tensor:
    return torch.zeros(order.shape[0], L, dtype=torch.float64).scatter(1, order, 1.0)


def toy_problem():
    """Scores and a nonlinear reward of the kept set, with an interaction between patches 0, 1."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(L, generator=g, dtype=torch.float64)
    weights = torch.randn(L, generator=g, dtype=torch.float64)
    return scores, lambda m: (m * weights).sum(-1) ** 2 + m[..., 0] * m[..., 1]


def exact_gradient(scores, reward):
    """grad E[reward] by enumerating all L!/(L-K)! ordered draws."""
    s = scores.clone().requires_grad_()
    log_p = plackett_luce_log_prob(s.expand(len(ORDERS), L), ORDERS)
    (grad,) = torch.autograd.grad((log_p.exp() * reward(indicator(ORDERS))).sum(), s)
    return grad, log_p.exp().detach()


def test_plackett_luce_probabilities_sum_to_one_and_match_a_hand_computation():
    scores = torch.tensor([0.3, -1.0, 2.0, 0.0, 0.7], dtype=torch.float64)
    log_p = plackett_luce_log_prob(scores.expand(len(ORDERS), L), ORDERS)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    e = scores.exp()
    by_hand = e[2] / e.sum() * e[0] / (e.sum() - e[2])  # draw 2, then 0
    row = ORDERS.tolist().index([2, 0])
    assert log_p[row].exp().item() == pytest.approx(by_hand.item(), rel=1e-12)


def sf_estimates(scores, reward, baseline, draws=8000, batch=16):
    """Per-batch score-function estimates (draws, L) of grad E[reward]."""
    order = gumbel_top_k(scores.expand(draws * batch, L), K, torch.Generator().manual_seed(1))
    rows = scores.detach().repeat(draws * batch, 1).requires_grad_()
    plackett_luce_log_prob(rows, order).sum().backward()  # row r: grad log P of its own draw
    rewards = reward(indicator(order)).view(draws, batch)
    advantage = baseline(rewards)
    return (advantage.reshape(-1, 1) * rows.grad).view(draws, batch, L).mean(1)


def loo(rewards):
    return torch.stack([leave_one_out_advantage(r) for r in rewards])


def test_score_function_with_leave_one_out_baseline_is_unbiased():
    scores, reward = toy_problem()
    exact, _ = exact_gradient(scores, reward)
    estimates = sf_estimates(scores, reward, loo)
    mean, error = estimates.mean(0), estimates.std(0) / math.sqrt(len(estimates))
    assert ((mean - exact).abs() / error).max() < 5  # within 5 standard errors per patch
    assert (mean - exact).norm() / exact.norm() < 0.05
    # a baseline that includes the image's own reward is biased: the same test catches it
    biased = sf_estimates(scores, reward, lambda r: r - r.mean(1, keepdim=True)).mean(0)
    assert ((biased - exact).abs() / error).max() > 5


def test_the_library_surrogate_has_the_estimators_gradient():
    scores = torch.randn(6, L, dtype=torch.float64, requires_grad=True)
    order = gumbel_top_k(scores, K, torch.Generator().manual_seed(0))
    rewards = torch.randn(6, dtype=torch.float64)
    score_function_surrogate(plackett_luce_log_prob(scores, order), rewards).backward()
    rows = scores.detach().clone().requires_grad_()
    plackett_luce_log_prob(rows, order).sum().backward()
    by_hand = (rewards - (rewards.sum() - rewards) / 5)[:, None] * rows.grad / 6
    assert torch.allclose(scores.grad, by_hand)


def test_straight_through_is_biased_on_the_same_toy():
    """Why the score function: straight-through (hard top-k forward, K * softmax backward) has
    an expectation that is not the gradient, here not even close in direction."""
    scores, reward = toy_problem()
    exact, p = exact_gradient(scores, reward)
    hard = indicator(ORDERS).requires_grad_()
    (d_reward,) = torch.autograd.grad(reward(hard).sum(), hard)
    s = scores.clone().requires_grad_()
    expected_d_reward = (p[:, None] * d_reward).sum(0)  # E over draws, exactly
    (straight_through,) = torch.autograd.grad((K * s.softmax(0) * expected_d_reward).sum(), s)
    assert (straight_through - exact).norm() / exact.norm() > 0.5
    assert torch.nn.functional.cosine_similarity(straight_through, exact, dim=0) < 0.9


# ----------------------------------------------------------------------------- regulariser


def test_diversity_penalty():
    assert diversity_penalty(torch.zeros(4, 8)).item() == pytest.approx(0.0, abs=1e-6)
    same = torch.full((4, 8), -30.0)
    same[:, 2] = 30.0  # every image keeps patch 2
    assert diversity_penalty(same).item() == pytest.approx(math.log(8), rel=1e-4)
    own = torch.full((8, 8), -30.0)
    own[torch.arange(8), torch.randperm(8)] = 30.0  # each image its own patch: spread
    assert diversity_penalty(own).item() == pytest.approx(0.0, abs=1e-4)


# ----------------------------------------------------------------------------- the step

TOKENS = ["preset=shapes-paper", "model.backbone=vit_tiny",  # the step reads no sizes
          "train.device=cpu"]


def tiny_models(objective: str, learned: bool):
    torch.manual_seed(0)
    backbone = ViTBackbone(16, 4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    if objective == "mae":
        model = MAE(backbone, decoder_dim=8, decoder_depth=1, decoder_heads=2)
    else:
        model = SimCLR(backbone, proj_hidden=16, proj_out=8, temperature=0.2)
    masker = TokenMasker(16, 4, dim=16, heads=2) if learned else None
    return Models(model, masker, torch.nn.Linear(16, 3))


def fixed_batch(n=16):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, 3, 16, 16, generator=g)
    return a, a + 0.3 * torch.randn(n, 3, 16, 16, generator=g), torch.randint(3, (n,), generator=g)


@pytest.mark.parametrize("objective", ["simclr", "mae"])
@pytest.mark.parametrize("mode", ["token-random", "token-adios"])
def test_step_keeps_exactly_the_configured_tokens(objective, mode):
    cfg = load_config([*TOKENS, f"objective.name={objective}", f"masking.mode={mode}",
                       "masking.keep_ratio=0.3"])
    models = tiny_models(objective, mode == "token-adios")
    lengths = []
    models.objective.backbone.encoder.layers.register_forward_pre_hook(
        lambda _, args: lengths.append(args[0].shape[1]))
    encoder_opt = torch.optim.SGD([*models.objective.parameters(), *models.probe.parameters()],
                                  lr=0.1)
    masker_opt = torch.optim.SGD(models.masker.parameters(), lr=0.1) if models.masker else None
    before = [p.detach().clone() for p in models.objective.backbone.parameters()]
    a, b, labels = fixed_batch()
    stats = token_train_step(cfg, models, encoder_opt, masker_opt, a, b, labels,
                       torch.Generator().manual_seed(0))
    kept = round(0.3 * 16)
    assert stats["kept_tokens"] == kept and math.isfinite(stats["loss"])
    passes = 1 if objective == "mae" else 2  # simclr also encodes the whole view a
    rounds = 2 if mode == "token-adios" else 1  # the masker's rewards: a frozen re-encoding
    assert sorted(lengths) == sorted(([1 + kept] + [1 + 16] * (passes - 1)) * rounds)
    assert ("adv_loss" in stats) == (mode == "token-adios")
    moved = [not torch.equal(p, q) for p, q in zip(before, models.objective.backbone.parameters(),
                                                    strict=True)]
    assert any(moved)


def test_single_pass_reuses_the_encoder_steps_losses():
    cfg = load_config([*TOKENS, "masking.mode=token-adios", "masking.schedule=single-pass"])
    models = tiny_models("simclr", True)
    lengths = []
    models.objective.backbone.encoder.layers.register_forward_pre_hook(
        lambda _, args: lengths.append(args[0].shape[1]))
    a, b, labels = fixed_batch()
    stats = token_train_step(cfg, models, torch.optim.SGD(models.objective.parameters(), lr=0.1),
                       torch.optim.SGD(models.masker.parameters(), lr=0.1), a, b, labels,
                       torch.Generator().manual_seed(0))
    assert len(lengths) == 2 and stats["adv_loss"] == pytest.approx(stats["loss"])


def expected_loss(models, a, b, draws=32):
    """The encoder's loss averaged over a fixed set of draws from the masker's distribution."""
    objective, masker = models.objective, models.masker
    with torch.no_grad():
        scores = masker(b)
        g = torch.Generator().manual_seed(123)  # the same draws before and after (CRN)
        k = keep_count(16, 0.25)
        return sum(token_losses(objective, a, b, gumbel_top_k(scores, k, g))[0].mean()
                   for _ in range(draws)).item() / draws


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_maskers_update_raises_the_encoders_loss(sign, monkeypatch):
    """The game's sign, on a fixed batch and encoder (its learning rate 0): masker steps raise
    the expected loss; flipping the estimator's sign (broken code) lowers it instead."""
    surrogate = tokens.score_function_surrogate
    monkeypatch.setattr(tokens, "score_function_surrogate",
                        lambda log_p, r: sign * surrogate(log_p, r))
    cfg = load_config([*TOKENS, "masking.mode=token-adios", "masking.token_diversity=0"])
    models = tiny_models("simclr", True)
    a, b, labels = fixed_batch(32)
    encoder_opt = torch.optim.SGD(models.objective.parameters(), lr=0.0)
    masker_opt = torch.optim.Adam(models.masker.parameters(), lr=0.03)
    before = expected_loss(models, a, b)
    for step in range(15):
        token_train_step(cfg, models, encoder_opt, masker_opt, a, b, labels,
                   torch.Generator().manual_seed(step))
    after = expected_loss(models, a, b)
    assert (after - before) * sign > 0.01


# ----------------------------------------------------------------------------- where they go


def test_hidden_on_objects_report_against_hand_computed_shares():
    """A 16 px scene on a 4 x 4 grid: object 1 covers the top row of patches, object 2 half of
    patch 5 (rows 4-7, columns 4-5). Scores that keep the background hide exactly the objects."""
    instances = torch.zeros(1, 16, 16, dtype=torch.long)
    instances[0, :4, :] = 1
    instances[0, 4:8, 4:6] = 2
    cover = torch.zeros(16)
    cover[:4], cover[5] = 1.0, 0.5
    scores = torch.where(cover > 0, -30.0, 30.0).unsqueeze(0)  # keep the 11 background patches
    report = hidden_on_objects_report(scores, instances, keep_ratio=11 / 16, seed=0)
    assert report["token_hidden_on_objects_topk"] == pytest.approx(4.5 / 5)
    assert report["token_hidden_on_objects"] == pytest.approx(4.5 / 5)  # draws are near-certain
    assert report["token_hidden_on_objects_random"] == pytest.approx(4.5 / 16)
    flipped = hidden_on_objects_report(-scores, instances, keep_ratio=5 / 16, seed=0)
    assert flipped["token_hidden_on_objects_topk"] == pytest.approx(0.0)  # objects all kept
    # token-random's equal scores: no favourite tokens, so no top-k share (ties by position)
    equal = hidden_on_objects_report(torch.zeros(1, 16), instances, keep_ratio=11 / 16, seed=0)
    assert "token_hidden_on_objects_topk" not in equal
    assert equal["token_hidden_on_objects_random"] == pytest.approx(4.5 / 16)
