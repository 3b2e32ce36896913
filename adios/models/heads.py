"""Projection and prediction heads of the siamese objectives, built from Linear(+BN)+ReLU blocks.

Batch norms are adios :class:`~adios.models.norm.BatchNorm1d` so that grouped statistics and frozen
running statistics reach the heads as well as the backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

from adios.models.norm import BatchNorm1d

__all__ = [
    "byol_projector",
    "mlp",
    "simclr_projector",
    "simsiam_predictor",
    "simsiam_projector",
]


def mlp(
    dims: Sequence[int],
    batch_norm: bool = True,
    last_batch_norm: bool | Literal["no_affine"] = False,
) -> nn.Sequential:
    """Flat ``nn.Sequential``: ``Linear [-> BN] -> ReLU`` per hidden layer, then ``Linear [-> BN]``.

    ``dims = [in, hidden..., out]``. A Linear feeding a BN has no bias (the BN shift replaces it).
    ``last_batch_norm="no_affine"`` ends with a BN without learnable scale/shift (SimSiam).
    """
    dims = list(dims)
    if len(dims) < 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"mlp: dims must be at least two positive ints, got {dims!r}")
    if last_batch_norm not in (True, False, "no_affine"):
        raise ValueError(
            f"mlp: last_batch_norm must be True, False or 'no_affine', got {last_batch_norm!r}"
        )
    layers: list[nn.Module] = []
    for in_dim, out_dim in zip(dims[:-2], dims[1:-1], strict=True):
        layers.append(nn.Linear(in_dim, out_dim, bias=not batch_norm))
        if batch_norm:
            layers.append(BatchNorm1d(out_dim))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(dims[-2], dims[-1], bias=not last_batch_norm))
    if last_batch_norm:
        layers.append(BatchNorm1d(dims[-1], affine=last_batch_norm != "no_affine"))
    return nn.Sequential(*layers)


def simclr_projector(in_dim: int, hidden: int = 2048, out: int = 128) -> nn.Sequential:
    """SimCLR projector: Linear-ReLU-Linear, no batch norm."""
    return mlp([in_dim, hidden, out], batch_norm=False)


def byol_projector(in_dim: int, hidden: int = 4096, out: int = 256) -> nn.Sequential:
    """BYOL projector: Linear-BN-ReLU-Linear. With ``in_dim=out`` it is also the BYOL predictor."""
    return mlp([in_dim, hidden, out])


def simsiam_projector(in_dim: int, hidden: int = 2048, out: int = 2048) -> nn.Sequential:
    """SimSiam projector: three Linear-BN layers (ReLU between), the last BN without affine."""
    return mlp([in_dim, hidden, hidden, out], last_batch_norm="no_affine")


def simsiam_predictor(dim: int = 2048, hidden: int = 512) -> nn.Sequential:
    """SimSiam predictor: Linear-BN-ReLU-Linear bottleneck ``dim -> hidden -> dim``."""
    return mlp([dim, hidden, dim])
