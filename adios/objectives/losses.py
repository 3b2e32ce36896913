"""Siamese losses: SimCLR's NT-Xent, BYOL's normalised MSE and SimSiam's negative cosine.

Each loss is a plain function; the ``nn.Module`` wrappers only carry hyper-parameters so a loss can
be passed around as a configured object.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Gather = Callable[[Tensor], Tensor]


def nt_xent(
    z_a: Tensor,
    z_b: Tensor,
    temperature: float,
    gather: Gather | None = None,
    rank: int = 0,
    reduction: str = "mean",
) -> Tensor:
    """NT-Xent (SimCLR) loss of views ``z_a[i]``, ``z_b[i]`` of each image ``i``, mean over anchors.

    ``reduction="none"`` gives the 2B anchor losses (rows of ``z_a``, then of ``z_b``).

    Every one of the 2B local embeddings is an anchor; its positive is the other view of the same
    image and its negatives are all other candidates, itself excluded. The loss is a cross-entropy
    over cosine similarities / temperature, so it stays finite for small temperatures.

    ``gather`` lets negatives come from other processes: it receives the local ``cat([z_a, z_b])``
    (2B rows, normalised) and must return the concatenation of every process's such block in rank
    order, keeping gradients (e.g. ``torch.distributed.nn.functional.all_gather`` + ``cat``). The
    local block then sits at rows ``[2B*rank, 2B*(rank+1))`` of the candidates: local anchor ``j``
    is candidate ``2B*rank + j`` (excluded) and its positive is ``2B*rank + (j + B) % 2B``. Local
    batch sizes must be equal on all processes. With ``gather=None`` the candidates are the local
    2B embeddings (``rank`` is then ignored).
    """
    batch = z_a.shape[0]
    anchors = F.normalize(torch.cat([z_a, z_b]), dim=1)
    if gather is None:
        candidates, offset = anchors, 0
    else:
        candidates, offset = gather(anchors), 2 * batch * rank

    logits = anchors @ candidates.T / temperature
    local = torch.arange(2 * batch, device=anchors.device)
    self_index = offset + local
    positive_index = offset + (local + batch) % (2 * batch)
    logits[local, self_index] = float("-inf")
    return F.cross_entropy(logits, positive_index, reduction=reduction)


def byol_loss(p: Tensor, z_target: Tensor) -> Tensor:
    """BYOL's ``2 - 2 cos(p, z_target)``, mean over the batch; the target gets no gradient."""
    return (2 - 2 * F.cosine_similarity(p, z_target.detach(), dim=-1)).mean()


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's ``-cos(p, stopgrad(z))``, mean over the batch."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


class NTXentLoss(nn.Module):
    """:func:`nt_xent` with a fixed temperature and optional cross-process ``gather``."""

    def __init__(self, temperature: float = 0.2, gather: Gather | None = None, rank: int = 0):
        super().__init__()
        self.temperature = temperature
        self.gather = gather
        self.rank = rank

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return nt_xent(z_a, z_b, self.temperature, self.gather, self.rank)


class BYOLLoss(nn.Module):
    """:func:`byol_loss` as a module."""

    def forward(self, p: Tensor, z_target: Tensor) -> Tensor:
        return byol_loss(p, z_target)


class NegativeCosineLoss(nn.Module):
    """:func:`negative_cosine` as a module."""

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        return negative_cosine(p, z)
