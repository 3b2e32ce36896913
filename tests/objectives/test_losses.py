import math

import pytest
import torch
import torch.nn.functional as F

from adios.objectives.losses import (
    BYOLLoss,
    NegativeCosineLoss,
    NTXentLoss,
    byol_loss,
    negative_cosine,
    nt_xent,
)

# float round-off, bf16 or channels_last kernels: .ci/run runs these again under AVX2 kernels
pytestmark = pytest.mark.isa


def brute_force_nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent straight from the SimCLR paper: -log(exp(s_pos/T) / sum_{k != i} exp(s_ik/T))."""
    views = list(z_a) + list(z_b)
    n, batch = len(views), len(z_a)

    def sim(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.dot(u, v) / (torch.sqrt(torch.dot(u, u)) * torch.sqrt(torch.dot(v, v)))

    losses = []
    for i in range(n):
        numerator = torch.exp(sim(views[i], views[(i + batch) % n]) / temperature)
        denominator = sum(
            torch.exp(sim(views[i], views[k]) / temperature) for k in range(n) if k != i
        )
        losses.append(-torch.log(numerator / denominator))
    return sum(losses) / n


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_brute_force_value_and_gradient(batch: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(batch)
    z_a = torch.randn(batch, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(batch, 4, generator=generator, dtype=torch.float64, requires_grad=True)

    loss = nt_xent(z_a, z_b, temperature)
    expected = brute_force_nt_xent(z_a, z_b, temperature)
    torch.testing.assert_close(loss, expected)

    grads = torch.autograd.grad(loss, [z_a, z_b])
    expected_grads = torch.autograd.grad(expected, [z_a, z_b])
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


def test_nt_xent_is_stable_at_low_temperature() -> None:
    # exp(1 / 0.01) overflows float32, so a naive softmax returns inf/nan here.
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(2, 6, 8, generator=generator)
    loss = nt_xent(z_a, z_b, 0.01)
    expected = brute_force_nt_xent(z_a.double(), z_b.double(), 0.01)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-4)


def test_nt_xent_identity_gather_equals_plain_loss() -> None:
    z_a, z_b = torch.randn(2, 5, 8)
    torch.testing.assert_close(nt_xent(z_a, z_b, 0.2, gather=lambda x: x), nt_xent(z_a, z_b, 0.2))


def test_nt_xent_gathered_negatives_reproduce_the_global_batch() -> None:
    """Two simulated processes, each scoring its own anchors against the gathered candidates: their
    mean loss and its gradient equal the single-process loss over the concatenated batch."""
    generator = torch.Generator().manual_seed(1)
    shards = [
        [
            torch.randn(3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
            for _ in range(2)
        ]
        for _ in range(2)
    ]  # shards[rank] = [z_a, z_b]

    def gather(local: torch.Tensor, rank: int) -> torch.Tensor:
        blocks = [F.normalize(torch.cat(shard), dim=1) for shard in shards]
        blocks[rank] = local
        return torch.cat(blocks)

    per_process = [
        nt_xent(*shards[rank], 0.3, gather=lambda x, r=rank: gather(x, r), rank=rank)
        for rank in range(2)
    ]
    distributed = sum(per_process) / 2
    z_a_global = torch.cat([shards[0][0], shards[1][0]])
    z_b_global = torch.cat([shards[0][1], shards[1][1]])
    expected = brute_force_nt_xent(z_a_global, z_b_global, 0.3)
    torch.testing.assert_close(distributed, expected)

    leaves = [z for shard in shards for z in shard]
    for grad, expected_grad in zip(
        torch.autograd.grad(distributed, leaves),
        torch.autograd.grad(expected, leaves),
        strict=True,
    ):
        torch.testing.assert_close(grad, expected_grad)


def test_nt_xent_module_wraps_function() -> None:
    z_a, z_b = torch.randn(2, 4, 8)
    torch.testing.assert_close(NTXentLoss(0.3)(z_a, z_b), nt_xent(z_a, z_b, 0.3))


def hand_cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [
            sum(x * y for x, y in zip(a, b, strict=True)) / (a.norm() * b.norm())
            for a, b in zip(u, v, strict=True)
        ]
    )


def test_byol_loss_formula_and_stop_gradient() -> None:
    p = torch.randn(6, 5, requires_grad=True)
    target = torch.randn(6, 5, requires_grad=True)
    loss = byol_loss(p, target)
    torch.testing.assert_close(loss, (2 - 2 * hand_cosine(p, target)).mean())
    torch.testing.assert_close(BYOLLoss()(p, target), loss)
    loss.backward()
    assert target.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_byol_loss_range() -> None:
    z = torch.randn(4, 3)
    torch.testing.assert_close(byol_loss(z, 2 * z), torch.tensor(0.0))
    torch.testing.assert_close(byol_loss(z, -z), torch.tensor(4.0))


def test_negative_cosine_formula_and_stop_gradient() -> None:
    p = torch.randn(6, 5, requires_grad=True)
    z = torch.randn(6, 5, requires_grad=True)
    loss = negative_cosine(p, z)
    torch.testing.assert_close(loss, -hand_cosine(p, z).mean())
    torch.testing.assert_close(NegativeCosineLoss()(p, z), loss)
    loss.backward()
    assert z.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert math.isclose(negative_cosine(z, 3 * z).item(), -1.0, rel_tol=1e-6)
